"""Images as base64 PNG inside JSON documents (lossless: they decode to the same pixels)."""
from __future__ import annotations

import base64
import io

import numpy as np


def png_b64(image_hwc: np.ndarray) -> str:
    """A uint8 (H, W, C) image (C = 1 or 3) as base64 PNG (lossless: decodes to the same pixels)."""
    from PIL import Image

    a = np.ascontiguousarray(image_hwc, dtype=np.uint8)
    im = Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=9)
    return base64.b64encode(buf.getvalue()).decode()


def png_decode(data: str, shape_chw) -> np.ndarray:
    """Base64 PNG -> uint8 (H, W, C); raises ValueError unless it has the shape (C, H, W)."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape_chw
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            if im.format != "PNG" or im.mode != {1: "L", 3: "RGB"}.get(c) or im.size != (w, h):
                raise ValueError(f"expected a {w}x{h} {c}-channel PNG")
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, TypeError) as e:
        raise ValueError(f"not a PNG image ({e})") from None
    return a.reshape(h, w, c)
