"""Trigger images: where a key's secret images come from.

Three sources:

- :func:`abstract_images`: a procedural generator of abstract images driven by a secret
  seed. Each image is drawn from its own generator, seeded by SHA-256(seed || index), and
  layers a smooth random field, a few random shapes (ellipses, rectangles, bars), a
  random stripe pattern and pixel noise. Images are uncorrelated with each other and
  with natural data; two keys share an image with probability ~2^-256.
- :func:`load_image_folder`: pictures from a folder (e.g. the paper's 100 images),
  resized to the model's input, or center-cropped as the official code does.
- :func:`heldout_images`: in-distribution images, drawn by the key's secret seed
  (:func:`heldout_indices`) from a dataset's training split. Such triggers cannot be told
  from ordinary queries; training on that dataset must leave them out
  (:func:`exclude_triggers`), or the model would learn their true classes.

All return uint8 arrays of shape (N, H, W, C): the layout the commitments hash.
"""
from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Dataset
from ..errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


GENERATOR = "backmark/trigger/v1"  # the abstract-image generator's name, recorded in keys and public claims
_SEED_TAG = b"backmark/trigger-seed/v1"
HELDOUT_SELECTOR = "backmark/heldout/v1"  # how heldout indices are drawn, recorded in keys
_HELDOUT_TAG = b"backmark/heldout-seed/v1"


def generator_seed(master_seed: bytes) -> bytes:
    """The generator seed of a key: SHA-256(tag || master seed); every image seed derives from it."""
    return hashlib.sha256(_SEED_TAG + master_seed).digest()


def image_seed(gen_seed: bytes, index: int) -> bytes:
    """The 32-byte seed image ``index`` is drawn from: SHA-256(generator name || generator seed || u32be(index)).

    Revealing it shows how that one image was made and nothing about the others.
    """
    return hashlib.sha256(GENERATOR.encode() + gen_seed + struct.pack(">I", index)).digest()


def _rand(g: torch.Generator, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=g)


