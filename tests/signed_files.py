"""Every signed or security-relevant file type, made valid once, with its strict loader: the
harness of the property tests (tests/test_signed_files.py) and of the fuzz run
(benchmarks/fuzz_files.py).

Add a file type with one entry in FILES: how to write a valid one into the world, how backmark
loads it (the strict loader plus its cryptographic checks, raising a BackmarkError when it
refuses), what it says (canonical bytes of body and signature: a mutated file that loads must say
exactly this), and the CLI commands that read it ("{file}" is the file under test).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from backmark.core.keygen import MarkingKey, VerificationKey, keygen, load_pair
from backmark.crypto import OwnerKey, canonical_image_bytes, canonical_json, sha256_hex
from backmark.crypto.timestamp import TsaRoots
from backmark.errors import TamperedRecord
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.protocols.anchor import check_anchor, load_anchor, new_anchor, save_anchor, timestamp_query
from backmark.protocols.apilog import ApiLog, read_api_log
from backmark.protocols.apimark import ApiMark
from backmark.protocols.extraction import logged_queries
from backmark.protocols.public import check_public_claim, load_claim, public_claim, save_claim
from backmark.protocols.release import load_release, make_release, save_release
from backmark.targets import describe
from backmark.targets.audit import AuditLog, read_audit_log

from .tsa import LocalTSA

SHAPE = (1, 12, 12)
CREATED = "2026-01-01T00:00:00Z"
CREATED_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class World:
    """A folder with a key pair of each label mode, a claim, an audit log, an (unmarked) model, a
    release record of it and a local TSA's anchor of the verification key."""

    folder: Path
    owner: OwnerKey = field(default_factory=OwnerKey.generate)

    @cached_property
    def keys(self) -> tuple[MarkingKey, VerificationKey]:
        # derived labels, abstract images: 200 elements, what a claim at the default 2^-64 needs
        return keygen(input_shape=SHAPE, num_classes=10, owner_key=self.owner, set_size=50, num_sets=4, created=CREATED)

    @cached_property
    def committed_keys(self) -> tuple[MarkingKey, VerificationKey]:  # owner-given labels, Pedersen commitments
        return keygen(input_shape=SHAPE, num_classes=10, owner_key=self.owner, set_size=6, labels=[1, 2, 3, 4, 5, 6],
                      commitment="pedersen", created=CREATED)

    def path(self, name: str) -> Path:
        return self.folder / name

    @cached_property
    def model(self) -> Path:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE)
        meta = {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE)}
        return save_model(self.path("model.safetensors"), net, meta)

    @cached_property
    def tsa(self) -> LocalTSA:  # tests/tsa.py: `openssl ts -reply`, by file (no network)
        return LocalTSA.create(self.path("tsa"), name="World TSA")

    @cached_property
    def tsa_roots(self) -> TsaRoots:
        return TsaRoots.load(self.tsa.root_pem)

    def files(self) -> dict[str, Path]:
        """Every file of FILES written (and the pair files they need), by name."""
        out = {f.name: f.make(self) for f in FILES}
        out["model"] = self.model
        out["tsa-roots"] = self.tsa.root_pem
        return out


def _save(obj, path: Path) -> Path:
    if not path.exists():
        obj.save(path)
    return path


def _make_claim(w: World) -> Path:
    mk, vk = w.keys
    p = w.path("claim.json")
    if not p.exists():
        save_claim(public_claim(mk, vk, w.owner, created=CREATED, model_info=describe(w.model)), p)
    return p


