"""Score a model after an attack: test accuracy, and the watermark two ways.

- black-box: the attacked model queried as it is (what any verifier can do);
- kept layer: the owner's ORIGINAL output layer swapped back in first (how the paper
  reports RTLL, RTAL and transfer learning): a white-box measurement, not evidence on its
  own (docs/claims.md, "Heads").

Each way gives the trigger accuracy, the matches, the exact p-value and the verdict at alpha.
A model behind a query detector (the evasion attack: anything with ``flags(images)``) also gets
the share of the triggers and of the test images its detector flags.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.keygen import MarkingKey, VerificationKey
from ..core.stats import DEFAULT_ALPHA
from ..core.verify import verify
from ..errors import IncompatibleModel
from ..models.heads import LayerLike
from ..training import accuracy


def watermark_row(result) -> dict:
    """One measurement: trigger accuracy, the test's outcome at alpha ("passed"; no test for
    owner-chosen labels), and the verdict's kind (docs/claims.md: only "ownership" is evidence)."""
    d = result.decision
    return {
        "trigger_acc": result.matches / result.n,
        "matches": result.matches,
        "n": result.n,
        "threshold": None if d is None else d.threshold,
        "p_value": None if d is None else d.p_value,
        "log2_p_value": None if d is None else d.log2_p_value,
        "passed": result.passed,
        "verdict": result.verdict.kind,
    }


def evaluate_model(
    model: nn.Module,
    test_x,
    test_y,
    mk: MarkingKey,
    vk: VerificationKey,
    *,
    kept_layer: LayerLike | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> dict:
    """{"test_acc", "blackbox": {...} or None, "kept_layer": {...} or None}.

    A way that cannot apply (the model answers in other classes than the key's, or no
    kept layer is given) is None, with the reason under "notes".
    """
    row: dict = {"test_acc": accuracy(model, test_x, test_y), "blackbox": None, "kept_layer": None, "notes": []}
    if callable(getattr(model, "flags", None)):
        triggers = torch.from_numpy(mk.images).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W) uint8
        row["detector"] = {"trigger_flag_rate": float(model.flags(triggers).float().mean()),
                           "test_flag_rate": float(model.flags(test_x).float().mean())}
    try:
        row["blackbox"] = watermark_row(verify(model, mk, vk, alpha=alpha))
    except IncompatibleModel as e:
        row["notes"].append(f"black-box: {e}")
    if kept_layer is not None:
        try:
            row["kept_layer"] = watermark_row(verify(model, mk, vk, alpha=alpha, output_layer=kept_layer))
        except IncompatibleModel as e:
            row["notes"].append(f"kept layer: {e}")
    return row
