"""A watermark at the API (after DAWN, Szyller et al., ACM MM 2021): the api-mark secret and the marked target.

The model stays as it is; the API that serves it answers a keyed-hash-selected fraction of the
queries (default 0.5%) with a label derived from the secret and the query, and records each such
answer (signed, hash-chained log, plus the query image) so that the owner can later replay the
logged queries against a suspect. A model trained on the API's answers has learnt some of those
labels; a model that never saw them matches each one with probability exactly 1/|L|, because the
labels are a keyed hash the suspect cannot compute (docs/api-mark.md).

    mark = ApiMark.generate(num_classes=10, owner_key=owner)        # keep it secret; mark.save(path)
    with ApiLog("api-log.jsonl", "api-images.jsonl", mark) as log:
        app = V2App(ApiMarkedTarget(load_target("m.safetensors"), mark, log), name="m")

- Canonical query bytes: the image quantised to uint8 (``round(255 * clamp(x, 0, 1))``), then
  ``canonical_image_bytes`` (b"IMG1" + u32be h, w, c + HWC pixels), so a query sent as uint8
  or as float32 of the same pixels is the same query, and so is its stored image.
- Selection: ``u64be(HMAC-SHA256(secret, b"backmark/api-mark/select/v1" || bytes)[:8]) < floor(fraction * 2^64)``.
- Label: ``int(HMAC-SHA256(secret, b"backmark/api-mark/label/v1" || bytes)) mod |L|``: uniform
  over ALL classes (up to |L| / 2^256), never a function of the model's answer, so p0 = 1/|L|
  is exact for any suspect (DAWN answers a label other than the model's; then p0 would only be
  bounded by 1/(|L| - 1) and depend on how often the suspect agrees with the model).
- The answer: the scores with the derived label's score and the top score swapped, so a marked
  answer has the confidence profile of a normal one and its argmax is the derived label.
- The log key: an Ed25519 key derived from the secret (``HMAC(secret, b"backmark/api-mark/log-key/v1")``);
  its public half, in the body the owner signs, binds the secret to the owner.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..crypto import OwnerKey, canonical_image_bytes, canonical_json, open_signed, sha256_hex
from ..errors import IncompatibleModel, InvalidFile, InvalidKey, TamperedKey
from ..io.clock import utc_now
from ..io.documents import load_document, write_json
from ..io.schema import Const, Float, Hex, Int, Obj, Str, Timestamp
from ..targets.local import LocalTarget
from ..version import __version__

API_MARK_FORMAT = "backmark-api-mark"
API_MARK_VERSION = 1
DEFAULT_FRACTION = 0.005
_SELECT_TAG = b"backmark/api-mark/select/v1"
_LABEL_TAG = b"backmark/api-mark/label/v1"
_LOG_KEY_TAG = b"backmark/api-mark/log-key/v1"
# The file, as the strict loader checks it (docs/formats.md, "Api-mark key").
API_MARK_BODY = Obj({
    "kind": Const("api-mark"), "backmark": Str(max_len=64), "created": Timestamp(), "fraction": Float(0, 1),
    "num_classes": Int(2, 2**31 - 1), "log_public_key": Hex(32), "owner_public_key": Hex(32), "owner": Str(max_len=4096),
})
API_MARK_DOCUMENT = Obj({"format": Const(API_MARK_FORMAT), "version": Const(API_MARK_VERSION), "secret": Hex(32),
                         "body": API_MARK_BODY, "signature": Hex(64)})


def _hmac(secret: bytes, tag: bytes, data: bytes) -> bytes:
    return hmac.new(secret, tag + data, hashlib.sha256).digest()


def _log_key(secret: bytes) -> OwnerKey:
    return OwnerKey(Ed25519PrivateKey.from_private_bytes(_hmac(secret, _LOG_KEY_TAG, b"")))


def quantise(x: torch.Tensor) -> torch.Tensor:
    """float (N, C, H, W) in [0, 1] -> the uint8 pixels a query stands for (values outside [0, 1] clamp)."""
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def query_images(pixels: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> uint8 (N, H, W, C), the layout canonical image bytes are made of."""
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


