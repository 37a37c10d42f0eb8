"""The HTML page of a signed report: self-contained (no external resources), every field escaped.

The page embeds the signed JSON record; :func:`backmark.protocols.report.load_report` accepts
a page only if it is byte for byte what :func:`render_html` makes of its record, so no visible
text can differ from what was signed. The page is for an analyst to hand over: a plain-language
summary first (``report_text``), then the chart of the null distribution, the fields, the
opened elements, the limitations and the command that re-checks it.
"""
from __future__ import annotations

import html
import json

from .report_chart import chart_svg, layout
from .report_text import read_report

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing is loaded from outside, nothing runs
_CSS = """body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:2em auto;max-width:64em;padding:0 1em;color:#222;
line-height:1.45}
h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.15em;margin-top:1.6em}
.verdict{font-size:1.25em;font-weight:bold;padding:.5em .8em;border-radius:4px;margin:.6em 0}
.verdict.ok{background:#e3f4ea;color:#075;border:1px solid #075}.verdict.bad{background:#fbe9e7;color:#b00;border:1px solid #b00}
table.kv{border-collapse:collapse;width:100%}table.kv td{border:1px solid #ccc;padding:3px 8px;vertical-align:top}
td.k{color:#444;background:#f4f6f9;width:22%}td.v{word-break:break-all}
figure.chart{margin:1em 0}figure.chart svg{width:100%;max-width:760px;height:auto}figcaption{font-size:.9em;color:#444}
pre{background:#f3f3f3;padding:.7em;white-space:pre-wrap;word-break:break-all;font-size:.9em}
code{font-size:90%;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:6px}.el{border:1px solid #ddd;padding:3px;text-align:center;font-size:11px;width:78px}
.el img{width:56px;height:56px;image-rendering:pixelated}.miss{background:#fee}"""


def _e(value) -> str:
    """Any field, as escaped text (numbers and None included)."""
    return html.escape(str(value), quote=True)


def _section(ident: str, title: str, inner: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{inner}</section>\n'


def render_html(doc: dict) -> str:
    """A self-contained page for a signed report document."""
    try:
        c = read_report(doc)
    except ArithmeticError as e:  # a malformed record: load_report turns ValueError into one line
        raise ValueError(f"{type(e).__name__}: {e}") from None
    summary = (
        "".join(f"<p>{_e(p)}</p>" for p in c.summary)
        + f"<p><b>What this shows.</b> {_e(c.shows)}</p>"
        + "<p><b>What it does not show.</b></p><ul>" + "".join(f"<li>{_e(t)}</li>" for t in c.does_not_show) + "</ul>"
    )
    chart = ("" if c.chart is None else chart_svg(layout(c.chart), title="null distribution")) \
        + f"<figcaption>{_e(c.chart_caption)}</figcaption>"
    rows = "".join(f'<tr><td class="k">{_e(k)}</td><td class="v">{_e(v)}</td></tr>' for k, v in c.rows)
    cells = "".join(
        f'<div class="el{"" if el.hit else " miss"}"><img alt="trigger {_e(el.index)}" '
        f'src="data:image/png;base64,{_e(el.image_png)}">'
        f'<br>{_e(el.caption)} {"&#10003;" if el.hit else "&#10007;"}</div>'
        for el in c.elements
    )
    recheck = f"<pre>{_e(c.recheck)}</pre><ul>" + "".join(f"<li>{_e(t)}</li>" for t in c.recheck_notes) + "</ul>"
    # < > & as JSON escapes: no text inside the record can end or reopen the script element
    embedded = json.dumps(doc, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(c.title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{_e(c.title)}</h1>\n"
        f'<p class="verdict {"ok" if c.evidence else "bad"}" id="verdict">{_e(c.verdict)}</p>\n'
        + _section("summary", "Summary", summary)
        + _section("chart", "The test: matches by chance", f'<figure class="chart">{chart}</figure>')
        + _section("details", "The record", f'<table class="kv">{rows}</table>')
        + _section("elements", f"Opened trigger images ({len(c.elements)}): the key's label and the model's answer",
                   f'<div class="grid">{cells}</div>')
        + _section("limitations", "Limitations", "<ul>" + "".join(f"<li>{_e(t)}</li>" for t in c.limitations) + "</ul>")
        + _section("recheck", "How to re-check this report", recheck)
        + _section("signature", "Signature", "<p>Ed25519 by the owner key over the canonical JSON record embedded in this "
                   f"page: <code>{_e(c.signature)}</code></p>")
        + f'<script type="application/json" id="backmark-report">{embedded}</script>\n'
        "</body></html>\n"
    )
