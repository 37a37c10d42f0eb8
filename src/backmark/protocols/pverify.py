"""PVerify: one-time verification with several trigger sets and the VERIFIER's spent log.

A key made with ``num_sets = m`` holds m trigger sets of n elements (set j = flat indices
j*n .. (j+1)*n - 1); the model is marked with all of them. Each verification opens ONE
unspent set, chosen from the verifier's nonce and the verifier's log head, and the verifier
records it, signed with the verifier's own key, in the verifier's spent log: a spent set is
never opened again, so each verification reveals fresh triggers and the others stay secret.

    result = pverify(model, mk, vk, "spent-log.jsonl", nonce=b"chosen by the verifier", verifier_key=vkey)
    result.verified, result.set_index, result.chain        # chain: the signed log up to this entry

Who holds what (docs/public-verification.md): the owner holds the marking key and reveals
the selected set; the verifier holds the spent log and the key that signs it. A report of a
one-time verification embeds the verifier-signed chain up to its own entry, so anyone can
check the selection, and a later report is checked against an earlier one (a verifier log
that was rolled back, or a claimant's copy that was edited, truncated or deleted, shows:
:func:`check_extends`).

- Selection: ``set = unspent[SHA256(tag || vk fingerprint || log head || nonce) mod |unspent|]``.
- Threshold: each set is tested at alpha / m (union bound), so even an owner who could open
  whichever of the m sets suited them makes a false claim with probability <= alpha.
- Spent log: JSON lines; line 1 a header naming the key and the verifier's public key, each
  later line an entry naming the set, the nonce, the spent sets before it and the result,
  chained by SHA-256 and signed by the verifier over the chain head it makes. Rewritten
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
from ..core.verify import VerificationResult, check_alpha, verify
from ..crypto import OwnerKey, canonical_json, verify_signature
from ..errors import InvalidFile, KeyMismatch, SpentSet, TamperedKey, TamperedRecord
from ..io.clock import utc_now
from ..io.files import atomic_write_bytes, read_file
from ..version import __version__

SPENT_LOG_FORMAT = "backmark-spent-log"
SPENT_LOG_VERSION = 2
_SELECT_TAG = b"backmark/pverify/select/v1"
_CHAIN_TAG = b"backmark/spent-log/v2"
_SIGN_TAG = b"backmark/spent-log/entry/v2"
_HEADER_FIELDS = {"format", "version", "log_id", "verification_key", "num_sets", "set_size", "verifier_public_key", "created", "backmark"}
_ENTRY_FIELDS = {"seq", "prev", "set", "nonce", "spent_before", "time", "model", "result", "signature"}
_RESULT_FIELDS = {"matches", "n", "threshold", "alpha", "p_value", "log2_p_value", "passed", "verdict"}
MAX_NONCE_BYTES = 1024


def set_indices(vk: VerificationKey, set_index: int) -> list[int]:
    """The flat element indices of trigger set ``set_index``."""
    if not (isinstance(set_index, int) and 0 <= set_index < vk.num_sets):
        raise SpentSet(f"set {set_index!r} does not exist: the key has sets 0..{vk.num_sets - 1}")
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
    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    return hashlib.sha256(_CHAIN_TAG + bytes.fromhex(prev) + canonical_json(unsigned)).hexdigest()


def _signed_message(head: str) -> bytes:
    return _SIGN_TAG + bytes.fromhex(head)


def _is_hex(value, nbytes: int | None = None) -> bool:
    if not isinstance(value, str) or value != value.lower() or len(value) % 2 or (nbytes is not None and len(value) != 2 * nbytes):
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _is_int(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


@dataclass(frozen=True)
class SpentChain:
    """The verifier's record of opened sets: a header and signed entries, chained by SHA-256.

    ``heads[0]`` is the head after the header, ``heads[k]`` after entry k. Only
    :meth:`checked` builds one from untrusted data; :meth:`appended` extends a checked one.
    """

    header: dict
    entries: tuple[dict, ...]
    heads: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.heads[-1]

    @property
    def num_sets(self) -> int:
        return self.header["num_sets"]

    @property
    def verifier_public_key(self) -> str:
        return self.header["verifier_public_key"]

    @property
    def verifier_fingerprint(self) -> str:
        return hashlib.sha256(bytes.fromhex(self.verifier_public_key)).hexdigest()

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

    def as_document(self) -> dict:
        return {"header": self.header, "entries": list(self.entries)}

    def to_bytes(self) -> bytes:
        return b"".join(canonical_json(d) + b"\n" for d in (self.header, *self.entries))

    def appended(self, entry: dict) -> SpentChain:
        return SpentChain(self.header, (*self.entries, entry), (*self.heads, _next_head(self.head, entry)))

    def prefix(self, count: int) -> SpentChain:
        """The chain as it stood after its first ``count`` entries."""
        return SpentChain(self.header, self.entries[:count], self.heads[: count + 1])

    # -- construction and checking ------------------------------------------------
    @classmethod
    def new(cls, vk: VerificationKey, verifier_public_key: str, *, created: str | None = None) -> SpentChain:
        header = {
            "format": SPENT_LOG_FORMAT,
            "version": SPENT_LOG_VERSION,
            "log_id": os.urandom(16).hex(),  # a log started again (to re-open a set) is never the same log
            "verification_key": vk.fingerprint,
            "num_sets": vk.num_sets,
            "set_size": vk.set_size,
            "verifier_public_key": verifier_public_key,
            "created": created or utc_now(),
            "backmark": __version__,
        }
        return cls(header, (), (_head0(header),))

    @classmethod
    def checked(cls, header, entries, *, where: str = "spent log", vk: VerificationKey | None = None) -> SpentChain:
        """A chain from untrusted data: every field well formed, the hash chain intact, every
        entry signed by the header's verifier, every set the one its nonce selected and opened
        once. Raises InvalidFile (not a spent log at all) or TamperedRecord."""
        if not isinstance(header, dict) or header.get("format") != SPENT_LOG_FORMAT:
            raise InvalidFile(f"{where}: expected a {SPENT_LOG_FORMAT} header")
        if header.get("version") != SPENT_LOG_VERSION or isinstance(header.get("version"), bool):
            raise InvalidFile(f"{where}: spent log version {header.get('version')!r} is not supported (this backmark reads {SPENT_LOG_VERSION})")
        if set(header) != _HEADER_FIELDS:
            raise TamperedRecord(f"{where}: the header's fields are missing or unknown")
        if not (_is_hex(header["log_id"], 16) and _is_hex(header["verification_key"], 32) and _is_hex(header["verifier_public_key"], 32)
                and _is_int(header["num_sets"], 1, 1 << 20) and _is_int(header["set_size"], 1, 1 << 24)
                and isinstance(header["created"], str) and isinstance(header["backmark"], str)):
            raise TamperedRecord(f"{where}: malformed header")
        chain = cls(header, (), (_head0(header),))
        if vk is not None:
            chain.check_key(vk, where=where)
        if not isinstance(entries, (list, tuple)):
            raise TamperedRecord(f"{where}: the entries are not a list")
        for k, entry in enumerate(entries, 1):
            chain._check_entry(k, entry, where)
            chain = chain.appended(entry)
        return chain

    def check_key(self, vk: VerificationKey, *, where: str = "spent log") -> None:
        h = self.header
        if h["verification_key"] != vk.fingerprint:
            raise KeyMismatch(f"{where} is the spent log of key {h['verification_key'][:16]}..., not of {vk.fingerprint[:16]}...")
        if h["num_sets"] != vk.num_sets or h["set_size"] != vk.set_size:
            raise TamperedRecord(f"{where}: the header's set count or size differs from the key's")

    def _check_entry(self, k: int, e, where: str) -> None:
        at = f"{where}, entry {k}"
        if not isinstance(e, dict) or set(e) != _ENTRY_FIELDS:
            raise TamperedRecord(f"{at}: missing or unknown fields")
        if not _is_int(e["seq"], 1, 1 << 30) or e["seq"] != k or e["prev"] != self.head:
            raise TamperedRecord(f"{at}: the hash chain is broken (an entry was removed, reordered or edited)")
        if e["spent_before"] != self.spent:
            raise TamperedRecord(f"{at}: the entry's list of spent sets disagrees with the log")
        if not _is_int(e["set"], 0, self.num_sets - 1):
            raise TamperedRecord(f"{at}: set {e['set']!r} is out of range")
        if e["set"] in self.spent:
            raise TamperedRecord(f"{at}: set {e['set']} is opened a second time")
        if not _is_hex(e["nonce"]) or not 1 <= len(e["nonce"]) // 2 <= MAX_NONCE_BYTES:
            raise TamperedRecord(f"{at}: malformed nonce")
        if self.next_set(bytes.fromhex(e["nonce"])) != e["set"]:
            raise TamperedRecord(f"{at}: set {e['set']} is not the set its nonce selects")
        if not isinstance(e["time"], str) or not isinstance(e["model"], dict) or not isinstance(e["result"], dict) \
                or set(e["result"]) != _RESULT_FIELDS:
            raise TamperedRecord(f"{at}: malformed time, model or result")
        if not _is_hex(e["signature"], 64):
            raise TamperedRecord(f"{at}: malformed verifier signature")
        try:
            verify_signature(self.verifier_public_key, e["signature"], _signed_message(_next_head(self.head, e)), what="spent-log entry")
        except TamperedKey:
            raise TamperedRecord(f"{at}: the verifier's signature does not verify (the entry was edited or signed by another key)") from None


def check_extends(later: SpentChain, earlier: SpentChain) -> None:
    """Raise TamperedRecord unless ``later`` extends ``earlier`` (same verifier and key, every
    earlier entry still there unchanged): a spent log that was rolled back, or re-started,
    to re-open a set shows here."""
    if later.header != earlier.header:
        raise TamperedRecord("the two records are of different spent logs (another header: a log re-started, or another verifier)")
    if len(later.entries) < len(earlier.entries) or later.heads[: len(earlier.heads)] != earlier.heads:
        raise TamperedRecord(
            f"the spent log was rolled back: the later record does not contain the earlier one's {len(earlier.entries)} entries "
            f"(head {earlier.head[:16]}...)"
        )


@dataclass(frozen=True)
class SpentLog:
    """The verifier's spent log file: a :class:`SpentChain` at a path."""

    path: Path
    chain: SpentChain

    def __getattr__(self, name):  # head, spent, unspent, next_set, entries, header ... of the chain
        return getattr(self.chain, name)

    def save(self, *, force: bool = False) -> Path:
        """Write the log atomically (an existing file is replaced only with ``force``)."""
        return atomic_write_bytes(self.path, self.chain.to_bytes(), force=force, mode=0o644)  # a public record

    @classmethod
    def new(cls, path: str | os.PathLike, vk: VerificationKey, verifier_public_key: str, *, created: str | None = None) -> SpentLog:
        return cls(Path(path), SpentChain.new(vk, verifier_public_key, created=created))

    @classmethod
    def load(cls, path: str | os.PathLike, vk: VerificationKey | None = None) -> SpentLog:
        """Read and check a spent log file: every line canonical JSON, then :meth:`SpentChain.checked`."""
        p = Path(path)
        raw = read_file(p, what="spent log")
        lines = raw.split(b"\n")
        if not raw.endswith(b"\n") or not lines[0]:
            raise TamperedRecord(f"{p}: not a complete spent log (it must end with a newline)")
        docs = []
        for k, line in enumerate(lines[:-1], 1):
            try:
                doc = json.loads(line, parse_constant=_refuse_constant)
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise (InvalidFile if k == 1 else TamperedRecord)(f"{p}:{k}: not a JSON line; is this a spent log?") from None
            if canonical_json(doc) != line:
                raise TamperedRecord(f"{p}:{k}: the line was edited (not in canonical form)")
            docs.append(doc)
        return cls(p, SpentChain.checked(docs[0], docs[1:], where=str(p), vk=vk))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number")


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


