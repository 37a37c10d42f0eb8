"""Class-folder image datasets: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.

Classes are the sub-folder names of ``train/`` in sorted order (label 0 is the
first name) and images are taken in file-name order. They are decoded with PIL:
the first image fixes the channel count (mode "L" -> 1 channel, anything else is
converted to RGB) and every image must have the same size.

The dataset may also be a tarball of such a folder (or a folder holding one
tarball and no ``train/``). Its images are decoded straight from the archive
stream rather than unpacked: creating tens of thousands of small files costs far
more than decoding them, and nothing from the archive touches the disk.

Decoded arrays are cached as one .npz in :func:`~backmark.data.cache.cache_dir`,
keyed by the folder path, its file count and newest mtime (or the tarball's
path, size and mtime), so a changed dataset is decoded afresh.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .cache import cache_dir, cache_key, is_tarball, load_arrays, save_arrays

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")
_CACHE_FORMAT = 1  # bump when the cached array layout changes
_ARRAY_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes")

# split -> class name -> file name -> image source (a path, or the file's bytes from a tarball)
Members = dict[str, dict[str, dict[str, "Path | bytes"]]]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _has_splits(folder: Path) -> bool:
    return all((folder / split).is_dir() for split in SPLITS)


def locate_class_folder(path: Path) -> Path:
    """The folder holding ``train/`` and ``test/``, or the tarball standing in for it.

    ``path`` may be that folder, a tarball, or a folder holding exactly one
    tarball and no ``train/``.
    """
    if path.is_dir() and _has_splits(path):
        return path
    if is_tarball(path):
        return path
    if path.is_dir():
        tarballs = sorted(p for p in path.iterdir() if is_tarball(p))
        if len(tarballs) == 1:
            return tarballs[0]
        found = f"{len(tarballs)} tarballs" if tarballs else "no tarball"
        raise DataError(
            f"{path}: expected train/<class>/ and test/<class>/ folders or one .tar.gz of them, found {found}; "
            "pass --data-dir pointing at the dataset folder"
        )
    raise DataError(f"{path}: no such folder; pass --data-dir pointing at a folder with train/<class>/ and test/<class>/")


def _folder_members(root: Path) -> Members:
    members: Members = {}
    for split in SPLITS:
        classes = {}
        for entry in os.scandir(root / split):
            if entry.is_dir() and not entry.name.startswith("."):
                files = (e for e in os.scandir(entry.path) if e.is_file() and _is_image(e.name))
                classes[entry.name] = {e.name: Path(e.path) for e in files}
        members[split] = classes
    return members


def _tar_members(tarball: Path) -> Members:
    """Read every ``[prefix/]split/class/image`` file of ``tarball`` into memory (one sequential pass)."""
    members: Members = {split: {} for split in SPLITS}
    prefixes = set()
    try:
        with tarfile.open(tarball, "r|*") as tf:  # stream mode: no random access needed
            for info in tf:
                parts = PurePosixPath(info.name).parts
                if not info.isfile() or len(parts) < 3 or parts[-3] not in SPLITS or not _is_image(parts[-1]):
                    continue
                prefixes.add(parts[:-3])
                f = tf.extractfile(info)
                members[parts[-3]].setdefault(parts[-2], {})[parts[-1]] = f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{tarball}: cannot read the archive ({e}); re-download it or pass the unpacked folder") from None
    if len(prefixes) > 1:
        tops = sorted("/".join(p) or "." for p in prefixes)
        raise DataError(f"{tarball}: holds train/ and test/ under several folders {tops}; unpack it and pass one of them")
    if not members["train"]:
        raise DataError(f"{tarball}: the archive holds no train/<class>/ images; is it a class-folder image dataset?")
    return members


def _fingerprint(members: Members) -> tuple[int, int]:
    """(file count, newest mtime in ns): changes whenever an image is added, removed or edited."""
    paths = [p for classes in members.values() for files in classes.values() for p in files.values()]
    newest = max((p.stat().st_mtime_ns for p in paths), default=0)
    return len(paths), newest


def _pixels(source: Path | bytes, where: str, mode: str) -> tuple[bytes, tuple[int, int]]:
    """Raw (H, W, C) bytes of one image in ``mode`` and its (W, H) size."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            if im.mode != mode:
                im = im.convert(mode)
            # tobytes() skips the numpy array-interface round trip: ~30% faster for tiny images
            return im.tobytes(), im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{where}: cannot decode image ({e}); delete or replace the file") from None


