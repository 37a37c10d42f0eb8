"""Reader for the CIFAR-10 / CIFAR-100 "python version" pickle folders.

``cifar-10-batches-py/`` holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch``
(each a pickled dict with ``data`` (10000, 3072) uint8 and ``labels``) and
``batches.meta`` (``label_names``). ``cifar-100-python/`` holds ``train``,
``test`` (``data`` and ``fine_labels``) and ``meta`` (``fine_label_names``).
Each 3072-byte row is the red, green then blue 32x32 plane in row-major order,
so it reshapes directly to (3, 32, 32). The folder may be given directly, via
its parent, or as the official ``.tar.gz`` (unpacked into the cache once).

The pickles are read with an unpickler that only resolves the few numpy names
an array needs, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import is_tarball, unpack_tarball


@dataclass(frozen=True)
class _Layout:
    pretty: str
    folder: str  # folder name inside the official tarball
    tarball: str  # official tarball name
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str


LAYOUTS = {
    "cifar10": _Layout(
        "CIFAR-10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": _Layout(
        "CIFAR-100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        "test",
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}

# the only globals a pickled numpy array (or Python 3 protocol-2 bytes) needs
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); check the file's permissions") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as e:
        # any unpickling failure means a damaged or foreign file
        raise DataError(f"{path}: not a CIFAR pickle ({type(e).__name__}: {e}); re-download the dataset") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}; re-download the dataset")
    # the official files are Python 2 pickles (bytes keys); accept re-pickled str keys too
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _field(d: dict, key: str, path: Path):
    if key not in d:
        raise DataError(f"{path}: missing the '{key}' entry (found {sorted(d)}); is this the right CIFAR variant?")
    return d[key]


def _is_layout_dir(folder: Path, layout: _Layout) -> bool:
    return folder.is_dir() and (folder / layout.meta_file).is_file() and (folder / layout.test_file).is_file()


def find_cifar_folder(path: Path, variant: str) -> Path:
    """The pickle folder for ``path``: the folder, its parent, or a tarball of it."""
    layout = LAYOUTS[variant]
    if is_tarball(path):
        path = unpack_tarball(path)
    for candidate in (path, path / layout.folder):
        if _is_layout_dir(candidate, layout):
            return candidate
    if (path / layout.tarball).is_file():
        unpacked = unpack_tarball(path / layout.tarball)
        for candidate in (unpacked, unpacked / layout.folder):
            if _is_layout_dir(candidate, layout):
                return candidate
    expected = ", ".join((*layout.train_files, layout.test_file, layout.meta_file))
    raise DataError(
        f"no {layout.pretty} files in {path}: expected {expected} (in {layout.folder}/) or {layout.tarball}; "
        f"pass --data-dir pointing at the {layout.pretty} python-version folder"
    )


def _read_split(folder: Path, files: tuple[str, ...], layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing; the {layout.pretty} folder is incomplete, re-download it")
        d = _load_pickle(path)
        data = np.asarray(_field(d, "data", path))
        labels = np.asarray(_field(d, layout.label_key, path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
            raise DataError(
                f"{path}: expected data uint8 (N, 3072) and N labels, found {data.dtype}{data.shape} "
                f"and {labels.shape}; re-download the dataset"
            )
        xs.append(data.reshape(-1, 3, 32, 32))  # row = R plane, G plane, B plane, each 32x32 row-major
        ys.append(labels.astype(np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def read_cifar(path: Path, variant: str) -> dict[str, object]:
    """Load CIFAR-10 (``variant="cifar10"``) or CIFAR-100 fine labels (``"cifar100"``).

    Returns ``train_x``/``test_x`` (N, 3, 32, 32) uint8, ``train_y``/``test_y``
    (N,) int64 and ``classes``.
    """
    layout = LAYOUTS[variant]
    folder = find_cifar_folder(path, variant)
    meta_path = folder / layout.meta_file
    names = _field(_load_pickle(meta_path), layout.names_key, meta_path)
    classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    train_x, train_y = _read_split(folder, layout.train_files, layout)
    test_x, test_y = _read_split(folder, (layout.test_file,), layout)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "classes": classes}
