"""The two key files' structure, as schemas (backmark.io.schema): what ``VerificationKey`` and
``MarkingKey`` accept, whether they are read from a file or built in memory.

The schemas say everything a field may hold; ``check`` functions add what crosses fields
(the number of commitments is set_size x num_sets, the image bytes fill the image shape).
Cryptographic checks (signature, checksum, commitments) come after, in core.keygen.
Format: docs/formats.md ("Verification key", "Marking key").
"""
from __future__ import annotations

import math

import numpy as np

from ..crypto.commit import COMMITMENT_SCHEMES
from ..errors import InvalidFile, InvalidKey
from ..io.schema import AnyJson, Base64, Const, Hex, Int, List, Nullable, Obj, Str, Timestamp

VK_FORMAT = "backmark-verification-key"
MK_FORMAT = "backmark-marking-key"
KEY_VERSION = 1
LABEL_MODES = ("derived", "committed")
MAX_ELEMENTS = 1_000_000  # trigger elements in one key (all sets); 10 x 100 is typical
MAX_CLASSES = 2**31 - 1  # a label is committed as a u32 (crypto.canonical)


def _vk_body_problem(b: dict) -> str | None:
    size = b["set_size"] * b["num_sets"]
    if size > MAX_ELEMENTS:
        return f"set_size x num_sets = {size} elements, more than {MAX_ELEMENTS}"
    if len(b["image_commitments"]) != size:
        return f"image_commitments lists {len(b['image_commitments'])} commitments, not set_size x num_sets = {size}"
    if ("label_commitments" in b) != (b["labels"] == "committed"):
        return "label_commitments must be present exactly for committed labels"
    if "label_commitments" in b and len(b["label_commitments"]) != size:
        return f"label_commitments lists {len(b['label_commitments'])} commitments, not {size}"
    return None


COMMITMENTS = List(Hex(32), min_len=1, max_len=MAX_ELEMENTS)

VK_BODY = Obj(
    {
        "statement": Obj({
            "owner": Str(max_len=1000),
            "created": Timestamp(),
            "dataset": Nullable(Str(min_len=1, max_len=200)),
            "backmark": Str(min_len=1, max_len=64),
        }),
        "task": Obj({"input_shape": List(Int(1, 65535), min_len=3, max_len=3), "num_classes": Int(2, MAX_CLASSES)}),
        "commitment": Str(choices=tuple(COMMITMENT_SCHEMES)),
        "labels": Str(choices=LABEL_MODES),
        "set_size": Int(1, MAX_ELEMENTS),
        "num_sets": Int(1, MAX_ELEMENTS),
        "image_commitments": COMMITMENTS,
        "owner_public_key": Hex(32),
    },
    optional={"label_commitments": COMMITMENTS},
    check=_vk_body_problem,
)
SIGNATURE = Hex(64)
VK_DOCUMENT = Obj({"format": Const(VK_FORMAT), "version": Const(KEY_VERSION), "body": VK_BODY, "signature": SIGNATURE})


def _base64_bytes(text: str) -> int:
    return 3 * len(text) // 4 - text[-2:].count("=")


def _images_problem(im: dict) -> str | None:
    need = math.prod(im["shape"])
    have = _base64_bytes(im["data"])
    return None if need == have else f"data holds {have} bytes, shape {im['shape']} needs {need}"


def _mk_body_problem(b: dict) -> str | None:
    n = b["images"]["shape"][0]
    return None if len(b["labels"]) == n else f"{len(b['labels'])} labels for {n} images"


MK_BODY = Obj(
    {
        "master_seed": Hex(32),
        "images": Obj({"dtype": Const("uint8"), "shape": List(Int(1, 2**31 - 1), min_len=4, max_len=4), "data": Base64()},
                      check=_images_problem),
        "labels": List(Int(0, MAX_CLASSES - 1), min_len=1, max_len=MAX_ELEMENTS),
        "verification_key_fingerprint": Hex(32),
        "source": AnyJson(),
    },
    check=_mk_body_problem,
)
MK_DOCUMENT = Obj({"format": Const(MK_FORMAT), "version": Const(KEY_VERSION), "body": MK_BODY, "body_sha256": Hex(32)})


def check_vk_fields(body, signature) -> None:
    """InvalidKey naming the first field of a verification key that is not what the format allows."""
    try:
        VK_BODY.validate(body, "body")
        SIGNATURE.validate(signature, "signature")
    except InvalidFile as e:
        raise InvalidKey(f"verification key: {e}") from None


_LABEL = Int(0, MAX_CLASSES - 1)


def check_mk_fields(master_seed, images, labels, fingerprint, source) -> None:
    """InvalidKey unless a MarkingKey's fields are what its file format can hold (so it saves and loads back)."""
    if not isinstance(master_seed, bytes) or len(master_seed) != 32:
        raise InvalidKey("marking key: the master seed must be 32 bytes")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < 1:
        raise InvalidKey("marking key: images must be a uint8 array (N, H, W, C) with N >= 1")
    if not isinstance(labels, tuple) or len(labels) != images.shape[0]:
        raise InvalidKey(f"marking key: give one label per image ({images.shape[0]}) as a tuple")
    try:
        for i, y in enumerate(labels):
            _LABEL.validate(y, f"labels[{i}]")
        Hex(32).validate(fingerprint, "verification_key_fingerprint")
        if not isinstance(source, dict):
            raise InvalidFile(f"source: expected an object, got a {type(source).__name__}")
        AnyJson().validate(source, "source")
    except InvalidFile as e:
        raise InvalidKey(f"marking key: {e}") from None


__all__ = [
    "KEY_VERSION", "LABEL_MODES", "MAX_ELEMENTS", "MK_BODY", "MK_DOCUMENT", "MK_FORMAT", "VK_BODY", "VK_DOCUMENT",
    "VK_FORMAT", "check_mk_fields", "check_vk_fields",
]