def _decode(items: list[tuple[str, Path | bytes]], mode: str, size: tuple[int, int]) -> np.ndarray:
    """Decode ``(name, source)`` items into one (N, C, H, W) uint8 array; every image must be ``size`` (W, H)."""
    w, h = size
    channels = 1 if mode == "L" else 3
    out = np.empty((len(items), h * w * channels), dtype=np.uint8)  # one image per row, HWC as PIL stores it
    for i, (where, source) in enumerate(items):
        raw, got = _pixels(source, where, mode)
        if got != size:
            raise DataError(
                f"{where}: image is {got[0]}x{got[1]} but the dataset's images are {w}x{h}; resize all images to one size first"
            )
        out[i] = np.frombuffer(raw, dtype=np.uint8)
    return np.ascontiguousarray(out.reshape(-1, h, w, channels).transpose(0, 3, 1, 2))


def _decode_members(members: Members, origin: Path) -> dict[str, np.ndarray]:
    classes = sorted(members["train"])
    extra = sorted(set(members["test"]) - set(classes))
    if extra:
        raise DataError(f"{origin}: test/ has class folders {extra} that train/ lacks; both splits need the same classes")
    splits = {}
    for split in SPLITS:
        items, labels = [], []
        for label, name in enumerate(classes):
            files = members[split].get(name, {})
            items += [(f"{origin}/{split}/{name}/{f}", files[f]) for f in sorted(files)]
            labels += [label] * len(files)
        if not items:
            raise DataError(f"{origin}/{split}: no images found (expected {split}/<class>/*.jpg or .png)")
        splits[split] = (items, np.asarray(labels, dtype=np.int64))
    first_where, first = splits["train"][0][0]
    try:
        with Image.open(io.BytesIO(first) if isinstance(first, bytes) else first) as im:
            mode, size = ("L" if im.mode == "L" else "RGB"), im.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{first_where}: cannot decode image ({e}); delete or replace the file") from None
    arrays = {}
    for split, (items, labels) in splits.items():
        arrays[f"{split}_x"] = _decode(items, mode, size)
        arrays[f"{split}_y"] = labels
    arrays["classes"] = np.asarray(classes, dtype=str)
    return arrays


def read_class_folder(path: Path) -> dict[str, object]:
    """Load a class-folder dataset (folder or tarball), using and filling the decode cache.

    Returns ``train_x``/``test_x`` (N, C, H, W) uint8, ``train_y``/``test_y``
    (N,) int64 and ``classes`` (a tuple of folder names).
    """
    source = locate_class_folder(path).resolve()
    if source.is_dir():
        members = _folder_members(source)
        key = cache_key(_CACHE_FORMAT, "folder", source, *_fingerprint(members))
    else:
        st = source.stat()
        members = None  # read only on a cache miss: streaming the archive is the slow part
        key = cache_key(_CACHE_FORMAT, "tar", source, st.st_size, st.st_mtime_ns)
    entry = cache_dir() / f"images-{key}.npz"
    arrays = load_arrays(entry)
    if arrays is None or not set(_ARRAY_KEYS) <= arrays.keys():
        arrays = _decode_members(members if members is not None else _tar_members(source), source)
        try:
            save_arrays(entry, arrays)
        except OSError as e:
            # an unwritable cache only costs time on the next load; the data itself is fine
            warnings.warn(f"could not cache decoded images in {entry.parent} ({e}); set BACKMARK_CACHE to a writable folder")
    return {**{k: arrays[k] for k in _ARRAY_KEYS[:4]}, "classes": tuple(str(c) for c in arrays["classes"])}
