"""Signed verification reports: evidence a third party can check without trusting the owner's tool.

A report is one JSON document (machine) and one self-contained HTML page (people) showing
the same record: the key's fingerprint, the model's SHA-256, the opened elements (images as
PNG, labels, predictions, opening nonces), the matches, threshold and p-value, the time, and
an Ed25519 signature by the owner key over the canonical record. The HTML page embeds the
signed JSON, so either file can be checked.

    doc = make_report(result, mk, vk, owner_key, model_info={"name": "m.safetensors", "sha256": ...})
    json_path, html_path = write_report(doc, "evidence/report")
    check = check_report("evidence/report.html", vk=vk, model="m.safetensors")
    check.ok, check.problems

``check_report`` checks the signature, the arithmetic (matches, threshold, p-value), and
with the verification key every opening; with the model, its hash and its answers.
File format: docs/formats.md.
"""
from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..core.keygen import MarkingKey, VerificationKey, element_problem
from ..core.stats import decide, null_rate
from ..crypto import OwnerKey, canonical_json, open_signed
from ..errors import BackmarkError, InvalidFile, KeyMismatch, TamperedRecord
from ..io.clock import utc_now
from ..io.documents import dumps_json
from ..io.files import atomic_write_bytes, check_writable, read_file
from ..io.hashing import file_sha256
from ..io.png import png_b64, png_decode
from ..models.checkpoint import weights_sha256
from ..version import __version__
from .pverify import select_set, set_alpha, set_indices

REPORT_FORMAT = "backmark-verification-report"
REPORT_VERSION = 1
_EMBED_RE = re.compile(rb'<script type="application/json" id="backmark-report">(.*?)</script>', re.DOTALL)


# -- what a report names ----------------------------------------------------------------

def describe_model(model) -> dict:
    """{"name", "sha256", "hashed"}: a file's SHA-256, or of an in-process model's weights."""
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        return {"name": str(model), "sha256": file_sha256(model), "hashed": "file"}
    if callable(getattr(model, "state_dict", None)):
        return {"name": type(model).__name__, "sha256": weights_sha256(model), "hashed": "weights"}
    return {"name": str(getattr(model, "name", model)), "sha256": None, "hashed": None}


def make_report(
    result,
    mk: MarkingKey,
    vk: VerificationKey,
    owner_key: OwnerKey,
    *,
    model_info: dict | None = None,
    kind: str = "verify",
    pverify: dict | None = None,
    seconds: float | None = None,
    created: str | None = None,
) -> dict:
    """A signed report of ``result`` (a VerificationResult) for the elements it opened.

    ``pverify``: the PVerify record (set, nonce, log heads...) for one-time verification.
    The owner key must be the one that signed the verification key.
    """
    if owner_key.public_hex != vk.owner_public_key:
        raise KeyMismatch("the owner key is not the one that signed this verification key; reports are signed by the key's owner")
    d = result.decision
    elements = []
    for i, y, p in zip(result.indices, result.labels, result.predictions):
        o = mk.opening(i)
        elements.append({
            "index": i,
            "label": y,
            "prediction": p,
            "image_png": png_b64(o["image"]),
            "image_nonce": o["image_nonce"].hex(),
            "label_nonce": o["label_nonce"].hex(),
        })
    body = {
        "kind": kind,
        "created": created or utc_now(),
        "backmark": __version__,
        "verification_key": vk.fingerprint,
        "owner_public_key": vk.owner_public_key,
        "owner": vk.owner_fingerprint,
        "commitment": vk.commitment,
        "label_mode": vk.label_mode,
        "num_classes": vk.num_classes,
        "input_shape": list(vk.input_shape),
        "model": model_info or {"name": None, "sha256": None, "hashed": None},
        "decision": {
            "matches": d.matches, "n": d.n, "threshold": d.threshold, "alpha": d.alpha,
            "p0_exact": f"{d.p0.numerator}/{d.p0.denominator}", "p_value": d.p_value,
            "log2_p_value": d.log2_p_value, "verified": d.verified,
        },
        "elements": elements,
        "seconds": seconds,
    }
    if pverify is not None:
        body["pverify"] = pverify
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "body": body,
            "signature": owner_key.sign(canonical_json(body)).hex()}


# -- files ----------------------------------------------------------------------------

def report_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``evidence/report``, ``.json`` or ``.html`` -> (evidence/report.json, evidence/report.html)."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix.lower() in (".json", ".html", ".htm") else p
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".html")


def write_report(doc: dict, path: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path]:
    """Write the JSON and HTML files (both refused if either exists, unless ``force``)."""
    json_path, html_path = report_paths(path)
    for p in (json_path, html_path):
        check_writable(p, force=force)
    atomic_write_bytes(json_path, dumps_json(doc), force=force, mode=0o644)  # evidence to hand out
    atomic_write_bytes(html_path, render_html(doc).encode(), force=force, mode=0o644)
    return json_path, html_path


