"""Disputes: two parties claim one suspect model; whose claim is better supported, and why.

The paper's ownership piracy: a thief embeds his own watermark into the owner's model. Both keys
then verify on the pirate's copy, so verification alone cannot settle it; time can. A pirate's
model carries both marks, while the owner's release, anchored (RFC 3161) before the theft,
carries only the owner's. The rules, applied in order (docs/claims.md):

1. Only a key that verifies on the suspect (OWNERSHIP VERIFIED) makes a claim; with one, it wins,
   unless the other party's anchored release predates the claimant's first anchor (then the
   claimant may be a pirate who trained the other's mark away: undecided).
2. A party without any verified anchor never wins against an anchored one; none anchored: undecided.
3. A party whose own anchored release carries the other's watermark derives from the other's model.
4. Else the watermark shown first in an anchored release model wins;
5. else the key anchored first (the weakest evidence: anyone can anchor keys in advance).

    result = dispute("suspect.safetensors", ["alice/", "mallory/"], tsa_roots=TsaRoots.load("roots.pem"))
    result.winner, result.reason

A party's folder: marking-key.json, verification-key.json [+ verification-key.timestamp.json],
any release records (+ their anchors) and the released model files they bind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..core.keygen import MarkingKey, VerificationKey, load_pair
from ..core.stats import DEFAULT_ALPHA
from ..core.verify import verify
from ..crypto.timestamp import TsaRoots, VerifiedTimestamp
from ..errors import BackmarkError, InvalidConfig, InvalidFile
from ..io.clock import format_time
from ..io.documents import document_format
from ..io.files import read_file
from ..io.hashing import file_sha256
from ..targets import open_target
from .anchor import find_anchor
from .release import RELEASE_FORMAT, ReleaseRecord, load_release

_NOT_MODELS = {".json", ".pem", ".tsq", ".tsr", ".jsonl", ".html"}


@dataclass
class Party:
    """One claimant's evidence, each piece checked (what failed is in ``rejected``, with why)."""

    name: str
    mk: MarkingKey
    vk: VerificationKey
    key_anchor: VerifiedTimestamp | None  # the verification key's verified anchor
    releases: list[tuple[ReleaseRecord, Path | None]]  # (record, its model file in the folder or None)
    rejected: list[str] = field(default_factory=list)

    def anchor_times(self) -> list:
        """Every verified time that dates this key: its own anchor and its anchored release records."""
        times = [self.key_anchor.gen_time] if self.key_anchor else []
        return sorted(times + [r.anchored_at for r, _ in self.releases if r.anchored_at])


def load_party(folder: str | os.PathLike, roots: TsaRoots | None) -> Party:
    d = Path(folder)
    mk, vk = load_pair(d / "marking-key.json", d / "verification-key.json")  # a broken key is bad input (exit 2)
    party = Party(str(folder), mk, vk, None, [])
    try:
        party.key_anchor = find_anchor(d / "verification-key.json", vk.to_document(), roots)
    except BackmarkError as e:
        party.rejected.append(str(e))
    models = None
    for p in sorted(d.glob("*.json")):
        try:
            if document_format(read_file(p, what="file"), where=str(p)) != RELEASE_FORMAT:
                continue
        except InvalidFile as e:  # a broken file among the evidence is said, not skipped
            party.rejected.append(str(e))
            continue
        try:
            record = load_release(p, vk, tsa_roots=roots)
        except BackmarkError as e:  # not this key's, tampered, or its anchor fails: no evidence, said why
            party.rejected.append(str(e))
            continue
        if models is None:
            models = {file_sha256(f): f for f in sorted(d.iterdir()) if f.is_file() and f.suffix.lower() not in _NOT_MODELS}
        model = models.get(record.model_sha256)
        if model is None and record.anchored_at:
            party.rejected.append(f"{p}: the released model ({record.model_name}, {record.model_sha256[:16]}...) is not in {d}")
        party.releases.append((record, model))
    return party


def _counts(result) -> bool:
    # Only the exact-null, black-box verdict at the floor (core.verify.judge): no calibrated null, no head.
    return result.verdict.kind == "ownership" and result.decision.alpha <= DEFAULT_ALPHA


