"""Adversarial fine-tuning: fine-tune all layers on adversarially perturbed inputs with their
true labels (in the style of the WRK removal attack of the SoK of Lukas et al., IEEE S&P 2022).

Backdoor triggers tend to sit where a model's decision regions are thin; training the model to
hold its TRUE labels over a ball around the attacker's own images reshapes the regions near the
data, which can push a trigger out of its region. Every step's clean images are replaced by
PGD adversarial examples (``steps`` signed-gradient steps within ``epsilon``, pixel units) of
the model as it is at that step (training.adversarial, the same ascent margin hardening uses).

    backmark attack adv-finetune --model marked.safetensors --out adv.safetensors --data-fraction 0.05 --epsilon 0.1
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..training import signed_gradient_ascent, train
from .base import AttackContext, TrainingBudget, attacker_data, register_attack


@dataclass(frozen=True)
class AdversarialBudget(TrainingBudget):
    """Budget of adversarial fine-tuning: epochs (None = the victim's), lr 0.01 constant, on
    data_fraction 0.05 of the training set with true labels; epsilon (L-infinity, pixel units
    of [0, 1]), steps and step_size (None: 2.5 * epsilon / steps) of the PGD examples."""

    data_fraction: float = 0.05
    epsilon: float = 0.1
    steps: int = 3
    step_size: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.epsilon <= 1 or self.steps < 1 or (self.step_size is not None and self.step_size <= 0):
            raise ValueError("epsilon must lie in (0, 1], steps >= 1, step_size > 0")


@register_attack("adv-finetune", AdversarialBudget, "fine-tune all layers on PGD examples of the attacker's data with true labels (WRK-style)")
def adv_finetune(model, data, budget: AdversarialBudget, ctx: AttackContext):
    m = copy.deepcopy(model)

    def perturb(net, x, y):
        return signed_gradient_ascent(net, x, y, epsilon=budget.epsilon, steps=budget.steps, step_size=budget.step_size)

    cfg = budget.train_config(ctx.original, epochs=budget.resolved_epochs(ctx.original))
    history = train(m, attacker_data(data, budget.data_fraction, budget.seed), cfg, device=ctx.device, reporter=ctx.reporter,
                    batch_hook=perturb)
    return m, history, {"epsilon": budget.epsilon, "steps": budget.steps}
