"""Mini-batching and batched augmentation for tensors already in memory.

Nothing here loops over samples in Python: batches are slices of one random
permutation, and augmentation (random crop of a zero-padded image + random
horizontal flip, as in torchvision's RandomCrop(32, padding=4) and
RandomHorizontalFlip) is one gather over the whole batch, on whatever device
the batch lives.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` samples."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(xb, yb)`` batches of ``x`` (N, ...) and ``y`` (N,).

    With ``shuffle`` the order is one ``torch.randperm`` drawn from
    ``generator`` (on the generator's device), then moved to ``x``'s device;
    otherwise the batches are in-order views. ``drop_last`` skips a final
    short batch.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    count = num_batches(n, batch_size, drop_last)
    if not shuffle:
        for i in range(count):
            s = slice(i * batch_size, (i + 1) * batch_size)
            yield x[s], y[s]
        return
    device = generator.device if generator is not None else x.device
    perm = torch.randperm(n, generator=generator, device=device).to(x.device)
    perm_y = perm.to(y.device)
    for i in range(count):
        s = slice(i * batch_size, (i + 1) * batch_size)
        yield x[perm[s]], y[perm_y[s]]


def _same_device(a: torch.device, b: torch.device) -> bool:
    # torch.Generator("cuda") reports no index while tensors say cuda:0: treat a missing index as a match
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1], keeping the memory format (e.g. channels_last)."""
    return x_uint8.to(torch.float32).div_(255)


def augment(
    x: torch.Tensor,
    *,
    pad: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop (after ``pad`` pixels of zero padding) and random horizontal flip.

    ``x`` is a float batch (B, C, H, W) on any device; the output has the same
    shape. ``pad=0`` disables the crop and ``flip=False`` the flip; with both
    off ``x`` itself is returned. Random numbers are drawn from ``generator``,
    which must live on ``x``'s device.
    """
    if x.ndim != 4:
        raise ValueError(f"augment expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if generator is not None and not _same_device(generator.device, x.device):
        raise ValueError(f"generator is on {generator.device} but the batch is on {x.device}; create it on the batch's device")
    if pad == 0 and not flip:
        return x
    b, c, h, w = x.shape
    dev = x.device
    # per-sample top-left corner of the crop inside the (H+2p, W+2p) padded image
    oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if flip:
        # a mirrored crop reads the same window right-to-left, so the flip is folded into the column index
        mirror = torch.rand(b, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(mirror, (w - 1) - cols, cols)
    rows = oy + torch.arange(h, device=dev)  # (B, H)
    cols = ox + cols  # (B, W)
    wp = w + 2 * pad
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x  # (B, C, H+2p, W+2p), zeros outside
    # flat index of each output pixel into the padded plane: (B, H*W), shared by all channels
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    out = xp.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out
