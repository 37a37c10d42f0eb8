"""Magnitude weight pruning (Han et al. 2015; the paper's section 5.3 mentions it, the SoK
by Lukas et al. 2022 evaluates it): zero the smallest-magnitude weights of every
convolution and linear layer, optionally fine-tune with the zeros held, and keep the result.

    backmark attack prune --model marked.safetensors --out pruned.safetensors --amount 0.7
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from ..training import train
from .base import AttackContext, CleanTraining, attacker_data, register_attack

SCOPES = ("global", "layer")


@dataclass(frozen=True)
class PruneBudget(CleanTraining):
    """Budget of weight pruning.

    amount: fraction of the conv and linear weights set to zero (0.5 = half); scope
    "global" (one magnitude threshold across all layers) or "layer" (the same fraction in
    each layer); finetune_epochs of clean training afterwards with the pruned weights held
    at zero (0 = none; lr, batch size, data share as for fine-tuning).
    """

    amount: float = 0.5
    scope: str = "global"
    finetune_epochs: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.amount < 1:
            raise ValueError(f"amount must lie in [0, 1), got {self.amount}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, not {self.scope!r}")
        if self.finetune_epochs < 0:
            raise ValueError("finetune_epochs must be >= 0")


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights among the conv and linear layers."""
    total = zeros = 0
    for m, attr in prunable(model):
        w = getattr(m, attr)
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / max(total, 1)


@register_attack("prune", PruneBudget, "zero the smallest-magnitude weights, optionally fine-tune (weight pruning)")
def prune(model, data, budget: PruneBudget, ctx: AttackContext):
    m = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # pruning flattens weights
    targets = prunable(m)
    if budget.scope == "global":
        tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=budget.amount)
    else:
        for mod, attr in targets:
            tprune.l1_unstructured(mod, attr, amount=budget.amount)
    history = []
    if budget.finetune_epochs:
        # the masks stay attached (weight = weight_orig * mask), so fine-tuning cannot revive pruned weights
        history = train(
            m, attacker_data(data, budget.data_fraction, budget.seed),
            budget.train_config(ctx.original, epochs=budget.finetune_epochs), device=ctx.device, reporter=ctx.reporter,
        )
    for mod, attr in targets:
        tprune.remove(mod, attr)
    return m.eval(), history, {"sparsity": sparsity(m)}
