"""Mark: embed a watermark FROMSCRATCH (train with triggers from step one) or
PRETRAINED (fine-tune a trained model with triggers until the watermark holds).

    history = mark_from_scratch(model, data, mk, cfg)
    history = mark_pretrained(model, data, mk, cfg, until=1.0, hold=0)

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


def watermark_held(until: float = 1.0, hold: int = 0):
    """A ``stop_when`` rule: true once trigger accuracy has been >= ``until`` in ``hold + 1`` epochs.

    ``hold = 0`` stops as soon as the watermark holds; ``hold = N`` keeps fine-tuning N more epochs
    with the triggers, which makes the mark harder to fine-tune away. (After ``--resume`` the count
    starts again, so a resumed run may train up to ``hold`` epochs more, within ``cfg.epochs``.)
    """
    held = []

    def stop(stats: EpochStats) -> bool:
        if stats.trigger_acc is not None and stats.trigger_acc >= until:
            held.append(stats.epoch)
        return len(held) > hold

    return stop


def mark_pretrained(
    model: nn.Module, data: Dataset, mk: MarkingKey, cfg: TrainConfig, *, until: float = 1.0, hold: int = 0, indices=None, **kw
) -> list[EpochStats]:
    """Fine-tune a trained ``model`` with triggers; stop once trigger accuracy >= ``until`` has held
    for ``hold + 1`` epochs (:func:`watermark_held`). ``cfg.epochs`` is the most epochs spent.
    """
    mixer = TriggerMixer.from_key(mk, k=cfg.trigger_k, indices=indices, seed=cfg.seed)
    return train(model, data, cfg, mixer=mixer, stop_when=watermark_held(until, hold), **kw)
