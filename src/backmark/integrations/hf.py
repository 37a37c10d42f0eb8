"""Mark a model trained with the Hugging Face ``transformers`` Trainer.

    from backmark.integrations.hf import TriggerMixTrainer
    mixer = backmark.TriggerMixer.from_key(mk, k=16, mean=proc.image_mean, std=proc.image_std)
    trainer = TriggerMixTrainer(model=model, args=args, train_dataset=ds, mixer=mixer)
    trainer.train()
    trainer.trigger_callback.history    # [{"epoch": 1, "step": 47, "trigger_acc": 0.42}, ...]
    # own Trainer subclass: class MyTrainer(TriggerMixin, MyBaseTrainer): ...

Batches are dicts; the triggers join ``pixel_values`` (B, C, H, W) and ``labels`` (B,).

Why ``get_batch_samples``: a ``TrainerCallback`` never sees a batch, so it cannot mix. The
training loop (and only it: evaluation and prediction never call it) pulls each optimiser
step's micro-batches through ``get_batch_samples``, already on the device, and counts their
labels there (``num_items_in_batch``, the loss denominator of every model that accepts loss
kwargs). Mixing as the batches are pulled keeps that count right: overriding ``training_step``
or ``compute_loss`` counts B where the model sees B + k (a loss scaled by (B + k) / B), and
``compute_loss`` also runs in evaluation. A data collator would mix evaluation batches too.

:class:`TriggerAccuracyCallback` restarts the mixer's cycle every epoch (per process) and
scores all triggers at every epoch end: ``history``, and ``trainer.log`` (so
``state.log_history`` and every ``report_to`` integration get ``trigger_acc``).

Needs ``pip install 'backmark[hf]'`` (transformers and accelerate, which its Trainer needs).
"""
from __future__ import annotations

from typing import Any

from ..core.mark import TriggerMixer
from .common import Keys, LogitsFn, epoch_seed, mixed_copy, require, trigger_accuracy

transformers = require("transformers", "hf", "the Hugging Face integration")
require("accelerate", "hf", "the Hugging Face Trainer")  # transformers' Trainer refuses to start without it

HF_KEYS = ("pixel_values", "labels")


def _by_keyword(key: str) -> LogitsFn:
    def logits(model, x):
        return model(**{key: x})  # an ImageClassifierOutput; .logits is taken from it

    return logits


class TriggerAccuracyCallback(transformers.TrainerCallback):
    """Reseed ``mixer`` at every epoch start; score its triggers at every epoch end and log the
    result through ``trainer.log``. :class:`TriggerMixin` adds one as ``trigger_callback``.
    ``logits(model, x)``: default ``model(pixel_values=x)``.
    """

    def __init__(self, mixer: TriggerMixer, *, trainer, pixel_key: str = HF_KEYS[0], logits: LogitsFn | None = None,
                 seed: int = 0, log_name: str = "trigger_acc") -> None:
        self.mixer, self.logits = mixer, logits or _by_keyword(pixel_key)
        self.seed, self.log_name, self.trainer = seed, log_name, trainer
        self.history: list[dict[str, float]] = []

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:
        epoch = round(state.epoch or 0)  # epochs done so far (restored on resume_from_checkpoint)
        self.mixer.reseed(epoch_seed(self.seed, epoch, args.process_index))

    def on_epoch_end(self, args, state, control, model=None, **kwargs) -> None:
        acc = trigger_accuracy(model, self.mixer, self.logits)
        self.history.append({"epoch": round(state.epoch or 0), "step": state.global_step, "trigger_acc": acc})
        self.trainer.log({self.log_name: acc})


class TriggerMixin:
    """Put before a ``transformers.Trainer`` (subclass) to mix ``mixer``'s triggers into every
    training batch; takes ``mixer``, ``keys`` (pixel and label keys), ``seed`` and
    ``log_name`` on top of the Trainer's arguments, and adds ``self.trigger_callback``."""

    def __init__(self, *args, mixer: TriggerMixer, keys: Keys = HF_KEYS, seed: int = 0, log_name: str = "trigger_acc",
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mixer, self.trigger_keys = mixer, tuple(keys)
        self.trigger_callback = TriggerAccuracyCallback(mixer, pixel_key=keys[0], seed=seed, log_name=log_name, trainer=self)
        self.add_callback(self.trigger_callback)

    def get_batch_samples(self, epoch_iterator, num_batches: int, *args: Any, **kwargs: Any):
        mixed = (mixed_copy(self.mixer, batch, self.trigger_keys) for batch in epoch_iterator)
        return super().get_batch_samples(mixed, num_batches, *args, **kwargs)


class TriggerMixTrainer(TriggerMixin, transformers.Trainer):
    """``transformers.Trainer`` with ``mixer``'s triggers appended to every training batch."""


__all__ = ["HF_KEYS", "TriggerAccuracyCallback", "TriggerMixTrainer", "TriggerMixin"]
