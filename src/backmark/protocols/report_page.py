"""The HTML page of a signed report: self-contained (no external resources), every field escaped.

The page embeds the signed JSON record; :func:`backmark.protocols.report.load_report` accepts
a page only if it is byte for byte what :func:`render_html` makes of its record, so no visible
text can differ from what was signed.
"""
from __future__ import annotations

import html
import json

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table.kv td{padding:2px 12px 2px 0;vertical-align:top}td.k{color:#666}
code{font-size:90%;word-break:break-all}.ok{color:#075}.bad{color:#b00}
.grid{display:flex;flex-wrap:wrap;gap:6px}.el{border:1px solid #ddd;padding:3px;text-align:center;font-size:11px;width:64px}
.el img{width:56px;height:56px;image-rendering:pixelated}.miss{background:#fee}"""


def _e(value) -> str:
    """Any field, as escaped text (numbers and None included)."""
    return html.escape(str(value), quote=True)


def _alpha(a) -> str:
    import math

    return f"2^{math.log2(a):.0f}" if isinstance(a, float) and 0 < a < 1e-4 else _e(a)


def render_html(doc: dict) -> str:
    """A self-contained page for a signed report document."""
    b = doc["body"]
    d, v, null, view, sel = b["decision"], b["verdict"], b["null"], b["view"], b["selection"]
    p_value = "none (no test: owner-chosen labels)" if d["p_value"] is None else f"{d['p_value']:.3g} (2^{d['log2_p_value']:.1f})"
    rows = [
        ("verdict", f'<b class="{"ok" if v["claims_ownership"] else "bad"}">{_e(v["text"])}</b>'),
        ("matches", f'{_e(d["matches"])} of {_e(d["n"])}' + ("" if d["threshold"] is None else f' (threshold {_e(d["threshold"])})')),
        ("p-value", f'{p_value}; alpha {_alpha(b["alpha"])} (floor {_alpha(b["alpha_floor"])})'),
        ("null hypothesis", _e(null["kind"]) + ("" if null["p0"] is None else f'; p0 {_e(null["p0"])}')),
        ("how the model was queried", _e(view["kind"]) + ("" if view["kind"] == "black-box" else
                                                         f'; head SHA-256 <code>{_e(view.get("head_sha256"))}</code>; anchored at {_e(view.get("anchored_at"))}')),
        ("model", f'{_e(b["model"].get("name"))}<br>SHA-256 <code>{_e(b["model"].get("sha256"))}</code>'),
        ("verification key", f'<code>{_e(b["verification_key"])}</code>'),
        ("owner key", f'<code>{_e(b["owner"])}</code> (SHA-256 of the Ed25519 public key)'),
        ("labels", f'{_e(b["label_mode"])}; {_e(b["num_classes"])} classes; commitments {_e(b["commitment"])}'),
        ("time", _e(b["created"]) + ("" if b.get("seconds") is None else f" ({float(b['seconds']):.1f} s)")),
    ]
    if sel["kind"] == "pverify":
        header = sel["log"]["header"]
        rows.append(("one-time set", (
            f'set {_e(sel["set"])} of {_e(sel["num_sets"])}; verifier nonce <code>{_e(sel["nonce"])}</code>; '
            f'{_e(len(sel["log"]["entries"]))} entries in the verifier\'s spent log (verifier key <code>{_e(header.get("verifier_public_key"))}</code>)'
        )))
    cells = []
    for el in b["elements"]:
        hit = el["label"] == el["prediction"]
        cells.append(
            f'<div class="el{"" if hit else " miss"}"><img alt="trigger {_e(el["index"])}" src="data:image/png;base64,{_e(el["image_png"])}">'
            f'<br>#{_e(el["index"])}<br>{_e(el["label"])} / {_e(el["prediction"])} {"&#10003;" if hit else "&#10007;"}</div>'
        )
    # < > & as JSON escapes: no text inside the record can end or reopen the script element
    embedded = json.dumps(doc, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>backmark verification report {_e(b['verification_key'][:16])}</title><style>{_CSS}</style></head><body>\n"
        "<h1>Verification report</h1>\n<table class=\"kv\">"
        + "".join(f'<tr><td class="k">{k}</td><td>{val}</td></tr>' for k, val in rows)
        + "</table>\n"
        f"<h2>Opened trigger elements ({len(b['elements'])}): committed label / model's answer</h2>\n"
        f'<div class="grid">{"".join(cells)}</div>\n'
        "<h2>Signature</h2>\n"
        f"<p>Ed25519 by the owner key over the canonical JSON record embedded in this page: <code>{_e(doc['signature'])}</code></p>\n"
        "<p>Check it: <code>backmark check-report THIS-FILE --verification-key verification-key.json [--model MODEL]</code></p>\n"
        f'<script type="application/json" id="backmark-report">{embedded}</script>\n'
        "</body></html>\n"
    )
