"""Signed verification reports: evidence a third party can check without trusting the owner's tool.

A report is one JSON document (machine) and one self-contained HTML page (people) showing
the same record: the key, the model's identity, how it was queried, the null hypothesis,
alpha and its floor, the opened elements (images as PNG, labels, predictions, opening
nonces), the decision and the verdict (docs/claims.md), the selection (all elements, or a
one-time set with the verifier's signed spent-log chain), the time, and an Ed25519
signature by the owner key over the canonical record. The HTML page embeds the signed JSON,
so either file can be checked. A PDF of the same content (``report_pdf``) is written beside
them for people; it is not evidence and is never read back.

    doc = make_report(result, mk, vk, owner_key, model_info=describe(model_path))
    json_path, html_path, pdf_path = write_report(doc, "evidence/report")
    check = check_report("evidence/report.html", vk=vk, model="m.safetensors")
    check.ok, check.problems

``check_report`` recomputes everything that decided the verdict from the report's own fields:
the elements must be exactly the set the key prescribes (each once), each must open its
commitments, the arithmetic and the verdict must follow, the one-time selection must be the
verifier's (a signed chain, checked against an earlier report with ``earlier``); with the
model, its hash and answers. File format: docs/formats.md.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..core.keygen import MarkingKey, VerificationKey, element_problem
from ..core.stats import ALPHA_FLOOR, clopper_pearson_upper, decide
from ..core.verify import NULL_KINDS, View, judge
from ..crypto import OwnerKey, canonical_json, open_signed
from ..errors import BackmarkError, InvalidFile, KeyMismatch, TamperedRecord
from ..io.clock import utc_now
from ..io.documents import dumps_json
from ..io.files import atomic_write_bytes, check_writable, read_file
from ..io.png import png_b64, png_decode
from ..targets import describe
from ..version import __version__
from .pverify import SpentChain, check_extends, set_alpha, set_indices
from .report_page import render_html

REPORT_FORMAT = "backmark-verification-report"
REPORT_VERSION = 2
_EMBED_RE = re.compile(rb'<script type="application/json" id="backmark-report">(.*?)</script>', re.DOTALL)


def make_report(
    result,
    mk: MarkingKey,
    vk: VerificationKey,
    owner_key: OwnerKey,
    *,
    model_info: dict | None = None,
    selection: dict | None = None,
    seconds: float | None = None,
    created: str | None = None,
    verifier_name: str | None = None,
    classes: list[str] | None = None,
    key_anchor: dict | None = None,
) -> dict:
    """A signed report of ``result`` (a VerificationResult) for the elements it opened.

    ``selection``: None for a verification of every element; a PVerify result's
    ``selection()`` (the set, the nonce, the verifier's signed chain) for a one-time one.
    ``verifier_name``: who verified, as the owner-signed report names them; the owner's name is
    the one the verification key's signed statement gives. ``classes``: the class names, in
    label order, where known (a backmark checkpoint records them).
    The owner key must be the one that signed the verification key. ``key_anchor``:
    {"anchor": the verification key's anchor document, "anchored_at": its genTime}, given only
    once verified against the verifier's TSA roots; check_report re-checks it with the checker's.
    """
    if key_anchor is not None:
        from .anchor import check_anchor_time

        key_anchor = {"anchor": key_anchor["anchor"], "anchored_at": key_anchor["anchored_at"]}
        check_anchor_time(key_anchor, vk.to_document(), None)  # its form; the time was checked by the caller
    if classes is not None and (len(classes) != vk.num_classes or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"classes must name the key's {vk.num_classes} classes in label order")
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
    query = {k: v for k, v in result.extra.items() if k in ("queries", "normalization")}
    body = {
        "kind": "verify" if selection is None else "pverify",
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
        "parties": {"owner": vk.body["statement"].get("owner") or None, "verifier": verifier_name or None},
        "classes": None if classes is None else list(classes),
        "query": query,
        "alpha": result.alpha,
        "alpha_floor": ALPHA_FLOOR,
        "null": result.null.as_dict(),
        "view": result.view.as_dict(),
        "decision": {
            "matches": result.matches, "n": result.n, "threshold": None if d is None else d.threshold,
            "p_value": None if d is None else d.p_value, "log2_p_value": None if d is None else d.log2_p_value,
            "passed": result.passed,
        },
        "verdict": result.verdict.as_dict(),
        "key_anchor": key_anchor,
        "selection": selection or {"kind": "all"},
        "elements": elements,
        "seconds": seconds,
    }
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "body": body,
            "signature": owner_key.sign(canonical_json(body)).hex()}


# -- files ----------------------------------------------------------------------------

def report_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``evidence/report``, ``.json``, ``.html`` or ``.pdf`` -> (evidence/report.json, .html, .pdf)."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix.lower() in (".json", ".html", ".htm", ".pdf") else p
    return tuple(base.with_name(base.name + ext) for ext in (".json", ".html", ".pdf"))


def write_report(doc: dict, path: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path, Path]:
    """Write the JSON, HTML and PDF files (all refused if any exists, unless ``force``). The PDF is a
    rendering for people: check_report reads the JSON or the HTML page, never the PDF."""
    from .report_pdf import render_pdf  # ReportLab: imported when a report is written, not for every command

    json_path, html_path, pdf_path = report_paths(path)
    for p in (json_path, html_path, pdf_path):
        check_writable(p, force=force)
    page, pdf = render_html(doc).encode(), render_pdf(doc)  # both rendered before any file is written
    atomic_write_bytes(json_path, dumps_json(doc), force=force, mode=0o644)  # evidence to hand out
    atomic_write_bytes(html_path, page, force=force, mode=0o644)
    atomic_write_bytes(pdf_path, pdf, force=force, mode=0o644)
    return json_path, html_path, pdf_path


def report_verification(path, result, mk: MarkingKey, vk: VerificationKey, owner_key: OwnerKey, *, model, seconds: float,
                        selection: dict | None = None, force: bool = False, verifier_name: str | None = None,
                        key_anchor: dict | None = None) -> tuple[Path, Path, Path]:
    """Sign the report of a verification of ``model`` and write PATH.json, PATH.html and PATH.pdf."""
    doc = make_report(result, mk, vk, owner_key, model_info=describe(model), selection=selection, seconds=seconds,
                      verifier_name=verifier_name, classes=_class_names(model, vk), key_anchor=key_anchor)
    return write_report(doc, path, force=force)


def _class_names(model, vk: VerificationKey) -> list[str] | None:
    """The class names a backmark checkpoint records, if the model is one and they fit the key."""
    from ..models.checkpoint import read_checkpoint

    if not isinstance(model, (str, os.PathLike)) or Path(model).suffix != ".safetensors":
        return None
    try:
        names = read_checkpoint(model)[0].get("classes")
    except BackmarkError:
        return None
    ok = isinstance(names, list) and len(names) == vk.num_classes and all(isinstance(c, str) for c in names)
    return list(names) if ok else None


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _no_constants(name):
    raise ValueError(f"{name} is not a number")


def load_report(path: str | os.PathLike) -> dict:
    """The signed document from a report's JSON file or its HTML page (which must be exactly
    the page its record renders to: no visible text may differ from what was signed)."""
    p = Path(path)
    raw = read_file(p, what="report")
    m = _EMBED_RE.search(raw)
    text = m.group(1) if m else raw  # JSON reads the \u003c escapes back as "<"
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidFile(f"{p}: not a backmark report (neither its JSON nor its HTML page): {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise InvalidFile(f"{p}: expected a {REPORT_FORMAT} file")
    if doc.get("version") != REPORT_VERSION or isinstance(doc.get("version"), bool):
        raise InvalidFile(f"{p}: report version {doc.get('version')!r} is not supported (this backmark reads {REPORT_VERSION})")
    if set(doc) != {"format", "version", "body", "signature"} or not isinstance(doc["body"], dict):
        raise InvalidFile(f"{p}: unexpected fields in the report")
    try:
        expected = render_html(doc).encode() if m else dumps_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise InvalidFile(f"{p}: malformed report ({type(e).__name__}: {e})") from None
    if expected != raw:
        raise TamperedRecord(f"{p}: the file differs from the signed record it carries (edited after it was written)")
    return doc


# -- checking ---------------------------------------------------------------------------

@dataclass
class ReportCheck:
    doc: dict
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def body(self) -> dict:
        return self.doc.get("body", {}) if isinstance(self.doc, dict) else {}

    def as_dict(self) -> dict:
        b = self.body
        return {"ok": self.ok, "problems": self.problems, "checked": self.checked,
                "verification_key": b.get("verification_key"), "verdict": b.get("verdict"), "alpha": b.get("alpha")}


def check_report(report, *, vk: VerificationKey | None = None, model=None, earlier=None, verifier: str | None = None,
                 tsa_roots=None, device="cpu") -> ReportCheck:
    """Check a report (path or document). Problems are collected, not raised.

    Always: the owner's signature, the arithmetic and the verdict, recomputed from the
    report's fields. ``vk`` (required for an OK): the key and owner match, the elements are
    exactly the prescribed set and each opens its commitments, a one-time selection is the
    verifier's signed one. ``model``: its SHA-256 and its answers. ``earlier``: an earlier
    report of the same one-time key (path or document): this one's chain must extend its.
    ``verifier``: the public key (hex) or fingerprint of the verifier that must have signed
    the spent log. ``tsa_roots`` (crypto.timestamp.TsaRoots): the TSA roots the checker trusts,
    for a white-box report's anchored head (its release record and anchor are re-checked).
    """
    doc = load_report(report) if isinstance(report, (str, os.PathLike)) else report
    chk = ReportCheck(doc)
    b, problem = open_signed(doc, what="report")
    if problem:
        chk.problems.append(problem)
        return chk
    chk.checked.append("signature")
    try:
        _check_decision(b, chk)
        if vk is None:
            chk.problems.append("not checked against the verification key (give it): a report anyone could have signed "
                                "for any key is not evidence until its openings are checked")
        else:
            _check_against_key(b, vk, chk)
            if b["view"]["kind"] != "black-box" and not chk.problems:
                _check_head(b["view"], vk, tsa_roots, chk)
            if b["key_anchor"] is not None and not chk.problems:
                _check_key_anchor(b["key_anchor"], vk, tsa_roots, chk)
        if b["selection"]["kind"] == "pverify":
            _check_selection(b, vk, earlier, verifier, chk)
        elif earlier is not None or verifier is not None:
            chk.problems.append("an earlier report or a verifier applies to one-time (PVerify) reports only")
        if model is not None and not chk.problems:
            _check_model(b, vk, model, device, chk)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        chk.problems.append(f"malformed report ({type(e).__name__}: {e})")
    return chk


def _rational(text: str) -> Fraction:
    num, den = (int(v) for v in text.split("/"))
    return Fraction(num, den)


def _check_decision(b: dict, chk: ReportCheck) -> None:
    """The decision and the verdict must follow from the elements, the null, the view and alpha."""
    d, els, null = b["decision"], b["elements"], b["null"]
    matches = sum(int(el["label"] == el["prediction"]) for el in els)
    if matches != d["matches"] or len(els) != d["n"]:
        chk.problems.append(f"the report states {d['matches']}/{d['n']} matches but its elements show {matches}/{len(els)}")
        return
    alpha = b["alpha"]
    if not (isinstance(alpha, float) and 0 < alpha < 1) or b["alpha_floor"] != ALPHA_FLOOR:
        chk.problems.append("malformed alpha or alpha floor")
        return
    kind = null["kind"]
    if kind not in NULL_KINDS or (kind == "exact") != (b["label_mode"] == "derived"):
        chk.problems.append(f"a {b['label_mode']}-label key cannot have a {kind!r} null")
        return
    test_alpha = alpha
    p0 = None
    if kind == "exact":
        p0 = Fraction(1, b["num_classes"])
    elif kind == "calibrated":
        refs = null["references"]
        k, n = sum(r["matches"] for r in refs), sum(r["n"] for r in refs)
        if null["alpha_bound"] != alpha / 2 or (null["pooled_matches"], null["pooled_trials"]) != (k, n) \
                or any(r["n"] != len(els) for r in refs):
            chk.problems.append("the calibrated null's counts or alpha split do not add up")
            return
        p0 = clopper_pearson_upper(k, n, null["alpha_bound"])
        test_alpha = alpha - null["alpha_bound"]
    if (None if p0 is None else f"{p0.numerator}/{p0.denominator}") != null["p0"]:
        chk.problems.append(f"the report's p0 {null['p0']} should be {p0}")
        return
    again = None if p0 is None else decide(matches, len(els), p0, test_alpha)
    stated = (d["threshold"], d["p_value"], d["passed"])
    if stated != ((None, None, False) if again is None else (again.threshold, again.p_value, again.passed)):
        chk.problems.append("the threshold, p-value or outcome does not follow from the matches")
        return
    v = b["view"]
    view = View() if v["kind"] == "black-box" else View(v["kind"], v["head_sha256"], bool(v["bound"]), v["anchored_at"],
                                                         v["suspect_seen_at"], v["release"])
    overall = b["selection"]["alpha_total"] if b["selection"]["kind"] == "pverify" else alpha  # the floor is on the family's alpha
    verdict = judge(null=kind, view=view, passed=d["passed"], alpha=overall, references=len(null.get("references", ())))
    if verdict.as_dict() != b["verdict"]:
        chk.problems.append(f"the verdict should read {verdict.text!r}, not {b['verdict'].get('text')!r}")
        return
    chk.checked.append("decision and verdict")


def _check_head(view: dict, vk: VerificationKey, tsa_roots, chk: ReportCheck) -> None:
    """A white-box report: its head is the one the owner's embedded release record binds, anchored when it says."""
    from .binding import check_binding

    if not view["bound"]:
        if view["release"] is not None:
            chk.problems.append("the report carries a release record but says its head is not bound")
        return
    problem = check_binding(view, vk, tsa_roots=tsa_roots)
    if problem:
        chk.problems.append(problem)
    else:
        chk.checked.append("head bound by the owner's release record" + (f", anchored at {view['anchored_at']}"
                                                                         if view["anchored_at"] else ", not anchored"))


def _check_key_anchor(key_anchor: dict, vk: VerificationKey, tsa_roots, chk: ReportCheck) -> None:
    """The key's anchored time the report shows is its token's genTime, against the checker's roots."""
    from .anchor import check_anchor_time

    if tsa_roots is None:
        chk.problems.append("the report shows the key's anchored time: give the TSA roots you trust (--tsa-roots) to check it")
        return
    try:
        check_anchor_time(key_anchor, vk.to_document(), tsa_roots)
    except BackmarkError as e:
        chk.problems.append(f"the key's anchor: {e}")
        return
    chk.checked.append(f"key anchored at {key_anchor['anchored_at']}")


def _check_against_key(b: dict, vk: VerificationKey, chk: ReportCheck) -> None:
    if b["verification_key"] != vk.fingerprint or b["owner_public_key"] != vk.owner_public_key or b["owner"] != vk.owner_fingerprint:
        chk.problems.append("the report is about another verification key or signed by another owner")
        return
    if b["parties"]["owner"] != (vk.body["statement"].get("owner") or None):
        chk.problems.append("the report names another owner than the verification key's signed statement")
        return
    classes = b["classes"]
    if classes is not None and (len(classes) != vk.num_classes or not all(isinstance(c, str) for c in classes)):
        chk.problems.append("the report's class names do not fit the key's classes")
        return
    if (b["label_mode"], b["num_classes"], b["input_shape"], b["commitment"]) != \
            (vk.label_mode, vk.num_classes, list(vk.input_shape), vk.commitment):
        chk.problems.append("the report's label mode, classes, input shape or commitment scheme differ from the key's")
        return
    sel = b["selection"]
    prescribed = list(range(vk.size)) if sel["kind"] == "all" else set_indices(vk, sel["set"])
    indices = [el["index"] for el in b["elements"]]
    if indices != prescribed:
        what = "every element of the key, in order" if sel["kind"] == "all" else f"exactly set {sel['set']}, in order"
        chk.problems.append(f"the report's elements are not {what}, each once: a report covers what the key prescribes")
        return
    for el in b["elements"]:
        try:
            image = png_decode(el["image_png"], vk.input_shape)
            image_nonce, label_nonce = bytes.fromhex(el["image_nonce"]), bytes.fromhex(el["label_nonce"])
        except (TypeError, ValueError) as e:
            chk.problems.append(f"element {el['index']!r}: bad image or nonce ({e})")
            return
        problem = element_problem(vk, el["index"], image, image_nonce, el["label"], label_nonce)
        if problem:
            chk.problems.append(problem)
            return
    chk.checked.append("openings of the prescribed elements")


def _report_chain(b: dict, vk: VerificationKey | None, where: str) -> SpentChain:
    log = b["selection"]["log"]
    return SpentChain.checked(log["header"], log["entries"], where=where, vk=vk)


def _check_selection(b: dict, vk: VerificationKey | None, earlier, verifier, chk: ReportCheck) -> None:
    """A one-time report: the verifier's signed chain, its last entry this verification."""
    sel = b["selection"]
    try:
        chain = _report_chain(b, vk, "the report's spent log")
    except BackmarkError as e:
        chk.problems.append(str(e))
        return
    if not chain.entries:
        chk.problems.append("the report's spent log has no entry for this verification")
        return
    entry = chain.entries[-1]
    d = b["decision"]
    if (entry["set"], entry["nonce"]) != (sel["set"], sel["nonce"]) or sel["num_sets"] != chain.num_sets:
        chk.problems.append("the report's set or nonce is not the one the verifier's last log entry records")
    elif (entry["result"]["matches"], entry["result"]["n"], entry["result"]["verdict"]) != (d["matches"], d["n"], b["verdict"]["kind"]):
        chk.problems.append("the verifier's log entry records another result than the report")
    elif b["alpha"] != set_alpha(sel["alpha_total"], chain.num_sets):
        chk.problems.append("the per-set alpha is not alpha / number of sets")
    elif verifier is not None and verifier not in (chain.verifier_public_key, chain.verifier_fingerprint):
        chk.problems.append(f"the spent log is signed by verifier {chain.verifier_fingerprint[:16]}..., not by the one given")
    else:
        chk.checked.append(f"one-time selection (verifier {chain.verifier_fingerprint[:16]})")
    if earlier is not None:
        before = load_report(earlier) if isinstance(earlier, (str, os.PathLike)) else earlier
        try:
            check_extends(chain, _report_chain(before["body"], vk, "the earlier report's spent log"))
        except BackmarkError as e:
            chk.problems.append(str(e))
            return
        chk.checked.append("extends the earlier report's spent log")


def _check_model(b: dict, vk: VerificationKey | None, model, device, chk: ReportCheck) -> None:
    import torch

    from ..targets import as_target

    stated = b["model"].get("sha256")
    info = describe(model)
    if stated is not None and info["sha256"] is not None:
        if info["sha256"] != stated:
            chk.problems.append(f"the model's SHA-256 {info['sha256'][:16]}... differs from the report's {stated[:16]}...")
            return
        chk.checked.append("model sha256")
    if b["view"]["kind"] != "black-box":
        chk.problems.append("a white-box report's answers come from a swapped-in head: check them with verify, not here")
        return
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
    "REPORT_VERSION",
    "ReportCheck",
    "check_report",
    "load_report",
    "make_report",
    "render_html",
    "report_paths",
    "report_verification",
    "write_report",
]
