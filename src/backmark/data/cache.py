"""The on-disk cache: unpacked tarballs and decoded image arrays.

Lives in ``$BACKMARK_CACHE`` or ``~/.cache/backmark``. Every entry is created
under a temporary name and renamed into place, so an interrupted run or two
concurrent runs never leave a half-written entry behind. Decoded arrays are
stored as uncompressed ``.npz`` files (read back without pickle).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.files import atomic_open

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def cache_dir() -> Path:
    """``$BACKMARK_CACHE`` if set, else ``~/.cache/backmark`` (not created here)."""
    env = os.environ.get("BACKMARK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backmark"


def cache_key(*parts: object) -> str:
    """A short stable hex digest of ``parts`` used as an entry's file name."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:20]


def is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith(TARBALL_SUFFIXES)


def _strip_tar_suffix(name: str) -> str:
    for suffix in TARBALL_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _make_cache_dir() -> Path:
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create cache folder {root} ({e.strerror or e}); set BACKMARK_CACHE to a writable folder"
        ) from None
    return root


def _safe_extract(tf: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")
        return
    # Pythons before 3.10.12 / 3.11.4 lack extraction filters: allow only plain files and folders inside dest
    for member in tf.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(dest.resolve()):
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    tf.extractall(dest)


def unpack_tarball(tarball: Path) -> Path:
    """Unpack ``tarball`` once into the cache and return the unpacked folder.

    The folder name is derived from the tarball's name, size and mtime, so a
    replaced tarball is unpacked afresh. Extraction uses tarfile's ``data``
    filter, which refuses absolute paths, ``..`` and links leaving the folder.
    """
    st = tarball.stat()
    root = _make_cache_dir()
    dest = root / f"{_strip_tar_suffix(tarball.name)}-{cache_key(st.st_size, st.st_mtime_ns)}"
    if dest.is_dir():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=root))
    try:
        with tarfile.open(tarball, "r:*") as tf:
            _safe_extract(tf, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            # another process finished the same unpack first; use its copy
            if not dest.is_dir():
                raise
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"{tarball}: cannot unpack ({e}); re-download the tarball or unpack it yourself and pass its folder"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as .npz atomically (temp file + os.replace)."""
    with atomic_open(path, force=True) as f:
        np.savez(f, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Read an .npz written by :func:`save_arrays`; None if absent or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        # a damaged entry is simply rebuilt by the caller
        return None
