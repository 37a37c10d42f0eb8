"""JSON documents on disk: how backmark writes them and how it reads them back.

Every backmark JSON file carries ``format`` (what it is) and ``version`` (of that format, an
integer). Reading is strict (docs/formats.md, "How backmark reads its files"): one parse
that refuses anything two JSON readers could read differently, then the format and version,
then a schema (backmark.io.schema), then, for canonical formats, the bytes themselves:

    doc = load_document("vk.json", kind="backmark-verification-key", versions=(1,), schema=VK_SCHEMA)
    records = load_json_lines("audit.jsonl", kind="backmark-audit-log", versions=(1,),
                              first=OPEN, rest=RECORD, canonical=canonical_json)

Every refusal is an InvalidFile with one line naming the file (and line, and JSON path).
"""
from __future__ import annotations

import codecs
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BackmarkError, InvalidFile
from .files import atomic_write_bytes, read_file
from .schema import MAX_SAFE_INT, Schema, show

MAX_DEPTH = 32  # nesting levels; backmark's own files use at most 5
MAX_NUMBER_CHARS = 32  # a double needs at most 17 significant digits; longer spellings only hide rounding
# Strings (skipped whole, escapes included) and brackets: enough to count nesting before parsing.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def dumps_json(doc: Any) -> bytes:
    """Human-readable JSON (2-space indent, sorted keys, trailing newline): how documents are written."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str | os.PathLike, doc: Any, *, force: bool = False, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, dumps_json(doc), force=force, mode=mode)


class _Refused(Exception):
    """Raised by the decoder's hooks; parse_json_strict turns it into InvalidFile."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:  # one reader keeps the first value, another the last: two documents in one file
            raise _Refused(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _int(text: str) -> int:
    # Checked before int(): no 4300-digit ValueError, no quadratic conversion of a huge literal.
    if len(text.lstrip("-")) > len(str(MAX_SAFE_INT)) or abs(int(text)) > MAX_SAFE_INT:
        raise _Refused(f"integer {text[:24]}{'...' if len(text) > 24 else ''} is outside +-(2^53 - 1)")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"number {text[:24]}... has more digits than a double holds")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text} overflows a double")
    if value == 0.0 and any(c in "123456789" for c in re.split("[eE]", text)[0]):
        raise _Refused(f"number {text} underflows to 0")
    return value


def _constant(name: str):
    raise _Refused(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_int=_int, parse_float=_float, parse_constant=_constant)


def _check_depth(text: str) -> None:
    depth = 0
    for m in _TOKENS.finditer(text):
        c = text[m.start()]
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        elif c in "]}":
            depth -= 1


