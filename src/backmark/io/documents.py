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
    raw = read_file(p, what="file")
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
