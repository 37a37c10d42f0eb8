"""PVerify: one-time verification with several trigger sets and a hash-chained spent log.

A key made with ``num_sets = m`` holds m trigger sets of n elements (set j = flat indices
j*n .. (j+1)*n - 1); the model is marked with all of them. Each verification opens ONE
unspent set, chosen by the verifier's nonce, and records it in the spent log; a spent set
is never opened again, so each verification reveals fresh triggers and the others stay secret.

    result = pverify(model, mk, vk, "spent-log.jsonl", nonce=b"chosen by the verifier")
    result.verified, result.set_index, result.head_after

- Selection: ``set = unspent[SHA256(tag || vk fingerprint || log head || nonce) mod |unspent|]``.
  The owner cannot choose the set: the nonce comes from the verifier after the log head is fixed.
- Threshold: each set is tested at alpha / m (union bound), so even an owner who could open
  whichever of the m sets suited them makes a false claim with probability <= alpha.
- Spent log: JSON lines; line 1 a header bound to the key, each later line an entry naming
  the set, the nonce, the spent sets before it and the result, chained by SHA-256. Rewritten
  atomically under a lock on its folder. File format: docs/formats.md.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.keygen import MarkingKey, VerificationKey
from ..core.stats import DEFAULT_ALPHA
from ..core.verify import VerificationResult, verify
from ..crypto import canonical_json
from ..errors import InvalidFile, KeyMismatch, SpentSet, TamperedRecord
from ..io.clock import utc_now
from ..io.files import atomic_write_bytes, read_file
from ..version import __version__

SPENT_LOG_FORMAT = "backmark-spent-log"
SPENT_LOG_VERSION = 1
_SELECT_TAG = b"backmark/pverify/select/v1"
_CHAIN_TAG = b"backmark/spent-log/v1"
_ENTRY_FIELDS = {"seq", "prev", "set", "nonce", "spent_before", "time", "model", "result"}
MAX_NONCE_BYTES = 1024


def set_indices(vk: VerificationKey, set_index: int) -> list[int]:
    """The flat element indices of trigger set ``set_index``."""
    if not 0 <= set_index < vk.num_sets:
        raise SpentSet(f"set {set_index} does not exist: the key has sets 0..{vk.num_sets - 1}")
    n = vk.set_size
    return list(range(set_index * n, (set_index + 1) * n))


def set_alpha(alpha: float, num_sets: int) -> float:
    """The per-set significance level: alpha / m (union bound over the m sets)."""
    return alpha / num_sets


def select_set(vk_fingerprint: str, head: str, nonce: bytes, unspent: Sequence[int]) -> int:
    """The set the verifier's ``nonce`` picks among ``unspent`` (sorted), given the log ``head``.

    Deterministic: anyone holding the key, the head and the nonce recomputes it. The
    reduction of a 256-bit hash mod |unspent| is uniform up to |unspent| / 2^256.
    """
    if not unspent:
        raise SpentSet("every trigger set of this key is spent; make a new key (backmark keygen --sets M)")
    _check_nonce(nonce)
    digest = hashlib.sha256(_SELECT_TAG + bytes.fromhex(vk_fingerprint) + bytes.fromhex(head) + nonce).digest()
    pool = sorted(unspent)
    return pool[int.from_bytes(digest, "big") % len(pool)]


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or not 1 <= len(nonce) <= MAX_NONCE_BYTES:
        raise SpentSet(f"the verifier's nonce must be 1 to {MAX_NONCE_BYTES} bytes")


def _head0(header: dict) -> str:
    return hashlib.sha256(_CHAIN_TAG + canonical_json(header)).hexdigest()


def _next_head(prev: str, entry: dict) -> str:
    return hashlib.sha256(_CHAIN_TAG + bytes.fromhex(prev) + canonical_json(entry)).hexdigest()


@dataclass(frozen=True)
class SpentLog:
    """A validated spent log: its header, entries, and the chain heads after each line."""

    path: Path
    header: dict
    entries: tuple[dict, ...]
    heads: tuple[str, ...]  # heads[0]: after the header; heads[k]: after entry k

    @property
    def head(self) -> str:
        return self.heads[-1]

    @property
    def num_sets(self) -> int:
        return self.header["num_sets"]

    @property
    def spent(self) -> list[int]:
        return sorted(e["set"] for e in self.entries)

    @property
    def unspent(self) -> list[int]:
        done = set(self.spent)
        return [j for j in range(self.num_sets) if j not in done]

    def next_set(self, nonce: bytes) -> int:
        """The set ``nonce`` selects now (raises SpentSet if none is left)."""
        return select_set(self.header["verification_key"], self.head, nonce, self.unspent)

    def to_bytes(self) -> bytes:
        return b"".join(canonical_json(d) + b"\n" for d in (self.header, *self.entries))

    def save(self, *, force: bool = False) -> Path:
        """Write the log atomically (an existing file is replaced only with ``force``)."""
        return atomic_write_bytes(self.path, self.to_bytes(), force=force, mode=0o644)  # a public record

    def appended(self, entry: dict) -> SpentLog:
        return SpentLog(self.path, self.header, (*self.entries, entry), (*self.heads, _next_head(self.head, entry)))

    # -- construction ---------------------------------------------------------------
    @classmethod
    def new(cls, path: str | os.PathLike, vk: VerificationKey, *, created: str | None = None) -> SpentLog:
        header = {
            "format": SPENT_LOG_FORMAT,
            "version": SPENT_LOG_VERSION,
            "verification_key": vk.fingerprint,
            "num_sets": vk.num_sets,
            "set_size": vk.set_size,
            "created": created or utc_now(),
            "backmark": __version__,
        }
        return cls(Path(path), header, (), (_head0(header),))

    @classmethod
    def load(cls, path: str | os.PathLike, vk: VerificationKey | None = None) -> SpentLog:
        """Read and check a spent log: every line canonical, the chain intact, every set
        the one its nonce selected and opened once. Raises TamperedRecord otherwise."""
        p = Path(path)
        raw = read_file(p, what="spent log")
        lines = raw.split(b"\n")
        if not raw.endswith(b"\n") or not lines[0]:
            raise TamperedRecord(f"{p}: not a complete spent log (it must end with a newline)")
        docs = []
        for k, line in enumerate(lines[:-1], 1):
            try:
                doc = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise (InvalidFile if k == 1 else TamperedRecord)(f"{p}:{k}: not a JSON line; is this a spent log?") from None
            if canonical_json(doc) != line:
                raise TamperedRecord(f"{p}:{k}: the line was edited (not in canonical form)")
            docs.append(doc)
        header = docs[0]
        if not isinstance(header, dict) or header.get("format") != SPENT_LOG_FORMAT:
            raise InvalidFile(f"{p}: expected a {SPENT_LOG_FORMAT} file")
        if header.get("version") != SPENT_LOG_VERSION:
            raise InvalidFile(f"{p}: spent log version {header.get('version')!r} is not supported")
        log = cls(p, header, (), (_head0(header),))
        if vk is not None:
            log.check_key(vk)
        for k, entry in enumerate(docs[1:], 1):
            log._check_entry(k, entry)
            log = log.appended(entry)
        return log

    def check_key(self, vk: VerificationKey) -> None:
        h = self.header
        if h.get("verification_key") != vk.fingerprint:
            raise KeyMismatch(
                f"{self.path} is the spent log of key {str(h.get('verification_key'))[:16]}..., not of {vk.fingerprint[:16]}..."
            )
        if h.get("num_sets") != vk.num_sets or h.get("set_size") != vk.set_size:
            raise TamperedRecord(f"{self.path}: the header's set count or size differs from the key's")

    def _check_entry(self, k: int, e) -> None:
        where = f"{self.path}:{k + 1}"
        if not isinstance(e, dict) or set(e) != _ENTRY_FIELDS:
            raise TamperedRecord(f"{where}: an entry with missing or unknown fields")
        if e["seq"] != k or e["prev"] != self.head:
            raise TamperedRecord(f"{where}: the hash chain is broken (an entry was removed, reordered or edited)")
        if e["spent_before"] != self.spent:
            raise TamperedRecord(f"{where}: the entry's list of spent sets disagrees with the log")
        if not isinstance(e["set"], int) or not 0 <= e["set"] < self.num_sets:
            raise TamperedRecord(f"{where}: set {e['set']!r} is out of range")
        if e["set"] in self.spent:
            raise TamperedRecord(f"{where}: set {e['set']} is opened a second time")
        try:
            nonce = bytes.fromhex(e["nonce"])
        except (TypeError, ValueError):
            raise TamperedRecord(f"{where}: malformed nonce") from None
        if self.next_set(nonce) != e["set"]:
            raise TamperedRecord(f"{where}: set {e['set']} is not the set its nonce selects")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the log's folder (the log itself is replaced, not edited)."""
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def open_log(path: str | os.PathLike, vk: VerificationKey) -> SpentLog:
    """The spent log at ``path`` (checked against ``vk``), or a new empty one if there is none."""
    p = Path(path)
    return SpentLog.load(p, vk) if p.exists() else SpentLog.new(p, vk)


