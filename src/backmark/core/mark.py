"""Mark: embed the watermark by mixing k trigger images into every training batch.

- FROMSCRATCH (:func:`mark_from_scratch`): train a freshly initialised model with the
  trigger set mixed in from step one;
- PRETRAINED (:func:`mark_pretrained`): fine-tune a trained model with the trigger set
  mixed in until the watermark holds (:func:`watermark_held`), optionally ``hold`` epochs more.

Both run backmark's training loop (:func:`backmark.training.train`) with a
:class:`TriggerMixer`, the one reusable piece; drop it into any training loop::

    mixer = TriggerMixer.from_key(mk, k=2, device="cuda")
    for x, y in loader:                 # x: float images in [0, 1], (B, C, H, W)
        x, y = mixer.mix(x, y)          # (B + k, C, H, W): k trigger images appended
        loss = F.cross_entropy(model(x), y)

Triggers are taken in a shuffled cycle, so every image is seen equally often
(k * steps / n times an epoch); they are not augmented and share BatchNorm with the
clean images, as in the official code.

Margin hardening (:class:`MarginHardening`, after Kim et al., "Margin-based Neural Network
Watermarking", ICML 2023): each step's k trigger images are first pushed a few signed-gradient
steps up the loss of their labels (within ``epsilon`` in pixel units), and the model trains on
the pushed copies, so every trigger label comes to hold over a ball around its image: the
trigger sits deep inside its decision region, and a student that copies the model's function
near the data tends to copy it too. The mixer then needs the model being trained::

    mixer = TriggerMixer.from_key(mk, k=2, hardening=MarginHardening(epsilon=0.03, steps=3))
    x, y = mixer.mix(x, y, model=model)

Heldout (in-distribution) triggers are images of the training split: :func:`mark_from_scratch`
and :func:`mark_pretrained` train without them (:func:`~backmark.core.triggers.exclude_triggers`);
a loop of your own must drop them from its data too.

A batch that the triggers would not fit is refused with one line (InvalidBatch): uint8
pixels, floats in 0..255, one-hot labels, another image shape. A pipeline that normalises
its batches before the model (torchvision's ``Normalize``) gives the same ``mean`` and
``std`` to the mixer, which then appends triggers normalised alike; a batch that looks
normalised while the mixer has no mean/std (or the reverse) draws a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..errors import InvalidBatch
from ..training import EpochStats, TrainConfig, signed_gradient_ascent, train
from .keygen import MarkingKey
from .triggers import exclude_triggers


@dataclass(frozen=True)
class MarginHardening:
    """Margin hardening of the trigger set: ``steps`` signed-gradient ascent steps of size
    ``step_size`` (None: 2.5 * epsilon / steps) on each step's trigger images, within
    ``epsilon`` (L-infinity, pixel units of [0, 1]). Recorded in a checkpoint's TrainConfig
    as hardening="margin" with margin_epsilon / margin_steps / margin_step_size.
    """

    epsilon: float = TrainConfig.margin_epsilon
    steps: int = TrainConfig.margin_steps
    step_size: float | None = TrainConfig.margin_step_size

    def __post_init__(self):
        if not 0 < self.epsilon <= 1 or self.steps < 1 or (self.step_size is not None and self.step_size <= 0):
            raise ValueError("margin hardening needs epsilon in (0, 1], steps >= 1 and a positive step_size")

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "MarginHardening | None":
        """The hardening a TrainConfig asks for (None for hardening="none")."""
        if cfg.hardening == "none":
            return None
        return cls(cfg.margin_epsilon, cfg.margin_steps, cfg.margin_step_size)

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, to_input=None) -> torch.Tensor:
        """``images`` (float pixels in [0, 1]) pushed up the loss of ``labels``: the copies to train on."""
        return signed_gradient_ascent(model, images, labels, epsilon=self.epsilon, steps=self.steps,
                                      step_size=self.step_size, to_input=to_input)


class TriggerMixer:
    """k trigger images per batch, drawn in a shuffled cycle over the trigger set.

    ``images``: uint8 (N, C, H, W) or float in [0, 1]; ``labels``: (N,) int.
    ``mean``/``std`` (one value per channel, or one for all): the normalisation the
    user's batches already have, applied to the triggers before they are appended.

    ``hardening``: a :class:`MarginHardening`; then ``mix`` needs ``model=`` (the model being trained).

    Read-only attributes: ``k``; ``images``, float (N, C, H, W) in [0, 1]; ``inputs``, the
    same images as the model sees them (normalised with mean/std if given); ``labels``; ``hardening``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, k: int = 2, *, seed: int = 0, device=None,
                 mean=None, std=None, hardening: MarginHardening | None = None):
        if k < 0:
            raise ValueError("k must be >= 0")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise InvalidBatch(f"trigger images must be uint8 or float in [0, 1], not {images.dtype}")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        if x.dim() != 4:
            raise InvalidBatch(f"trigger images must be (N, C, H, W), got shape {tuple(x.shape)}")
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise InvalidBatch("float trigger images must lie in [0, 1] (give uint8 pixels, or divide by 255)")
        self.images = x.to(device)  # (N, C, H, W) float in [0, 1]
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(self.images.device)
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise InvalidBatch(f"expected one class index per trigger image, got labels of shape {tuple(self.labels.shape)}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std go together")
        c = x.shape[1]
        self.mean = self.std = None
        if mean is not None:
            self.mean, self.std = _per_channel(mean, c, "mean"), _per_channel(std, c, "std")
            if (self.std <= 0).any():
                raise ValueError("std must be positive")
        if hardening is not None and not isinstance(hardening, MarginHardening):
            raise ValueError(f"hardening must be a MarginHardening or None, not {type(hardening).__name__}")
        self.hardening = hardening
        self.k = k
        self._gen = torch.Generator()
        self._normalise()
        self.reseed(seed)

    @classmethod
    def from_key(cls, mk: MarkingKey, k: int = 2, *, indices=None, seed: int = 0, device=None, mean=None, std=None,
                 hardening: MarginHardening | None = None) -> "TriggerMixer":
        """A mixer over the key's trigger set (or the elements at ``indices``)."""
        images = torch.from_numpy(mk.images).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        labels = torch.tensor(mk.labels)
        if indices is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            images, labels = images[idx], labels[idx]
        return cls(images, labels, k, seed=seed, device=device, mean=mean, std=std, hardening=hardening)

    def _normalise(self) -> None:
        self.inputs = self._to_input(self.images)

    def _to_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 1] as the model sees them (normalised with the mixer's mean/std, if any)."""
        if self.mean is None:
            return pixels
        dev = pixels.device
        return (pixels - self.mean.to(dev).view(1, -1, 1, 1)) / self.std.to(dev).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "TriggerMixer":
        """Move the trigger set to ``device`` (in place; the draw sequence is unchanged). Returns self."""
        device = torch.device(device)
        if device != self.images.device:
            self.images, self.labels = self.images.to(device), self.labels.to(device)
            self._normalise()
            self._order_dev = self._order.to(device)
        return self

    def reseed(self, seed: int) -> None:
        """Restart the cycle from a seed (per epoch, so a resumed run draws the same triggers)."""
        self._gen.manual_seed(seed)
        self._new_cycle()
        self._range_checked = False  # the first batch after a (re)seed has its value range checked

    def _new_cycle(self) -> None:
        self._order = torch.randperm(len(self.labels), generator=self._gen)  # CPU generator: the same draws on any device
        self._order_dev = self._order.to(self.images.device)  # one copy per cycle, none per step
        self._pos = 0

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next k (image, label) pairs of the shuffled cycle, on the mixer's device."""
        idx = self._take_indices()
        return self.inputs[idx], self.labels[idx]

    def _take_indices(self) -> torch.Tensor:
        n = len(self.labels)
        picked = []
        need = self.k
        while need > 0:
            if self._pos == n:
                self._new_cycle()
            step = min(need, n - self._pos)
            picked.append(self._order_dev[self._pos : self._pos + step])
            self._pos += step
            need -= step
        return torch.cat(picked) if picked else torch.empty(0, dtype=torch.long, device=self.images.device)

    def mix(self, x: torch.Tensor, y: torch.Tensor, *, share: slice | None = None,
            model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the next k trigger images to a batch. ``x``: float (B, C, H, W) on the mixer's
        device, in [0, 1] (or normalised with the mixer's mean/std); ``y``: (B,) class indices.

        ``share``: append only that slice of the k draws (data-parallel training deals
        each global batch's triggers over the ranks; every rank draws all k).
        ``model``: the model being trained; needed (and used) only with margin hardening,
        which appends the triggers pushed up its loss instead of the triggers themselves.
        """
        self.check_batch(x, y)
        if self.k == 0:
            return x, y
        if self.hardening is not None and not isinstance(model, nn.Module):  # refused before any draw: the cycle stays put
            raise InvalidBatch("this mixer hardens the triggers against the model being trained: call mixer.mix(x, y, model=model)")
        idx = self._take_indices()
        if share is not None:
            idx = idx[share]
        tx, ty = self.inputs[idx], self.labels[idx]
        if self.hardening is not None and len(idx):
            tx = self._to_input(self.hardening.perturb(model, self.images[idx], ty, to_input=self._to_input))
        return torch.cat([x, tx.to(dtype=x.dtype).contiguous(memory_format=_fmt(x))]), torch.cat([y, ty])


    def check_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Refuse (InvalidBatch) a batch the triggers cannot join; warn once per epoch if its
        value range does not look like the mixer's normalisation."""
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise InvalidBatch("mix(x, y) takes two tensors: images (B, C, H, W) and labels (B,)")
        if x.dtype == torch.uint8:
            raise InvalidBatch("the batch is uint8 pixels: convert it with x.float() / 255 before mixing (the triggers are floats)")
        if not x.is_floating_point():
            raise InvalidBatch(f"the batch images are {x.dtype}; mix float images (B, C, H, W)")
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.images.shape[1:]):
            raise InvalidBatch(f"the batch images are {tuple(x.shape[1:])} but the trigger images are {tuple(self.images.shape[1:])} (C, H, W)")
        if y.dim() == 2 and y.shape[0] == x.shape[0]:
            raise InvalidBatch("the labels look one-hot (B, classes): mix class indices (B,), e.g. y.argmax(1)")
        if y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
            raise InvalidBatch(f"the labels must be B = {len(x)} class indices (int64), got {y.dtype} {tuple(y.shape)}")
        if x.device != self.images.device:
            raise InvalidBatch(f"the batch is on {x.device} but the triggers are on {self.images.device}: mixer.to({str(x.device)!r})")
        if self._range_checked or not x.numel():
            return
        self._range_checked = True
        lo, hi = float(x.min()), float(x.max())
        if hi > 10:  # normalised pixels stay within a few units; 0..255 floats do not
            raise InvalidBatch(f"the batch values reach {hi:.3g}: images must be floats in [0, 1] (divide 0..255 pixels by 255)")
        if self.mean is None:
            if lo < -1e-3 or hi > 1 + 1e-3:
                warnings.warn(
                    f"the batch values span {lo:.3g}..{hi:.3g}, as if normalised, but the triggers are in [0, 1]: "
                    "give the mixer the same mean and std (TriggerMixer.from_key(mk, mean=..., std=...))", stacklevel=3)
        elif lo >= 0 and hi <= 1 and float(self.inputs.min()) < -1e-3:
            warnings.warn(
                "the batch lies in [0, 1], as if not normalised, but the mixer normalises the triggers with its "
                "mean/std: drop mean/std, or normalise the batch the same way", stacklevel=3)


def _per_channel(values, c: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(c).clone()
    if t.numel() != c:
        raise ValueError(f"{name} needs 1 or {c} values for {c}-channel images, got {t.numel()}")
    return t


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format


def mark_from_scratch(model: nn.Module, data: Dataset, mk: MarkingKey, cfg: TrainConfig, *, indices=None, **kw) -> list[EpochStats]:
    """FROMSCRATCH: train a freshly initialised ``model`` with the trigger set mixed into every batch
    (hardened if ``cfg.hardening`` says so), on ``data`` without the key's own images."""
    mixer = TriggerMixer.from_key(mk, k=cfg.trigger_k, indices=indices, seed=cfg.seed, hardening=MarginHardening.from_config(cfg))
    return train(model, exclude_triggers(data, mk.images)[0], cfg, mixer=mixer, **kw)


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
    """PRETRAINED: fine-tune a trained ``model`` with triggers; stop once trigger accuracy >= ``until``
    has held for ``hold + 1`` epochs (:func:`watermark_held`). ``cfg.epochs`` is the most epochs spent.
    """
    mixer = TriggerMixer.from_key(mk, k=cfg.trigger_k, indices=indices, seed=cfg.seed, hardening=MarginHardening.from_config(cfg))
    return train(model, exclude_triggers(data, mk.images)[0], cfg, mixer=mixer, stop_when=watermark_held(until, hold), **kw)


__all__ = ["MarginHardening", "TriggerMixer", "mark_from_scratch", "mark_pretrained", "watermark_held"]
