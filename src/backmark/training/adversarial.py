"""Signed-gradient ascent on the loss (PGD, L-infinity): the one implementation behind margin
hardening of a watermark (core.mark) and adversarial fine-tuning (attacks.adversarial).

    x_adv = signed_gradient_ascent(model, x, y, epsilon=0.1, step_size=0.04, steps=3)

``x`` holds float pixels in [0, 1] (B, C, H, W); the perturbation is bounded by ``epsilon``
in those pixel units, and the result is clamped to [0, 1]. ``to_input`` maps pixels to what
the model takes (a normalisation), so a pipeline whose batches are normalised perturbs in
pixel space all the same. Only the perturbation's gradient is computed
(``torch.autograd.grad``): the parameters' ``.grad`` are left untouched, and the model runs in
eval mode meanwhile, so BatchNorm running statistics are not moved by the few images.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def default_step_size(epsilon: float, steps: int) -> float:
    """Madry et al.'s rule, 2.5 * epsilon / steps: the ascent can cross the ball and still move along its edge."""
    return 2.5 * epsilon / steps


def signed_gradient_ascent(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    steps: int,
    step_size: float | None = None,
    to_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``x`` moved by ``steps`` signed-gradient steps up the cross-entropy of (model(x), y), within
    ``epsilon`` of ``x`` (L-infinity, pixel units) and inside [0, 1]; returned detached."""
    if epsilon < 0 or steps < 0:
        raise ValueError("epsilon and steps must be >= 0")
    if epsilon == 0 or steps == 0 or not len(x):
        return x.detach()
    step = default_step_size(epsilon, steps) if step_size is None else step_size
    x = x.detach()
    delta = torch.zeros_like(x)
    was_training = model.training
    model.eval()
    try:
        for _ in range(steps):
            delta.requires_grad_(True)
            adv = (x + delta).clamp(0, 1)
            loss = F.cross_entropy(model(to_input(adv) if to_input is not None else adv), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + step * grad.sign()).clamp(-epsilon, epsilon)
    finally:
        model.train(was_training)
    return (x + delta).clamp(0, 1).detach()
