"""The null distribution of a report's test, as a chart: Binomial(n, p0) on a log scale, the
threshold and the observed count marked.

The chart is laid out once, as a list of shapes in page units (y downwards), and written
out by two small emitters: :func:`chart_svg` for the HTML page and the PDF renderer's
ReportLab drawing. Probabilities are exact rationals and their logarithms come from big
integers, so the same report gives the same shapes on any machine: the page that carries
the chart must be byte for byte what its record renders to (``load_report``).

    chart = null_chart(100, Fraction(1, 10), threshold=46, observed=100)
    svg = chart_svg(layout(chart))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

MAX_N = 2000  # exact terms of a 2000-trial binomial take ~0.15 s; a report of more elements gets no chart
WIDTH, HEIGHT = 720.0, 300.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 62.0, 14.0, 40.0, 44.0
REJECT, NULL, MARK, AXIS = "#c0392b", "#2c6fbb", "#111111", "#555555"
_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def superscript(n: int) -> str:
    """An integer exponent as Unicode superscript characters (10 + superscript(-20) reads 10^-20): real text, no
    markup, so the page, the PDF and text copied out of either all show the same thing."""
    return str(int(n)).translate(_SUPERSCRIPT)


@dataclass(frozen=True)
class NullChart:
    n: int
    p0: Fraction
    log10_pmf: tuple[float | None, ...]  # log10 P[X = k], k = 0..n (None: probability 0)
    threshold: int | None  # smallest count that rejects the null (n + 1: none does)
    observed: int
    log10_tail: float | None  # log10 P[X >= observed]


def _log10(x: int) -> float:
    return math.log10(x)  # exact integer in, one correctly scaled float out (no underflow for tiny rationals)


def null_chart(n: int, p0: Fraction, *, threshold: int | None, observed: int) -> NullChart:
    """The exact Binomial(n, p0) probabilities of every count, from integers."""
    if not 1 <= n <= MAX_N or not 0 < p0 <= 1 or not 0 <= observed <= n:
        raise ValueError(f"no chart for n={n}, p0={p0}, observed={observed}")
    d = p0.denominator
    a, b = p0.numerator, d - p0.numerator  # p0 = a/d, 1 - p0 = b/d: P[X = k] = C(n,k) a^k b^(n-k) / d^n
    terms, comb = [], 1
    for k in range(n + 1):
        terms.append(comb * a**k * b ** (n - k))
        comb = comb * (n - k) // (k + 1)
    log_den = n * _log10(d)
    tail = sum(terms[observed:])
    return NullChart(
        n=n, p0=p0, threshold=threshold, observed=observed,
        log10_pmf=tuple(None if t == 0 else _log10(t) - log_den for t in terms),
        log10_tail=None if tail == 0 else _log10(tail) - log_den,
    )


# -- layout: shapes in page units --------------------------------------------------------

@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str
    width: float = 1.0
    dash: bool = False


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    size: float = 10.0
    anchor: str = "middle"  # start | middle | end
    fill: str = AXIS


def _step(span: float, most: int) -> int:
    """A round tick step (1, 2, 5, 10, 20, 50 ...) giving at most ``most`` intervals over ``span``."""
    for mag in range(0, 12):
        for m in (1, 2, 5):
            if span / (m * 10**mag) <= most:
                return m * 10**mag
    return 10**12


def layout(chart: NullChart) -> list:
    """The chart's shapes, WIDTH x HEIGHT page units, y downwards."""
    n, pmf = chart.n, chart.log10_pmf
    lows = [v for v in pmf if v is not None]
    bottom = min(-2, math.floor(min(lows)))  # every nonzero probability fits: no bar is cut at a floor
    step = _step(-bottom, 6)
    bottom = -step * math.ceil(-bottom / step)
    pw, ph = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    xof = lambda k: _LEFT + (k + 0.5) * pw / (n + 1)  # noqa: E731  (centre of count k's slot)
    yof = lambda v: _TOP + ph * (0 - v) / (0 - bottom)  # noqa: E731  (log10 probability v)
    shapes: list = []
    for t in range(0, bottom - 1, -step):  # horizontal grid and y labels, 10^0 .. 10^bottom
        shapes.append(Line(_LEFT, yof(t), _LEFT + pw, yof(t), "#dddddd", 0.6))
        shapes.append(Text(_LEFT - 8, yof(t) + 3.5, "1" if t == 0 else f"10{superscript(t)}", 11, "end"))
    slot = pw / (n + 1)
    for k, v in enumerate(pmf):
        if v is None:
            continue
        rejects = chart.threshold is not None and k >= chart.threshold
        shapes.append(Rect(xof(k) - 0.42 * slot, yof(v), 0.84 * slot, yof(bottom) - yof(v), REJECT if rejects else NULL))
    shapes.append(Line(_LEFT, _TOP + ph, _LEFT + pw, _TOP + ph, AXIS, 1.0))
    shapes.append(Line(_LEFT, _TOP, _LEFT, _TOP + ph, AXIS, 1.0))
    xs = _step(n, 10)
    for k in range(0, n + 1, xs):
        shapes.append(Line(xof(k), _TOP + ph, xof(k), _TOP + ph + 4, AXIS, 1.0))
        shapes.append(Text(xof(k), _TOP + ph + 16, str(k), 11))
    shapes.append(Text(_LEFT + pw / 2, HEIGHT - 6, f"number of matches out of {n}", 12))
    if chart.threshold is not None and chart.threshold <= n:
        x = xof(chart.threshold) - slot / 2
        shapes.append(Line(x, _TOP - 4, x, _TOP + ph, REJECT, 1.2, dash=True))
        shapes.append(Text(x - 4, _TOP - 6, f"threshold: {chart.threshold} or more", 11, "end", REJECT))
    x = xof(chart.observed)
    shapes.append(Line(x, _TOP - 20, x, _TOP + ph, MARK, 2.2))
    anchor = "end" if chart.observed > n * 0.6 else "start"
    shapes.append(Text(x + (-5 if anchor == "end" else 5), _TOP - 23, f"observed: {chart.observed}", 12, anchor, MARK))
    return shapes


# -- SVG ---------------------------------------------------------------------------------

def _f(v: float) -> str:
    return f"{v:.1f}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def chart_svg(shapes: list, *, title: str) -> str:
    """An SVG element of the shapes, for inline use in HTML (which needs no namespace URI): no scripts, no references."""
    out = [f'<svg viewBox="0 0 {WIDTH:.0f} {HEIGHT:.0f}" role="img" '
           f'font-family="sans-serif"><title>{_esc(title)}</title>']
    for s in shapes:
        if isinstance(s, Rect):
            out.append(f'<rect x="{_f(s.x)}" y="{_f(s.y)}" width="{_f(s.w)}" height="{_f(s.h)}" fill="{s.fill}"/>')
        elif isinstance(s, Line):
            dash = ' stroke-dasharray="5 3"' if s.dash else ""
            out.append(f'<line x1="{_f(s.x1)}" y1="{_f(s.y1)}" x2="{_f(s.x2)}" y2="{_f(s.y2)}" stroke="{s.stroke}" '
                       f'stroke-width="{s.width}"{dash}/>')
        else:
            out.append(f'<text x="{_f(s.x)}" y="{_f(s.y)}" font-size="{s.size}" text-anchor="{s.anchor}" '
                       f'fill="{s.fill}">{_esc(s.text)}</text>')
    out.append("</svg>")
    return "".join(out)


__all__ = ["MAX_N", "NullChart", "chart_svg", "layout", "null_chart", "superscript"]
