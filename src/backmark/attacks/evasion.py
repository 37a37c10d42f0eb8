"""Evasion: the thief's API detects verification queries and answers them at random
(Hitaj et al., "Evasion Attacks Against Watermarking Techniques found in MLaaS Systems", 2019).

The thief calibrates an out-of-distribution detector on images of their own (labelled:
``data_fraction`` of the victim's training set) and serves the stolen model behind it: a query
the detector flags gets a uniformly random label instead of the model's answer. Detectors
(a higher score means "less like my data"):

- ``max-softmax``: minus the model's top softmax probability (Hendrycks and Gimpel, ICLR 2017);
- ``energy``: minus the logsumexp of the model's logits (Liu et al., NeurIPS 2020);
- ``autoencoder``: the reconstruction error of a small autoencoder fitted to the thief's images.

A flagged query's random label depends only on the query (a keyed hash of its pixels), so a repeated
query gets the same answer.

The threshold is the most aggressive one whose expected cost is ``accuracy_cost`` (1 point) of
accuracy on the thief's calibration images (a flagged image costs its correctness and gains
1/|L|), so the thief flags as much as he can afford. The autoencoder learns on one half of the
thief's images and is calibrated on the other. Verification then goes through the wrapped model:
what a verifier querying the thief's API sees. ``flags(x)`` tells which queries are flagged.

    backmark attack evasion --model marked.safetensors --out served.safetensors --detector autoencoder
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..training import logits
from .autoencoder import train_autoencoder
from .base import AttackContext, Budget, ServedModel, attacker_data, register_attack

DETECTORS = ("max-softmax", "energy", "autoencoder")


@dataclass(frozen=True)
class EvasionBudget(Budget):
    """Budget of evasion: detector (max-softmax, energy, autoencoder), accuracy_cost (0.01: the
    expected accuracy the thief gives up on his own images), data_fraction (0.05: the thief's
    labelled images), epochs (5: autoencoder training), seed (random answers, autoencoder)."""

    detector: str = "max-softmax"
    accuracy_cost: float = 0.01
    data_fraction: float = 0.05
    epochs: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, not {self.detector!r}")
        if not 0 <= self.accuracy_cost < 1 or not 0 < self.data_fraction <= 1 or self.epochs < 1:
            raise ValueError("accuracy_cost must lie in [0, 1), data_fraction in (0, 1], epochs >= 1")


class DetectorWrapped(ServedModel):
    """``model`` behind a query detector: a flagged query (score > threshold) gets a random label."""

    def __init__(self, model: nn.Module, detector: str, threshold: float, *, autoencoder: nn.Module | None = None, seed: int = 0):
        super().__init__()
        self.model, self.detector, self.threshold, self.autoencoder, self.seed = model, detector, float(threshold), autoencoder, seed
        self.input_shape = getattr(model, "input_shape", None)
        self.num_classes = getattr(model, "num_classes", None)
        self._gens: dict[str, torch.Tensor] = {}  # per device: the hash weights of random_labels

    def describe(self) -> str:
        return f"{self.detector} detector, threshold {self.threshold:.4g}: flagged queries answered at random"

    @torch.no_grad()
    def scores(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) out-of-distribution scores of float images (B, C, H, W) in [0, 1]; ``out``: the model's logits, if known."""
        if self.detector == "autoencoder":
            return self.autoencoder.error(x)
        out = self.model(x) if out is None else out
        if self.detector == "max-softmax":
            return -F.softmax(out, dim=1).max(1).values
        return -torch.logsumexp(out, dim=1)

    @torch.no_grad()
    def flags(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) bool: which of uint8 or [0, 1] float images the detector flags."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(x), 1000):
            xb = x[i : i + 1000].to(device)
            out.append(self.scores(xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()).cpu() > self.threshold)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)

    def random_labels(self, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """A random-looking label per image that depends only on its pixels and the seed: the same query always
        gets the same answer (a thief's API that answered a repeated query differently would give itself away)."""
        key = str(x.device)
        if key not in self._gens:
            g = torch.Generator().manual_seed(self.seed)
            self._gens[key] = torch.randint(1, 2**31 - 1, (x[0].numel(),), generator=g, dtype=torch.int64).to(x.device)
        pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.int64).flatten(1)
        h = (pixels * self._gens[key]).sum(1) % 2_147_483_647  # a random linear hash of the pixels
        return (h * 48_271 % 2_147_483_647) % num_classes

    def forward(self, x):  # (B, C, H, W) in [0, 1]
        out = self.model(x)
        flagged = self.scores(x, out) > self.threshold
        if flagged.any():
            out = out.clone()
            out[flagged] = F.one_hot(self.random_labels(x[flagged], out.shape[1]), out.shape[1]).to(out.dtype)
        return out


def calibrate(scores: torch.Tensor, correct: torch.Tensor, num_classes: int, cost: float) -> float:
    """The threshold that flags the most images (score > threshold) at an expected accuracy cost of at most ``cost``.

    Flagging the j most suspect images costs (sum of their correctness - j / |L|) / N; the largest
    affordable j wins (the cost is not monotonic in j: flagging a wrong answer gains 1/|L|).
    """
    order = scores.argsort(descending=True)
    loss = (correct[order].float() - 1.0 / num_classes).cumsum(0) / len(scores)  # loss[j - 1]: flag the top j
    ok = (loss <= cost + 1e-12).nonzero().flatten()
    j = int(ok[-1]) + 1 if len(ok) else 0
    s = scores[order]
    return float(s[j]) if j < len(s) else float(s[-1]) - 1.0


@register_attack("evasion", EvasionBudget, "answer queries an OOD detector flags at random (detector calibrated on the attacker's data)")
def evasion(model, data, budget: EvasionBudget, ctx: AttackContext):
    device = ctx.device if ctx.device is not None else next(model.parameters()).device
    own = attacker_data(data, budget.data_fraction, budget.seed)
    x, y = own.train_x, own.train_y
    ae = None
    if budget.detector == "autoencoder":
        half = len(x) // 2
        ae = train_autoencoder(x[:half], epochs=budget.epochs, seed=budget.seed, device=device)
        x, y = x[half:], y[half:]
    probe = DetectorWrapped(model, budget.detector, float("inf"), autoencoder=ae, seed=budget.seed)
    out = logits(model, x, device=device)
    scores = torch.cat([probe.scores(x[i : i + 1000].to(device).float() / 255, out[i : i + 1000].to(device)).cpu()
                        for i in range(0, len(x), 1000)])
    correct = out.argmax(1) == y.cpu()
    threshold = calibrate(scores, correct, out.shape[1], budget.accuracy_cost)
    wrapped = DetectorWrapped(model, budget.detector, threshold, autoencoder=ae, seed=budget.seed).eval()
    flagged_own = float((scores > threshold).float().mean())
    test_flagged = float(wrapped.flags(data.test_x).float().mean())
    return wrapped, [], {"detector": budget.detector, "threshold": threshold, "calibration_images": len(x),
                         "calibration_flag_rate": flagged_own, "test_flag_rate": test_flagged}
