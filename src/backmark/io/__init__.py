"""The bottom layer: files written atomically, JSON documents, hashes, the clock."""
from .clock import Clock, format_epoch, format_time, parse_time, system_clock, utc_now
from .documents import dumps_json, load_document, load_json_lines, parse_json_strict, read_json_document, write_json
from .files import atomic_open, atomic_write_bytes, check_writable
from .hashing import file_sha256, sha256_hex

__all__ = [
    "Clock",
    "atomic_open",
    "atomic_write_bytes",
    "check_writable",
    "dumps_json",
    "file_sha256",
    "format_epoch",
    "format_time",
    "load_document",
    "load_json_lines",
    "parse_json_strict",
    "parse_time",
    "read_json_document",
    "sha256_hex",
    "system_clock",
    "utc_now",
    "write_json",
]