@dataclass(frozen=True)
class DisputeResult:
    winner: str | None
    rule: str  # which rule decided (or left it undecided): suspect, anchors, derived, first-marked, key-first
    reason: str
    suspect: dict
    parties: list[dict]
    tests: list[dict]

    @property
    def decided(self) -> bool:
        return self.winner is not None

    def as_dict(self) -> dict:
        return {"decided": self.decided, "winner": self.winner, "rule": self.rule, "reason": self.reason,
                "suspect": self.suspect, "parties": self.parties, "tests": self.tests}

    def summary(self) -> str:
        head = f"DISPUTE: {self.winner}'s claim is better supported" if self.decided else "DISPUTE: CANNOT DECIDE"
        lines = [head, f"because {self.reason}"]
        for t in self.tests:
            lines.append(f"  key of {t['key']} on {t['model']}: {t['matches']}/{t['n']}, p {t['p_value']:.3g}"
                         f" -> {'OWNERSHIP VERIFIED' if t['counts'] else 'not verified'}")
        for p in self.parties:
            lines += [f"  {p['name']}: key anchored at {p['key_anchored_at'] or '(no verified anchor)'}; "
                      f"{sum(1 for r in p['releases'] if r['anchored_at'])} anchored release(s)"]
            lines += [f"    rejected: {why}" for why in p["rejected"]]
        return "\n".join(lines)


