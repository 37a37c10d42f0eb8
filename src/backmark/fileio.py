"""Safe file output and validated JSON documents.

Every file backmark writes goes through :func:`atomic_write_bytes`: the bytes are
written to a temporary file in the same folder, flushed to disk, then renamed over
the destination, so a crash never leaves a half-written key or checkpoint. An
existing destination is refused unless ``force=True``.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .errors import InvalidFile, OutputExists


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
        if mode is not None:
            os.chmod(tmp, mode)
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


def dumps_json(doc: Any) -> bytes:
    """Human-readable JSON (2-space indent, sorted keys, trailing newline)."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str | os.PathLike, doc: Any, *, force: bool = False, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, dumps_json(doc), force=force, mode=mode)


def read_json_document(path: str | os.PathLike, *, kind: str, versions: tuple[int, ...]) -> dict:
    """Load a backmark JSON document and check its ``format`` and ``version`` fields.

    ``kind`` is the expected value of ``format`` (e.g. ``"backmark-verification-key"``).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InvalidFile(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InvalidFile(f"{p}: is a folder, expected a {kind} file") from None
    except OSError as e:
        raise InvalidFile(f"{p}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidFile(f"{p}: not valid JSON ({e}); is this a {kind} file?") from None
    if not isinstance(doc, dict) or doc.get("format") != kind:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidFile(f"{p}: expected a {kind} file, found format {found!r}")
    if doc.get("version") not in versions:
        raise InvalidFile(
            f"{p}: {kind} version {doc.get('version')!r} is not supported "
            f"(this backmark reads version {', '.join(map(str, versions))})"
        )
    return doc
