"""A hash-chained audit log of every request sent to a remote model and every answer.

JSON Lines, one record per line; each record carries the SHA-256 of the previous one
(``prev``) and its own (``hash`` = SHA-256 of the record's canonical JSON without ``hash``),
so removing, reordering or editing any record breaks the chain from there on. Request and
response bodies are recorded by their SHA-256 and size (plus the labels read from an
answer), so whoever kept the bodies, the owner or the model's operator, can match them.
Format: docs/formats.md ("Audit log").

    log = AuditLog("audit.jsonl", target="http://127.0.0.1:8000/v2/models/m")
    log.append("exchange", request={...}, response={...})
    records = read_audit_log("audit.jsonl")      # InvalidFile if the chain is broken
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..crypto import canonical_json, sha256_hex
from ..errors import InvalidFile
from ..io.clock import format_epoch
from ..io.files import read_file
from ..version import __version__

AUDIT_FORMAT = "backmark-audit-log"
AUDIT_VERSION = 1
GENESIS = "0" * 64


def record_hash(record: dict) -> str:
    return sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))


def _timestamp(clock: Callable[[], float]) -> str:
    return format_epoch(clock(), milliseconds=True)


def read_audit_log(path: str | os.PathLike) -> list[dict]:
    """All records of an audit log, after checking the header and every link of the chain."""
    p = Path(path)
    lines = read_file(p, what="audit log").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    records, prev = [], GENESIS
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            raise InvalidFile(f"{p}: line {i + 1} is not JSON (a torn or edited audit log)") from None
        if not isinstance(rec, dict) or rec.get("seq") != i:
            raise InvalidFile(f"{p}: line {i + 1} is not record {i} of an audit log")
        if i == 0 and (rec.get("format") != AUDIT_FORMAT or rec.get("version") != AUDIT_VERSION):
            raise InvalidFile(f"{p}: not a {AUDIT_FORMAT} version {AUDIT_VERSION} file")
        if rec.get("prev") != prev or rec.get("hash") != record_hash(rec):
            raise InvalidFile(f"{p}: the hash chain breaks at record {i} (records were edited, removed or reordered)")
        records.append(rec)
        prev = rec["hash"]
    if not records:
        raise InvalidFile(f"{p}: an empty audit log")
    return records


class AuditLog:
    """Append-only; reopening an existing log checks its chain and continues it."""

    def __init__(self, path: str | os.PathLike, *, target: str, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        if self.path.exists() and self.path.stat().st_size > 0:
            last = read_audit_log(self.path)[-1]
            self.seq, self.head = last["seq"] + 1, last["hash"]
            self.append("resume", target=target)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.seq, self.head = 0, GENESIS
            self.append("open", format=AUDIT_FORMAT, version=AUDIT_VERSION, backmark=__version__, target=target)

    def append(self, kind: str, **fields) -> str:
        """Write one record (flushed and fsynced before returning); returns its hash."""
        rec = {"seq": self.seq, "time": _timestamp(self.clock), "kind": kind, **fields, "prev": self.head}
        rec["hash"] = record_hash(rec)
        with open(self.path, "ab") as f:
            f.write(canonical_json(rec) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.seq, self.head = self.seq + 1, rec["hash"]
        return rec["hash"]


__all__ = ["AUDIT_FORMAT", "AUDIT_VERSION", "GENESIS", "AuditLog", "read_audit_log", "record_hash"]
