"""JSON documents on disk: how backmark writes them and how it reads them back.

Every backmark JSON file carries ``format`` (what it is) and ``version`` (of that format);
:func:`read_json_document` checks both before anything else looks inside.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InvalidFile
from .files import atomic_write_bytes, read_file


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
    return _parse_document(p, read_file(p, what="file"), kind, versions)


def _parse_document(p: Path, raw: bytes, kind: str, versions: tuple[int, ...]) -> dict:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: also integers past 4300 digits
        raise InvalidFile(f"{p}: not valid JSON ({str(e).splitlines()[0]}); is this a {kind} file?") from None
    if not isinstance(doc, dict) or doc.get("format") != kind:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidFile(f"{p}: expected a {kind} file, found format {found!r}")
    if doc.get("version") not in versions:
        raise InvalidFile(
            f"{p}: {kind} version {doc.get('version')!r} is not supported "
            f"(this backmark reads version {', '.join(map(str, versions))})"
        )
    return doc


def read_canonical_document(path: str | os.PathLike, *, kind: str, versions: tuple[int, ...], fields: set[str]) -> dict:
    """A signed or security-relevant document exactly as backmark wrote it, else InvalidFile.

    Beyond :func:`read_json_document`: ``version`` is an integer (not 1.0 or true), the fields
    are exactly ``fields``, nothing is NaN or infinite, and the bytes are those
    :func:`dumps_json` writes, so a duplicate key, a re-spaced or re-ordered edit is refused:
    what a reader sees is what was signed.
    """
    p = Path(path)
    raw = read_file(p, what="file")
    doc = _parse_document(p, raw, kind, versions)
    if type(doc["version"]) is not int or set(doc) != fields:
        raise InvalidFile(f"{p}: not a {kind} file as backmark writes it (unexpected fields or version type)")
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError:
        raise InvalidFile(f"{p}: the {kind} holds NaN or infinite numbers") from None
    if dumps_json(doc) != raw:
        raise InvalidFile(f"{p}: the {kind} was edited after it was written (not in the canonical form backmark writes)")
    return doc


def is_hex(value, length: int) -> bool:
    """``value`` is lower-case hex text of exactly ``length`` digits (how backmark writes hashes, keys, signatures)."""
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)
