"""Mark: embed a watermark FROMSCRATCH (train with triggers from step one) or
PRETRAINED (fine-tune a trained model with triggers until the watermark holds).

    history = mark_from_scratch(model, data, mk, cfg)
    history = mark_pretrained(model, data, mk, cfg, until=1.0)

Both are :func:`backmark.train.train` with a :class:`TriggerMixer`; write your own loop
with the mixer if you need to.
"""
from __future__ import annotations

from torch import nn

from .data import Dataset
from .keys import MarkingKey
from .mixer import TriggerMixer
from .train import EpochStats, TrainConfig, train


def mark_from_scratch(model: nn.Module, data: Dataset, mk: MarkingKey, cfg: TrainConfig, *, indices=None, **kw) -> list[EpochStats]:
    """Train a freshly initialised ``model`` with the trigger set mixed into every batch."""
    mixer = TriggerMixer.from_key(mk, k=cfg.trigger_k, indices=indices, seed=cfg.seed)
    return train(model, data, cfg, mixer=mixer, **kw)


def mark_pretrained(
    model: nn.Module, data: Dataset, mk: MarkingKey, cfg: TrainConfig, *, until: float = 1.0, indices=None, **kw
) -> list[EpochStats]:
    """Fine-tune a trained ``model`` with triggers; stop early once trigger accuracy >= ``until``.

    ``cfg.epochs`` is the most epochs spent.
    """
    mixer = TriggerMixer.from_key(mk, k=cfg.trigger_k, indices=indices, seed=cfg.seed)
    return train(model, data, cfg, mixer=mixer, stop_when=lambda s: s.trigger_acc is not None and s.trigger_acc >= until, **kw)
