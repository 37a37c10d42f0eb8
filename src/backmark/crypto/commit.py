"""Commitments to trigger images and labels (SCHEME.md section 4).

Two schemes, chosen at KeyGen and recorded in the verification key:

- ``sha256`` (default): ``c = SHA256(tag || u32be(i) || r || item)``. Computationally
  hiding and binding; 32 bytes.
- ``pedersen``: ``c = m*G + r*H`` on the Ed25519 group (libsodium through PyNaCl), with
  ``m = SHA512(tag || u32be(i) || item) mod l`` and ``H`` a hash-to-curve point nobody
  knows the discrete log of. Statistically hiding (the paper's theorem asks for that),
  binding under discrete log; 32 bytes.

The opening of element ``i`` is the item itself and its nonce ``r``; every nonce is
derived from one secret master seed, ``r = SHA256(tag || master || u32be(i))``, so a
marking key stores one seed and can reveal single openings without revealing others.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from .canonical import canonical_image_bytes, canonical_label_bytes

COMMITMENT_SCHEMES = ("sha256", "pedersen")

_NONCE_TAG = {"image": b"backmark/nonce/image/v1", "label": b"backmark/nonce/label/v1"}
_COMMIT_TAG = {"image": b"backmark/commit/image/v1", "label": b"backmark/commit/label/v1"}


def derive_nonce(master_seed: bytes, index: int, what: str = "image") -> bytes:
    """The 256-bit opening nonce of element ``index`` (``what`` is "image" or "label")."""
    if len(master_seed) != 32:
        raise ValueError("master seed must be 32 bytes")
    return hashlib.sha256(_NONCE_TAG[what] + master_seed + struct.pack(">I", index)).digest()


def _sha256_commit(tag: bytes, index: int, nonce: bytes, item: bytes) -> bytes:
    return hashlib.sha256(tag + struct.pack(">I", index) + nonce + item).digest()


_H_POINT: bytes | None = None


def _pedersen_h() -> bytes:
    global _H_POINT
    if _H_POINT is None:
        from nacl.bindings import crypto_core_ed25519_from_uniform

        _H_POINT = crypto_core_ed25519_from_uniform(hashlib.sha256(b"backmark/pedersen/H/v1").digest())
    return _H_POINT


def _pedersen_commit(tag: bytes, index: int, nonce: bytes, item: bytes) -> bytes:
    from nacl.bindings import (
        crypto_core_ed25519_add,
        crypto_core_ed25519_scalar_reduce,
        crypto_scalarmult_ed25519_base_noclamp,
        crypto_scalarmult_ed25519_noclamp,
    )

    m = crypto_core_ed25519_scalar_reduce(hashlib.sha512(tag + struct.pack(">I", index) + item).digest())
    r = crypto_core_ed25519_scalar_reduce(hashlib.sha512(b"backmark/pedersen/r/v1" + nonce).digest())
    return crypto_core_ed25519_add(
        crypto_scalarmult_ed25519_base_noclamp(m), crypto_scalarmult_ed25519_noclamp(r, _pedersen_h())
    )


_SCHEMES = {"sha256": _sha256_commit, "pedersen": _pedersen_commit}


def _commit(scheme: str, what: str, index: int, nonce: bytes, item: bytes) -> bytes:
    try:
        fn = _SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown commitment scheme {scheme!r}; choose one of {', '.join(COMMITMENT_SCHEMES)}") from None
    return fn(_COMMIT_TAG[what], index, nonce, item)


def commit_image(scheme: str, index: int, nonce: bytes, image_hwc) -> bytes:
    """Commitment to one uint8 (H, W, C) image."""
    return _commit(scheme, "image", index, nonce, canonical_image_bytes(image_hwc))


def commit_label(scheme: str, index: int, nonce: bytes, label: int) -> bytes:
    return _commit(scheme, "label", index, nonce, canonical_label_bytes(label))


def opens(expected: bytes, actual: bytes) -> bool:
    """Constant-time comparison of two commitments."""
    return hmac.compare_digest(expected, actual)
