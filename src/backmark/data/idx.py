"""Reader (and writer) for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is: two zero bytes, one type byte (0x08 = uint8, 0x09 = int8,
0x0B = int16, 0x0C = int32, 0x0D = float32, 0x0E = float64), one byte giving the
number of dimensions, one big-endian uint32 per dimension, then the values in
C order, big-endian. Files may be gzip-compressed (``.gz``). The MNIST-style
dataset folder holds four of them: ``train-images-idx3-ubyte`` (N, 28, 28),
``train-labels-idx1-ubyte`` (N,), ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# type byte -> big-endian numpy dtype
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}

# file stems of an MNIST-style folder; some mirrors use '.' instead of the last '-'
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file into a native-endian array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{source}: not an IDX file (bad magic number); re-download or reinstall the dataset")
    dtype = _DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header is truncated; re-download or reinstall the dataset")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{source}: IDX file holds {len(raw)} bytes but its header {tuple(shape)} needs {expected}; "
            "the file is truncated or corrupt, re-download or reinstall the dataset"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, plain or gzip-compressed (decided by the ``.gz`` suffix)."""
    p = Path(path)
    try:
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                raw = f.read()
        else:
            raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file; pass --data-dir pointing at the dataset folder") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{p}: corrupt gzip data ({e}); re-download or reinstall the dataset") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e}); check the file's permissions") from None
    return parse_idx(raw, str(p))


def write_idx(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write ``arr`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    arr = np.asarray(arr)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}; use uint8, int8, int16, int32, float32 or float64")
    code = _CODES[native]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
    p = Path(path)
    if p.suffix == ".gz":
        raw = gzip.compress(raw)
    p.write_bytes(raw)
    return p


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder`` (plain or .gz, '-' or '.' before 'idx'), or None."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_folder(folder: Path, pretty_name: str, install_hint: str) -> dict[str, np.ndarray]:
    """Read the four IDX files of an MNIST-style folder.

    Returns ``train_images`` (N, H, W) uint8, ``train_labels`` (N,) uint8 and the
    ``test_*`` pair. ``install_hint`` ends the error message when files are missing.
    """
    paths = {key: find_idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
    if missing:
        what = f"no {pretty_name} files in {folder}" if len(missing) == 4 else f"incomplete {pretty_name} folder {folder}"
        raise DataError(f"{what}: expected {', '.join(missing)}; {install_hint}")
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(
                f"{paths[f'{split}_images']}: expected uint8 images (N, H, W) and uint8 labels (N,), "
                f"found {images.dtype}{images.shape} and {labels.dtype}{labels.shape}; is this an MNIST-style folder?"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{folder}: {split} split has {len(images)} images but {len(labels)} labels; "
                "the files come from different datasets, re-download them"
            )
    return arrays
