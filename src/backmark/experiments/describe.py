"""What a file is, and whether it checks out: ``backmark info FILE``.

    doc = describe_file("model.safetensors")   # {"file", "kind", "checked": [...], ...}

Every file backmark writes or reads is recognised by its content (not its name) and checked
by the same loader that uses it: keys (signature, checksum), checkpoints and output-layer
files (content hashes), plain state dicts and safetensors files, TorchScript and ONNX exports
(structure and metadata; neither is run), reports (signature; ``check-report`` does the rest),
public claims (signature), spent logs and audit logs (hash chains), training state, a report's
PDF (recognised, not checked: it holds no record), owner keys (the public fingerprint only: the
secret is never shown) and reproduction results. A file that fails its check raises the
loader's one-line error; one of no known kind raises InvalidFile.
"""
from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

from ..errors import InvalidFile, TamperedRecord
from ..io.documents import document_format, parse_json_strict
from ..io.files import read_file


def describe_file(path: str | os.PathLike) -> dict:
    """{"file", "kind", "checked", ...what the kind records}; raises the loader's error if a check fails."""
    p = Path(path)
    raw = read_file(p, what="file")
    doc = _describe(p, raw)
    return {"file": str(p), "bytes": len(raw), "mode": oct(stat.S_IMODE(p.stat().st_mode)), **doc}


def _describe(p: Path, raw: bytes) -> dict:
    from ..models.weights import file_kind

    if raw.lstrip().startswith(b"-----BEGIN"):
        return _owner_key(p, raw)
    if raw.startswith(b"%PDF-"):  # the report's PDF: for people, no record inside to check
        return {"kind": "report-pdf", "checked": [], "note": "a rendering for people: check the report's .json or .html "
                "(backmark info / check-report)"}
    kind = file_kind(raw)
    if kind == "safetensors":
        return _safetensors(p, raw)
    if kind == "torch-save":
        return _torch_save(p, raw)
    if kind == "torchscript":
        return _torchscript(p, raw)
    if raw.lstrip()[:1] == b"{" or p.suffix.lower() in (".html", ".htm"):
        return _json(p, raw)
    if p.suffix.lower() == ".onnx":
        return _onnx(p, raw)
    raise InvalidFile(f"{p}: not a file backmark writes or reads (keys, models, exports, reports, claims, logs, owner keys)")


def _owner_key(p: Path, raw: bytes) -> dict:
    from ..crypto import OwnerKey
    from ..crypto.sign import PASSPHRASE_ENV

    encrypted = b"ENCRYPTED" in raw[:64]
    if encrypted and not os.environ.get(PASSPHRASE_ENV):
        return {"kind": "owner-key", "checked": [], "encrypted": True, "fingerprint": None,
                "note": f"encrypted: set {PASSPHRASE_ENV} to read its fingerprint"}
    key = OwnerKey.load(p)
    doc = {"kind": "owner-key", "checked": ["Ed25519 private key"], "encrypted": encrypted, "fingerprint": key.fingerprint,
           "public_key": key.public_hex, "secret": "not shown"}
    if stat.S_IMODE(p.stat().st_mode) & 0o077:
        doc["warning"] = "others can read this secret key: chmod 600 it"
    return doc


def _safetensors(p: Path, raw: bytes) -> dict:
    from ..models.checkpoint import MODEL_FORMAT, read_checkpoint
    from ..models.heads import LAYER_FORMAT, load_output_layer
    from ..models.weights import read_tensor_file, safetensors_metadata, tensors_sha256

    meta = safetensors_metadata(raw, p)
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt == MODEL_FORMAT:
        meta, state = read_checkpoint(p)
        return {"kind": "checkpoint", "checked": ["tensors_sha256", "metadata_sha256"],
                **{k: v for k, v in meta.items() if k != "history"}, "epochs": len(meta.get("history") or []),
                **_tensors(state)}
    if fmt == LAYER_FORMAT:
        state = load_output_layer(p)
        return {"kind": "output-layer", "checked": ["tensors_sha256"], **meta, **_tensors(state)}
    if meta is not None:
        raise InvalidFile(f"{p}: a safetensors file with backmark metadata of unknown format {fmt!r}")
    _, state = read_tensor_file(p)
    return {"kind": "plain-safetensors", "checked": ["safetensors structure"], **_tensors(state),
            "tensors_sha256": tensors_sha256(state), "note": "no backmark metadata: give --model-factory to use it"}