def _abstract_image(g: torch.Generator, c: int, h: int, w: int) -> torch.Tensor:
    """One abstract image, float (c, h, w) in [0, 1]."""
    # 1. Smooth random field: a low-resolution random grid upsampled (a few "blobs").
    cells = int(torch.randint(2, 7, (1,), generator=g))
    field = F.interpolate(_rand(g, 1, c, cells, cells), size=(h, w), mode="bicubic", align_corners=False)[0]
    img = field.clamp(0, 1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    # 2. Random shapes, alpha-blended on top.
    for _ in range(int(torch.randint(2, 7, (1,), generator=g))):
        kind = int(torch.randint(0, 3, (1,), generator=g))
        cx, cy, sx, sy, angle, alpha = _rand(g, 6).tolist()
        sx, sy, angle, alpha = 0.08 + 0.4 * sx, 0.08 + 0.4 * sy, angle * math.pi, 0.5 + 0.5 * alpha
        dx, dy = xx - cx, yy - cy
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        if kind == 0:  # ellipse
            mask = (u / sx) ** 2 + (v / sy) ** 2 <= 1
        elif kind == 1:  # rotated rectangle
            mask = (u.abs() <= sx) & (v.abs() <= sy)
        else:  # bar across the image
            mask = v.abs() <= sy / 4
        colour = _rand(g, c, 1, 1)
        img = torch.where(mask, (1 - alpha) * img + alpha * colour, img)
    # 3. Stripes of random frequency and orientation.
    freq, angle, amp = _rand(g, 3).tolist()
    freq, angle, amp = 2 + 10 * freq, angle * math.pi, 0.25 * amp
    stripes = torch.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
    img = img + amp * stripes * (_rand(g, c, 1, 1) * 2 - 1)
    # 4. Pixel noise.
    img = img + 0.06 * _rand(g, 1).item() * torch.randn(c, h, w, generator=g)
    return img.clamp(0, 1)


def render_abstract(img_seed: bytes, input_shape: tuple[int, int, int]) -> np.ndarray:
    """The abstract image for a per-image seed (:func:`image_seed`), uint8 (H, W, C): the public generator."""
    c, h, w = input_shape
    g = torch.Generator()
    g.manual_seed(int.from_bytes(img_seed[:8], "big") & ((1 << 63) - 1))
    img = _abstract_image(g, c, h, w)
    return (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def abstract_images(gen_seed: bytes, n: int, input_shape: tuple[int, int, int], *, start: int = 0) -> np.ndarray:
    """``n`` abstract images for a (C, H, W) model input, uint8 (n, H, W, C).

    ``gen_seed`` is secret key material (:func:`generator_seed`); image ``i`` depends only on
    (gen_seed, start + i).
    """
    c, h, w = input_shape
    out = np.empty((n, h, w, c), dtype=np.uint8)
    for i in range(n):
        out[i] = render_abstract(image_seed(gen_seed, start + i), input_shape)
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in ``folder``, in string order of their names (the official pairing order)."""
    p = Path(folder)
    if not p.is_dir():
        raise DataError(f"trigger image folder {p} does not exist")
    files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()), key=lambda f: f.name)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {p}")
    return files


def load_image_folder(folder: str | os.PathLike, input_shape: tuple[int, int, int], *, crop: str = "resize") -> np.ndarray:
    """Load every image in ``folder`` as uint8 (N, H, W, C) for a (C, H, W) model input.

    ``crop="resize"`` scales the whole picture to H x W (antialiased); ``crop="center"``
    takes the central H x W window of the full-size picture, as the official code does.
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = input_shape
    mode = {1: "L", 3: "RGB"}.get(c)
    if mode is None:
        raise DataError(f"image folders can feed 1- or 3-channel models, not {c}")
    if crop not in ("resize", "center"):
        raise ValueError(f"crop must be 'resize' or 'center', not {crop!r}")
    out = []
    for f in list_images(folder):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)  # also turns RGBA PNGs with a .jpg name into RGB
                if crop == "resize":
                    im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
                else:
                    if im.width < w or im.height < h:
                        raise DataError(f"{f} is {im.width}x{im.height}, smaller than the {w}x{h} center crop")
                    left, top = int(round((im.width - w) / 2.0)), int(round((im.height - h) / 2.0))
                    im = im.crop((left, top, left + w, top + h))
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read trigger image {f}: {e}") from None
        out.append(a.reshape(h, w, c))
    return np.stack(out)


def load_labels_file(path: str | os.PathLike, n: int, num_classes: int) -> list[int]:
    """Labels, one per line (integers or numpy savetxt floats such as 6.000000e+00)."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise DataError(f"cannot read labels file {p}: {e.strerror}") from None
    labels = []
    for k, ln in enumerate(lines, 1):
        try:
            v = float(ln)
        except ValueError:
            raise DataError(f"{p}:{k}: not a number: {ln!r}") from None
        if v != int(v) or not 0 <= int(v) < num_classes:
            raise DataError(f"{p}:{k}: label {ln!r} is not a class index in 0..{num_classes - 1}")
        labels.append(int(v))
    if len(labels) != n:
        raise DataError(f"{p} has {len(labels)} labels but there are {n} trigger images")
    return labels


def heldout_indices(master_seed: bytes, count: int, population: int) -> list[int]:
    """``count`` distinct indices in 0..population-1, drawn by the key's secret seed.

    Index j of the stream is SHA-256(selector || SHA-256(tag || master seed) || u64be(j)) read
    as a 64-bit integer mod ``population`` (bias below population / 2^64), repeats skipped.
    """
    if not 0 < count <= population:
        raise DataError(f"cannot draw {count} heldout images from a training split of {population}")
    seed = hashlib.sha256(_HELDOUT_TAG + master_seed).digest()
    chosen: dict[int, None] = {}  # insertion-ordered: the draw order is the trigger order
    j = 0
    while len(chosen) < count:
        digest = hashlib.sha256(HELDOUT_SELECTOR.encode() + seed + struct.pack(">Q", j)).digest()
        chosen.setdefault(int.from_bytes(digest[:8], "big") % population, None)
        j += 1
    return list(chosen)


def heldout_images(train_x: torch.Tensor, indices: list[int]) -> np.ndarray:
    """The training images at ``indices`` (uint8 (N, C, H, W) split) as uint8 (n, H, W, C)."""
    if train_x.dtype != torch.uint8 or train_x.dim() != 4:
        raise DataError(f"heldout triggers come from uint8 (N, C, H, W) images, not {train_x.dtype} {tuple(train_x.shape)}")
    idx = torch.as_tensor(indices, dtype=torch.long)
    return np.ascontiguousarray(train_x.index_select(0, idx).permute(0, 2, 3, 1).cpu().numpy())


def exclude_triggers(data: Dataset, images: np.ndarray) -> tuple[Dataset, int]:
    """``data`` without the training images equal, pixel for pixel, to any of ``images`` (uint8
    (N, H, W, C)), and how many were dropped.

    Matching by content rather than by index holds for any subset or order of the split, and
    drops exact duplicates of a trigger too (a duplicate would teach the model its true class).
    """
    c, h, w = data.input_shape
    if images.ndim != 4 or tuple(images.shape[1:]) != (h, w, c):
        return data, 0  # triggers of another shape cannot be in this training set
    wanted = {im.tobytes() for im in np.ascontiguousarray(images, dtype=np.uint8)}
    rows = np.ascontiguousarray(data.train_x.permute(0, 2, 3, 1).cpu().numpy()).reshape(len(data.train_x), -1)
    keep = torch.tensor([r.tobytes() not in wanted for r in rows], dtype=torch.bool)
    dropped = int((~keep).sum())
    if not dropped:
        return data, 0
    idx = keep.nonzero().flatten()
    train_x = data.train_x.index_select(0, idx.to(data.train_x.device))
    train_y = data.train_y.index_select(0, idx.to(data.train_y.device))
    return replace(data, train_x=train_x, train_y=train_y), dropped
