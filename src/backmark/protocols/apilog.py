"""What an api-marked API keeps: a signed, hash-chained log of its marked answers, and their images.

Two append-only JSON Lines files (formats: docs/formats.md, "Api log" and "Api images"):

- the log (``api-log.jsonl``): a header bound to the api-mark, then one entry per marked answer
  (query hash, answered label, time), each signed by the api-mark's log key and chained to the
  one before it; it holds no pixels, so it can be shown (or its head published) without the
  users' images;
- the images (``api-images.jsonl``): each logged query's image once, as lossless PNG; an image
  proves itself by hashing to its query hash, so this file needs no chain of its own.

    with ApiLog("api-log.jsonl", "api-images.jsonl", mark) as log:   # creates or continues both
        log.record(query_sha256, label, image_hwc)
    log = read_api_log("api-log.jsonl", mark)                         # TamperedRecord if anything is off
    images = read_api_images("api-images.jsonl", mark)

A writer holds an exclusive lock on the log for its lifetime (two servers never interleave one
chain) and fsyncs every line; an image is written before its entry, so a crash between the two
leaves an unlogged image (reported by the reader), never a logged answer without its image.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..crypto import canonical_image_bytes, canonical_json, sha256_hex, verify_signature
from ..errors import BackmarkError, InvalidFile, KeyMismatch, TamperedKey, TamperedRecord
from ..io.clock import Clock, format_time, system_clock
from ..io.documents import load_json_lines
from ..io.png import png_b64, png_decode
from ..io.schema import Base64, Const, Float, Hex, Int, List, Obj, Str, Timestamp
from ..version import __version__
from .apimark import ApiMark

LOG_FORMAT, IMAGES_FORMAT, VERSION = "backmark-api-log", "backmark-api-images", 1
_SIGN_TAG = b"backmark/api-log/sign/v1"
_CHAIN_TAG = b"backmark/api-log/chain/v1"
# What each line holds (docs/formats.md, "Api log", "Api images"), as the strict loader checks it.
LOG_HEADER = Obj({
    "format": Const(LOG_FORMAT), "version": Const(VERSION), "backmark": Str(max_len=64),
    "created": Timestamp(milliseconds=True), "api_mark": Hex(32), "log_public_key": Hex(32),
    "num_classes": Int(2, 2**31 - 1), "fraction": Float(0, 1), "sig": Hex(64),
})
LOG_ENTRY = Obj({"seq": Int(1), "prev": Hex(32), "time": Timestamp(milliseconds=True), "query": Hex(32), "label": Int(0),
                 "sig": Hex(64)})
IMAGES_HEADER = Obj({"format": Const(IMAGES_FORMAT), "version": Const(VERSION), "api_mark": Hex(32)})
IMAGE_LINE = Obj({"query": Hex(32), "shape": List(Int(1, 65535), min_len=3, max_len=3), "png": Base64()})


def default_images_path(log_path: str | os.PathLike) -> Path:
    """Where the images go when not named: beside the log (``api-log.jsonl`` -> ``api-log.images.jsonl``)."""
    p = Path(log_path)
    return p.with_suffix(".images" + p.suffix) if p.suffix else p.with_name(p.name + ".images")


def _head(line: dict) -> str:
    return sha256_hex(_CHAIN_TAG + canonical_json(line))


def _signed(line: dict, key) -> dict:
    return {**line, "sig": key.sign(_SIGN_TAG + canonical_json(line)).hex()}


def _lines(path: Path, kind: str, first, rest) -> list[dict]:
    """The lines of a backmark JSON Lines file, through the one strict loader (io.documents)."""
    return load_json_lines(path, kind=kind, versions=(VERSION,), first=first, rest=rest, canonical=canonical_json,
                           tampered=TamperedRecord)


def _bound(path: Path, header: dict, mark: ApiMark) -> None:
    if header["api_mark"] != mark.fingerprint:
        raise KeyMismatch(f"{path} belongs to api-mark {header['api_mark'][:16]}..., not to {mark.fingerprint[:16]}...")


@dataclass(frozen=True)
class ApiLogRecord:
    """A checked api log: its header, entries and the chain head after each line (heads[0]: the header)."""

    path: Path
    header: dict
    entries: tuple[dict, ...]
    heads: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.heads[-1]

    def upto(self, head: str) -> ApiLogRecord:
        """The log as it was when its head was ``head`` (a head published earlier)."""
        if head not in self.heads:
            raise TamperedRecord(f"{self.path} never had head {head[:16]}...: the log was rewritten, or it is another log's")
        k = self.heads.index(head)
        return ApiLogRecord(self.path, self.header, self.entries[:k], self.heads[: k + 1])


def read_api_log(path: str | os.PathLike, mark: ApiMark | None) -> ApiLogRecord:
    """Read and check an api log: header bound to ``mark``, every line canonical, signed by the
    mark's log key and chained to the one before, labels in range. TamperedRecord otherwise.

    ``mark=None`` (``backmark info``, which has no secret): the same checks against the key and
    class count the header itself names, so whose log it is stays unchecked."""
    p = Path(path)
    docs = _lines(p, LOG_FORMAT, LOG_HEADER, LOG_ENTRY)
    header = docs[0]
    key, classes = header["log_public_key"], header["num_classes"]
    if mark is not None:
        _bound(p, header, mark)
        key, classes = mark.body["log_public_key"], mark.num_classes
        if header["log_public_key"] != key:
            raise TamperedRecord(f"{p}:1: the header names another log key than the api-mark's")
    heads, entries = [_check_sig(p, 1, header, key)], []
    for k, e in enumerate(docs[1:], 2):
        if e["seq"] != k - 1 or e["prev"] != heads[-1]:
            raise TamperedRecord(f"{p}:{k}: the hash chain breaks here (an entry was removed, reordered or edited)")
        if e["label"] >= classes:
            raise TamperedRecord(f"{p}:{k}: label {e['label']} is not a class of this api-mark")
        heads.append(_check_sig(p, k, e, key))
        entries.append(e)
    return ApiLogRecord(p, header, tuple(entries), tuple(heads))


def _check_sig(path: Path, k: int, line: dict, key: str) -> str:
    """The line's chain head, after checking its signature by the log key."""
    try:
        body = {f: v for f, v in line.items() if f != "sig"}
        verify_signature(key, line["sig"], _SIGN_TAG + canonical_json(body), what="api log")
    except (TamperedKey, TypeError, AttributeError):
        raise TamperedRecord(f"{path}:{k}: the log key's signature does not verify (the line was edited or forged)") from None
    return _head(line)


