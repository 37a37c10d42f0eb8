"""The in-memory :class:`Dataset` (uint8 image tensors + labels) and its statistics."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import DataError

_STATS_CHUNK = 4096  # samples per bincount pass: bounds the temporary copy to ~12 MB for 3x32x32


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``x / 255`` for uint8 ``x`` (N, C, H, W).

    Computed exactly from a 256-bin histogram per channel (float64 sums of
    value counts), so it is cheap and independent of N's size.
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"channel_stats expects uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    c = x.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.int64)
    for start in range(0, len(x), _STATS_CHUNK):
        chunk = x[start : start + _STATS_CHUNK]
        for ch in range(c):
            counts[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(1).to(torch.float64).clamp_min(1)
    mean = (counts * values).sum(1) / n
    var = (counts * values**2).sum(1) / n - mean**2
    return tuple(mean.tolist()), tuple(var.clamp_min(0).sqrt().tolist())


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An image classification dataset held in memory.

    ``train_x``/``test_x`` are (N, C, H, W) uint8 contiguous CPU tensors,
    ``train_y``/``test_y`` (N,) int64 labels in ``0..num_classes-1``.
    ``mean``/``std`` are per-channel statistics of ``train_x / 255`` over the
    full training set (kept as-is by :meth:`subset`, so every model trained on
    any subset normalises inputs the same way).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(f"{self.name}: {split}_x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise ValueError(f"{self.name}: {split}_y must be int64 ({len(x)},), got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(
                f"{self.name}: train images are {tuple(self.train_x.shape[1:])} but test images {tuple(self.test_x.shape[1:])}"
            )
        if not len(self.mean) == len(self.std) == self.train_x.shape[1]:
            raise ValueError(f"{self.name}: mean/std need one value per channel ({self.train_x.shape[1]})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    def subset(self, train_size: int | None, seed: int = 0, test_size: int | None = None) -> Dataset:
        """A fixed random subset: ``train_size`` training and ``test_size`` test samples.

        ``None`` keeps a split whole. The same ``seed`` always picks the same
        samples (kept in their original order); classes, mean and std are those
        of the full dataset.
        """
        train_x, train_y = self._pick(self.train_x, self.train_y, train_size, seed, "train")
        test_x, test_y = self._pick(self.test_x, self.test_y, test_size, seed, "test")
        return replace(self, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)

    def _pick(self, x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int, split: str):
        if size is None or size == len(x):
            return x, y
        if not 0 < size <= len(x):
            raise DataError(
                f"{split} size {size} is out of range: {self.name} has {len(x)} {split} samples; "
                f"pass a --{split}-size between 1 and {len(x)}"
            )
        # separate stream per split so the test subset does not depend on the train size
        g = torch.Generator().manual_seed(seed if split == "train" else seed + 0x9E3779B9)
        idx = torch.randperm(len(x), generator=g)[:size].sort().values
        return x.index_select(0, idx), y.index_select(0, idx)

    def describe(self) -> str:
        """One line: name, split sizes, image shape and classes."""
        c, h, w = self.input_shape
        names = ", ".join(self.classes[:10]) + (", ..." if self.num_classes > 10 else "")
        return (
            f"{self.name}: {len(self.train_x)} train / {len(self.test_x)} test, "
            f"{c}x{h}x{w} uint8, {self.num_classes} classes ({names})"
        )

    def __repr__(self) -> str:
        return f"Dataset({self.describe()})"