def _torch_save(p: Path, raw: bytes) -> dict:
    import torch

    from ..models.weights import read_tensor_file, tensors_sha256

    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (read_tensor_file below says why in one line)
        obj = None
    if isinstance(obj, dict) and {"epoch", "model", "optimizer", "config"} <= set(obj):
        return {"kind": "training-state", "checked": ["torch.load(weights_only=True)"], "epoch": obj["epoch"],
                "config": obj["config"], "run": obj.get("run"), "note": "continue it with --resume, or --force to start afresh"}
    _, state = read_tensor_file(p)
    return {"kind": "plain-state-dict", "checked": ["torch.load(weights_only=True)"], **_tensors(state),
            "tensors_sha256": tensors_sha256(state), "note": "no backmark metadata: give --model-factory to use it"}


def _tensors(state) -> dict:
    return {"tensors": len(state), "parameters": int(sum(t.numel() for t in state.values()))}


def _torchscript(p: Path, raw: bytes) -> dict:
    from ..targets.local import read_export_metadata

    z = zipfile.ZipFile(io.BytesIO(raw))
    extra = [n for n in z.namelist() if n.endswith("/extra/backmark.json")]
    meta = read_export_metadata(z.read(extra[0]).decode() if extra else None, str(p))
    return {"kind": "torchscript", "checked": ["archive structure", "export metadata" if meta else "no backmark metadata"],
            **meta, "note": "not loaded: `backmark verify --target FILE` runs it"}


def _onnx(p: Path, raw: bytes) -> dict:
    from ..errors import MissingDependency
    from ..targets.local import read_export_metadata

    try:
        import onnx
    except ImportError:
        raise MissingDependency("describing ONNX files needs the onnx package: pip install 'backmark[remote]'") from None
    try:
        proto = onnx.load_from_string(raw)
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001  (onnx raises DecodeError, ValidationError...)
        raise InvalidFile(f"{p}: not a valid ONNX model ({str(e).strip().splitlines()[0][:160]})") from None
    props = {e.key: e.value for e in proto.metadata_props}
    meta = read_export_metadata(props.get("backmark"), str(p))

    def dims(v):
        return [d.dim_value or d.dim_param or None for d in v.type.tensor_type.shape.dim]

    return {"kind": "onnx", "checked": ["onnx.checker"], "opset": [o.version for o in proto.opset_import],
            "inputs": {i.name: dims(i) for i in proto.graph.input}, "outputs": {o.name: dims(o) for o in proto.graph.output},
            **meta}


def _json(p: Path, raw: bytes) -> dict:
    from ..core.keygen import MK_FORMAT, VK_FORMAT, MarkingKey, VerificationKey
    from ..protocols.anchor import ANCHOR_FORMAT
    from ..protocols.apilog import LOG_FORMAT as API_LOG_FORMAT
    from ..protocols.apimark import API_MARK_FORMAT
    from ..protocols.public import CLAIM_FORMAT
    from ..protocols.pverify import SPENT_LOG_FORMAT
    from ..protocols.release import RELEASE_FORMAT
    from ..protocols.report import REPORT_FORMAT
    from ..targets.audit import AUDIT_FORMAT

    if p.suffix.lower() in (".html", ".htm"):
        return _report(p)
    fmt = document_format(raw, where=str(p))  # strictly parsed: a malformed file is one line, exit 2
    if fmt == REPORT_FORMAT:
        return _report(p)
    if fmt == VK_FORMAT:
        vk = VerificationKey.load(p)
        body = {k: v for k, v in vk.body.items() if not k.endswith("commitments")}
        return {"kind": "verification-key", "checked": ["owner signature", "canonical form"], "verification_key": vk.fingerprint,
                "owner": vk.owner_fingerprint, "elements": vk.size, **body}
    if fmt == MK_FORMAT:
        mk = MarkingKey.load(p)
        return {"kind": "marking-key (SECRET)", "checked": ["checksum", "canonical form"],
                "marking_key_for": mk.verification_key_fingerprint,
                "elements": mk.size, "input_shape": mk.input_shape, "source": mk.source}
    if fmt == CLAIM_FORMAT:
        return _claim(p)
    if fmt in (RELEASE_FORMAT, ANCHOR_FORMAT):
        return _evidence(p, fmt)
    if fmt == SPENT_LOG_FORMAT:
        from ..protocols.pverify import SpentLog, log_summary

        return {"kind": "spent-log", "checked": ["hash chain", "sets selected by their nonces"], **log_summary(SpentLog.load(p))}
    if fmt == AUDIT_FORMAT:
        from ..targets.audit import read_audit_log

        records = read_audit_log(p)
        kinds = {}
        for r in records:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        return {"kind": "audit-log", "checked": ["hash chain"], "target": records[0].get("target"), "records": len(records),
                "by_kind": kinds, "head": records[-1]["hash"]}
    if fmt in (API_MARK_FORMAT, API_LOG_FORMAT):
        return _api_mark_file(p, fmt)
    return _other_json(p, parse_json_strict(raw, where=str(p)), fmt)