def open_log(path: str | os.PathLike, vk: VerificationKey, verifier_public_key: str) -> SpentLog:
    """The verifier's spent log at ``path`` (checked against ``vk`` and the verifier), or a new one."""
    p = Path(path)
    if not p.exists():
        return SpentLog.new(p, vk, verifier_public_key)
    log = SpentLog.load(p, vk)
    if log.chain.verifier_public_key != verifier_public_key:
        raise KeyMismatch(f"{p} is kept by verifier {log.chain.verifier_fingerprint[:16]}..., not by this verifier key")
    return log


@dataclass(frozen=True)
class PVerifyResult:
    set_index: int
    nonce: bytes
    alpha: float  # overall, before the union bound
    chain: SpentChain  # the verifier's chain, up to and including this verification's entry
    verification: VerificationResult

    @property
    def verified(self) -> bool:
        return self.verification.verified

    @property
    def entry(self) -> dict:
        return self.chain.entries[-1]

    def as_dict(self) -> dict:
        return {**self.verification.as_dict(), "pverify": self.selection()}

    def selection(self) -> dict:
        """What a report records of the selection: the set, the nonce, and the verifier's signed chain."""
        return {"kind": "pverify", "set": self.set_index, "num_sets": self.chain.num_sets, "nonce": self.nonce.hex(),
                "alpha_total": self.alpha, "log": self.chain.as_document()}

    def summary(self) -> str:
        left = len(self.chain.unspent)
        return (
            f"{self.verification.summary()}\n"
            f"set {self.set_index} of {self.chain.num_sets} opened and spent (entry {len(self.chain.entries)}; {left} sets left); "
            f"alpha {self.alpha:.3g} split over {self.chain.num_sets} sets; verifier {self.chain.verifier_fingerprint[:16]}, "
            f"log head {self.chain.head[:16]}"
        )


