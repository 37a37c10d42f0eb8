"""Mark a model trained with PyTorch Lightning: a callback, and no change to the LightningModule.

    from backmark.integrations.lightning import TriggerMixCallback
    mixer = backmark.TriggerMixer.from_key(mk, k=16)            # mean=, std= if batches are normalised
    cb = TriggerMixCallback(mixer)                              # list batches [x, y]; keys=("image", "label") for dicts
    L.Trainer(callbacks=[cb], ...).fit(module, train_loader)
    cb.history                      # [{"epoch": 1, "trigger_acc": 0.42}, ...]; also logged as "trigger_acc"

``training_step`` receives B + k rows: the k triggers are appended after the batch is on the
device and after every batch hook of the module or DataModule (so after a normalisation in
``on_after_batch_transfer``: give the mixer the same mean/std). Validation, test and predict
batches are never touched.

Two ways in, because a Callback cannot return a new batch (Lightning ignores the return value
of ``on_train_batch_start`` and hands the same batch object to ``training_step``):

- ``mode="inplace"`` (default): ``on_train_batch_start`` swaps the images and labels inside
  the batch. Public API only; works for list batches (what ``default_collate`` makes of
  ``(x, y)`` samples) and dict batches.
- ``mode="wrap"``: for the length of ``fit``, ``training_step`` is shadowed on the instance by
  one that mixes a copy of the batch, so tuples and namedtuples (a custom ``collate_fn``) work
  too. ``functools.wraps`` keeps the signature Lightning inspects to pass ``batch_idx``; the
  original is put back in ``teardown`` and on an exception.

Needs ``pip install 'backmark[lightning]'``.
"""
from __future__ import annotations

import functools
from typing import Any

from torch import nn

from ..core.mark import TriggerMixer
from .common import Keys, LogitsFn, epoch_seed, mix_in_place, mixed_copy, require, trigger_accuracy

pl = require("lightning.pytorch", "lightning", "the Lightning integration")

MODES = ("inplace", "wrap")


def _call(model: nn.Module, x):
    return model(x)


class TriggerMixCallback(pl.Callback):
    """Append ``mixer``'s k triggers to every training batch; score all triggers after each epoch.

    ``keys``: where the images and labels are in a batch (indices of a list/tuple, or dict
    keys). ``logits(module, x)``: how to get logits when ``module(x)`` does not return them
    (an output with ``.logits`` is unwrapped). ``seed``: the mixer is reseeded from it every
    epoch (and per rank under DDP, each rank appending its own k). ``log_name``: the metric
    logged through ``pl_module.log`` (None: do not log; ``history`` is kept either way).
    """

    def __init__(self, mixer: TriggerMixer, *, keys: Keys = (0, 1), mode: str = "inplace", logits: LogitsFn = _call,
                 seed: int = 0, log_name: str | None = "trigger_acc", prog_bar: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mixer, self.keys, self.mode, self.logits = mixer, tuple(keys), mode, logits
        self.seed, self.log_name, self.prog_bar = seed, log_name, prog_bar
        self.history: list[dict[str, float]] = []
        self._patched: nn.Module | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self.mode == "wrap":
            self._wrap(pl_module)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._unwrap()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._unwrap()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.mixer.to(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.mixer.reseed(epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank))

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self.mode == "inplace":
            mix_in_place(self.mixer, batch, self.keys)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        acc = trigger_accuracy(pl_module, self.mixer, self.logits)
        self.history.append({"epoch": trainer.current_epoch + 1, "trigger_acc": acc})
        if self.log_name:  # on_step must be False in an epoch-end hook; with logger=False it still reaches callback_metrics
            pl_module.log(self.log_name, acc, on_step=False, on_epoch=True, prog_bar=self.prog_bar)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def _wrap(self, pl_module) -> None:
        if self._patched is not None:
            return
        original = pl_module.training_step  # the bound method (the class's, or one the user set on the instance)

        @functools.wraps(original)
        def training_step(batch, *args, **kwargs):
            return original(mixed_copy(self.mixer, batch, self.keys), *args, **kwargs)

        self._before = pl_module.__dict__.get("training_step")
        pl_module.training_step = training_step
        self._patched = pl_module

    def _unwrap(self) -> None:
        if self._patched is None:
            return
        if self._before is None:
            del self._patched.training_step
        else:
            self._patched.training_step = self._before
        self._patched = None


__all__ = ["MODES", "TriggerMixCallback"]
