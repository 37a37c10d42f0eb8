"""Verify: open the commitments, query the model, apply the exact binomial test, and say
what the outcome proves (docs/claims.md).

    result = verify(model, mk, vk)           # model: nn.Module, Target or checkpoint path
    result.verdict.text, result.verified, result.decision.p_value

``result.verified`` is true only for a verdict that is ownership evidence (the CLI exits 0);
``result.passed`` is the bare statistical outcome. The verdict comes from :func:`judge`, the
one rule every verification, report check and claim check applies:

- OWNERSHIP VERIFIED: derived labels (exact null), the model queried as it is, alpha at or
  below the floor, the test rejects;
- MATCHES ABOVE A CALIBRATED NULL: owner-chosen labels with reference models the verifier
  supplies (:func:`calibrate_null`); reported, never ownership (the labels could fit the suspect);
- WHITE-BOX ...: the owner's kept head swapped in; evidence only when a release record binds
  the head and its trusted time precedes the suspect;
- NOT VERIFIED, NOT EVIDENCE: OWNER-CHOSEN LABELS, PASSED AT A WEAK ALPHA: everything else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import torch

from ..errors import IncompatibleModel, InvalidConfig, WeakAlpha
from ..io.clock import parse_time
from ..models.adapt import per_channel
from ..models.heads import head_sha256, with_output_layer
from ..targets import Target, as_target, describe
from .keygen import MarkingKey, VerificationKey, open_elements
from .stats import ALPHA_FLOOR, DEFAULT_ALPHA, BinomialDecision, clopper_pearson_upper, decide, log2

NULL_KINDS = ("exact", "calibrated", "none")
VIEW_KINDS = ("black-box", "white-box-head")


@dataclass(frozen=True)
class Null:
    """The null hypothesis the matches are tested against.

    ``exact``: p0 = 1/|L| (derived labels); ``calibrated``: p0 = the Clopper-Pearson upper
    bound of verifier-supplied reference models' pooled match rate, at ``alpha_bound``;
    ``none``: owner-chosen labels and no reference models: no test at all.
    """

    kind: str
    p0: Fraction | None = None
    alpha_bound: float | None = None  # calibrated: the share of alpha spent on the bound
    references: tuple[dict, ...] = ()  # calibrated: one {"name", "sha256", "matches", "n"} per reference model

    def as_dict(self) -> dict:
        d = {"kind": self.kind, "p0": None if self.p0 is None else f"{self.p0.numerator}/{self.p0.denominator}"}
        if self.kind == "calibrated":
            d.update(alpha_bound=self.alpha_bound, references=[dict(r) for r in self.references],
                     pooled_matches=sum(r["matches"] for r in self.references), pooled_trials=sum(r["n"] for r in self.references))
        return d


@dataclass(frozen=True)
class HeadBinding:
    """A head (kept output layer) as a checked release record binds it (protocols.release).

    ``anchored_at``: the head's trusted time (RFC 3161, verified against the verifier's TSA
    roots), a UTC timestamp string, or None when the record has no checked anchor.
    ``release``: the signed release record document, carried into reports.
    """

    sha256: str
    anchored_at: str | None = None
    release: dict | None = None


@dataclass(frozen=True)
class View:
    """How the model was queried: as it is (black-box), or with the owner's head swapped in."""

    kind: str = "black-box"
    head_sha256: str | None = None
    bound: bool = False  # a release record of the key's owner binds this head
    anchored_at: str | None = None
    suspect_seen_at: str | None = None  # when the verifier first saw the suspect (the verifier's statement)
    release: dict | None = None

    def as_dict(self) -> dict:
        if self.kind == "black-box":
            return {"kind": self.kind}
        return {"kind": self.kind, "head_sha256": self.head_sha256, "bound": self.bound, "anchored_at": self.anchored_at,
                "suspect_seen_at": self.suspect_seen_at, "release": self.release}


@dataclass(frozen=True)
class Verdict:
    kind: str  # ownership | calibrated | white-box | not-verified | owner-chosen-labels | weak-alpha
    text: str  # the verdict line's head, in capitals where it claims something
    claims_ownership: bool  # the outcome is ownership evidence: the CLI exits 0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "claims_ownership": self.claims_ownership}


