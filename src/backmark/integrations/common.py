"""What the framework integrations share: the framework import, mixing a batch container,
per-epoch reseeding and trigger accuracy.

A training batch is a list or tuple ``(images, labels, ...)`` or a dict; ``keys`` names where
the images (B, C, H, W) and the labels (B,) are: indices for a sequence, keys for a dict.
Anything else is refused with one line (InvalidBatch), and so is a batch that holds another
per-sample tensor the triggers would not extend (``(x, y, idx)``): the user's step would
zip B + k images with B indices.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

import torch
from torch import nn

from ..core.mark import TriggerMixer
from ..errors import IncompatibleModel, InvalidBatch, MissingDependency

Keys = tuple[Any, Any]  # (where the images are, where the labels are)
LogitsFn = Callable[[nn.Module, torch.Tensor], Any]  # (model, images) -> logits, or an output holding .logits


def require(module: str, extra: str, feature: str):
    """``import module``, or MissingDependency naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{feature} needs {module.split('.')[0]} ({e}): pip install 'backmark[{extra}]'") from None


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The mixer's seed for one epoch on one rank: a resumed run draws the same triggers, and
    data-parallel ranks (each appending its own k) draw different ones."""
    return (seed * 100_003 + epoch) * 1009 + rank


def _where(batch: Any, keys: Keys) -> None:
    """Refuse a batch whose container or keys do not say where the images and labels are."""
    if isinstance(batch, Mapping):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise InvalidBatch(
                f"the batch is a dict with keys {sorted(map(str, batch))} and no {missing[0]!r}: "
                "name the image and label keys, e.g. keys=('image', 'label')")
    elif isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        if not all(isinstance(k, int) for k in keys) or max(keys) >= len(batch):
            raise InvalidBatch(
                f"the batch is a {type(batch).__name__} of {len(batch)} entries: keys must be two of its indices, got {keys}")
    else:
        raise InvalidBatch(
            f"a training batch must be a list or tuple (images, labels, ...) or a dict, not {type(batch).__name__}")


def _entries(batch: Any) -> list[tuple[Any, Any]]:
    return list(batch.items()) if isinstance(batch, Mapping) else list(enumerate(batch))


def mixed_pair(mixer: TriggerMixer, batch: Any, keys: Keys) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's (images, labels) with the mixer's next k triggers appended, checked by the
    mixer (dtype, range, shape, labels: InvalidBatch) and refused if another per-sample entry
    would stay B long."""
    _where(batch, keys)
    x, y = batch[keys[0]], batch[keys[1]]
    if isinstance(x, torch.Tensor) and x.dim() >= 1:
        others = [k for k, v in _entries(batch)
                  if k not in keys and isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) == len(x)]
        if others:
            raise InvalidBatch(
                f"the batch has other per-sample entries {others} that the k triggers would not extend: "
                "keep only images and labels in training batches")
        mixer.to(x.device)  # the framework put the batch where the model is; the triggers join it there
    return mixer.mix(x, y)


def mix_in_place(mixer: TriggerMixer, batch: Any, keys: Keys) -> None:
    """Swap the images and labels of a list or dict batch for the mixed ones."""
    if not isinstance(batch, (MutableSequence, MutableMapping)):
        _where(batch, keys)  # a bare tensor or a str is refused for what it is
        raise InvalidBatch(
            f"a {type(batch).__name__} batch cannot be changed in place: use TriggerMixCallback(mixer, mode='wrap')")
    x, y = mixed_pair(mixer, batch, keys)
    batch[keys[0]], batch[keys[1]] = x, y


def mixed_copy(mixer: TriggerMixer, batch: Any, keys: Keys) -> Any:
    """A new batch of the same container type (list, tuple, namedtuple, dict) with the triggers appended."""
    x, y = mixed_pair(mixer, batch, keys)
    if isinstance(batch, Mapping):
        out = batch.copy() if hasattr(batch, "copy") else dict(batch)
        out[keys[0]], out[keys[1]] = x, y
        return out
    entries = list(batch)
    entries[keys[0]], entries[keys[1]] = x, y
    if isinstance(batch, tuple):
        return type(batch)(*entries) if hasattr(batch, "_fields") else tuple(entries)
    return entries if type(batch) is list else type(batch)(entries)


def logits_of(out: Any) -> torch.Tensor:
    """A model output as (B, classes) logits: a tensor, or an output with ``.logits`` (Hugging Face)."""
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise IncompatibleModel(
            f"the model returns {type(out).__name__}, not (B, classes) logits: "
            "pass logits=lambda model, x: ... to the integration")
    return logits


@torch.no_grad()
def trigger_accuracy(model: nn.Module, mixer: TriggerMixer, logits: LogitsFn, *, batch_size: int = 256) -> float:
    """The fraction of the mixer's triggers (as the model sees them: ``mixer.inputs``) that
    ``model`` labels with their trigger label. Eval mode, so the triggers neither update
    BatchNorm statistics nor meet dropout; the model's mode is put back."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else mixer.device
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32  # bf16-true runs score in bf16
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(mixer), batch_size):
            x = mixer.inputs[i : i + batch_size].to(device=device, dtype=dtype)
            pred = logits_of(logits(model, x)).argmax(1)
            correct += int((pred.cpu() == mixer.labels[i : i + batch_size].cpu()).sum())
    finally:
        model.train(was_training)
    return correct / len(mixer) if len(mixer) else float("nan")