@dataclass(frozen=True)
class ApiImages:
    """A checked images file: query hash -> uint8 (H, W, C) image, in file order."""

    path: Path
    images: dict[str, np.ndarray]


def read_api_images(path: str | os.PathLike, mark: ApiMark) -> ApiImages:
    """Read an images file: each image decodes and hashes to its query hash; TamperedRecord otherwise."""
    p = Path(path)
    docs = _lines(p, IMAGES_FORMAT, IMAGES_HEADER, IMAGE_LINE)
    _bound(p, docs[0], mark)
    images: dict[str, np.ndarray] = {}
    for k, d in enumerate(docs[1:], 2):
        try:
            img = png_decode(d["png"], tuple(d["shape"]))
        except (TypeError, ValueError) as e:
            raise TamperedRecord(f"{p}:{k}: not a stored query image ({e})") from None
        if sha256_hex(canonical_image_bytes(img)) != d["query"]:
            raise TamperedRecord(f"{p}:{k}: the image does not hash to its query hash (the image was edited)")
        if png_b64(img) != d["png"]:  # one encoding per image: a file reads the same to every reader, byte for byte
            raise TamperedRecord(f"{p}:{k}: the image is not stored as backmark stores it (the file was edited)")
        if d["query"] in images:
            raise TamperedRecord(f"{p}:{k}: query {d['query'][:16]}... is stored twice")
        images[d["query"]] = img
    return ApiImages(p, images)


