"""Anchors: an RFC 3161 timestamp over a signed document, kept in a small file beside it.

An anchor proves that a verification key, a release record or an api log's head existed at the
TSA's genTime; the times a document states itself (``created``) are only its signer's claim. The
token is over the document's digest, ``SHA-256(canonical_json({"body": body, "signature":
signature}))``, so any change to what was signed breaks it; for a log head (a hash of the signed
chain, no document of its own), over ``SHA-256(canonical_json({"format": "backmark-api-log-head",
"head": HEAD}))``. File format (``X.timestamp.json`` beside ``X.json``):
docs/formats.md.

    anchor = new_anchor(vk.to_document(), tsa="http://tsa.example/")        # or reply=<TSA reply bytes>
    save_anchor(anchor, anchor_path("keys/verification-key.json"))
    stamp = find_anchor("keys/verification-key.json", vk.to_document(), roots)   # None if there is none

Checking needs the VERIFIER's trusted TSA roots (:class:`~backmark.crypto.timestamp.TsaRoots`);
an anchor file holds no root and no time of its own, so nothing in it is read unverified.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

from ..crypto.canonical import canonical_json
from ..crypto.timestamp import TsaRoots, VerifiedTimestamp, make_query, request_timestamp, token_from_response, verify_token
from ..errors import InvalidFile, InvalidTimestamp
from ..io.clock import format_time
from ..io.documents import load_document, validate_document, write_json
from ..io.hashing import sha256_hex
from ..io.schema import Base64, Const, Hex, Obj, Str, Timestamp

ANCHOR_FORMAT = "backmark-timestamp"
ANCHOR_VERSION = 1
LOG_HEAD_FORMAT = "backmark-api-log-head"
ANCHORABLE = ("backmark-verification-key", "backmark-release", LOG_HEAD_FORMAT)  # what an anchor can be over
MAX_TOKEN_CHARS = 1 << 16  # base64 of a token: a few KiB in practice
ANCHOR_DOCUMENT = Obj({
    "format": Const(ANCHOR_FORMAT),
    "version": Const(ANCHOR_VERSION),
    "document": Obj({"format": Str(choices=ANCHORABLE), "sha256": Hex(32)}),
    "token": Base64(max_len=MAX_TOKEN_CHARS),
})


def log_head_document(head: str) -> dict:
    """What an anchor of an api log's head is over: {"format": "backmark-api-log-head", "head": HEAD}."""
    Hex(32).validate(head, "log head")
    return {"format": LOG_HEAD_FORMAT, "head": head}


def document_digest(doc: dict) -> bytes:
    """The 32 bytes an anchor stamps: SHA-256 of the canonical signed body and its signature (a log
    head: of the canonical head document)."""
    if isinstance(doc, dict) and doc.get("format") == LOG_HEAD_FORMAT and set(doc) == {"format", "head"}:
        return bytes.fromhex(sha256_hex(canonical_json(log_head_document(doc["head"]))))
    if not isinstance(doc, dict) or doc.get("format") not in ANCHORABLE or not {"body", "signature"} <= set(doc):
        raise InvalidFile(f"only a verification key, a release record or a log head can be anchored, not {doc.get('format')!r}")
    return bytes.fromhex(sha256_hex(canonical_json({"body": doc["body"], "signature": doc["signature"]})))


def anchor_path(document_path: str | os.PathLike) -> Path:
    """Where the anchor of a document lives: ``X.json`` -> ``X.timestamp.json``."""
    p = Path(document_path)
    return p.with_name(p.stem + ".timestamp.json")


def timestamp_query(doc: dict) -> bytes:
    """A DER TimeStampReq (``.tsq``) for the document's digest, to carry to a TSA by other means."""
    return make_query(document_digest(doc)).der


def new_anchor(doc: dict, *, tsa: str | None = None, reply: bytes | None = None, timeout: float = 15.0) -> dict:
    """An anchor of ``doc``: a token from the TSA at URL ``tsa``, or from ``reply`` (a TSA's reply
    or bare token, "by file"). The token is checked to be over this document; its signature is
    checked by :func:`check_anchor`, with roots."""
    if (tsa is None) == (reply is None):
        raise ValueError("give exactly one of tsa (a URL) and reply (the bytes of a TSA's reply)")
    digest = document_digest(doc)
    token = request_timestamp(tsa, digest, timeout=timeout) if tsa is not None else token_from_response(reply, digest)
    return {
        "format": ANCHOR_FORMAT,
        "version": ANCHOR_VERSION,
        "document": {"format": doc["format"], "sha256": digest.hex()},
        "token": base64.b64encode(token).decode("ascii"),
    }  # no TSA URL: nobody signs it, so it would be an unsigned field; the TSA is named by its verified certificate


def save_anchor(anchor: dict, path: str | os.PathLike, *, force: bool = False) -> Path:
    return write_json(path, anchor, force=force, mode=0o644)  # evidence to hand out


def load_anchor(path: str | os.PathLike) -> dict:
    """An anchor file, strictly (io.documents.load_document): schema, then canonical bytes."""
    p = Path(path)
    doc = load_document(p, kind=ANCHOR_FORMAT, versions=(ANCHOR_VERSION,), schema=ANCHOR_DOCUMENT)
    if not doc["token"]:
        raise InvalidFile(f"{p}: token: expected a timestamp token, got an empty string")
    return doc


def check_anchor(anchor: dict, doc: dict, roots: TsaRoots) -> VerifiedTimestamp:
    """The verified time of ``anchor`` (from :func:`load_anchor`) over ``doc``; InvalidTimestamp
    if it is for another document or does not verify against the verifier's ``roots``."""
    digest = document_digest(doc)
    if anchor["document"] != {"format": doc["format"], "sha256": digest.hex()}:
        raise InvalidTimestamp("the anchor is for another document (the document was changed, or the anchor belongs elsewhere)")
    return verify_token(base64.b64decode(anchor["token"]), digest, roots=roots)


def check_anchor_time(stated: dict, doc: dict, roots: TsaRoots | None) -> VerifiedTimestamp | None:
    """``stated`` = {"anchor": an anchor document, "anchored_at": T} as a report carries it: the
    anchor's form, and with ``roots`` that it verifies over ``doc`` with genTime exactly T.
    InvalidFile (form) or InvalidTimestamp (token, time)."""
    if not isinstance(stated, dict) or set(stated) != {"anchor", "anchored_at"}:
        raise InvalidFile("an anchored time must be stated as {anchor, anchored_at}")
    validate_document(ANCHOR_DOCUMENT, stated["anchor"], where="anchor")
    Timestamp().validate(stated["anchored_at"], "anchored_at")
    if roots is None:
        return None
    stamp = check_anchor(stated["anchor"], doc, roots)
    if format_time(stamp.gen_time) != stated["anchored_at"]:
        raise InvalidTimestamp(f"anchored at {stated['anchored_at']} is stated, the token says {format_time(stamp.gen_time)}")
    return stamp


def find_anchor(document_path: str | os.PathLike, doc: dict, roots: TsaRoots | None, *,
                anchor: str | os.PathLike | None = None) -> VerifiedTimestamp | None:
    """The verified anchor of the document at ``document_path`` (its anchor file, or ``anchor``),
    or None when there is none or no roots were given to check one. A present anchor that fails
    is never ignored: InvalidTimestamp (with the file named)."""
    path = Path(anchor) if anchor is not None else anchor_path(document_path)
    if roots is None or (anchor is None and not path.exists()):
        return None
    try:
        return check_anchor(load_anchor(path), doc, roots)
    except InvalidTimestamp as e:
        raise InvalidTimestamp(f"{path}: {e}") from None