def _make_audit_log(w: World) -> Path:
    p = w.path("audit.jsonl")
    if p.exists():
        return p
    ticks = iter(range(1_700_000_000, 1_700_000_100))
    clock = lambda: next(ticks) + 0.25  # noqa: E731  (fixed times: the file is the same on every run)
    log = AuditLog(p, target="http://127.0.0.1:8000/v2/models/m", clock=clock)
    log.append("query", images=2, batch_size=2, target="http://127.0.0.1:8000/v2/models/m")
    req = {"method": "POST", "url": "http://127.0.0.1:8000/v2/models/m/infer", "sha256": "ab" * 32, "bytes": 1200, "images": 2}
    log.append("exchange", attempt=1, request=req, response=None, elapsed_us=150, outcome="error", error="cannot connect")
    resp = {"status": 200, "sha256": "cd" * 32, "bytes": 300, "content_type": "application/json"}
    log.append("exchange", attempt=2, request=req, response=resp, elapsed_us=900, outcome="ok", labels=[3, 7])
    AuditLog(p, target="http://127.0.0.1:8000/v2/models/m", clock=clock)  # reopened: a resume record
    return p


def _make_release(w: World) -> Path:
    p = w.path("release.json")
    if not p.exists():  # the model file is also the head: a head named by its checkpoint (models.heads.head_sha256)
        save_release(make_release(w.keys[1], w.owner, w.model, head=w.model, clock=lambda: CREATED_TIME), p)
    return p


def _make_anchor(w: World) -> Path:
    p = w.path("verification-key.timestamp.json")  # beside the key: what keygen --tsa writes
    if not p.exists():
        doc = w.keys[1].to_document()
        save_anchor(new_anchor(doc, reply=w.tsa.reply(timestamp_query(doc))), p)
    return p


def _anchor_checked(p: Path, w: World) -> dict:
    doc = load_anchor(p)
    check_anchor(doc, w.keys[1].to_document(), w.tsa_roots)  # the token, against the verifier's roots
    return doc


def _make_api_mark(w: World) -> Path:
    p = w.path("api-mark.json")
    if not p.exists():
        ApiMark.generate(num_classes=10, owner_key=w.owner, fraction=1.0, created=CREATED, secret=bytes(range(32))).save(p)
    return p


def _make_api_log(w: World) -> Path:
    """An api log of 4 marked answers (one query twice) and its images file, at fixed times."""
    p = w.path("api-log.jsonl")
    if p.exists():
        return p
    mark = ApiMark.load(_make_api_mark(w))
    ticks = iter(range(100))
    clock = lambda: dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=next(ticks))  # noqa: E731
    images = np.random.default_rng(0).integers(0, 256, (3, SHAPE[1], SHAPE[2], SHAPE[0]), dtype=np.uint8)
    with ApiLog(p, w.path("api-log.images.jsonl"), mark, clock=clock) as log:
        for im in [*images, images[0]]:
            data = canonical_image_bytes(im)
            log.record(sha256_hex(data), mark.label(data), im)
    return p


def _api_log_checked(p: Path, w: World):
    # As for the audit log: a log cut after an entry is a valid shorter log; it is the same document
    # only against the head published when it was written (verify-extraction --head).
    mark = ApiMark.load(_make_api_mark(w))
    return read_api_log(p, mark).upto(read_api_log(_make_api_log(w), mark).head)


def _api_images_checked(p: Path, w: World):
    # The images file proves itself through the log: every logged query's image, in log order.
    _make_api_log(w)
    queries, _, images, _ = logged_queries(ApiMark.load(_make_api_mark(w)), w.path("api-log.jsonl"), p)
    return queries, images


def _claim_checked(p: Path, w: World) -> dict:
    doc = load_claim(p)
    chk = check_public_claim(doc, w.keys[1])
    if not chk.valid:
        raise TamperedRecord("; ".join(chk.problems))
    return doc


def _audit_checked(p: Path, w: World) -> list[dict]:
    # A log cut after a record is a valid shorter log: it is the same document only against the head
    # published when it was written (a verification result's queries.audit_head).
    return read_audit_log(p, head=read_audit_log(_make_audit_log(w))[-1]["hash"])


def is_record_prefix(data: bytes, original: bytes) -> bool:
    """A JSON Lines file cut after one of its records (a valid shorter log until its head is compared)."""
    return data != original and original.startswith(data) and (not data or data.endswith(b"\n"))


def _vk_identity(vk: VerificationKey) -> bytes:
    return canonical_json({"body": vk.body, "signature": vk.signature})


