"""Safe file output.

Every file backmark writes goes through :func:`atomic_write_bytes`: the bytes are
written to a temporary file in the same folder, flushed to disk, then renamed over
the destination, so a crash never leaves a half-written key or checkpoint. An
existing destination is refused unless ``force=True``.

Permissions: ``mode`` when given (0644 for what is meant to be handed out: verification keys,
reports, claims, exports, spent logs; 0600 for the secrets: the marking key and the owner key),
else what ``open()`` would give (0666 less the umask), never the temporary file's 0600 by accident.
"""
from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import OutputExists

_umask_lock = threading.Lock()


def default_mode() -> int:
    """0666 less the process umask (the mode ``open()`` creates files with)."""
    try:  # Linux states it; reading it elsewhere means setting it for a moment
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        with _umask_lock:
            umask = os.umask(0o022)
            os.umask(umask)
    return 0o666 & ~umask


def check_writable(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Raise OutputExists if ``path`` exists and ``force`` is false."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExists(f"{p} already exists; pass --force (force=True) to overwrite it")
    return p


@contextmanager
def atomic_open(path: str | os.PathLike, *, force: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; on success fsync and rename it over ``path``."""
    p = check_writable(path, force=force)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode() if mode is None else mode)  # mkstemp made it 0600
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_open(path, force=force, mode=mode) as f:
        f.write(data)
    return Path(path)


def read_file(path: str | os.PathLike, *, what: str = "file") -> bytes:
    """A file's bytes; InvalidFile with one line naming ``what`` was expected if it cannot be read."""
    from ..errors import InvalidFile

    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InvalidFile(f"{p}: no such {what}") from None
    except IsADirectoryError:
        raise InvalidFile(f"{p}: is a folder, expected a {what}") from None
    except OSError as e:
        raise InvalidFile(f"{p}: cannot read the {what} ({e.strerror or e})") from None