def _check_strings(value: Any) -> None:
    """No lone surrogates (\\ud800 escapes): such a string has no UTF-8 bytes to hash or sign."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Refused("a string holds a lone surrogate escape (not encodable as UTF-8)") from None
    elif isinstance(value, list):
        for v in value:
            _check_strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k)
            _check_strings(v)


def parse_json_strict(raw: bytes, *, where: str) -> Any:
    """Parse one JSON value from ``raw``, refusing (InvalidFile naming ``where``) what two
    readers could read differently or what breaks a reader: invalid UTF-8, a byte-order mark,
    duplicate keys at any depth, NaN / Infinity, integers beyond +-(2^53 - 1), numbers that
    overflow or underflow a double, nesting deeper than MAX_DEPTH, lone surrogates, trailing data."""
    if not isinstance(raw, (bytes, bytearray)):
        raise TypeError("parse_json_strict reads bytes")
    if raw.startswith(codecs.BOM_UTF8):
        raise InvalidFile(f"{where}: starts with a byte-order mark (backmark files are plain UTF-8)")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidFile(f"{where}: not UTF-8 (byte {e.start})") from None
    try:
        _check_depth(text)
        value = _DECODER.decode(text)
        _check_strings(value)
    except _Refused as e:
        raise InvalidFile(f"{where}: {e}") from None
    except json.JSONDecodeError as e:
        what = "trailing data after the JSON value" if e.msg == "Extra data" else f"not valid JSON ({e.msg})"
        raise InvalidFile(f"{where}: {what} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # unreachable after _check_depth; kept so no parse ever raises it
        raise InvalidFile(f"{where}: nested too deep") from None
    return value


def check_kind(doc: Any, *, where: str, kind: str, versions: tuple[int, ...]) -> dict:
    """``doc`` is an object whose ``format`` is ``kind`` and ``version`` one of ``versions`` (an int, exactly)."""
    if not isinstance(doc, dict) or doc.get("format") != kind:
        found = show(doc.get("format")) if isinstance(doc, dict) else repr(type(doc).__name__)
        raise InvalidFile(f"{where}: expected a {kind} file, found format {found}")
    v = doc.get("version")
    if type(v) is not int or v not in versions:  # 1.0 == True == 1 in Python; not in the file
        raise InvalidFile(
            f"{where}: {kind} version {show(v)} is not supported (this backmark reads version {', '.join(map(str, versions))})"
        )
    return doc


def validate_document(schema: Schema, doc: Any, *, where: str) -> None:
    """``schema.validate(doc)`` with the error prefixed by ``where`` (a file, or ``file:line``): for
    documents read some other way (a record embedded in an HTML page), after parse_json_strict and check_kind."""
    try:
        schema.validate(doc, "")
    except InvalidFile as e:
        raise InvalidFile(f"{where}: {e}") from None


def read_json_document(path: str | os.PathLike, *, kind: str, versions: tuple[int, ...]) -> dict:
    """A backmark JSON document, strictly parsed, with its ``format`` and ``version`` checked (no schema)."""
    p = Path(path)
    return check_kind(parse_json_strict(read_file(p, what="file"), where=str(p)), where=str(p), kind=kind, versions=versions)


def load_document(
    path: str | os.PathLike,
    *,
    kind: str,
    versions: tuple[int, ...],
    schema: Schema,
    canonical: Callable[[Any], bytes] | None = dumps_json,
    tampered: type[BackmarkError] = InvalidFile,
) -> dict:
    """Read, parse strictly, check ``format`` / ``version``, validate the whole document against
    ``schema``, and, unless ``canonical`` is None, require the file's bytes to be exactly
    ``canonical(doc)`` (what backmark writes; else ``tampered`` is raised): then what a reader
    sees, what is hashed and what is signed are one document."""
    p = Path(path)
    raw = read_file(p, what="file")
    doc = check_kind(parse_json_strict(raw, where=str(p)), where=str(p), kind=kind, versions=versions)
    validate_document(schema, doc, where=str(p))
    if canonical is not None and canonical(doc) != raw:
        raise tampered(f"{p}: the {kind} file was modified after it was written (not in canonical form)")
    return doc


def load_json_lines(
    path: str | os.PathLike,
    *,
    kind: str,
    versions: tuple[int, ...],
    first: Schema,
    rest: Schema,
    canonical: Callable[[Any], bytes],
    tampered: type[BackmarkError] = InvalidFile,
) -> list[dict]:
    """A JSON Lines file: every line one object, strictly parsed and exactly ``canonical(obj)``
    (else ``tampered``), the file ending in a newline. Line 1 carries ``format`` and ``version``
    and is validated against ``first``; every later line against ``rest``. Errors name ``path:line``."""
    p = Path(path)
    raw = read_file(p, what="file")
    if not raw:
        raise InvalidFile(f"{p}: an empty file; expected a {kind} file")
    if not raw.endswith(b"\n"):
        raise InvalidFile(f"{p}: the last line is incomplete (a torn write or a truncated file)")
    out = []
    for k, line in enumerate(raw[:-1].split(b"\n"), 1):
        where = f"{p}:{k}"
        doc = parse_json_strict(line, where=where)
        if k == 1:
            check_kind(doc, where=where, kind=kind, versions=versions)
        validate_document(first if k == 1 else rest, doc, where=where)
        if canonical(doc) != line:
            raise tampered(f"{where}: the line was edited (not in canonical form)")
        out.append(doc)
    return out


def document_format(raw: bytes, *, where: str) -> str:
    """The ``format`` of a backmark JSON document, or of a JSON Lines file's first line (strictly parsed)."""
    try:
        doc = parse_json_strict(raw, where=where)
    except InvalidFile as whole:
        nl = raw.find(b"\n")
        if nl <= 0:
            raise
        try:
            doc = parse_json_strict(raw[:nl], where=f"{where}:1")
        except InvalidFile:
            raise whole from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, str):
        raise InvalidFile(f"{where}: JSON, but not a backmark file (no format field)")
    return fmt


__all__ = [
    "MAX_DEPTH", "check_kind", "document_format", "dumps_json", "load_document", "load_json_lines",
    "parse_json_strict", "read_json_document", "validate_document", "write_json",
]
