"""The public claim's file format as a schema (backmark.io.schema): every field a claim may hold.

``load_claim`` (protocols.public) reads a file against it and ``check_public_claim`` checks an
in-memory claim against it, so a claim is checked one way wherever it comes from. Anything a
checker uses is fixed here (the generator, the pixel tolerance) rather than taken from the
claim: a claim stating other values is refused, not believed. Format: docs/formats.md
("Public claim").
"""
from __future__ import annotations

from ..core.keyfiles import MAX_CLASSES, MAX_ELEMENTS
from ..core.triggers import GENERATOR
from ..io.schema import Base64, Const, Float, Hex, Int, List, Nullable, Obj, Str, Timestamp

CLAIM_FORMAT = "backmark-public-claim"
CLAIM_VERSION = 1
PIXEL_TOLERANCE = 1  # grey levels a regenerated image may differ by (float rounding across CPUs)
MAX_GRINDING_BITS = 256  # beyond 2^256 key generations the bound means nothing (and 2^bits must stay computable)

_COUNT = Int(0, MAX_ELEMENTS)
_INDEX = Int(0, MAX_ELEMENTS - 1)

PARAMETERS = Obj({
    "total": Int(2, MAX_ELEMENTS), "opened": _COUNT, "unopened": _COUNT, "num_classes": Int(2, MAX_CLASSES),
    "target": Float(0, 1, exclusive=True), "grinding_bits": Int(0, MAX_GRINDING_BITS),
    "open_threshold": _COUNT, "unopened_threshold": _COUNT, "soundness_log2": Float(max=0), "worst_fakes": _COUNT,
})
ELEMENT = Obj({
    "index": _INDEX, "label": Int(0, MAX_CLASSES - 1), "image_png": Base64(max_len=2**26),
    "image_seed": Hex(32), "image_nonce": Hex(32),
})
# A claim is about one model, named by its hash (protocols.public.public_claim refuses to make one without).
MODEL = Obj({"name": Str(max_len=4096), "sha256": Hex(32), "hashed": Str(choices=("file", "weights"))})
ZK_COMMITMENTS = Obj({"scheme": Const("ezkl-poseidon"), "input_scale": Int(0, 64), "values": List(Hex(32), max_len=MAX_ELEMENTS)})

CLAIM_BODY = Obj({
    "kind": Const("cut-and-choose"),
    "created": Timestamp(),
    "backmark": Str(min_len=1, max_len=64),
    "verification_key": Hex(32),
    "owner_public_key": Hex(32),
    "images": Obj({"source": Const("abstract"), "generator": Const(GENERATOR), "pixel_tolerance": Const(PIXEL_TOLERANCE)}),
    "parameters": PARAMETERS,
    "challenge": Obj({"opened": List(_INDEX, max_len=MAX_ELEMENTS)}),
    "zk_commitments": Nullable(ZK_COMMITMENTS),
    "model": MODEL,
    "elements": List(ELEMENT, max_len=MAX_ELEMENTS),
})
CLAIM_DOCUMENT = Obj({"format": Const(CLAIM_FORMAT), "version": Const(CLAIM_VERSION), "body": CLAIM_BODY, "signature": Hex(64)})

__all__ = ["CLAIM_BODY", "CLAIM_DOCUMENT", "CLAIM_FORMAT", "CLAIM_VERSION", "PIXEL_TOLERANCE"]
