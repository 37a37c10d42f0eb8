"""Cryptographic primitives: canonical encodings, commitments, Ed25519 signatures."""
from .canonical import canonical_image_bytes, canonical_json, canonical_label_bytes, sha256_hex
from .commit import COMMITMENT_SCHEMES, commit_image, commit_label, derive_nonce
from .sign import OwnerKey, open_signed, verify_signature

__all__ = [
    "COMMITMENT_SCHEMES",
    "OwnerKey",
    "canonical_image_bytes",
    "canonical_json",
    "canonical_label_bytes",
    "commit_image",
    "commit_label",
    "derive_nonce",
    "sha256_hex",
    "open_signed",
    "verify_signature",
]
