"""Input transformation: the thief deploys the stolen model behind a filter that leaves
natural images recognisable but may break the trigger response (JPEG compression,
Gaussian noise, Gaussian blur, median filter), e.g. Guo et al. 2018's input defences.

The weights are untouched; the attack returns :class:`TransformedModel`, an nn.Module that
applies the filter before the victim. ``backmark attack input-transform`` saves the victim's
weights with the transform recorded in the checkpoint's metadata ("input_transform") and
reports accuracies measured through the transform; ``backmark verify`` on that file queries
the bare weights (an owner cannot make a thief remove the filter, so the report is what counts).

    backmark attack input-transform --model marked.safetensors --out served.safetensors --kind jpeg --jpeg-quality 30 \\
        --marking-key keys/marking-key.json
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import AttackContext, Budget, ServedModel, register_attack

KINDS = ("jpeg", "noise", "blur", "median")


@dataclass(frozen=True)
class TransformBudget(Budget):
    """Budget of the input-transformation attack: which filter and how strong.

    kind: jpeg (quality jpeg_quality, 1-95), noise (Gaussian, std noise_std in [0, 1] pixel
    units, clipped), blur (Gaussian, blur_sigma pixels), median (median_size x median_size
    window); seed for the noise. No training: costs the thief only test accuracy.
    """

    kind: str = "jpeg"
    jpeg_quality: int = 50
    noise_std: float = 0.1
    blur_sigma: float = 1.0
    median_size: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError("jpeg_quality must lie in 1..95")
        if self.noise_std < 0 or self.blur_sigma <= 0:
            raise ValueError("noise_std must be >= 0 and blur_sigma > 0")
        if self.median_size < 1 or self.median_size % 2 == 0:
            raise ValueError("median_size must be an odd positive number")

    def describe(self) -> str:
        return {
            "jpeg": f"JPEG q={self.jpeg_quality}",
            "noise": f"noise std={self.noise_std:g}",
            "blur": f"blur sigma={self.blur_sigma:g}",
            "median": f"median {self.median_size}x{self.median_size}",
        }[self.kind]


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of float images (B, C, H, W) in [0, 1] (PIL, per image, on the CPU)."""
    from PIL import Image

    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
        out[i] = dec.reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, torch.float32) / 255


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # horizontal
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # vertical


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    r = size // 2
    b, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), size)  # (B, C*size*size, H*W)
    return patches.view(b, c, size * size, h * w).median(2).values.view(b, c, h, w)


class TransformedModel(ServedModel):
    """``model`` behind an input filter; takes and gives what ``model`` does."""

    def __init__(self, model: nn.Module, budget: TransformBudget):
        super().__init__()
        self.model = model
        self.budget = budget
        self.input_shape = getattr(model, "input_shape", None)
        self.num_classes = getattr(model, "num_classes", None)
        self._gens: dict[str, torch.Generator] = {}

    def describe(self) -> str:
        return self.budget.describe()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b = self.budget
        if b.kind == "jpeg":
            return jpeg(x, b.jpeg_quality)
        if b.kind == "noise":
            key = str(x.device)
            if key not in self._gens:  # one stream per device, seeded once: repeatable runs
                self._gens[key] = torch.Generator(device=x.device).manual_seed(b.seed)
            return (x + b.noise_std * torch.randn(x.shape, generator=self._gens[key], device=x.device, dtype=x.dtype)).clamp(0, 1)
        if b.kind == "blur":
            return gaussian_blur(x, b.blur_sigma)
        return median_filter(x, b.median_size)

    def forward(self, x):  # (B, C, H, W) in [0, 1]
        return self.model(self.transform(x))


@register_attack("input-transform", TransformBudget, "serve the model behind JPEG / noise / blur / median filtering (no training)")
def input_transform(model, data, budget: TransformBudget, ctx: AttackContext):
    return TransformedModel(model, budget).eval(), [], {"transform": budget.describe()}