def dispute(suspect: str | os.PathLike, folders: Sequence[str | os.PathLike], *, tsa_roots: TsaRoots | None = None,
            device="cpu") -> DisputeResult:
    """Weigh two parties' claims to ``suspect`` (a model file); see the module docstring for the rules.
    Every test runs at the verifier's alpha, 2^-64: a dispute has no weaker bar to offer."""
    if len(folders) != 2:
        raise InvalidConfig(f"a dispute is between two parties, {len(folders)} were given")
    a, b = (load_party(f, tsa_roots) for f in folders)
    if a.vk.fingerprint == b.vk.fingerprint:
        raise InvalidConfig("both parties hold the same verification key: there is nothing to dispute")
    other = {a.name: b, b.name: a}
    targets, tests = {}, []

    def test(party: Party, model: Path, label: str, release_of: Party | None = None) -> bool:
        if model not in targets:
            targets[model] = open_target(model, device=device)
        r = verify(targets[model], party.mk, party.vk, alpha=DEFAULT_ALPHA, device=device)
        d = r.decision
        tests.append({"key": party.name, "model": label, "release_of": release_of and release_of.name,
                      "model_sha256": file_sha256(model), "matches": d.matches, "n": d.n, "p_value": d.p_value,
                      "log2_p_value": d.log2_p_value, "counts": _counts(r)})
        return tests[-1]["counts"]

    def result(winner, rule, reason) -> DisputeResult:
        parties = [{"name": p.name, "verification_key": p.vk.fingerprint, "owner": p.vk.owner_fingerprint,
                    "key_anchored_at": format_time(p.key_anchor.gen_time) if p.key_anchor else None,
                    "key_tsa": p.key_anchor.tsa_fingerprint if p.key_anchor else None, "rejected": p.rejected,
                    "releases": [{"record": str(r.path), "sha256": r.sha256, "model": str(m) if m else None,
                                  "anchored_at": format_time(r.anchored_at) if r.anchored_at else None, "tsa": r.tsa_fingerprint}
                                 for r, m in p.releases]} for p in (a, b)]
        return DisputeResult(winner, rule, reason, {"name": str(suspect), "sha256": file_sha256(suspect)}, parties, tests)

    # 1. the suspect
    claims = [p for p in (a, b) if test(p, Path(suspect), "the suspect")]
    if not claims:
        return result(None, "suspect", "neither party's key verifies on the suspect: there is no claim to weigh")
    if len(claims) == 1:
        x, y = claims[0], other[claims[0].name]
        y_release = min((r.anchored_at for r, _ in y.releases if r.anchored_at), default=None)
        x_first = x.anchor_times()[0] if x.anchor_times() else None
        if tsa_roots is None and y.releases:
            return result(None, "suspect", f"only {x.name}'s key verifies on the suspect, but {y.name} holds release records "
                                           "whose anchors cannot be checked without --tsa-roots: one could predate "
                                           f"{x.name}'s model (a copy whose mark was trained away would read the same)")
        if y_release is not None and (x_first is None or y_release <= x_first):
            # A pirate who embedded his key into y's release and trained y's mark away looks exactly like this:
            # the evidence cannot tell that from x's own, independent model, so it names no one.
            return result(None, "suspect", f"only {x.name}'s key verifies on the suspect, but {y.name} released an anchored "
                                           f"model at {format_time(y_release)}, before {x.name}'s first anchor "
                                           f"({format_time(x_first) if x_first else 'none'}): a copy of that release whose "
                                           f"mark was trained away would read the same")
        return result(x.name, "suspect", f"only {x.name}'s key verifies on the suspect ({y.name}'s does not)"
                                         + (f", and {x.name} was anchored first ({format_time(x_first)})" if y_release else ""))
    # 2. anchors; 3. each party's anchored releases, tested with both keys
    marked: dict[str, list] = {a.name: [], b.name: []}  # party -> anchored times at which its mark was in a release
    derived: dict[str, list[str]] = {a.name: [], b.name: []}  # party -> its anchored releases carrying the other's mark
    for p in (a, b):
        for r, model in p.releases:
            if r.anchored_at is None or model is None:
                continue
            label = f"{p.name}'s release {r.model_name} (anchored at {format_time(r.anchored_at)})"
            for key_holder in (p, other[p.name]):
                if test(key_holder, model, label, release_of=p):
                    marked[key_holder.name].append(r.anchored_at)
                    if key_holder is not p:
                        derived[p.name].append(label)
    anchored = [p for p in (a, b) if p.anchor_times()]
    if not anchored:
        why = "no TSA roots were given to check anchors" if tsa_roots is None else "neither party has a verified anchor"
        return result(None, "anchors", f"both keys verify on the suspect and {why}: nothing orders the two claims")
    if len(anchored) == 1:
        x = anchored[0]
        y = other[x.name]
        if derived[x.name]:
            return result(None, "anchors", f"only {x.name} is anchored, but {derived[x.name][0]} carries {y.name}'s watermark "
                                           "too, so its anchor does not show it came first")
        return result(x.name, "anchors", f"both keys verify on the suspect; only {x.name} has a verified anchor "
                                         f"(first at {format_time(x.anchor_times()[0])}), and an unanchored claim never wins")
    if derived[a.name] and derived[b.name]:
        return result(None, "derived", "each party's anchored release carries the other's watermark: "
                                       "the evidence contradicts itself")
    for x in (a, b):
        if derived[x.name]:
            y = other[x.name]
            return result(y.name, "derived", f"{derived[x.name][0]} carries {y.name}'s watermark as well as its own: "
                                             f"it derives from a model marked with {y.name}'s key "
                                             "(a pirate's model carries both marks)")
    # 4. whose watermark was first in an anchored release model
    first = {p.name: min(marked[p.name], default=None) for p in (a, b)}
    if first[a.name] or first[b.name]:
        if first[a.name] == first[b.name]:
            return result(None, "first-marked", "both watermarks are first in anchored releases at the same time "
                                                 f"({format_time(first[a.name])})")
        x = min((p for p in (a, b) if first[p.name]), key=lambda p: first[p.name])
        y = other[x.name]
        then = format_time(first[y.name]) if first[y.name] else "no time (in no anchored release)"
        return result(x.name, "first-marked", f"{x.name}'s watermark is in an anchored release model at "
                                              f"{format_time(first[x.name])}, {y.name}'s at {then}")
    # 5. whose key was anchored first (both are anchored here)
    ta, tb = a.anchor_times()[0], b.anchor_times()[0]
    if ta == tb:
        return result(None, "key-first", f"both parties' first anchors have the same time ({format_time(ta)})")
    x, y = (a, b) if ta < tb else (b, a)
    return result(x.name, "key-first", f"no anchored release model decides; {x.name}'s key was anchored first "
                                       f"({format_time(min(ta, tb))}, {y.name}'s at {format_time(max(ta, tb))})")
