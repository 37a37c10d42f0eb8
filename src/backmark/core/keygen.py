"""KeyGen: trigger sets, commitments, derived labels, and the two key files.

``keygen`` returns a secret :class:`MarkingKey` (the trigger images, their labels and the
master seed every opening nonce derives from) and a public :class:`VerificationKey` (the
commitments, signed by the owner's Ed25519 key). File formats: docs/formats.md.

    mk, vk = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=OwnerKey.generate())
    mk.save("mk.json"); vk.save("vk.json")
    labels = open_all(mk, vk)  # raises TamperedKey / KeyMismatch unless every element opens
"""
from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from ..crypto import canonical_json, commit_image, commit_label, derive_nonce, sha256_hex
from ..crypto.commit import COMMITMENT_SCHEMES, opens
from ..crypto.sign import OwnerKey, verify_signature
from ..errors import InvalidKey, KeyMismatch, TamperedKey
from ..io.clock import utc_now
from ..io.documents import load_document, write_json
from ..version import __version__
from .keyfiles import (  # noqa: F401  (the formats' names are keygen's too)
    KEY_VERSION,
    LABEL_MODES,
    MK_DOCUMENT,
    MK_FORMAT,
    VK_DOCUMENT,
    VK_FORMAT,
    check_mk_fields,
    check_vk_fields,
)
from .triggers import GENERATOR, HELDOUT_SELECTOR, abstract_images, generator_seed, heldout_images, heldout_indices

_LABEL_TAG = b"backmark/labels/v1"


def derive_labels(body: dict, num_classes: int, count: int) -> list[int]:
    """Labels fixed by the signed key body (which holds every image commitment).

    SHAKE-256 of the canonical body, 16 bytes per element, reduced mod |L|: uniform up to
    a bias of |L|/2^128, and unknown to anyone until all images are committed.
    """
    stream = hashlib.shake_256(_LABEL_TAG + canonical_json(body)).digest(16 * count)
    return [int.from_bytes(stream[16 * i : 16 * i + 16], "big") % num_classes for i in range(count)]


@dataclass(frozen=True)
class VerificationKey:
    """The public key: signed commitments to every trigger element.

    Valid by construction: building one checks its structure and the owner's signature
    (InvalidKey / TamperedKey), so a VerificationKey in hand never needs checking again.
    """

    body: dict
    signature: str

    def __post_init__(self):
        self._check()

    # -- derived views ------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.body["task"]["input_shape"])

    @property
    def num_classes(self) -> int:
        return self.body["task"]["num_classes"]

    @property
    def set_size(self) -> int:
        return self.body["set_size"]

    @property
    def num_sets(self) -> int:
        return self.body["num_sets"]

    @property
    def size(self) -> int:
        """Number of committed elements, all sets together."""
        return self.set_size * self.num_sets

    @property
    def commitment(self) -> str:
        return self.body["commitment"]

    @property
    def label_mode(self) -> str:
        return self.body["labels"]

    @property
    def owner_public_key(self) -> str:
        return self.body["owner_public_key"]

    @property
    def owner_fingerprint(self) -> str:
        return sha256_hex(bytes.fromhex(self.owner_public_key))

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical body: the key's name in reports and spent logs."""
        return sha256_hex(canonical_json(self.body))

    @cached_property
    def image_commitments(self) -> list[bytes]:
        return [bytes.fromhex(v) for v in self.body["image_commitments"]]  # lowercase hex: checked when built

    @cached_property
    def label_commitments(self) -> list[bytes] | None:
        if self.label_mode != "committed":
            return None
        return [bytes.fromhex(v) for v in self.body["label_commitments"]]

    @cached_property
    def derived_labels(self) -> list[int] | None:
        if self.label_mode != "derived":
            return None
        return derive_labels(self.body, self.num_classes, self.size)

    # -- checks and I/O -----------------------------------------------------------
    def validate(self) -> "VerificationKey":
        """The key itself: it was checked when it was built."""
        return self

    def _check(self) -> None:
        """Check structure (every field, core.keyfiles) and the owner's signature; raise InvalidKey / TamperedKey.

        Total: whatever ``body`` and ``signature`` hold, nothing else is raised, so every later
        use of the key (views, derived labels, openings) works on a well-formed body."""
        check_vk_fields(self.body, self.signature)
        verify_signature(self.body["owner_public_key"], self.signature, canonical_json(self.body), what="verification key")

    def to_document(self) -> dict:
        return {"format": VK_FORMAT, "version": KEY_VERSION, "body": self.body, "signature": self.signature}

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        return write_json(path, self.to_document(), force=force, mode=0o644)  # public: handed to verifiers

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VerificationKey":
        """Strictly (io.documents.load_document): schema, then byte-exact canonical form, then the signature."""
        p = Path(path)
        doc = load_document(p, kind=VK_FORMAT, versions=(KEY_VERSION,), schema=VK_DOCUMENT, tampered=TamperedKey)
        try:
            return cls(body=doc["body"], signature=doc["signature"])
        except TamperedKey as e:
            raise TamperedKey(f"{p}: {e}") from None


