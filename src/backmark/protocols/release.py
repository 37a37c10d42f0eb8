"""Release records: the owner's signed statement "this verification key's owner released these weights (and this head)".

    doc = make_release(vk, owner_key, "wm.safetensors", head="fc.safetensors")
    save_release(doc, "release.json")                  # anchor it: protocols.anchor, `backmark release --tsa URL`
    record = load_release("release.json", vk, tsa_roots=TsaRoots.load("tsa-roots.pem"))
    record.anchored_at, record.tsa_fingerprint          # None without a (verified) anchor
    check_head(record, "fc.safetensors")                # ReleaseMismatch unless it is the bound head

A record binds the verification key (fingerprint), the SHA-256 of the released weights file
(``io.hashing.file_sha256``) and, optionally, of a head (``models.heads.head_sha256``). Its
``created`` is only the owner's claim; the time that counts as evidence is the TSA's genTime of
its anchor, checked against the verifier's roots. File format: docs/formats.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..core.keygen import VK_FORMAT, VerificationKey
from ..crypto import OwnerKey, canonical_json, open_signed
from ..crypto.timestamp import TsaRoots, VerifiedTimestamp
from ..errors import InvalidFile, ReleaseMismatch, TamperedRecord
from ..io.clock import Clock, format_time, system_clock
from ..io.documents import document_format, load_document, validate_document, write_json
from ..io.files import read_file
from ..io.hashing import file_sha256
from ..io.schema import Const, Hex, Nullable, Obj, Str, Timestamp
from ..models.heads import head_sha256
from ..version import __version__
from .anchor import anchor_path, document_digest, find_anchor

RELEASE_FORMAT = "backmark-release"
RELEASE_VERSION = 1
_NAMED = Obj({"name": Str(max_len=4096), "sha256": Hex(32)})
RELEASE_BODY = Obj({
    "backmark": Str(min_len=1, max_len=64),
    "created": Timestamp(),
    "verification_key": Hex(32),
    "owner_public_key": Hex(32),
    "model": _NAMED,
    "head": Nullable(_NAMED),
})
RELEASE_DOCUMENT = Obj({"format": Const(RELEASE_FORMAT), "version": Const(RELEASE_VERSION), "body": RELEASE_BODY,
                        "signature": Hex(64)})


def make_release(vk: VerificationKey, owner_key: OwnerKey, model: str | os.PathLike, *, head=None,
                 clock: Clock = system_clock) -> dict:
    """A release record of the weights file ``model`` (and ``head``: a head file, checkpoint, state
    dict or module), signed by ``owner_key``, which must be the key that signed ``vk``."""
    if owner_key.public_hex != vk.owner_public_key:
        raise ReleaseMismatch("the owner key is not the one that signed this verification key; "
                              "a release is signed by the key's owner")
    if not Path(model).is_file():
        raise InvalidFile(f"{model}: no such model file to release")
    body = {
        "backmark": __version__,
        "created": format_time(clock()),
        "verification_key": vk.fingerprint,
        "owner_public_key": vk.owner_public_key,
        "model": {"name": Path(model).name, "sha256": file_sha256(model)},
        "head": None if head is None else {"name": _name(head), "sha256": head_sha256(head)},
    }
    RELEASE_BODY.validate(body, "body")  # what is signed is what the loader will accept
    return {"format": RELEASE_FORMAT, "version": RELEASE_VERSION, "body": body,
            "signature": owner_key.sign(canonical_json(body)).hex()}


def _name(head) -> str:
    return Path(head).name if isinstance(head, (str, os.PathLike)) else type(head).__name__


def save_release(doc: dict, path: str | os.PathLike, *, force: bool = False) -> Path:
    return write_json(path, doc, force=force, mode=0o644)  # evidence to hand out


def read_release(path: str | os.PathLike) -> dict:
    """A release record, strictly (fields, types, canonical bytes) and with a valid signature by
    the owner key it names; which key and owner it must be for is :func:`load_release`'s check."""
    p = Path(path)
    doc = load_document(p, kind=RELEASE_FORMAT, versions=(RELEASE_VERSION,), schema=RELEASE_DOCUMENT, tampered=TamperedRecord)
    _check_signature(doc, str(p))
    return doc


