"""Fine-pruning (Liu, Dolan-Gavitt, Garg, RAID 2018): backdoors hide in neurons that clean
inputs leave dormant. Measure the mean activation of each channel of the last
convolution on clean data, prune the least active channels, then fine-tune on clean data.

Pruning a channel zeroes its filter and, when a BatchNorm follows the convolution, that
BatchNorm's scale and shift, so the channel outputs exactly zero; the zeros are held
during fine-tuning and stay in the saved weights.

    backmark attack fine-prune --model marked.safetensors --out fp.safetensors --amount 0.6
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from ..errors import IncompatibleModel
from ..training import train
from .base import AttackContext, TrainingBudget, attacker_data, register_attack


@dataclass(frozen=True)
class FinePruneBudget(TrainingBudget):
    """Budget of fine-pruning.

    amount: fraction of the last convolution's channels pruned, least active first;
    samples: clean training images used to measure activations; then epochs of clean
    fine-tuning with the pruned channels held at zero (None = the victim's epochs), lr
    0.01 constant, batch size, augmentation and data share as for fine-tuning.
    """

    amount: float = 0.5
    samples: int = 5000

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.amount < 1:
            raise ValueError(f"amount must lie in (0, 1), got {self.amount}")
        if self.samples < 1:
            raise ValueError("samples must be positive")


def last_conv(model: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """The last nn.Conv2d in registration order, and the BatchNorm2d registered right after it (if any)."""
    mods = list(model.modules())
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise IncompatibleModel("fine-pruning needs a convolutional model")
    i = convs[-1]
    conv = mods[i]
    nxt = mods[i + 1] if i + 1 < len(mods) else None
    bn = nxt if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == conv.out_channels else None
    return conv, bn


@torch.no_grad()
def channel_activity(model: nn.Module, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Mean post-ReLU activation of each channel of the last convolution (after its BatchNorm) on ``x`` (uint8)."""
    conv, bn = last_conv(model)
    probe = bn if bn is not None else conv
    dev = next(model.parameters()).device
    total = torch.zeros(conv.out_channels, device=dev)

    def record(mod, inp, out):  # returns None: the module's output is left as it is
        total.add_(out.relu().mean((2, 3)).sum(0))

    hook = probe.register_forward_hook(record)
    was = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(dev).float() / 255)
    finally:
        hook.remove()
        model.train(was)
    return (total / len(x)).cpu()


@register_attack("fine-prune", FinePruneBudget, "prune the last conv layer's dormant channels, then fine-tune (Liu et al. 2018)")
def fine_prune(model, data, budget: FinePruneBudget, ctx: AttackContext):
    m = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # pruning flattens weights
    att = attacker_data(data, budget.data_fraction, budget.seed)
    g = torch.Generator().manual_seed(budget.seed)
    probe_idx = torch.randperm(len(att.train_y), generator=g)[: budget.samples]
    activity = channel_activity(m, att.train_x[probe_idx.to(att.train_x.device)])
    conv, bn = last_conv(m)
    n_prune = max(1, round(budget.amount * conv.out_channels))
    pruned = activity.argsort()[:n_prune]  # least active first
    keep = torch.ones(conv.out_channels)
    keep[pruned] = 0
    dev = conv.weight.device
    tprune.custom_from_mask(conv, "weight", keep.view(-1, 1, 1, 1).expand_as(conv.weight).to(dev))
    targets = [(conv, "weight")]
    if conv.bias is not None:
        tprune.custom_from_mask(conv, "bias", keep.to(dev))
        targets.append((conv, "bias"))
    if bn is not None:
        for attr in ("weight", "bias"):
            if getattr(bn, attr) is not None:
                tprune.custom_from_mask(bn, attr, keep.to(dev))
                targets.append((bn, attr))
    history = train(
        m, att, budget.train_config(ctx.original, epochs=budget.resolved_epochs(ctx.original)),
        device=ctx.device, reporter=ctx.reporter,
    )
    for mod, attr in targets:
        tprune.remove(mod, attr)
    return m.eval(), history, {
        "pruned_channels": int(n_prune),
        "channels": int(conv.out_channels),
        "pruned_activity_max": float(activity[pruned].max()),
        "kept_activity_min": float(activity[keep.bool()].min()) if keep.any() else None,
    }
