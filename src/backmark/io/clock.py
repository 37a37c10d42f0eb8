"""The clock: every timestamp backmark writes comes from here, so tests (and callers) can pass their own.

Timestamps are UTC, whole seconds, ISO 8601 with a ``Z``: ``2026-12-01T10:26:36Z``.
Functions that record a time take ``now`` (such a string) or ``clock`` (a callable
returning an aware :class:`datetime.datetime`) and default to :func:`system_clock`.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

Clock = Callable[[], _dt.datetime]


def system_clock() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def format_time(when: _dt.datetime, *, milliseconds: bool = False) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds; or ``...SS.mmmZ``)."""
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = when.astimezone(_dt.timezone.utc)
    if milliseconds:
        return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return utc.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def format_epoch(seconds: float, *, milliseconds: bool = False) -> str:
    """Seconds since the Unix epoch (``time.time()``) as a backmark timestamp string."""
    return format_time(_dt.datetime.fromtimestamp(seconds, _dt.timezone.utc), milliseconds=milliseconds)


def utc_now(clock: Clock = system_clock) -> str:
    """The current time from ``clock`` as a backmark timestamp string."""
    return format_time(clock())


def parse_time(text: str, *, milliseconds: bool = False) -> _dt.datetime:
    """A backmark timestamp string (``...SS.mmmZ`` with ``milliseconds``) back to an aware datetime;
    ValueError if it is not one."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not a UTC timestamp: {text!r}")
    when = _dt.datetime.fromisoformat(text[:-1] + "+00:00")
    if format_time(when, milliseconds=milliseconds) != text:
        raise ValueError(f"not a canonical UTC timestamp: {text!r}")
    return when
