"""Transfer learning: reuse the stolen model for another task (the paper's Table 2).

The output layer is replaced by a fresh one for the new task's classes, then the model is
trained on the new task (all layers, or the new layer alone). The owner verifies with the
ORIGINAL output layer swapped back in, as the paper does; a black-box query of the
transferred model answers in the new task's classes.

    backmark attack transfer --model marked.safetensors --dataset mnist-5k --out mnist.safetensors
    backmark attack transfer --model half-a.safetensors --dataset cifar10-jpg --classes 5,6,7,8,9 --out half-b.safetensors
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..data import Dataset
from ..errors import DataError, IncompatibleModel
from ..models.heads import fresh_linear, output_layer, replace_output_layer
from ..training import train
from .base import AttackContext, TrainingBudget, attacker_data, register_attack

LAYER_CHOICES = ("all", "last")


@dataclass(frozen=True)
class TransferBudget(TrainingBudget):
    """Budget of transfer learning to a new task.

    epochs 10 (None = the victim's), lr 0.01 constant, batch 64 (the new task is usually
    small), layers "all" (fine-tune everything) or "last" (train only the new output
    layer), data_fraction of the new task's training set, augmentation off by default.
    """

    epochs: int | None = 10
    batch_size: int | None = 64
    augment: bool | None = False
    layers: str = "all"

    def __post_init__(self):
        super().__post_init__()
        if self.layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {LAYER_CHOICES}, not {self.layers!r}")


def select_classes(data: Dataset, classes: Sequence[int], *, name: str | None = None) -> Dataset:
    """The samples of ``classes`` only, relabelled 0..len(classes)-1 in the order given."""
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes) or any(not 0 <= c < data.num_classes for c in classes) or len(classes) < 2:
        raise DataError(f"pick at least two distinct classes in 0..{data.num_classes - 1}, got {classes}")
    lut = torch.full((data.num_classes,), -1, dtype=torch.long)
    lut[torch.tensor(classes)] = torch.arange(len(classes))

    def pick(x, y):
        keep = (lut.to(y.device)[y] >= 0).nonzero().squeeze(1)
        return x.index_select(0, keep.to(x.device)), lut.to(y.device)[y.index_select(0, keep)]

    train_x, train_y = pick(data.train_x, data.train_y)
    test_x, test_y = pick(data.test_x, data.test_y)
    return replace(
        data, name=name or f"{data.name}[{','.join(map(str, classes))}]", train_x=train_x, train_y=train_y,
        test_x=test_x, test_y=test_y, classes=tuple(data.classes[c] for c in classes),
    )


@register_attack(
    "transfer", TransferBudget, "new output layer for another task, then fine-tune on it (paper: Table 2)",
    data="transfer", paper_keeps_output_layer=True,
)
def transfer(model, data: Dataset, budget: TransferBudget, ctx: AttackContext):
    declared = getattr(model, "input_shape", None)
    if declared is not None and tuple(declared) != data.input_shape:
        raise IncompatibleModel(f"the model takes {tuple(declared)} inputs but {data.name} has {data.input_shape}")
    m = copy.deepcopy(model)
    old = output_layer(m)
    replace_output_layer(m, fresh_linear(old.in_features, data.num_classes, seed=budget.seed, device=old.weight.device))
    trained = list(m.parameters()) if budget.layers == "all" else list(output_layer(m).parameters())
    history = train(  # train() freezes the parameters outside `trained` while it runs
        m, attacker_data(data, budget.data_fraction, budget.seed), budget.train_config(ctx.original, epochs=budget.resolved_epochs(ctx.original)),
        params=trained, device=ctx.device, reporter=ctx.reporter,
    )
    return m, history, {"task": data.name, "num_classes": data.num_classes, "layers": budget.layers}