def _api_mark_file(p: Path, fmt: str) -> dict:
    from ..protocols.apilog import read_api_log
    from ..protocols.apimark import API_MARK_FORMAT, ApiMark

    if fmt == API_MARK_FORMAT:
        mark = ApiMark.load(p)
        b = mark.body
        return {"kind": "api-mark (SECRET)", "checked": ["owner signature", "log key", "canonical form"],
                "api_mark": mark.fingerprint, "owner": mark.owner_fingerprint, "created": b["created"],
                "fraction": b["fraction"], "num_classes": b["num_classes"]}
    log = read_api_log(p, None)  # no secret here: checked against the key its own header names
    h = log.header
    return {"kind": "api-log", "checked": ["hash chain", "signatures by the header's log key"], "api_mark": h["api_mark"],
            "entries": len(log.entries), "head": log.head, "first": log.entries[0]["time"] if log.entries else None,
            "last": log.entries[-1]["time"] if log.entries else None,
            "note": "whose log it is, and each entry's selection and label: backmark verify-extraction --api-mark KEY"}


def _report(p: Path) -> dict:
    from ..crypto.sign import open_signed
    from ..protocols.report import load_report

    doc = load_report(p)  # its format and version; a page whose text differs from the record it embeds
    b, problem = open_signed(doc, what="report")
    if problem:
        raise TamperedRecord(f"{p}: {problem}")
    return {"kind": "verification-report", "checked": ["owner signature", "page matches its record"], "created": b.get("created"),
            "verdict": b.get("verdict"), "decision": b.get("decision"), "verification_key": b.get("verification_key"),
            "owner": b.get("owner"), "model": b.get("model"),
            "note": "openings, arithmetic and verdict: backmark check-report FILE --verification-key VK"}


def _claim(p: Path) -> dict:
    from ..crypto.sign import open_signed
    from ..protocols.public import load_claim

    body, problem = open_signed(load_claim(p), what="public claim")
    if problem:
        raise TamperedRecord(f"{p}: {problem}")
    return {"kind": "public-claim", "checked": ["owner signature"], "verification_key": body.get("verification_key"),
            "parameters": body.get("parameters"), "model": body.get("model")}


def _evidence(p: Path, fmt: str) -> dict:
    from ..protocols.anchor import ANCHOR_FORMAT, load_anchor
    from ..protocols.release import read_release

    if fmt == ANCHOR_FORMAT:  # no time is shown: the token's genTime is evidence only once checked against roots
        doc = load_anchor(p)
        return {"kind": "timestamp-anchor", "checked": ["format"], "document": doc["document"],
                "note": "the token is checked against the verifier's TSA roots: backmark timestamp DOCUMENT --tsa-roots PEM "
                "(a log head's: backmark timestamp --log-head HEX --out THIS-FILE --tsa-roots PEM)"}
    b = read_release(p)["body"]
    return {"kind": "release-record", "checked": ["owner signature", "canonical form"], "verification_key": b["verification_key"],
            "owner_public_key": b["owner_public_key"], "created (the owner's claim)": b["created"], "model": b["model"],
            "head": b["head"], "note": "its anchor: backmark timestamp FILE --tsa-roots PEM"}


def _other_json(p: Path, doc: dict, fmt: str) -> dict:
    from ..io.documents import read_json_document
    from ..protocols.zk.proof import PROOFS_FORMAT, PROOFS_VERSION
    from .reproduce.run import RESULTS_FORMAT, RESULTS_VERSION

    known = {RESULTS_FORMAT: ("reproduce-results", RESULTS_VERSION), PROOFS_FORMAT: ("zk-proofs-manifest", PROOFS_VERSION)}
    if fmt not in known:
        raise InvalidFile(f"{p}: JSON of an unknown format {fmt!r}")
    kind, version = known[fmt]
    doc = read_json_document(p, kind=fmt, versions=(version,))
    return {"kind": kind, "checked": ["format and version"], **{k: v for k, v in doc.items() if not isinstance(v, (dict, list))}}


__all__ = ["describe_file"]
