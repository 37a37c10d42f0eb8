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

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..crypto import canonical_json, sha256_hex
from ..errors import InvalidFile
from ..io.clock import format_epoch
from ..io.documents import load_json_lines
from ..io.schema import Const, Hex, Int, List, Nullable, Obj, Str, Tagged, Timestamp
from ..version import __version__

AUDIT_FORMAT = "backmark-audit-log"
AUDIT_VERSION = 1
GENESIS = "0" * 64

# What each kind of record holds (docs/formats.md, "Audit log"). Strings a server controls
# (content type, error text) are bounded by http.client's 64 KiB header line.
_TEXT = Str(max_len=65536)
_COMMON = {"seq": Int(0), "time": Timestamp(milliseconds=True), "prev": Hex(32), "hash": Hex(32)}
_OPEN = {
    "open": Obj({"format": Const(AUDIT_FORMAT), "version": Const(AUDIT_VERSION), "backmark": Str(max_len=64), "target": _TEXT}),
}
_LATER = {
    "resume": Obj({"target": _TEXT}),
    "query": Obj({"images": Int(0), "batch_size": Int(1), "target": _TEXT}),
    "exchange": Obj(
        {
            "attempt": Int(1),
            "request": Obj(
                {"method": Str(pattern="[A-Z]{1,16}"), "url": _TEXT, "sha256": Hex(32), "bytes": Int(0), "images": Int(0)}
            ),
            "response": Nullable(Obj({"status": Int(0, 999), "sha256": Hex(32), "bytes": Int(0), "content_type": _TEXT})),
            "elapsed_us": Int(0),
            "outcome": Str(choices=("ok", "error")),
        },
        optional={"error": _TEXT, "labels": List(Int(0))},
    ),
}
OPEN_RECORD = Tagged("kind", _OPEN, common=_COMMON)
LATER_RECORD = Tagged("kind", _LATER, common=_COMMON)


def record_hash(record: dict) -> str:
    return sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))


def _timestamp(clock: Callable[[], float]) -> str:
    return format_epoch(clock(), milliseconds=True)


def read_audit_log(path: str | os.PathLike, *, head: str | None = None) -> list[dict]:
    """All records of an audit log, after checking the header and every link of the chain.

    Strict (io.documents.load_json_lines): every line canonical JSON of a record of a known kind.
    A chain shows edits, removals and reorderings, but a log cut after any record is a valid
    shorter log: ``head`` (the last hash published elsewhere, e.g. a verification result's
    ``queries.audit_head``) refuses a log that does not end there."""
    p = Path(path)
    records = load_json_lines(p, kind=AUDIT_FORMAT, versions=(AUDIT_VERSION,), first=OPEN_RECORD, rest=LATER_RECORD,
                              canonical=canonical_json)
    prev = GENESIS
    for i, rec in enumerate(records):
        if rec["seq"] != i:
            raise InvalidFile(f"{p}:{i + 1}: not record {i} of an audit log (seq {rec['seq']})")
        if rec["prev"] != prev or rec["hash"] != record_hash(rec):
            raise InvalidFile(f"{p}:{i + 1}: the hash chain breaks at record {i} (records were edited, removed or reordered)")
        prev = rec["hash"]
    if head is not None and prev != head:
        raise InvalidFile(f"{p}: the log ends at {prev[:16]}..., not at the published head {head[:16]}... (cut or extended)")
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
        # The reader's schema, checked before writing: a record it would refuse never reaches the log.
        (OPEN_RECORD if self.seq == 0 else LATER_RECORD).validate(rec, f"audit record {self.seq}")
        with open(self.path, "ab") as f:
            f.write(canonical_json(rec) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.seq, self.head = self.seq + 1, rec["hash"]
        return rec["hash"]


__all__ = ["AUDIT_FORMAT", "AUDIT_VERSION", "GENESIS", "LATER_RECORD", "OPEN_RECORD", "AuditLog", "read_audit_log", "record_hash"]
