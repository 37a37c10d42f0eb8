"""verify-extraction: was a suspect trained on an api-marked API's answers?

    result = verify_extraction(suspect, mark, "api-log.jsonl", "api-images.jsonl")
    result.verified, result.decision.p_value

1. The log is checked (header bound to the api-mark, every line signed by its log key, the
   chain intact; optionally cut at a head published earlier), and so are the images (each
   hashes to its query hash).
2. Every logged query is checked against the secret: the keyed hash selects its image and
   derives the logged label, so the log holds only answers the api-mark itself chose.
3. The distinct logged images are replayed against the suspect (any target), and the exact
   binomial test is applied with p0 = 1/|L|: for a model that never learnt from the API's
   answers, each derived label is a keyed hash it cannot compute, uniform over the classes
   and independent of its answer, so the matches are Binomial(n, 1/|L|). Duplicates count
   once (a repeated query repeats its label: not an independent trial).
4. The verdict (core.verify.judge for the test and the alpha floor, then one more rule): the
   owner holds the secret that selects, labels and signs, so after seeing a suspect he could
   make a log of queries the suspect happens to agree with. Only a log cut at a head fixed
   before the suspect was known is evidence: ``head`` with its RFC 3161 anchor
   (``head_anchor``, checked against the verifier's ``tsa_roots``) dated before
   ``suspect_seen_at``. A head alone is the verifier's word that he had it earlier, and no head
   at all fixes nothing: both are "MATCH, NOT EVIDENCE". What it proves is extraction (the
   suspect learnt from this API's answers), not who trained it.

Exit semantics used by the CLI: evidence -> 0, not verified or not evidence -> 1, bad input -> 2.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from ..core.stats import DEFAULT_ALPHA, BinomialDecision, decide, log2
from ..core.verify import Verdict, View, check_alpha, judge
from ..crypto import canonical_image_bytes
from ..crypto.timestamp import TsaRoots
from ..errors import BackmarkError, IncompatibleModel, TamperedRecord
from ..io.clock import format_time, parse_time
from ..io.schema import Timestamp
from ..targets import Target, as_target
from .anchor import check_anchor, log_head_document
from .apilog import read_api_images, read_api_log
from .apimark import ApiMark

NULL_HYPOTHESIS = ("the suspect never learnt from this API's answers: each logged label is a keyed hash of its query, "
                   "uniform over the classes and independent of the suspect's answer")


def extraction_verdict(decision: BinomialDecision, *, head: str | None, anchored_at: str | None = None,
                       suspect_seen_at: str | None = None) -> Verdict:
    """core.verify.judge's rule for an exact null queried black-box (NOT VERIFIED, a weak alpha),
    then: evidence only for a log cut at a head whose verified anchor (``anchored_at``) precedes
    ``suspect_seen_at``."""
    base = judge(null="exact", view=View(), passed=decision.passed, alpha=decision.alpha)
    if base.kind != "ownership":
        return base
    if head is None:
        return Verdict("unfixed-log", "MATCH, NOT EVIDENCE: NO LOG HEAD FIXED BEFORE THE SUSPECT (the owner holds the "
                       "secret that signs the log and could have chosen its entries after seeing the suspect; give --head "
                       "and its anchor, --head-anchor)", False)
    if anchored_at is None:
        return Verdict("unanchored-head", "MATCH, NOT EVIDENCE: THE LOG HEAD IS NOT ANCHORED (only the verifier's word says "
                       "it existed before the suspect; anchor heads when they are published: backmark timestamp --log-head)",
                       False)
    if suspect_seen_at is None or not parse_time(anchored_at) < parse_time(suspect_seen_at):
        return Verdict("late-head", f"MATCH, NOT EVIDENCE: THE LOG HEAD WAS ANCHORED AT {anchored_at}, NOT BEFORE THE SUSPECT "
                       f"WAS FIRST SEEN ({suspect_seen_at or 'not stated: give --suspect-seen-at'})", False)
    return Verdict("extraction", f"EXTRACTION VERIFIED (the suspect learnt from this API's marked answers; log head anchored "
                   f"at {anchored_at}, before the suspect was first seen at {suspect_seen_at})", True)


@dataclass(frozen=True)
class ExtractionResult:
    decision: BinomialDecision
    verdict: Verdict
    api_mark: str  # fingerprint
    owner: str  # owner key fingerprint
    log: dict  # path, head, entries, first and last time, entries after --head left out, unlogged images
    head_anchored_at: str | None  # the verified anchor time of the head the log was cut at (None: no head, or not anchored)
    suspect_seen_at: str | None  # when the verifier first saw the suspect (his statement)
    queries: list[str]
    labels: list[int]
    predictions: list[int]
    extra: dict

    @property
    def verified(self) -> bool:
        """The verdict is evidence (the CLI exits 0)."""
        return self.verdict.claims_ownership

    @property
    def null(self) -> dict:
        p0 = self.decision.p0
        return {"kind": "exact", "p0": f"{p0.numerator}/{p0.denominator}", "hypothesis": NULL_HYPOTHESIS,
                "assumption": self.assumption}

    @property
    def head_fixed(self) -> bool:
        """The log was cut at a head anchored before the suspect was first seen."""
        return self.verdict.kind == "extraction"

    @property
    def assumption(self) -> str:
        if self.head_anchored_at is not None:
            return (f"log head {self.log['head']} anchored at {self.head_anchored_at} (RFC 3161, checked against the "
                    f"verifier's TSA roots); the suspect first seen at {self.suspect_seen_at or 'an unstated time'} "
                    "(the verifier's statement)")
        if self.log.get("cut_at_head"):
            return (f"none checked: log head {self.log['head']} was given without an anchor, so only the verifier says it "
                    "existed before the suspect")
        return "none: no log head was given, so the log may have been made after the suspect was known"

    def as_dict(self) -> dict:
        return {"verified": self.verified, "verdict": self.verdict.as_dict(), **self.decision.as_dict(),
                "null": self.null, "api_mark": self.api_mark, "owner": self.owner, "log": self.log,
                "head_anchored_at": self.head_anchored_at, "suspect_seen_at": self.suspect_seen_at,
                "queries": self.queries, "labels": self.labels, "predictions": self.predictions, **self.extra}

    def summary(self) -> str:
        d = self.decision
        return (f"{self.verdict.text}: {d.matches}/{d.n} logged API answers matched "
                f"(threshold {d.threshold} at alpha=2^{log2(d.alpha):.0f}, p0 = 1/{d.p0.denominator}); "
                f"p-value {d.p_value:.3g} (2^{d.log2_p_value:.1f})\n"
                f"null: {NULL_HYPOTHESIS}\nassumption: {self.assumption}")


def logged_queries(mark: ApiMark, log_path, images_path, *, head: str | None = None):
    """(queries, labels, uint8 images (n, C, H, W), log summary) after every check of steps 1-2."""
    full = read_api_log(log_path, mark)
    log = full.upto(head) if head is not None else full
    images = read_api_images(images_path, mark).images
    labels: dict[str, int] = {}
    for k, e in enumerate(log.entries, 2):
        q = e["query"]
        if q not in images:
            raise TamperedRecord(f"{images_path} lacks the image of {log_path}:{k} (query {q[:16]}...): it cannot be replayed")
        if q in labels:
            if labels[q] != e["label"]:
                raise TamperedRecord(f"{log_path}:{k}: query {q[:16]}... logged with two labels")
            continue
        data = canonical_image_bytes(images[q])
        if not mark.selects(data):
            raise TamperedRecord(f"{log_path}:{k}: the api-mark does not select this query: it was not answered by the mark")
        if mark.label(data) != e["label"]:
            raise TamperedRecord(f"{log_path}:{k}: label {e['label']} is not the one the api-mark derives for this query")
        labels[q] = e["label"]
    logged = [q for q in images if q in labels]
    if logged != list(labels):  # an image is stored when its query is first logged: the two files agree on the order
        raise TamperedRecord(f"{images_path} holds the logged images in another order than {log_path} logged them")
    if not labels:
        raise BackmarkError(f"{log_path} holds no marked answer{' up to that head' if head else ''}: nothing to test")
    shapes = {images[q].shape for q in labels}
    if len(shapes) != 1:
        raise IncompatibleModel(f"the logged queries have {len(shapes)} image shapes; one suspect takes one")
    queries = list(labels)
    stack = torch.from_numpy(np.stack([images[q] for q in queries])).permute(0, 3, 1, 2).contiguous()
    summary = {
        "path": str(log_path), "head": log.head, "entries": len(log.entries), "distinct_queries": len(queries),
        "first": log.entries[0]["time"] if log.entries else None, "last": log.entries[-1]["time"] if log.entries else None,
        "entries_after_head": len(full.entries) - len(log.entries),
        "unlogged_images": len(set(images) - {e["query"] for e in full.entries}),
    }
    return queries, [labels[q] for q in queries], stack, summary


def verify_extraction(
    suspect,
    mark: ApiMark,
    log_path: str | os.PathLike,
    images_path: str | os.PathLike,
    *,
    alpha: float = DEFAULT_ALPHA,
    allow_weak_alpha: bool = False,
    head: str | None = None,
    head_anchor: dict | None = None,
    tsa_roots: TsaRoots | None = None,
    suspect_seen_at: str | None = None,
    device="cpu",
    mean=None,
    std=None,
) -> ExtractionResult:
    """Replay the logged queries against ``suspect`` (nn.Module, Target, model file or URL) and test.

    ``head``: a log head published earlier; only the entries up to it are tested (the log may
    have grown since), and a log that never had it is refused. ``head_anchor``: its anchor
    (``anchor.load_anchor``), checked against ``tsa_roots`` (required with it; a failing anchor
    is an error, never skipped); evidence needs its time before ``suspect_seen_at``.
    """
    check_alpha(alpha, allow_weak_alpha=allow_weak_alpha)
    anchored_at = _head_anchor_time(head, head_anchor, tsa_roots)
    if suspect_seen_at is not None:
        Timestamp().validate(suspect_seen_at, "suspect seen at")
    queries, labels, images, summary = logged_queries(mark, log_path, images_path, head=head)
    target: Target = as_target(suspect, device=device, mean=mean, std=std)
    shape = tuple(images.shape[1:])
    if target.input_shape is not None and tuple(target.input_shape) != shape:
        raise IncompatibleModel(f"the suspect takes inputs of shape {tuple(target.input_shape)} "
                                f"but the logged queries are {shape} (C, H, W)")
    preds = target.predict(images)
    if preds.shape != (len(queries),):
        raise IncompatibleModel(f"the suspect answered {tuple(preds.shape)} labels for {len(queries)} queries")
    preds = [int(p) for p in preds]
    if target.num_classes not in (None, mark.num_classes) or any(not 0 <= p < mark.num_classes for p in preds):
        raise IncompatibleModel(f"the suspect's classes are not the api-mark's {mark.num_classes}")
    matches = sum(int(p == y) for p, y in zip(preds, labels))
    extra = {"queried": target.report()} if callable(getattr(target, "report", None)) else {}
    decision = decide(matches, len(queries), Fraction(1, mark.num_classes), alpha)
    return ExtractionResult(
        decision=decision, api_mark=mark.fingerprint, owner=mark.owner_fingerprint, log={**summary, "cut_at_head": head is not None},
        verdict=extraction_verdict(decision, head=head, anchored_at=anchored_at, suspect_seen_at=suspect_seen_at),
        head_anchored_at=anchored_at, suspect_seen_at=suspect_seen_at, queries=queries, labels=labels, predictions=preds,
        extra=extra,
    )


def _head_anchor_time(head: str | None, anchor: dict | None, roots: TsaRoots | None) -> str | None:
    """The verified genTime of ``anchor`` over ``head`` (None without an anchor); errors for an anchor
    without its head or roots, or one that does not verify."""
    if anchor is None:
        return None
    if head is None:
        raise BackmarkError("a log head's anchor needs the head it is over (--head)")
    if roots is None:
        raise BackmarkError("checking the log head's anchor needs the TSA roots you trust (--tsa-roots)")
    return format_time(check_anchor(anchor, log_head_document(head), roots).gen_time)


__all__ = ["NULL_HYPOTHESIS", "ExtractionResult", "extraction_verdict", "logged_queries", "verify_extraction"]
