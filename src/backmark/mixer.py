"""TriggerMixer: mix k trigger images into every training batch (the paper's embedding).

:class:`TriggerMixer` is the one reusable piece; drop it into any training loop::

    mixer = TriggerMixer.from_key(mk, k=2, device="cuda")
    for x, y in loader:                 # x: float images in [0, 1], (B, C, H, W)
        x, y = mixer.mix(x, y)          # (B + k, C, H, W): k trigger images appended
        loss = F.cross_entropy(model(x), y)

Triggers are taken in a shuffled cycle, so every image is seen equally often
(k * steps / n times an epoch); they are not augmented and share BatchNorm with the
clean images, as in the official code.
"""
from __future__ import annotations

import torch

from .keys import MarkingKey


class TriggerMixer:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, k: int = 2, *, seed: int = 0, device=None):
        """``images``: uint8 (N, C, H, W) or float in [0, 1]; ``labels``: (N,) int."""
        if k < 0:
            raise ValueError("k must be >= 0")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        self.images = x.to(device)  # (N, C, H, W) float in [0, 1]
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(device)
        self.k = k
        self._gen = torch.Generator()
        self.reseed(seed)

    @classmethod
    def from_key(cls, mk: MarkingKey, k: int = 2, *, indices=None, seed: int = 0, device=None) -> "TriggerMixer":
        """A mixer over the key's trigger set (or the elements at ``indices``)."""
        images = torch.from_numpy(mk.images).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        labels = torch.tensor(mk.labels)
        if indices is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            images, labels = images[idx], labels[idx]
        return cls(images, labels, k, seed=seed, device=device)

    def __len__(self) -> int:
        return len(self.labels)

    def reseed(self, seed: int) -> None:
        """Restart the cycle from a seed (per epoch, so a resumed run draws the same triggers)."""
        self._gen.manual_seed(seed)
        self._order = torch.randperm(len(self.labels), generator=self._gen)
        self._pos = 0

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next k (image, label) pairs of the shuffled cycle."""
        n = len(self.labels)
        picked = []
        need = self.k
        while need > 0:
            if self._pos == n:
                self._order, self._pos = torch.randperm(n, generator=self._gen), 0
            step = min(need, n - self._pos)
            picked.append(self._order[self._pos : self._pos + step])
            self._pos += step
            need -= step
        idx = torch.cat(picked).to(self.labels.device) if picked else torch.empty(0, dtype=torch.long)
        return self.images[idx], self.labels[idx]

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k trigger images to a batch. ``x``: float (B, C, H, W) on the mixer's device."""
        if self.k == 0:
            return x, y
        tx, ty = self.take()
        return torch.cat([x, tx.to(dtype=x.dtype).contiguous(memory_format=_fmt(x))]), torch.cat([y, ty])


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format