def _mk_identity(mk: MarkingKey) -> bytes:
    return canonical_json(mk.to_document())


@dataclass(frozen=True)
class SignedFile:
    name: str
    style: str  # "pretty" (io.documents.dumps_json) or "lines" (JSON Lines of canonical objects)
    make: Callable[[World], Path]
    load: Callable[[Path, World], Any]
    identity: Callable[[Any], bytes]
    commands: tuple[tuple[str, ...], ...] = ()


VERIFY = ("verify", "--model", "{model}")
FILES = [
    SignedFile("verification-key", "pretty", lambda w: _save(w.keys[1], w.path("verification-key.json")),
               lambda p, w: VerificationKey.load(p), _vk_identity,
               (("info", "{file}"), (*VERIFY, "--marking-key", "{marking-key}", "--verification-key", "{file}"),
                ("check-claim", "{public-claim}", "--verification-key", "{file}"))),
    SignedFile("verification-key-committed", "pretty", lambda w: _save(w.committed_keys[1], w.path("vk-committed.json")),
               lambda p, w: VerificationKey.load(p), _vk_identity,
               (("info", "{file}"), (*VERIFY, "--marking-key", "{marking-key-committed}", "--verification-key", "{file}"))),
    SignedFile("marking-key", "pretty", lambda w: _save(w.keys[0], w.path("marking-key.json")),
               lambda p, w: load_pair(p, w.files()["verification-key"])[0], _mk_identity,
               (("info", "{file}"), (*VERIFY, "--marking-key", "{file}", "--verification-key", "{verification-key}"))),
    SignedFile("marking-key-committed", "pretty", lambda w: _save(w.committed_keys[0], w.path("mk-committed.json")),
               lambda p, w: load_pair(p, w.files()["verification-key-committed"])[0], _mk_identity,
               (("info", "{file}"), (*VERIFY, "--marking-key", "{file}", "--verification-key", "{verification-key-committed}"))),
    SignedFile("public-claim", "pretty", _make_claim, _claim_checked, canonical_json,
               (("info", "{file}"), ("check-claim", "{file}", "--verification-key", "{verification-key}"))),
    SignedFile("release-record", "pretty", _make_release, lambda p, w: load_release(p, w.keys[1], tsa_roots=w.tsa_roots),
               lambda r: canonical_json({"body": r.body, "signature": r.document["signature"]}), (("info", "{file}"),)),
    SignedFile("anchor", "pretty", _make_anchor, _anchor_checked, canonical_json,
               # not `info`: without the verifier's roots it cannot check the token, so it reads less than the loader
               (("timestamp", "{verification-key}", "--out", "{file}", "--tsa-roots", "{tsa-roots}"),)),
    SignedFile("audit-log", "lines", _make_audit_log, _audit_checked,
               lambda records: b"\n".join(canonical_json(r) for r in records), (("info", "{file}"),)),
    SignedFile("api-mark", "pretty", _make_api_mark, lambda p, w: ApiMark.load(p), lambda m: canonical_json(m.to_document()),
               (("info", "{file}"), ("verify-extraction", "--model", "{model}", "--api-mark", "{file}", "--log", "{api-log}"))),
    SignedFile("api-log", "lines", _make_api_log, _api_log_checked,
               lambda log: b"\n".join(canonical_json(e) for e in (log.header, *log.entries)),
               (("info", "{file}"), ("verify-extraction", "--model", "{model}", "--api-mark", "{api-mark}", "--log", "{file}",
                                      "--images", "{api-images}"))),
    SignedFile("api-images", "lines", lambda w: _make_api_log(w).with_name("api-log.images.jsonl"), _api_images_checked,
               lambda qi: canonical_json(qi[0]) + qi[1].numpy().tobytes(),
               (("verify-extraction", "--model", "{model}", "--api-mark", "{api-mark}", "--log", "{api-log}",
                 "--images", "{file}"),)),
]
BY_NAME = {f.name: f for f in FILES}

__all__ = ["BY_NAME", "FILES", "SignedFile", "World", "is_record_prefix"]
