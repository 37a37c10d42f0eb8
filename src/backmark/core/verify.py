"""Verify: open the commitments, query the model, apply the exact binomial test.

    result = verify(model, mk, vk)           # model: nn.Module, Target or checkpoint path
    result.verified, result.decision.p_value

Exit semantics used by the CLI: verified -> 0, not verified -> 1, bad input -> 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import IncompatibleModel
from ..models.adapt import per_channel
from ..models.heads import with_output_layer
from ..targets import Target, as_target
from .keygen import MarkingKey, VerificationKey, open_elements
from .stats import DEFAULT_ALPHA, BinomialDecision, decide, log2, null_rate


@dataclass(frozen=True)
class VerificationResult:
    decision: BinomialDecision
    verification_key: str  # fingerprint
    owner: str  # owner key fingerprint
    label_mode: str
    indices: list[int]
    labels: list[int]
    predictions: list[int]
    extra: dict = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return self.decision.verified

    def as_dict(self) -> dict:
        return {
            "verified": self.verified,
            **self.decision.as_dict(),
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
        verdict = "OWNERSHIP VERIFIED" if self.verified else "NOT VERIFIED"
        return (
            f"{verdict}: {d.matches}/{d.n} trigger labels matched (threshold {d.threshold} at alpha=2^{log2(d.alpha):.0f}); "
            f"p-value {d.p_value:.3g} (2^{d.log2_p_value:.1f})"
        )


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


def verify(
    model,
    mk: MarkingKey,
    vk: VerificationKey,
    *,
    alpha: float = DEFAULT_ALPHA,
    indices: Sequence[int] | None = None,
    device=None,
    output_layer=None,
    mean=None,
    std=None,
) -> VerificationResult:
    """Private verification of ``model`` (nn.Module, Target or checkpoint path).

    Every element at ``indices`` (default: all) must open its commitments, else
    TamperedKey / KeyMismatch is raised before the model is queried. ``output_layer``:
    the owner's kept ORIGINAL output layer (nn.Linear, state dict, output-layer file or
    model checkpoint), swapped into a copy of the model before querying, as the paper
    reports RTLL/RTAL and transfer learning (in-process models only). ``device``: where a module's
    queries run (None: where it lives). ``mean``/``std``: the normalisation an in-process model's
    forward expects, applied to the [0, 1] triggers (recorded in ``extra``).
    """
    idx = list(range(vk.size)) if indices is None else [int(i) for i in indices]
    labels = open_elements(mk, vk, idx)
    if output_layer is not None:
        model = with_output_layer(model, output_layer, device=device)
    target = as_target(model, device=device, mean=mean, std=std)
    check_compatible(target, vk)
    preds = query(target, mk, idx)
    check_compatible(target, vk)  # again: a target may learn its class count from its first answer
    if any(not 0 <= p < vk.num_classes for p in preds):
        raise IncompatibleModel(f"the model answered labels outside 0..{vk.num_classes - 1}")
    matches = sum(int(p == y) for p, y in zip(preds, labels))
    if vk.label_mode == "derived":
        p0 = null_rate(vk.num_classes)
    else:
        p0 = null_rate(vk.num_classes, labels, preds)
    extra = {"output_layer_swapped": True} if output_layer is not None else {}
    if mean is not None:  # the inputs were normalised for the model: part of what was checked
        extra["input_normalization"] = {"mean": list(per_channel(mean, "mean")), "std": list(per_channel(std, "std"))}
    if callable(getattr(target, "report", None)):  # a remote target: requests, images sent, retries, audit-log head
        extra["queries"] = target.report()
    return VerificationResult(
        decision=decide(matches, len(idx), p0, alpha),
        verification_key=vk.fingerprint,
        owner=vk.owner_fingerprint,
        label_mode=vk.label_mode,
        indices=idx,
        labels=labels,
        predictions=preds,
        extra=extra,
    )
