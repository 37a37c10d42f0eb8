"""The paper's four fine-tuning attacks (Adi et al. 2018, section 5.3; official fine-tune.py).

- ``ftll``: fine-tune the last layer only;
- ``ftal``: fine-tune all layers;
- ``rtll``: re-initialise the last layer, then train it only;
- ``rtal``: re-initialise the last layer, then train all layers.

The attacker trains on clean data without triggers. Default budget = the paper's: the
same data and number of epochs as the victim's own training, SGD at lr 0.01 (a tenth of
the training rate, as in the official examples), constant rate. As in the official code the
model is in training mode, so BatchNorm running statistics move in all four attacks.

    backmark attack rtal --model marked.safetensors --out rtal.safetensors --epochs 3
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ..data import Dataset
from ..models.heads import fresh_linear, output_layer, replace_output_layer
from ..training import train
from .base import AttackContext, TrainingBudget, attacker_data, register_attack


@dataclass(frozen=True)
class FineTuneBudget(TrainingBudget):
    """Budget of FTLL/FTAL/RTLL/RTAL.

    epochs: None = the victim's training epochs; lr 0.01, constant schedule; batch size and
    augmentation as the victim's; data_fraction of the victim's training set (1.0 = all of
    it, labels included); seed for data order and the re-initialised layer.
    """


def fine_tune(model: nn.Module, data: Dataset, budget: FineTuneBudget, ctx: AttackContext, *, all_layers: bool, reinit: bool):
    """The four attacks in one: returns (attacked copy, history, notes)."""
    m = copy.deepcopy(model)
    if reinit:
        old = output_layer(m)
        replace_output_layer(m, fresh_linear(old.in_features, old.out_features, seed=budget.seed, device=old.weight.device))
    fc = output_layer(m)
    trained = list(m.parameters()) if all_layers else list(fc.parameters())
    history = train(  # train() freezes the parameters outside `trained` while it runs
        m, attacker_data(data, budget.data_fraction, budget.seed), budget.train_config(ctx.original, epochs=budget.resolved_epochs(ctx.original)),
        params=trained, device=ctx.device, reporter=ctx.reporter,
    )
    return m, history, {"layers": "all" if all_layers else "last", "reinitialised_last_layer": reinit}


@register_attack("ftll", FineTuneBudget, "fine-tune the last layer on clean data (paper: FTLL)")
def ftll(model, data, budget, ctx):
    return fine_tune(model, data, budget, ctx, all_layers=False, reinit=False)


@register_attack("ftal", FineTuneBudget, "fine-tune all layers on clean data (paper: FTAL)")
def ftal(model, data, budget, ctx):
    return fine_tune(model, data, budget, ctx, all_layers=True, reinit=False)


@register_attack("rtll", FineTuneBudget, "re-initialise the last layer, train it alone (paper: RTLL)", paper_keeps_output_layer=True)
def rtll(model, data, budget, ctx):
    return fine_tune(model, data, budget, ctx, all_layers=False, reinit=True)


@register_attack("rtal", FineTuneBudget, "re-initialise the last layer, train all layers (paper: RTAL)", paper_keeps_output_layer=True)
def rtal(model, data, budget, ctx):
    return fine_tune(model, data, budget, ctx, all_layers=True, reinit=True)