def report_verification(path, result, mk: MarkingKey, vk: VerificationKey, owner_key: OwnerKey, *, model, seconds: float,
                        pverify: dict | None = None, force: bool = False) -> tuple[Path, Path]:
    """Sign the report of a verification of ``model`` and write PATH.json and PATH.html."""
    doc = make_report(result, mk, vk, owner_key, model_info=describe_model(model),
                      kind="pverify" if pverify else "verify", pverify=pverify, seconds=seconds)
    return write_report(doc, path, force=force)


def load_report(path: str | os.PathLike) -> dict:
    """The signed document from a report's JSON file or its HTML page."""
    p = Path(path)
    raw = read_file(p, what="report")
    m = _EMBED_RE.search(raw)
    if m:
        raw = m.group(1)  # JSON reads the "<\/" escapes back as "</"
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidFile(f"{p}: not a backmark report (neither its JSON nor its HTML page): {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise InvalidFile(f"{p}: expected a {REPORT_FORMAT} file")
    if doc.get("version") != REPORT_VERSION:
        raise InvalidFile(f"{p}: report version {doc.get('version')!r} is not supported")
    if m and render_html(doc).encode() != p.read_bytes():
        raise TamperedRecord(f"{p}: the page differs from the signed record it embeds (the visible text was edited)")
    return doc


# -- HTML ------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table.kv td{padding:2px 12px 2px 0;vertical-align:top}td.k{color:#666}
code{font-size:90%;word-break:break-all}.ok{color:#075}.bad{color:#b00}
.grid{display:flex;flex-wrap:wrap;gap:6px}.el{border:1px solid #ddd;padding:3px;text-align:center;font-size:11px;width:64px}
.el img{width:56px;height:56px;image-rendering:pixelated}.miss{background:#fee}"""


def render_html(doc: dict) -> str:
    """A self-contained page (no external resources) for a signed report document."""
    b = doc["body"]
    e = html.escape
    d = b["decision"]
    verdict = "OWNERSHIP VERIFIED" if d["verified"] else "NOT VERIFIED"
    rows = [
        ("verdict", f'<b class="{"ok" if d["verified"] else "bad"}">{verdict}</b>'),
        ("matches", f'{d["matches"]} of {d["n"]} (threshold {d["threshold"]})'),
        ("p-value", f'{d["p_value"]:.3g} (2^{d["log2_p_value"]:.1f}); alpha {d["alpha"]:.3g}; p0 {e(d["p0_exact"])}'),
        ("model", f'{e(str(b["model"].get("name")))}<br>SHA-256 <code>{e(str(b["model"].get("sha256")))}</code>'),
        ("verification key", f'<code>{e(b["verification_key"])}</code>'),
        ("owner key", f'<code>{e(b["owner"])}</code> (SHA-256 of the Ed25519 public key)'),
        ("labels", f'{e(b["label_mode"])}; {b["num_classes"]} classes; commitments {e(b["commitment"])}'),
        ("time", f'{e(b["created"])}' + ("" if b.get("seconds") is None else f' ({b["seconds"]:.1f} s)')),
    ]
    if "pverify" in b:
        pv = b["pverify"]
        rows.append(("one-time set", (
            f'set {pv["set"]} of {pv["num_sets"]} (entry {pv["seq"]} of the spent log); verifier nonce <code>{e(pv["nonce"])}</code>;'
            f' log head before <code>{e(pv["head_before"])}</code>, after <code>{e(pv["head_after"])}</code>'
        )))
    cells = []
    for el in b["elements"]:
        hit = el["label"] == el["prediction"]
        cells.append(
            f'<div class="el{"" if hit else " miss"}"><img alt="trigger {el["index"]}" src="data:image/png;base64,{e(el["image_png"])}">'
            f'<br>#{el["index"]}<br>{el["label"]} / {el["prediction"]} {"&#10003;" if hit else "&#10007;"}</div>'
        )
    embedded = json.dumps(doc, sort_keys=True).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>backmark verification report {e(b['verification_key'][:16])}</title><style>{_CSS}</style></head><body>\n"
        "<h1>Verification report</h1>\n<table class=\"kv\">"
        + "".join(f'<tr><td class="k">{k}</td><td>{v}</td></tr>' for k, v in rows)
        + "</table>\n"
        f"<h2>Opened trigger elements ({len(b['elements'])}): committed label / model's answer</h2>\n"
        f'<div class="grid">{"".join(cells)}</div>\n'
        "<h2>Signature</h2>\n"
        f"<p>Ed25519 by the owner key over the canonical JSON record embedded in this page: <code>{e(doc['signature'])}</code></p>\n"
        "<p>Check it: <code>backmark check-report THIS-FILE --verification-key verification-key.json [--model MODEL]</code></p>\n"
        f'<script type="application/json" id="backmark-report">{embedded}</script>\n'
        "</body></html>\n"
    )


# -- checking ---------------------------------------------------------------------------

@dataclass
class ReportCheck:
    doc: dict
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        b = self.doc.get("body", {})
        return {"ok": self.ok, "problems": self.problems, "checked": self.checked,
                "verification_key": b.get("verification_key"), "verified": b.get("decision", {}).get("verified")}


def check_report(report, *, vk: VerificationKey | None = None, model=None, device="cpu") -> ReportCheck:
    """Check a report (path or document). Problems are collected, not raised.

    Always: the owner's signature and the decision's arithmetic. With ``vk``: the key and
    owner match, every opened element opens its commitments, and for a PVerify report the
    opened set is the one its nonce selects. With ``model``: its SHA-256 and its answers.
    """
    doc = load_report(report) if isinstance(report, (str, os.PathLike)) else report
    chk = ReportCheck(doc)
    b, problem = open_signed(doc, what="report")
    if problem:
        chk.problems.append(problem)
        return chk
    chk.checked.append("signature")
    try:
        _check_arithmetic(b, chk)
        if vk is not None:
            _check_against_key(b, vk, chk)
        if model is not None and not chk.problems:
            _check_model(b, vk, model, device, chk)
    except (KeyError, TypeError, ValueError) as e:
        chk.problems.append(f"malformed report ({e})")
    return chk


def _check_arithmetic(b: dict, chk: ReportCheck) -> None:
    d, els = b["decision"], b["elements"]
    labels, preds = [el["label"] for el in els], [el["prediction"] for el in els]
    matches = sum(int(y == p) for y, p in zip(labels, preds))
    if matches != d["matches"] or len(els) != d["n"]:
        chk.problems.append(f"the report states {d['matches']}/{d['n']} matches but its elements show {matches}/{len(els)}")
        return
    num, den = (int(v) for v in d["p0_exact"].split("/"))
    p0 = Fraction(num, den)
    expected = null_rate(b["num_classes"]) if b["label_mode"] == "derived" else null_rate(b["num_classes"], labels, preds)
    if p0 != expected:
        chk.problems.append(f"the report's null rate p0 = {p0} should be {expected}")
        return
    again = decide(matches, len(els), p0, d["alpha"])
    if (again.threshold, again.verified, again.p_value) != (d["threshold"], d["verified"], d["p_value"]):
        chk.problems.append("the threshold, p-value or verdict does not follow from the matches")
        return
    chk.checked.append("arithmetic")


def _check_against_key(b: dict, vk: VerificationKey, chk: ReportCheck) -> None:
    if b["verification_key"] != vk.fingerprint or b["owner_public_key"] != vk.owner_public_key:
        chk.problems.append("the report is about another verification key or signed by another owner")
        return
    for el in b["elements"]:
        i = el["index"]
        try:
            image = png_decode(el["image_png"], vk.input_shape)
            image_nonce, label_nonce = bytes.fromhex(el["image_nonce"]), bytes.fromhex(el["label_nonce"])
        except (TypeError, ValueError) as e:
            chk.problems.append(f"element {i!r}: bad image or nonce ({e})")
            return
        problem = element_problem(vk, i, image, image_nonce, el["label"], label_nonce)
        if problem:
            chk.problems.append(problem)
            if problem.startswith("element index"):
                return
    if "pverify" in b:
        _check_pverify(b, vk, chk)
    if not chk.problems:
        chk.checked.append("openings")


def _check_pverify(b: dict, vk: VerificationKey, chk: ReportCheck) -> None:
    pv = b["pverify"]
    unspent = [j for j in range(vk.num_sets) if j not in set(pv["spent_before"])]
    try:
        chosen = select_set(vk.fingerprint, pv["head_before"], bytes.fromhex(pv["nonce"]), unspent)
    except BackmarkError as e:
        chk.problems.append(f"one-time verification record: {e}")
        return
    if chosen != pv["set"] or pv["num_sets"] != vk.num_sets:
        chk.problems.append(f"set {pv['set']} is not the set the verifier's nonce selects (it selects {chosen})")
    elif [el["index"] for el in b["elements"]] != set_indices(vk, chosen):
        chk.problems.append(f"the opened elements are not exactly set {chosen}")
    elif b["decision"]["alpha"] != set_alpha(pv["alpha_total"], vk.num_sets):
        chk.problems.append("the per-set alpha is not alpha / number of sets")
    else:
        chk.checked.append("pverify selection")


def _check_model(b: dict, vk: VerificationKey | None, model, device, chk: ReportCheck) -> None:
    import torch

    from ..targets import as_target

    stated = b["model"].get("sha256")
    info = describe_model(model)
    if stated is not None and info["sha256"] is not None:
        if info["sha256"] != stated:
            chk.problems.append(f"the model's SHA-256 {info['sha256'][:16]}... differs from the report's {stated[:16]}...")
            return
        chk.checked.append("model sha256")
    shape = vk.input_shape if vk is not None else tuple(b["input_shape"])
    images = np.stack([png_decode(el["image_png"], shape) for el in b["elements"]])
    preds = as_target(model, device=device).predict(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    got = [int(p) for p in preds]
    if got != [el["prediction"] for el in b["elements"]]:
        diff = sum(int(g != el["prediction"]) for g, el in zip(got, b["elements"]))
        chk.problems.append(f"the model answers {diff} of the {len(got)} opened images differently from the report")
    else:
        chk.checked.append("model answers")


__all__ = [
    "REPORT_FORMAT",
    "ReportCheck",
    "check_report",
    "describe_model",
    "load_report",
    "make_report",
    "render_html",
    "report_paths",
    "report_verification",
    "write_report",
]