@dataclass(frozen=True)
class ApiMark:
    """The api-mark secret and its owner-signed body (file format: docs/formats.md, "Api-mark key")."""

    secret: bytes
    body: dict
    signature: str

    def __post_init__(self):
        if len(self.secret) != 32:
            raise InvalidKey("an api-mark secret is 32 bytes")
        try:  # the loader's schema, also for a mark built in memory
            API_MARK_BODY.validate(self.body, "body")
        except InvalidFile as e:
            raise InvalidKey(f"malformed api-mark ({e})") from None
        _, problem = open_signed({"body": self.body, "signature": self.signature}, what="api mark")
        if problem:
            raise TamperedKey(problem)
        if _log_key(self.secret).public_hex != self.body["log_public_key"]:
            raise TamperedKey("the api-mark secret does not belong to its signed body (log key differs)")
        f, c = self.body["fraction"], self.body["num_classes"]
        if isinstance(f, bool) or not isinstance(f, float) or not 0 < f <= 1:
            raise InvalidKey(f"api-mark fraction {f!r} must be a number in (0, 1]")
        if isinstance(c, bool) or not isinstance(c, int) or c < 2:
            raise InvalidKey(f"api-mark class count {c!r} must be an integer >= 2")

    @classmethod
    def generate(cls, *, num_classes: int, owner_key: OwnerKey, fraction: float = DEFAULT_FRACTION, owner: str = "",
                 created: str | None = None, secret: bytes | None = None) -> ApiMark:
        """A fresh api-mark (secret from ``secrets``) signed by ``owner_key``."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        secret = secret if secret is not None else secrets.token_bytes(32)
        body = {
            "kind": "api-mark", "backmark": __version__, "created": created or utc_now(), "fraction": float(fraction),
            "num_classes": int(num_classes), "log_public_key": _log_key(secret).public_hex,
            "owner_public_key": owner_key.public_hex, "owner": owner,
        }
        return cls(secret, body, owner_key.sign(canonical_json(body)).hex())

    # -- what the body says -----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.body["num_classes"]

    @property
    def fraction(self) -> float:
        return self.body["fraction"]

    @cached_property
    def select_below(self) -> int:
        """Selected iff the 64-bit selection value is below this: the exact rate is select_below / 2^64."""
        return math.floor(Fraction(self.fraction) * 2**64)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical signed body: how logs and results name this api-mark."""
        return sha256_hex(canonical_json(self.body))

    @property
    def owner_fingerprint(self) -> str:
        return sha256_hex(bytes.fromhex(self.body["owner_public_key"]))

    @property
    def log_key(self) -> OwnerKey:
        return _log_key(self.secret)

    # -- the keyed hash -----------------------------------------------------------------
    def selects(self, data: bytes) -> bool:
        """Whether the keyed hash selects the query with canonical bytes ``data``."""
        return int.from_bytes(_hmac(self.secret, _SELECT_TAG, data)[:8], "big") < self.select_below

    def label(self, data: bytes) -> int:
        """The label derived for the query with canonical bytes ``data``."""
        return int.from_bytes(_hmac(self.secret, _LABEL_TAG, data), "big") % self.num_classes

    # -- the file -----------------------------------------------------------------------
    def to_document(self) -> dict:
        return {"format": API_MARK_FORMAT, "version": API_MARK_VERSION, "secret": self.secret.hex(), "body": self.body,
                "signature": self.signature}

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        return write_json(path, self.to_document(), force=force, mode=0o600)  # a secret: owner-only

    @classmethod
    def load(cls, path: str | os.PathLike) -> ApiMark:
        """Strictly (io.documents.load_document): schema, then exactly the bytes backmark wrote, then the signature."""
        doc = load_document(path, kind=API_MARK_FORMAT, versions=(API_MARK_VERSION,), schema=API_MARK_DOCUMENT,
                            tampered=TamperedKey)
        try:
            return cls(bytes.fromhex(doc["secret"]), doc["body"], doc["signature"])
        except InvalidKey as e:
            raise type(e)(f"{path}: {e}") from None


class ApiMarkedTarget(LocalTarget):
    """A target whose answers carry the api-mark: ``forward`` as the wrapped target's, except on
    selected queries, which are logged (``log.record``) and answered with the derived label.

    ``target``: anything with ``forward(float (B, C, H, W) in [0, 1]) -> scores``, ``input_shape``
    and ``num_classes`` (a LocalTarget: checkpoint, ONNX, TorchScript). ``log``: an ApiLog of
    this mark, or None (answers marked, nothing recorded: for experiments, never for serving).
    """

    def __init__(self, target, mark: ApiMark, log, *, name: str | None = None):
        if target.num_classes is not None and target.num_classes != mark.num_classes:
            raise IncompatibleModel(f"the model has {target.num_classes} classes but the api-mark was made for "
                                    f"{mark.num_classes}")
        if log is not None and log.mark.fingerprint != mark.fingerprint:
            raise InvalidKey("the api log belongs to another api-mark")
        self.target, self.mark, self.log = target, mark, log
        self.input_shape, self.num_classes = target.input_shape, mark.num_classes
        self.name = name or getattr(target, "name", "model")
        self.queries = self.selected = self.altered = 0
        self._lock = threading.Lock()  # counters and the log: one writer at a time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.target.forward(x).float().cpu().clone()
        if scores.dim() != 2 or len(scores) != len(x) or scores.shape[1] != self.mark.num_classes:
            raise IncompatibleModel(f"the model answered scores of shape {tuple(scores.shape)} for {len(x)} queries "
                                    f"and an api-mark of {self.mark.num_classes} classes")
        images = query_images(quantise(x))
        with self._lock:
            for i, image in enumerate(images):
                data = canonical_image_bytes(image)
                if not self.mark.selects(data):
                    continue
                label, top = self.mark.label(data), int(scores[i].argmax())
                if self.log is not None:  # recorded before it is answered: no marked answer goes unlogged
                    self.log.record(sha256_hex(data), label, image)
                if label != top:
                    scores[i, [label, top]] = scores[i, [top, label]]
                    self.altered += 1
                self.selected += 1
            self.queries += len(x)
        return scores

    def stats(self) -> dict:
        return {"queries": self.queries, "selected": self.selected, "altered": self.altered}


def selection_rate(mark: ApiMark, images: torch.Tensor) -> float:
    """The share of uint8 (N, C, H, W) images ``mark`` selects (for measurements)."""
    return sum(mark.selects(canonical_image_bytes(im)) for im in query_images(images)) / max(1, len(images))


__all__ = [
    "API_MARK_DOCUMENT", "API_MARK_FORMAT", "API_MARK_VERSION", "DEFAULT_FRACTION", "ApiMark", "ApiMarkedTarget",
    "quantise", "query_images", "selection_rate"
]