def pverify(
    model,
    mk: MarkingKey,
    vk: VerificationKey,
    log_path: str | os.PathLike,
    *,
    nonce: bytes,
    verifier_key: OwnerKey,
    alpha: float = DEFAULT_ALPHA,
    set_index: int | None = None,
    device="cpu",
    model_info: dict | None = None,
    now: str | None = None,
    allow_weak_alpha: bool = False,
) -> PVerifyResult:
    """Open the set the verifier's ``nonce`` selects, verify ``model`` on it, record it as spent
    in the verifier's log, signed with ``verifier_key``.

    ``set_index`` given (e.g. announced by the verifier beforehand) must be that set and
    unspent, else SpentSet. Nothing is recorded if the model cannot be queried.
    ``model_info`` ({"name", "sha256"}) goes into the log entry.
    """
    _check_nonce(nonce)
    check_alpha(alpha, allow_weak_alpha=allow_weak_alpha)  # before a set is spent: the floor is on the overall alpha
    path = Path(log_path)
    with _locked(path):
        log = open_log(path, vk, verifier_key.public_hex)
        chain = log.chain
        if set_index is not None and set_index in chain.spent:
            raise SpentSet(f"set {set_index} was already opened (spent-log entry {chain.spent.index(set_index) + 1}); it is never accepted again")
        chosen = chain.next_set(nonce)
        if set_index is not None and set_index != chosen:
            raise SpentSet(f"set {set_index} is not the set this nonce selects (it selects set {chosen})")
        result = verify(model, mk, vk, alpha=set_alpha(alpha, vk.num_sets), indices=set_indices(vk, chosen), device=device,
                        family_alpha=alpha, allow_weak_alpha=allow_weak_alpha)
        d = result.decision
        entry = {
            "seq": len(chain.entries) + 1,
            "prev": chain.head,
            "set": chosen,
            "nonce": nonce.hex(),
            "spent_before": chain.spent,
            "time": now or utc_now(),
            "model": model_info or {},
            "result": {
                "matches": result.matches, "n": result.n, "threshold": d and d.threshold, "alpha": result.alpha,
                "p_value": d and d.p_value, "log2_p_value": d and d.log2_p_value, "passed": result.passed,
                "verdict": result.verdict.kind,
            },
        }
        entry["signature"] = verifier_key.sign(_signed_message(_next_head(chain.head, entry))).hex()
        new = chain.appended(entry)
        SpentLog(path, new).save(force=True)
    return PVerifyResult(set_index=chosen, nonce=nonce, alpha=alpha, chain=new, verification=result)


def log_summary(log: SpentLog) -> dict:
    """What ``backmark spent`` prints: the key, the verifier, the head, and each opened set with its result."""
    c = log.chain
    return {
        "spent_log": str(log.path),
        "verification_key": c.header["verification_key"],
        "verifier": c.verifier_fingerprint,
        "num_sets": c.num_sets,
        "set_size": c.header["set_size"],
        "head": c.head,
        "spent": c.spent,
        "unspent": c.unspent,
        "entries": [
            {"seq": e["seq"], "set": e["set"], "time": e["time"], "verdict": e["result"].get("verdict"),
             "matches": e["result"].get("matches"), "n": e["result"].get("n"), "model": e["model"].get("name")}
            for e in c.entries
        ],
    }


__all__ = [
    "PVerifyResult",
    "SpentChain",
    "SpentLog",
    "check_extends",
    "log_summary",
    "open_log",
    "pverify",
    "select_set",
    "set_alpha",
    "set_indices",
]