def _alpha_text(alpha: float) -> str:
    return f"2^{log2(alpha):.0f}" if alpha < 1e-4 else f"{alpha:.3g}"


def judge(*, null: str, view: View, passed: bool | None, alpha: float, references: int = 0) -> Verdict:
    """The verdict of a verification: the rule of docs/claims.md, in one place."""
    if null not in NULL_KINDS or view.kind not in VIEW_KINDS:
        raise ValueError(f"unknown null {null!r} or view {view.kind!r}")
    if null == "none":
        return Verdict("owner-chosen-labels", "NOT EVIDENCE: OWNER-CHOSEN LABELS (trigger accuracy only; "
                       "give the verifier's --reference-models for a calibrated null)", False)
    if not passed:
        return Verdict("not-verified", "NOT VERIFIED", False)
    if alpha > ALPHA_FLOOR:
        return Verdict("weak-alpha", f"PASSED AT A WEAK ALPHA ({_alpha_text(alpha)}, above the {_alpha_text(ALPHA_FLOOR)} floor): "
                       "NOT OWNERSHIP EVIDENCE", False)
    if view.kind == "white-box-head":
        if not view.bound:
            return Verdict("white-box", "WHITE-BOX MATCH (a head no release record of the owner binds): NOT EVIDENCE", False)
        if view.anchored_at is None:
            return Verdict("white-box", "WHITE-BOX MATCH (owner's head, NOT anchored: a head fitted after the suspect appeared "
                           "would match as well): NOT EVIDENCE", False)
        if view.suspect_seen_at is not None and parse_time(view.anchored_at) < parse_time(view.suspect_seen_at):
            return Verdict("white-box", f"WHITE-BOX OWNERSHIP VERIFIED (owner's head anchored at {view.anchored_at}, "
                           f"before the suspect was first seen at {view.suspect_seen_at})", True)
        return Verdict("white-box", f"WHITE-BOX MATCH (owner's head, anchored at {view.anchored_at}): evidence only against "
                       f"a suspect that appeared after {view.anchored_at}", False)
    if null == "calibrated":
        # Not ownership: a claimant who can query the suspect can choose images on which it answers unlike
        # independent models (its own errors) and label them with its answers; the reference models then miss them.
        return Verdict("calibrated", f"MATCHES ABOVE A CALIBRATED NULL (owner-chosen labels; {references} reference "
                       "models supplied by the verifier): NOT OWNERSHIP EVIDENCE ON ITS OWN (labels the claimant chose "
                       "could have been fitted to this suspect's own answers)", False)
    return Verdict("ownership", "OWNERSHIP VERIFIED", True)


@dataclass(frozen=True)
class VerificationResult:
    decision: BinomialDecision | None  # None: no valid null (owner-chosen labels without reference models)
    verdict: Verdict
    null: Null
    view: View
    alpha: float
    verification_key: str  # fingerprint
    owner: str  # owner key fingerprint
    label_mode: str
    indices: list[int]
    labels: list[int]
    predictions: list[int]
    extra: dict = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """The verdict is ownership evidence (docs/claims.md)."""
        return self.verdict.claims_ownership

    @property
    def passed(self) -> bool:
        """The test rejected its null at alpha (False when there is no test)."""
        return self.decision is not None and self.decision.passed

    @property
    def matches(self) -> int:
        return sum(int(p == y) for p, y in zip(self.predictions, self.labels))

    @property
    def n(self) -> int:
        return len(self.indices)

    def as_dict(self) -> dict:
        d = self.decision
        return {
            "verified": self.verified,
            "verdict": self.verdict.as_dict(),
            "passed": self.passed,
            "matches": self.matches,
            "n": self.n,
            "trigger_acc": self.matches / self.n,
            "alpha": self.alpha,
            "alpha_floor": ALPHA_FLOOR,
            "threshold": None if d is None else d.threshold,
            "p_value": None if d is None else d.p_value,
            "log2_p_value": None if d is None else d.log2_p_value,
            "null": self.null.as_dict(),
            "view": self.view.as_dict(),
            "verification_key": self.verification_key,
            "owner": self.owner,
            "label_mode": self.label_mode,
            "indices": self.indices,
            "labels": self.labels,
            "predictions": self.predictions,
            **self.extra,
        }

    def summary(self) -> str:
        d = self.decision
        head = f"{self.verdict.text}: {self.matches}/{self.n} trigger labels matched"
        if d is None:
            return f"{head} (trigger accuracy {100 * self.matches / self.n:.1f}%); no p-value: the labels were chosen by the owner"
        null = "p0 = 1/" + str(d.p0.denominator) if self.null.kind == "exact" else f"calibrated p0 = {float(d.p0):.4f}"
        return (f"{head} (threshold {d.threshold} at alpha={_alpha_text(d.alpha)}, {null}); "
                f"p-value {d.p_value:.3g} (2^{d.log2_p_value:.1f})")


