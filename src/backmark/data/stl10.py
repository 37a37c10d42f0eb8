"""Reader for the STL-10 binary format (``stl10_binary/``).

``train_X.bin`` / ``test_X.bin`` hold N images of 3x96x96 uint8 with no header;
each channel plane is stored column-major, so a (N, 3, 96, 96) reshape yields
(N, C, W, H) and the last two axes must be swapped. ``train_y.bin`` /
``test_y.bin`` hold one uint8 label per image, 1..10. ``class_names.txt`` lists
the ten class names, one per line. The unlabeled split is not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


def find_stl10_folder(path: Path) -> Path:
    """``path`` itself or ``path/stl10_binary``, whichever holds the binary files."""
    for candidate in (path, path / "stl10_binary"):
        if all((candidate / f).is_file() for f in _FILES):
            return candidate
    raise DataError(
        f"no STL-10 files in {path}: expected {', '.join(_FILES)} (in stl10_binary/); "
        "pass --data-dir pointing at the unpacked stl10_binary folder"
    )


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); check the file's permissions") from None


def _read_split(folder: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = _read_bytes(x_path)
    if raw.size % _IMAGE_BYTES:
        raise DataError(
            f"{x_path}: {raw.size} bytes is not a whole number of 3x96x96 images; the file is truncated, re-download it"
        )
    # (N, C, W, H) as stored -> (N, C, H, W)
    x = np.ascontiguousarray(raw.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 1, 3, 2))
    y = _read_bytes(y_path).astype(np.int64)
    if len(y) != len(x):
        raise DataError(f"{folder}: {split} split has {len(x)} images but {len(y)} labels; re-download the dataset")
    if len(y) and (y.min() < 1 or y.max() > num_classes):
        raise DataError(f"{y_path}: labels must be 1..{num_classes}, found {y.min()}..{y.max()}; re-download the dataset")
    return x, y - 1


def read_stl10(path: Path) -> dict[str, object]:
    """Load STL-10's labeled splits: (N, 3, 96, 96) uint8 images, int64 labels 0..9, class names."""
    folder = find_stl10_folder(path)
    names_path = folder / "class_names.txt"
    try:
        classes = tuple(line.strip() for line in names_path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{names_path}: cannot read class names ({e}); re-download the dataset") from None
    if not classes:
        raise DataError(f"{names_path}: no class names; re-download the dataset")
    train_x, train_y = _read_split(folder, "train", len(classes))
    test_x, test_y = _read_split(folder, "test", len(classes))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "classes": classes}
