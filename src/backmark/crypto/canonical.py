"""Canonical byte encodings: what gets hashed, committed and signed.

- image: ``b"IMG1" + u32be(h) + u32be(w) + u32be(c) + uint8 pixels in HWC C-order``.
  Commitments are to decoded pixels, never to file bytes, so a re-encoded PNG of the
  same pixels opens the same commitment.
- label: ``b"LBL1" + u32be(label)``.
- JSON: UTF-8, sorted keys, no whitespace, no NaN (RFC 8785-like for our value types).
"""
from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from ..io.hashing import sha256_hex  # noqa: F401  (re-exported: what gets signed is named by it)


def canonical_image_bytes(image_hwc: np.ndarray) -> bytes:
    """Encode one uint8 image of shape (H, W, C)."""
    a = np.ascontiguousarray(image_hwc)
    if a.dtype != np.uint8 or a.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) array, got {a.dtype} {a.shape}")
    h, w, c = a.shape
    return b"IMG1" + struct.pack(">III", h, w, c) + a.tobytes(order="C")


def canonical_label_bytes(label: int) -> bytes:
    if not 0 <= int(label) < 2**32:
        raise ValueError(f"label out of range: {label}")
    return b"LBL1" + struct.pack(">I", int(label))


def canonical_json(doc: Any) -> bytes:
    """The one byte string a JSON-able value signs as."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
