"""What a signed report says, in words an analyst can hand over: one reading of the record for
the HTML page and the PDF alike.

Everything here is a pure function of the signed body: the plain-language summary (what was
tested, what the count means, what the verdict does and does not show, after
docs/claims.md), the table of fields, the chart's numbers, the captions of the opened
elements, the limitations and the command that re-checks the report. Text is plain (no
markup); powers such as 10^30 are written with Unicode superscripts, as real characters.

    content = read_report(doc)
    content.summary, content.shows, content.does_not_show, content.recheck
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from fractions import Fraction

from ..core.stats import ALPHA_FLOOR
from .report_chart import MAX_N, NullChart, null_chart
from .report_claims import alpha_words, does_not_show, limitations, odds, shows

LOG10_2 = math.log10(2)


@dataclass(frozen=True)
class Element:
    index: int
    caption: str  # "#3: label 7 (Sneaker), answer 7"
    hit: bool
    image_png: str  # base64


@dataclass(frozen=True)
class Content:
    title: str
    verdict: str
    evidence: bool  # the verdict claims ownership
    summary: list[str]
    shows: str
    does_not_show: list[str]
    rows: list[tuple[str, str]]
    chart: NullChart | None
    chart_caption: str
    elements: list[Element]
    limitations: list[str]
    recheck: str
    recheck_notes: list[str]
    signature: str


def rational(text) -> Fraction:
    num, den = (int(v) for v in str(text).split("/"))
    if den <= 0 or not 0 < num <= den:
        raise ValueError(f"p0 {text!r} is not a probability")
    return Fraction(num, den)


def _who(b: dict) -> tuple[str, str | None]:
    """(owner, verifier or None) as the report names them (the optional signed ``parties``)."""
    parties = b.get("parties") or {}
    owner = parties.get("owner") or f"the holder of owner key {b['owner'][:16]}"
    return str(owner), None if not parties.get("verifier") else str(parties["verifier"])


def _class(b: dict, label) -> str:
    classes = b.get("classes")
    if isinstance(classes, list) and isinstance(label, int) and 0 <= label < len(classes):
        return f"{label} ({classes[label]})"
    return str(label)


def _model(b: dict) -> str:
    m, q = b["model"], (b.get("query") or {}).get("queries") or {}
    if q.get("url"):
        return f"served at {q['url']} ({q.get('requests')} requests, {q.get('images_sent')} images sent)"
    if m.get("hashed") == "file":
        return f"in the file {m.get('name')} (SHA-256 {m.get('sha256')})"
    if m.get("hashed") == "weights":
        return f"{m.get('name')} (in-process; SHA-256 of its weights {m.get('sha256')})"
    return f"{m.get('name') or 'that was verified'} (not identified by a hash)"


def _summary(b: dict, chance: Fraction | None) -> list[str]:
    d, null, view, sel = b["decision"], b["null"], b["view"], b["selection"]
    owner, verifier = _who(b)
    how = ("derived from a hash of the owner's signed key after every image had been committed to, so no one could "
           "choose them" if b["label_mode"] == "derived" else "chosen by the owner (a labels file)")
    queried = ("It was queried as it is (black-box): each image was sent to it and its answer recorded."
               if view["kind"] == "black-box" else
               "It was NOT queried as it is: the owner's kept output layer (a head) was swapped into it first "
               "(a white-box view).")
    one_time = (f" This was a one-time verification: the verifier's nonce chose set {sel['set']} of the key's {sel['num_sets']} "
                "sets, so the owner could not pick the images." if sel["kind"] == "pverify" else "")
    expect = "" if chance is None else (f"; a model that never saw the key would match about {float(d['n'] * chance):.3g} "
                                        f"(each label by chance with probability {float(chance):.3g})")
    tested = (f"{verifier or 'The verifier'} tested whether the model {_model(b)} carries the watermark of verification key "
              f"{b['verification_key'][:16]}, which belongs to {owner}. The key holds secret trigger images (abstract "
              f"pictures of no class), each with a label fixed before this model was examined: {how}. {queried}{one_time} "
              f"On {b['created']} the model gave the key's label for {d['matches']} of the {d['n']} images{expect}.")
    if null["kind"] == "none":
        meaning = (f"The owner chose these labels, so there is no way to say how often a model that never saw the key "
                   f"would match them (natural images with their true classes match any good classifier). "
                   f"{d['matches']} of {d['n']} is trigger accuracy only: no p-value was computed.")
        return [tested, meaning]
    tail = odds(d["log2_p_value"] * LOG10_2)
    if null["kind"] == "exact":
        cond = "If the model had never seen this key"
    else:
        cond = (f"The owner chose these labels, so the verifier measured how often unrelated models match them: "
                f"{len(null['references'])} reference models trained independently of the owner matched "
                f"{null['pooled_matches']} of {null['pooled_trials']}. If the model had been trained independently like them")
    bar = alpha_words(b["selection"].get("alpha_total", b["alpha"]) if sel["kind"] == "pverify" else b["alpha"])
    meaning = (f"{cond}, the chance of matching {d['matches']} or more of the {d['n']} labels would be {tail} "
               f"(p-value {d['p_value']:.3g}, computed exactly). backmark calls a result ownership evidence only when "
               f"this chance is at most {alpha_words(ALPHA_FLOOR)} ({odds(math.log10(ALPHA_FLOOR))}), a bar fixed before "
               "the model was known: keys are "
               f"free to mint, and the bar leaves a forger no hope of finding one that matches by chance. This test was run "
               f"at {bar}; {d['matches']} matches {'pass' if d['passed'] else 'do not pass'} it (the threshold is "
               f"{d['threshold']}).")
    return [tested, meaning]


def _rows(b: dict, chance: Fraction | None) -> list[tuple[str, str]]:
    d, null, view, sel, v = b["decision"], b["null"], b["view"], b["selection"], b["verdict"]
    owner, verifier = _who(b)
    p = "none (no test: owner-chosen labels)" if d["p_value"] is None else f"{d['p_value']:.3g} (log2 {d['log2_p_value']:.1f})"
    rows = [
        ("Verdict", str(v["text"])),
        ("Matches", f"{d['matches']} of {d['n']}" + ("" if d["threshold"] is None else f" (threshold {d['threshold']})")),
        ("p-value", f"{p}; alpha {alpha_words(b['alpha'])} (floor {alpha_words(b['alpha_floor'])})"),
        ("Null hypothesis", {"exact": f"exact: Binomial({d['n']}, {null['p0']}), labels derived from the signed key",
                             "calibrated": f"calibrated: Binomial({d['n']}, p0 = {float(chance or 0):.4g}), the exact "
                                           f"Clopper-Pearson upper bound at {null.get('alpha_bound')} of the reference "
                                           f"models' pooled match rate {null.get('pooled_matches')}/{null.get('pooled_trials')}",
                             "none": "none: owner-chosen labels, no reference models"}.get(null["kind"], str(null["kind"]))),
    ]
    for i, r in enumerate(null.get("references") or (), 1):
        rows.append((f"Reference model {i}", f"{r.get('name')}: {r.get('matches')} of {r.get('n')}; SHA-256 {r.get('sha256')}"))
    rows.append(("View", "black-box (the model as it is)" if view["kind"] == "black-box" else
                 f"white-box: owner's head SHA-256 {view.get('head_sha256')}; bound by a release record: {view.get('bound')}; "
                 f"anchored at {view.get('anchored_at')}; suspect first seen at {view.get('suspect_seen_at')}"))
    if b.get("key_anchor"):
        rows.append(("Key anchored", f"{b['key_anchor'].get('anchored_at')} (RFC 3161 timestamp of the verification key; "
                                     "check-report --tsa-roots re-checks it)"))
    m = b["model"]
    digest = "" if m.get("sha256") is None else f"; SHA-256 ({m.get('hashed')}) {m.get('sha256')}"
    rows.append(("Model", f"{m.get('name')}{digest}"))
    for k, val in sorted((b.get("query") or {}).get("queries", {}).items()):
        rows.append((f"Endpoint: {k}", str(val)))
    for k, val in sorted((b.get("query") or {}).items()):
        if k != "queries":
            rows.append((f"Query: {k}", str(val)))
    rows += [
        ("Owner", f"{owner}; owner key fingerprint {b['owner']} (SHA-256 of the Ed25519 public key {b['owner_public_key']})"),
        ("Verifier", ("not named in this report" if verifier is None else f"{verifier} (as the owner-signed "
                      "report names them)") + ("" if sel["kind"] != "pverify" else
                                               f"; verifier key {sel['log']['header'].get('verifier_public_key')} "
                                               "(signs the spent log)")),
        ("Verification key", str(b["verification_key"])),
        ("Labels", f"{b['label_mode']}; {b['num_classes']} classes; commitments {b['commitment']}; input shape "
                   f"{'x'.join(str(s) for s in b['input_shape'])}"),
    ]
    if isinstance(b.get("classes"), list):
        rows.append(("Class names", ", ".join(f"{i} {c}" for i, c in enumerate(b["classes"]))))
    if sel["kind"] == "pverify":
        rows.append(("One-time set", f"set {sel['set']} of {sel['num_sets']}; verifier nonce {sel['nonce']}; alpha "
                                     f"{alpha_words(sel['alpha_total'])} over all sets; {len(sel['log']['entries'])} "
                                     "entries in the verifier's signed spent log"))
    seconds = "" if b.get("seconds") is None else f" ({float(b['seconds']):.1f} s)"
    rows += [("Time", f"{b['created']}{seconds}: the owner's machine clock, not a trusted timestamp"),
             ("Made by", f"backmark {b['backmark']}")]
    return rows


def _recheck(b: dict) -> tuple[str, list[str]]:
    m, sel = b["model"], b["selection"]
    cmd = "backmark check-report REPORT.html --verification-key verification-key.json"
    notes = ["REPORT.html: this page, or the .json file written with it (the same signed record).",
             f"verification-key.json: the owner's public verification key, fingerprint {b['verification_key']}."]
    if m.get("hashed") == "file" and m.get("name"):
        cmd += f" --model {shlex.quote(str(m['name']))}"
        notes.append(f"{m['name']}: the model file that was verified, SHA-256 {m.get('sha256')}; with it the check repeats "
                     "the model's answers.")
    if sel["kind"] == "pverify":
        pk = sel["log"]["header"].get("verifier_public_key")
        cmd += f" --verifier {pk}"
        notes.append("--verifier: the verifier's public key, which must have signed the spent log (add --earlier R0 to "
                     "check that this log extends an earlier report's).")
    return cmd, notes


def read_report(doc: dict) -> Content:
    """The report's content, from its signed document (raises KeyError/TypeError/ValueError on a malformed one)."""
    b = doc["body"]
    d, null, v = b["decision"], b["null"], b["verdict"]
    chance = None if null.get("p0") is None else rational(null["p0"])
    chart, caption = None, "No chart: with owner-chosen labels and no reference models there is no null distribution."
    if chance is not None:
        n, x, t = d["n"], d["matches"], d["threshold"]
        if isinstance(n, int) and isinstance(x, int) and 1 <= n <= MAX_N and 0 <= x <= n:
            chart = null_chart(n, chance, threshold=t if isinstance(t, int) else None, observed=x)
            caption = (f"How many of the {n} labels a model that never saw the key matches by chance: "
                       f"Binomial({n}, {float(chance):.3g}), the probability of each count as one bar, on a log scale. "
                       "Red bars: counts at or above "
                       f"the threshold ({t}), together less likely than alpha. Black line: this model's {x} matches.")
        else:
            caption = f"No chart: {n} elements is more than this report draws (at most {MAX_N}), or the counts are malformed."
    elements = [Element(el["index"], f"#{el['index']}: label {_class(b, el['label'])}, answer {_class(b, el['prediction'])}",
                        el["label"] == el["prediction"], el["image_png"]) for el in b["elements"]]
    recheck, notes = _recheck(b)
    return Content(
        title=f"Verification report: key {b['verification_key'][:16]}", verdict=str(v["text"]),
        evidence=bool(v["claims_ownership"]), summary=_summary(b, chance), shows=shows(b), does_not_show=does_not_show(b),
        rows=_rows(b, chance), chart=chart, chart_caption=caption, elements=elements, limitations=limitations(b),
        recheck=recheck, recheck_notes=notes, signature=str(doc["signature"]),
    )


__all__ = ["Content", "Element", "rational", "read_report"]