def check_compatible(target: Target, vk: VerificationKey) -> None:
    """Raise IncompatibleModel if the target declares a shape or class count the key does not fit."""
    if target.input_shape is not None and tuple(target.input_shape) != vk.input_shape:
        raise IncompatibleModel(
            f"the model takes inputs of shape {tuple(target.input_shape)} but the key's triggers are {vk.input_shape} (C, H, W)"
        )
    if target.num_classes is not None and target.num_classes != vk.num_classes:
        raise IncompatibleModel(f"the model has {target.num_classes} classes but the key was made for {vk.num_classes}")


def query(target: Target, mk: MarkingKey, indices: Sequence[int]) -> list[int]:
    """The target's labels for the trigger images at ``indices``."""
    images = torch.from_numpy(mk.images[list(indices)]).permute(0, 3, 1, 2).contiguous()  # (n, C, H, W) uint8
    preds = target.predict(images)
    if preds.shape != (len(indices),):
        raise IncompatibleModel(f"the model answered {tuple(preds.shape)} labels for {len(indices)} images")
    return [int(p) for p in preds]


def check_alpha(alpha: float, *, allow_weak_alpha: bool = False) -> None:
    """The bar is the verifier's: refuse an alpha weaker than the floor unless explicitly allowed."""
    if not 0 < alpha < 1:
        raise InvalidConfig(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if alpha > ALPHA_FLOOR and not allow_weak_alpha:
        raise WeakAlpha(
            f"alpha {_alpha_text(alpha)} is weaker than the {_alpha_text(ALPHA_FLOOR)} floor (anyone can mint keys and grind); "
            "pass --allow-weak-alpha (allow_weak_alpha=True) to test at it anyway: the outcome is never ownership evidence"
        )


def _answers(model, mk: MarkingKey, vk: VerificationKey, idx: list[int], device, *, mean=None, std=None) -> tuple[Target, list[int]]:
    target = as_target(model, device=device, mean=mean, std=std)
    check_compatible(target, vk)
    preds = query(target, mk, idx)
    check_compatible(target, vk)  # again: a target may learn its class count from its first answer
    if any(not 0 <= p < vk.num_classes for p in preds):
        raise IncompatibleModel(f"the model answered labels outside 0..{vk.num_classes - 1}")
    return target, preds


def calibrate_null(reference_models, mk: MarkingKey, vk: VerificationKey, *, alpha_bound: float,
                   indices: Sequence[int] | None = None, device="cpu") -> Null:
    """The calibrated null of an owner-chosen-label key: query each of the verifier's reference
    models (independently trained models of the task) on the key's triggers; p0 = the exact
    Clopper-Pearson upper bound of their pooled match rate at confidence 1 - ``alpha_bound``.

    The assumption (docs/claims.md): a suspect not trained with the key matches the labels no
    more often, on average, than a model drawn from the verifier's reference population.
    """
    models = list(reference_models)
    if not models:
        raise InvalidConfig("a calibrated null needs at least one reference model")
    idx = list(range(vk.size)) if indices is None else [int(i) for i in indices]
    labels = open_elements(mk, vk, idx)
    refs = []
    for m in models:
        _, preds = _answers(m, mk, vk, idx, device)
        refs.append({**describe(m), "matches": sum(int(p == y) for p, y in zip(preds, labels)), "n": len(idx)})
    named = [r["sha256"] for r in refs if r["sha256"]]
    if len(set(named)) != len(named):
        raise InvalidConfig("the same reference model is given twice: each must be an independently trained model")
    k, n = sum(r["matches"] for r in refs), sum(r["n"] for r in refs)
    return Null("calibrated", clopper_pearson_upper(k, n, alpha_bound), alpha_bound, tuple(refs))


def verify(
    model,
    mk: MarkingKey,
    vk: VerificationKey,
    *,
    alpha: float = DEFAULT_ALPHA,
    indices: Sequence[int] | None = None,
    device=None,
    output_layer=None,
    head: HeadBinding | None = None,
    suspect_seen_at: str | None = None,
    reference_models: Sequence | None = None,
    allow_weak_alpha: bool = False,
    family_alpha: float | None = None,
    mean=None,
    std=None,
) -> VerificationResult:
    """Private verification of ``model`` (nn.Module, Target, or a model file).

    Every element at ``indices`` (default: all) must open its commitments, else
    TamperedKey / KeyMismatch is raised before the model is queried. ``alpha`` above
    :data:`ALPHA_FLOOR` is refused unless ``allow_weak_alpha``.

    ``output_layer``: the owner's kept output layer (nn.Linear, state dict, output-layer file
    or model checkpoint), swapped into a copy of the model before querying (the paper's RTLL /
    RTAL / transfer check; in-process models only). It is a white-box view: evidence only with
    ``head``, the binding a checked release record gives (protocols.release), whose SHA-256 must
    be this head's, anchored before ``suspect_seen_at``.

    ``reference_models``: for a key with owner-chosen labels, the verifier's independently
    trained models of the task (paths, modules or targets); alpha is split between the bound on
    their match rate and the test. Refused for derived labels (their null is exact already).

    ``family_alpha``: the overall level this test is one part of (PVerify tests one of m sets
    at alpha / m); the floor applies to it, not to the part.

    ``device``: where a module's queries run (None: where it lives). ``mean``/``std``: the
    normalisation an in-process model's forward expects, applied to the [0, 1] triggers before
    its forward (recorded in ``extra``).
    """
    overall = alpha if family_alpha is None else family_alpha
    check_alpha(overall, allow_weak_alpha=allow_weak_alpha)
    if not 0 < alpha <= overall:
        raise InvalidConfig(f"alpha {alpha} must lie in (0, {overall}] (the family's level)")
    idx = list(range(vk.size)) if indices is None else [int(i) for i in indices]
    labels = open_elements(mk, vk, idx)
    view = View()
    if output_layer is not None:
        name = head_sha256(output_layer)
        if head is not None and head.sha256 != name:
            raise IncompatibleModel(f"the release record binds head {head.sha256[:16]}..., not this one ({name[:16]}...)")
        view = View("white-box-head", name, bound=head is not None, anchored_at=head and head.anchored_at,
                    suspect_seen_at=suspect_seen_at, release=head and head.release)
        model = with_output_layer(model, output_layer, device=device)
    elif head is not None:
        raise InvalidConfig("a head binding was given without the head (output_layer)")
    target, preds = _answers(model, mk, vk, idx, device, mean=mean, std=std)
    matches = sum(int(p == y) for p, y in zip(preds, labels))
    if vk.label_mode == "derived":
        if reference_models:
            raise InvalidConfig("the key's labels are derived from its signature: the null is exact, reference models are not needed")
        null, test_alpha = Null("exact", Fraction(1, vk.num_classes)), alpha
    elif reference_models:
        null = calibrate_null(reference_models, mk, vk, alpha_bound=alpha / 2, indices=idx, device=device)
        test_alpha = alpha / 2
    else:
        null, test_alpha = Null("none"), None
    decision = None if null.p0 is None else decide(matches, len(idx), null.p0, test_alpha)
    verdict = judge(null=null.kind, view=view, passed=decision is not None and decision.passed, alpha=overall,
                    references=len(null.references))
    extra = {}
    if mean is not None:  # the inputs were normalised for the model: part of what was checked
        extra["input_normalization"] = {"mean": list(per_channel(mean, "mean")), "std": list(per_channel(std, "std"))}
    if callable(getattr(target, "report", None)):  # a remote target: requests, images sent, retries, audit-log head
        extra["queries"] = target.report()
    return VerificationResult(
        decision=decision, verdict=verdict, null=null, view=view, alpha=alpha,
        verification_key=vk.fingerprint, owner=vk.owner_fingerprint, label_mode=vk.label_mode,
        indices=idx, labels=labels, predictions=preds, extra=extra,
    )