def _open_append(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab")  # noqa: SIM115  (closed by ApiLog.close)
    except OSError as e:
        raise InvalidFile(f"{path}: cannot write there ({e.strerror or e})") from None


class ApiLog:
    """The writer of both files: creates them, or checks and continues them; a context manager."""

    def __init__(self, log_path: str | os.PathLike, images_path: str | os.PathLike, mark: ApiMark, *,
                 clock: Clock = system_clock):
        self.mark, self.clock, self._key = mark, clock, mark.log_key
        self.log_path, self.images_path = Path(log_path), Path(images_path)
        if self.log_path.resolve() == self.images_path.resolve():
            raise BackmarkError("the api log and the images file must be two files")
        self._log = _open_append(self.log_path)  # held open, and locked, for the writer's life
        try:
            fcntl.flock(self._log, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._log.close()
            raise BackmarkError(f"{self.log_path} is in use by another writer (another server with this log?)") from None
        try:
            self._open_files()
        except BaseException:
            self.close()
            raise

    def _open_files(self) -> None:
        # Check what is there before writing anything: a broken or foreign file is never extended.
        logged, log = set(), None
        if self.log_path.stat().st_size:
            log = read_api_log(self.log_path, self.mark)
            logged = {e["query"] for e in log.entries}
        has_images = self.images_path.exists() and self.images_path.stat().st_size > 0
        self.stored = set(read_api_images(self.images_path, self.mark).images) if has_images else set()
        missing = logged - self.stored
        if missing:
            raise TamperedRecord(f"{self.images_path} lacks the images of {len(missing)} logged queries: not extending them")
        if log is None:
            header = {"format": LOG_FORMAT, "version": VERSION, "backmark": __version__, "created": self._now(),
                      "api_mark": self.mark.fingerprint, "log_public_key": self._key.public_hex,
                      "num_classes": self.mark.num_classes, "fraction": self.mark.fraction}
            log = ApiLogRecord(self.log_path, header, (), (self._append(self._log, _signed(header, self._key), LOG_HEADER),))
        self.seq, self.head = len(log.entries) + 1, log.head
        self._images = _open_append(self.images_path)
        if not has_images:
            self._append(self._images, {"format": IMAGES_FORMAT, "version": VERSION, "api_mark": self.mark.fingerprint},
                         IMAGES_HEADER)

    def _now(self) -> str:
        return format_time(self.clock(), milliseconds=True)

    @staticmethod
    def _append(f, doc: dict, schema) -> str:
        """Write one line, fsynced before returning; its chain head. The reader's schema is checked
        first: a line the reader would refuse never reaches the file."""
        schema.validate(doc, f"{f.name} line")
        f.write(canonical_json(doc) + b"\n")
        f.flush()
        os.fsync(f.fileno())
        return _head(doc)

    def record(self, query: str, label: int, image_hwc: np.ndarray) -> str:
        """Log one marked answer (its image first, if not stored yet); returns the new head."""
        if self._log.closed:
            raise BackmarkError(f"{self.log_path} is closed: an api-marked target cannot answer without its log")
        if query not in self.stored:
            c = image_hwc.shape[2]
            line = {"query": query, "shape": [int(c), *map(int, image_hwc.shape[:2])], "png": png_b64(image_hwc)}
            self._append(self._images, line, IMAGE_LINE)
            self.stored.add(query)
        entry = {"seq": self.seq, "prev": self.head, "time": self._now(), "query": query, "label": int(label)}
        self.seq, self.head = self.seq + 1, self._append(self._log, _signed(entry, self._key), LOG_ENTRY)
        return self.head

    def close(self) -> None:
        for f in (getattr(self, "_images", None), self._log):
            if f is not None and not f.closed:
                f.close()  # closing the log releases its lock

    def __enter__(self) -> ApiLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "IMAGES_FORMAT", "IMAGES_HEADER", "IMAGE_LINE", "LOG_ENTRY", "LOG_FORMAT", "LOG_HEADER", "ApiImages", "ApiLog",
    "ApiLogRecord", "default_images_path", "read_api_images", "read_api_log"
]