def _encode_images(images: np.ndarray) -> dict:
    return {"dtype": "uint8", "shape": list(images.shape), "data": base64.b64encode(images.tobytes()).decode()}


def _decode_images(doc: dict) -> np.ndarray:
    """Images of a validated body (keyfiles.MK_BODY: canonical base64 that fills the shape)."""
    raw = base64.b64decode(doc["data"], validate=True)
    return np.frombuffer(raw, dtype=np.uint8).reshape(tuple(doc["shape"])).copy()


@dataclass(frozen=True)
class MarkingKey:
    """The secret key: trigger images (N, H, W, C) uint8, labels, and the master seed."""

    master_seed: bytes
    images: np.ndarray
    labels: tuple[int, ...]
    verification_key_fingerprint: str
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        check_mk_fields(self.master_seed, self.images, self.labels, self.verification_key_fingerprint, self.source)
        problem = _source_problem(self.source, self.size)
        if problem:
            raise InvalidKey(f"marking key: malformed source ({problem})")

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        n, h, w, c = self.images.shape
        return (c, h, w)

    def image_nonce(self, i: int) -> bytes:
        return derive_nonce(self.master_seed, i, "image")

    def label_nonce(self, i: int) -> bytes:
        return derive_nonce(self.master_seed, i, "label")

    def opening(self, i: int) -> dict:
        """What revealing element ``i`` discloses: image, label and their nonces (nothing else)."""
        return {
            "index": i,
            "image": self.images[i],
            "label": self.labels[i],
            "image_nonce": self.image_nonce(i),
            "label_nonce": self.label_nonce(i),
        }

    def to_document(self) -> dict:
        body = {
            "master_seed": self.master_seed.hex(),
            "images": _encode_images(self.images),
            "labels": list(self.labels),
            "verification_key_fingerprint": self.verification_key_fingerprint,
            "source": self.source,
        }
        return {"format": MK_FORMAT, "version": KEY_VERSION, "body": body, "body_sha256": sha256_hex(canonical_json(body))}

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        return write_json(path, self.to_document(), force=force, mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MarkingKey":
        """Strictly (io.documents.load_document): schema, canonical form, then the body's checksum."""
        p = Path(path)
        doc = load_document(p, kind=MK_FORMAT, versions=(KEY_VERSION,), schema=MK_DOCUMENT, tampered=TamperedKey)
        body = doc["body"]
        if doc["body_sha256"] != sha256_hex(canonical_json(body)):
            raise TamperedKey(f"{p}: the marking key's checksum does not match its contents")
        return cls(bytes.fromhex(body["master_seed"]), _decode_images(body["images"]), tuple(body["labels"]),
                   body["verification_key_fingerprint"], body["source"])


def _source_problem(source, size: int) -> str | None:
    """Why a marking key's ``source`` record is malformed (None if it is not); heldout sources
    must name their dataset and list ``size`` distinct training indices within the split."""
    if not isinstance(source, dict):
        return "not a table"
    if source.get("kind") != "heldout":
        return None
    idx, n = source.get("indices"), source.get("split_size")
    if not isinstance(source.get("dataset"), str) or not isinstance(n, int) or not isinstance(idx, list):
        return "a heldout source needs dataset, split_size and indices"
    if len(idx) != size or len(set(idx)) != size or not all(isinstance(i, int) and 0 <= i < n for i in idx):
        return f"a heldout source lists {size} distinct indices in 0..split_size-1"
    return None


def keygen(
    *,
    input_shape: Sequence[int],
    num_classes: int,
    owner_key: OwnerKey,
    set_size: int = 100,
    num_sets: int = 1,
    images: np.ndarray | None = None,
    labels: Sequence[int] | None = None,
    commitment: str = "sha256",
    owner: str = "",
    dataset: str | None = None,
    source: dict | None = None,
    created: str | None = None,
    master_seed: bytes | None = None,
    heldout_from=None,
) -> tuple[MarkingKey, VerificationKey]:
    """Generate a key pair.

    ``images`` (uint8 (N, H, W, C)) defaults to N = set_size * num_sets abstract images from
    a fresh secret seed. ``heldout_from`` (the uint8 (M, C, H, W) training split of
    ``dataset``) draws them instead from that split by the secret seed (in-distribution
    triggers; ``source`` records their indices). ``labels`` given means the paper-faithful mode
    (labels committed); left out, labels are derived from the signed key (SCHEME.md section 4).
    """
    c, h, w = (int(v) for v in input_shape)
    total = set_size * num_sets
    if set_size < 1 or num_sets < 1:
        raise ValueError("set_size and num_sets must be positive")
    if commitment not in COMMITMENT_SCHEMES:
        raise ValueError(f"unknown commitment scheme {commitment!r}; choose one of {', '.join(COMMITMENT_SCHEMES)}")
    seed = master_seed if master_seed is not None else os.urandom(32)
    if heldout_from is not None:
        if images is not None or labels is not None:
            # a heldout image's true class is known: given labels could follow it and claim any accurate model
            raise ValueError("heldout triggers take neither given images nor given labels (their labels are derived)")
        indices = heldout_indices(seed, total, len(heldout_from))
        images = heldout_images(heldout_from, indices)
        source = {"kind": "heldout", "dataset": dataset, "split": "train", "split_size": len(heldout_from),
                  "selector": HELDOUT_SELECTOR, "indices": indices}
    elif images is None:
        images = abstract_images(generator_seed(seed), total, (c, h, w))
        source = {"kind": "abstract", "generator": GENERATOR}
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.shape != (total, h, w, c):
        raise ValueError(f"images must have shape {(total, h, w, c)}, got {images.shape}")
    if labels is not None and (len(labels) != total or not all(0 <= int(y) < num_classes for y in labels)):
        raise ValueError(f"labels must be {total} class indices in 0..{num_classes - 1}")

    body = {
        "statement": {"owner": owner, "created": created or utc_now(), "dataset": dataset, "backmark": __version__},
        "task": {"input_shape": [c, h, w], "num_classes": int(num_classes)},
        "commitment": commitment,
        "labels": "derived" if labels is None else "committed",
        "set_size": int(set_size),
        "num_sets": int(num_sets),
        "image_commitments": [
            commit_image(commitment, i, derive_nonce(seed, i, "image"), images[i]).hex() for i in range(total)
        ],
        "owner_public_key": owner_key.public_hex,
    }
    if labels is None:
        labels = derive_labels(body, num_classes, total)
    else:
        body["label_commitments"] = [
            commit_label(commitment, i, derive_nonce(seed, i, "label"), int(y)).hex() for i, y in enumerate(labels)
        ]
    vk = VerificationKey(body=body, signature=owner_key.sign(canonical_json(body)).hex())
    mk = MarkingKey(seed, images, tuple(int(y) for y in labels), vk.fingerprint, source or {})
    return mk, vk


def open_elements(mk: MarkingKey, vk: VerificationKey, indices: Sequence[int] | None = None) -> list[int]:
    """Check that the marking key opens the verification key's commitments at ``indices``.

    Returns the labels of those elements. Raises KeyMismatch if the keys are not a pair,
    TamperedKey naming the first element whose image or label does not open.
    """
    check_pair(mk, vk)
    idx = range(vk.size) if indices is None else indices
    out = []
    for i in idx:
        problem = element_problem(vk, i, mk.images[i], mk.image_nonce(i), mk.labels[i], mk.label_nonce(i))
        if problem:
            raise TamperedKey(f"{problem}: the marking key or the verification key was altered")
        out.append(mk.labels[i])
    return out


def check_pair(mk: MarkingKey, vk: VerificationKey) -> None:
    """Raise KeyMismatch unless ``mk`` is the marking key made with ``vk`` (same fingerprint, size, shape)."""
    if mk.verification_key_fingerprint != vk.fingerprint:
        raise KeyMismatch(
            f"the marking key belongs to verification key {mk.verification_key_fingerprint[:16]}..., "
            f"not to {vk.fingerprint[:16]}..."
        )
    if mk.size != vk.size or mk.input_shape != vk.input_shape:
        raise KeyMismatch("the marking key's trigger set does not match the verification key's size or shape")
    bad = next((i for i, y in enumerate(mk.labels) if y >= vk.num_classes), None)
    if bad is not None:  # a label no model of the task can answer (and training on it would crash)
        raise KeyMismatch(
            f"label {bad} of the marking key ({mk.labels[bad]}) is not a class of the key's task (0..{vk.num_classes - 1})"
        )


def element_problem(vk: VerificationKey, index: int, image, image_nonce: bytes, label, label_nonce: bytes | None) -> str | None:
    """Why an opening of element ``index`` (image, its nonce, label, its nonce) fails against
    ``vk``, or None when it opens: the one commitment check every key, report and claim uses.

    ``image`` is uint8 (H, W, C); with derived labels the label must be the one derived from
    the key (its nonce is not needed), with committed labels it must open its commitment.
    """
    if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < vk.size):
        return f"element index {index!r} is not in the key (0..{vk.size - 1})"
    try:
        committed = commit_image(vk.commitment, index, image_nonce, image)
    except (TypeError, ValueError) as e:
        return f"element {index}: malformed image or nonce ({e})"
    if not opens(vk.image_commitments[index], committed):
        return f"trigger image {index} does not open its commitment"
    if not isinstance(label, int) or isinstance(label, bool):
        return f"element {index}: label {label!r} is not an integer"
    if vk.label_mode == "derived":
        if label != vk.derived_labels[index]:
            return f"label {index} ({label}) is not the label derived from the verification key ({vk.derived_labels[index]})"
        return None
    try:
        label_ok = opens(vk.label_commitments[index], commit_label(vk.commitment, index, label_nonce, label))
    except (TypeError, ValueError) as e:
        return f"element {index}: malformed label or nonce ({e})"
    if not label_ok:
        return f"label {index} does not open its commitment"
    return None


def load_pair(mk_path: str | os.PathLike, vk_path: str | os.PathLike) -> tuple[MarkingKey, VerificationKey]:
    """Load both keys and check they open each other (every element)."""
    vk = VerificationKey.load(vk_path)
    mk = MarkingKey.load(mk_path)
    open_elements(mk, vk)
    return mk, vk


__all__ = [
    "MarkingKey",
    "VerificationKey",
    "check_pair",
    "derive_labels",
    "element_problem",
    "keygen",
    "load_pair",
    "open_elements",
]
