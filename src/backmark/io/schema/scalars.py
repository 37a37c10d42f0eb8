"""The schema language's base class and its scalars (see backmark.io.schema)."""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import math
import re
from typing import Any, NoReturn

from ...errors import InvalidFile
from ..clock import format_time

# The largest integer every JSON reader holds exactly (JavaScript reads numbers as doubles):
# beyond it two readers of one file may see two different numbers.
MAX_SAFE_INT = 2**53 - 1
DEFAULT_MAX_LEN = 10_000  # characters of a string field unless a schema says otherwise


def show(value: Any) -> str:
    """A short, one-line description of a value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"  # JSON's spelling: the user sees the file
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (str, int, float)):
        text = repr(value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"  # only objects built in memory get here


def _at(path: str) -> str:
    return f"{path}: " if path else ""


def _field(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800): no byte string signs as it
        return False
    return True


class Schema:
    """Base class: ``validate(value, path)`` raises InvalidFile naming ``path``; ``describe()`` says what fits."""

    kind = "any"  # the JSON type the schema takes (OneOf uses it to pick the alternative to blame)

    def validate(self, value: Any, path: str = "") -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def fail(self, value: Any, path: str, expected: str | None = None) -> NoReturn:
        raise InvalidFile(f"{_at(path)}expected {expected or self.describe()}, got {show(value)}")


class Str(Schema):
    """A string: ``choices`` (exact values), or ``pattern`` (a full match), at most ``max_len`` characters."""

    kind = "string"

    def __init__(self, *, pattern: str | None = None, choices: tuple[str, ...] | None = None,
                 min_len: int = 0, max_len: int = DEFAULT_MAX_LEN, what: str | None = None):
        self.regex = re.compile(pattern) if pattern else None
        self.choices, self.min_len, self.max_len, self.what = choices, min_len, max_len, what

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return self.what or f"a string of {self.min_len}..{self.max_len} characters"

    def validate(self, value, path=""):
        if not isinstance(value, str) or not self.min_len <= len(value) <= self.max_len or not _encodable(value):
            self.fail(value, path)
        if self.choices is not None and value not in self.choices:
            self.fail(value, path)
        if self.regex is not None and not self.regex.fullmatch(value):
            self.fail(value, path)


class Hex(Str):
    """Lowercase hex of exactly ``nbytes`` bytes (or of 1..``max_bytes`` bytes): one spelling per value."""

    def __init__(self, nbytes: int | None = None, *, max_bytes: int = 4096):
        if nbytes:
            super().__init__(pattern=f"[0-9a-f]{{{2 * nbytes}}}", max_len=2 * nbytes, what=f"{2 * nbytes} lowercase hex digits")
        else:
            super().__init__(pattern="(?:[0-9a-f]{2})+", max_len=2 * max_bytes, what="lowercase hex of whole bytes")


class Base64(Str):
    """Standard base64 with padding, in its one canonical spelling (decoding and re-encoding gives it back)."""

    def __init__(self, *, max_len: int = 2**31):
        super().__init__(pattern=r"[A-Za-z0-9+/]*={0,2}", max_len=max_len, what="canonical base64")

    def validate(self, value, path=""):
        super().validate(value, path)
        try:
            canonical = base64.b64encode(base64.b64decode(value, validate=True)).decode() == value
        except (binascii.Error, ValueError):
            canonical = False
        if not canonical:
            self.fail(value, path)


class Timestamp(Str):
    """A backmark timestamp (io.clock): UTC, ``YYYY-MM-DDTHH:MM:SSZ`` (or ``...SS.mmmZ``), a real date, one spelling."""

    def __init__(self, *, milliseconds: bool = False):
        frac = r"\.\d{3}" if milliseconds else ""
        self.milliseconds = milliseconds
        super().__init__(pattern=rf"\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}{frac}Z", max_len=24,
                         what="a UTC timestamp such as 2026-01-01T00:00:00" + (".000Z" if milliseconds else "Z"))

    def validate(self, value, path=""):
        super().validate(value, path)
        try:
            when = _dt.datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            self.fail(value, path)
        if format_time(when, milliseconds=self.milliseconds) != value:
            self.fail(value, path)


class Int(Schema):
    """An integer in min..max (never a boolean, never a float such as 1.0)."""

    kind = "integer"

    def __init__(self, min: int = -MAX_SAFE_INT, max: int = MAX_SAFE_INT):
        self.min, self.max = min, max

    def describe(self) -> str:
        if self.max == MAX_SAFE_INT:
            return f"an integer >= {self.min}"
        return f"an integer in {self.min}..{self.max}"

    def validate(self, value, path=""):
        if type(value) is not int or not self.min <= value <= self.max:
            self.fail(value, path)


class Float(Schema):
    """A finite float in [min, max] (open bounds with ``exclusive=True``); an integer is not a float."""

    kind = "number"

    def __init__(self, min: float = -math.inf, max: float = math.inf, *, exclusive: bool = False):
        self.min, self.max, self.exclusive = min, max, exclusive

    def describe(self) -> str:
        if (self.min, self.max) == (-math.inf, math.inf):
            return "a finite number"
        lo, hi = ("(", ")") if self.exclusive else ("[", "]")
        return f"a finite number in {lo}{self.min:g}, {self.max:g}{hi}"

    def validate(self, value, path=""):
        if type(value) is not float or not math.isfinite(value):
            self.fail(value, path)
        inside = self.min < value < self.max if self.exclusive else self.min <= value <= self.max
        if not inside:
            self.fail(value, path)


class Bool(Schema):
    kind = "boolean"

    def describe(self) -> str:
        return "true or false"

    def validate(self, value, path=""):
        if not isinstance(value, bool):
            self.fail(value, path)


class Const(Schema):
    """Exactly this value, of this type (``Const(1)`` refuses ``1.0`` and ``true``)."""

    def __init__(self, value: str | int | float | bool | None):
        self.value = value
        self.kind = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}[type(value)]

    def describe(self) -> str:
        return show(self.value)

    def validate(self, value, path=""):
        if type(value) is not type(self.value) or value != self.value:
            self.fail(value, path)


__all__ = ["MAX_SAFE_INT", "Base64", "Bool", "Const", "Float", "Hex", "Int", "Schema", "Str", "Timestamp", "show"]