def check_release_document(doc, vk: VerificationKey, *, where: str = "release record") -> dict:
    """A release record held in memory (one a report embeds), checked as :func:`load_release`
    checks a file: schema, the owner's signature, and that it is ``vk``'s owner's record of ``vk``."""
    validate_document(RELEASE_DOCUMENT, doc, where=where)
    _check_signature(doc, where)
    _check_owner(doc, vk, where)
    return doc


def _check_signature(doc: dict, where: str) -> None:
    _, problem = open_signed(doc, what="release record")
    if problem:
        raise TamperedRecord(f"{where}: {problem}")


def _check_owner(doc: dict, vk: VerificationKey, where) -> None:
    b = doc["body"]
    if b["owner_public_key"] != vk.owner_public_key:
        raise ReleaseMismatch(f"{where}: the release record is signed by another owner key than the one that signed "
                              "this verification key")
    if b["verification_key"] != vk.fingerprint:
        raise ReleaseMismatch(f"{where}: the release record is for verification key {b['verification_key'][:16]}..., "
                              f"not {vk.fingerprint[:16]}...")


@dataclass(frozen=True)
class ReleaseRecord:
    """A release record that checked out against a verification key (and, given roots, its anchor)."""

    document: dict
    path: Path
    anchor: VerifiedTimestamp | None  # the verified RFC 3161 anchor, or None (none, or no roots to check it)

    @property
    def body(self) -> dict:
        return self.document["body"]

    @property
    def sha256(self) -> str:
        """The record's name (what its anchor stamps): SHA-256 of its canonical body and signature."""
        return document_digest(self.document).hex()

    @property
    def model_sha256(self) -> str:
        return self.body["model"]["sha256"]

    @property
    def model_name(self) -> str:
        return self.body["model"]["name"]

    @property
    def head_sha256(self) -> str | None:
        return None if self.body["head"] is None else self.body["head"]["sha256"]

    @property
    def created(self) -> str:
        """When the owner says the record was made: a claim, not evidence of time."""
        return self.body["created"]

    @property
    def anchored_at(self) -> datetime | None:
        return None if self.anchor is None else self.anchor.gen_time

    @property
    def tsa_fingerprint(self) -> str | None:
        return None if self.anchor is None else self.anchor.tsa_fingerprint

    @property
    def has_anchor_file(self) -> bool:
        return anchor_path(self.path).exists()


def load_release(path: str | os.PathLike, vk: VerificationKey, *, tsa_roots: TsaRoots | None = None,
                 anchor: str | os.PathLike | None = None) -> ReleaseRecord:
    """Load a release record of ``vk``'s owner and check it: TamperedRecord (signature),
    ReleaseMismatch (another key or owner), InvalidFile (malformed). With ``tsa_roots`` its anchor
    (``anchor``, or the file beside it) is verified: InvalidTimestamp if present and bad."""
    doc = read_release(path)
    _check_owner(doc, vk, path)
    return ReleaseRecord(doc, Path(path), find_anchor(path, doc, tsa_roots, anchor=anchor))


def check_head(record: ReleaseRecord, head) -> None:
    """ReleaseMismatch unless ``head`` (file, checkpoint, state dict or module) is the head the record binds."""
    if record.head_sha256 is None:
        raise ReleaseMismatch(f"{record.path}: the release record binds no head (release it with --output-layer)")
    found = head_sha256(head)
    if found != record.head_sha256:
        raise ReleaseMismatch(f"the head {found[:16]}... is not the one the release record binds ({record.head_sha256[:16]}...)")


def check_model(record: ReleaseRecord, model: str | os.PathLike) -> None:
    """ReleaseMismatch unless the file ``model`` is the weights file the record binds."""
    found = file_sha256(model)
    if found != record.model_sha256:
        raise ReleaseMismatch(f"{model}: SHA-256 {found[:16]}... is not the released weights ({record.model_sha256[:16]}...)")


def read_anchorable(path: str | os.PathLike) -> dict:
    """The signed document at ``path``, checked, if it is one an anchor can be over (a verification
    key or a release record); InvalidFile for anything else."""
    kind = document_format(read_file(path, what="file"), where=str(path))
    if kind == VK_FORMAT:
        return VerificationKey.load(path).to_document()
    if kind == RELEASE_FORMAT:
        return read_release(path)
    raise InvalidFile(f"{path}: only a verification key or a release record can be timestamped (found format {kind!r})")