@dataclass(frozen=True)
class PVerifyResult:
    set_index: int
    nonce: bytes
    seq: int
    head_before: str
    head_after: str
    spent_before: list[int]
    alpha: float  # overall, before the union bound
    num_sets: int
    verification: VerificationResult

    @property
    def verified(self) -> bool:
        return self.verification.verified

    def as_dict(self) -> dict:
        return {
            **self.verification.as_dict(),
            "pverify": self.pverify_dict(),
        }

    def pverify_dict(self) -> dict:
        return {
            "set": self.set_index,
            "nonce": self.nonce.hex(),
            "seq": self.seq,
            "head_before": self.head_before,
            "head_after": self.head_after,
            "spent_before": self.spent_before,
            "alpha_total": self.alpha,
            "num_sets": self.num_sets,
        }

    def summary(self) -> str:
        left = self.num_sets - len(self.spent_before) - 1
        return (
            f"{self.verification.summary()}\n"
            f"set {self.set_index} of {self.num_sets} opened and spent (entry {self.seq}; {left} sets left); "
            f"alpha {self.alpha:.3g} split over {self.num_sets} sets; log head {self.head_after[:16]}"
        )


def pverify(
    model,
    mk: MarkingKey,
    vk: VerificationKey,
    log_path: str | os.PathLike,
    *,
    nonce: bytes,
    alpha: float = DEFAULT_ALPHA,
    set_index: int | None = None,
    device="cpu",
    model_info: dict | None = None,
    now: str | None = None,
) -> PVerifyResult:
    """Open the set the verifier's ``nonce`` selects, verify ``model`` on it, record it as spent.

    ``set_index`` given (e.g. announced by the verifier beforehand) must be that set and
    unspent, else SpentSet. Nothing is recorded if the model cannot be queried.
    ``model_info`` ({"name", "sha256"}) goes into the log entry.
    """
    _check_nonce(nonce)
    path = Path(log_path)
    with _locked(path):
        log = open_log(path, vk)
        if set_index is not None and set_index in log.spent:
            raise SpentSet(f"set {set_index} was already opened (spent-log entry {log.spent.index(set_index) + 1}); it is never accepted again")
        chosen = log.next_set(nonce)
        if set_index is not None and set_index != chosen:
            raise SpentSet(f"set {set_index} is not the set this nonce selects (it selects set {chosen})")
        result = verify(model, mk, vk, alpha=set_alpha(alpha, vk.num_sets), indices=set_indices(vk, chosen), device=device)
        d = result.decision
        entry = {
            "seq": len(log.entries) + 1,
            "prev": log.head,
            "set": chosen,
            "nonce": nonce.hex(),
            "spent_before": log.spent,
            "time": now or utc_now(),
            "model": model_info or {},
            "result": {
                "matches": d.matches, "n": d.n, "threshold": d.threshold, "alpha": d.alpha,
                "p_value": d.p_value, "log2_p_value": d.log2_p_value, "verified": d.verified,
            },
        }
        new = log.appended(entry)
        new.save(force=True)
    return PVerifyResult(
        set_index=chosen, nonce=nonce, seq=entry["seq"], head_before=log.head, head_after=new.head,
        spent_before=log.spent, alpha=alpha, num_sets=vk.num_sets, verification=result,
    )


def log_summary(log: SpentLog) -> dict:
    """What ``backmark spent`` prints: the key, the head, and each opened set with its result."""
    return {
        "spent_log": str(log.path),
        "verification_key": log.header["verification_key"],
        "num_sets": log.num_sets,
        "set_size": log.header["set_size"],
        "head": log.head,
        "spent": log.spent,
        "unspent": log.unspent,
        "entries": [
            {"seq": e["seq"], "set": e["set"], "time": e["time"], "verified": e["result"].get("verified"),
             "matches": e["result"].get("matches"), "n": e["result"].get("n"), "model": e["model"].get("name")}
            for e in log.entries
        ],
    }


__all__ = [
    "PVerifyResult",
    "SpentLog",
    "log_summary",
    "open_log",
    "pverify",
    "select_set",
    "set_alpha",
    "set_indices",
]
