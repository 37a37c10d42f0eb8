"""Ed25519 owner keys (package ``cryptography``).

The owner key signs the canonical verification key at KeyGen and, later, verification
reports. Its private half is a PKCS#8 PEM file written with mode 0600; set the
environment variable ``BACKMARK_OWNER_PASSPHRASE`` to encrypt it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import InvalidFile, TamperedKey
from ..io.files import atomic_write_bytes, read_file
from .canonical import canonical_json

PASSPHRASE_ENV = "BACKMARK_OWNER_PASSPHRASE"


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


@dataclass(frozen=True)
class OwnerKey:
    """An owner's Ed25519 signing key."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> "OwnerKey":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OwnerKey":
        p = Path(path)
        data = read_file(p, what="owner key")
        try:
            key = serialization.load_pem_private_key(data, password=_passphrase())
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise InvalidFile(f"{p}: not a usable Ed25519 owner key ({e}); set {PASSPHRASE_ENV} if it is encrypted") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidFile(f"{p}: the owner key must be Ed25519, found {type(key).__name__}")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> tuple["OwnerKey", bool]:
        """Load the key at ``path``, or generate and save one there. Returns (key, created)."""
        if Path(path).exists():
            return cls.load(path), False
        key = cls.generate()
        key.save(path)
        return key, True

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        pw = _passphrase()
        enc = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
        pem = self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        return atomic_write_bytes(path, pem, force=force, mode=0o600)

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_hex(self) -> str:
        return self.public_bytes.hex()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, hex: how people name an owner key."""
        return hashlib.sha256(self.public_bytes).hexdigest()

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def verify_signature(public_hex: str, signature_hex: str, message: bytes, *, what: str = "document") -> None:
    """Raise TamperedKey unless ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        pub.verify(bytes.fromhex(signature_hex), message)
    except (ValueError, InvalidSignature):
        raise TamperedKey(f"the owner's signature on the {what} does not verify: it was altered or signed by another key") from None


def open_signed(doc, *, what: str) -> tuple[dict | None, str | None]:
    """``(body, None)`` when ``doc = {"body": ..., "signature": ...}`` carries a valid signature of
    its body by ``body["owner_public_key"]``; otherwise ``(None, one line saying what is wrong)``."""
    try:
        body = doc["body"]
        verify_signature(body["owner_public_key"], doc["signature"], canonical_json(body), what=what)
    except TamperedKey as e:
        return None, str(e)
    except (KeyError, TypeError, ValueError) as e:
        return None, f"malformed {what} ({e})"
    return body, None
