"""The PDF of a signed report (ReportLab): the same reading as the HTML page, for people.

The PDF is a rendering, not the evidence: ``check-report`` reads the signed JSON or HTML only,
and every page's footer says so. It holds the summary, the verdict, the chart of the null
distribution (drawn as vector shapes from the page's own layout), the record's fields, the
opened trigger images with their labels and answers, the limitations and the re-check
command, with page numbers. Text is escaped (ReportLab reads markup), set in DejaVu (shipped
with matplotlib, embedded as a subset) and any character the font lacks is written as a
visible \\uXXXX escape, never dropped. ``invariant`` output: the same report, the same bytes.

    pdf_bytes = render_pdf(doc)
"""
from __future__ import annotations

import base64
import importlib.util
import io
import textwrap
from pathlib import Path
from xml.sax.saxutils import escape

from .report_chart import HEIGHT, WIDTH, Line, Rect, Text, layout
from .report_text import Content, read_report

_OK, _BAD = "#007755", "#bb0000"  # the verdict's colour: evidence or not (as on the page)
_FONTS = {"BmSans": "DejaVuSans.ttf", "BmSans-Bold": "DejaVuSans-Bold.ttf", "BmMono": "DejaVuSansMono.ttf"}
FOOTER = ("A rendering for people, not the evidence: backmark check-report reads the signed REPORT.json or "
          "REPORT.html only.")


def _font_dir() -> Path:
    """matplotlib's bundled DejaVu fonts (a runtime dependency): the same glyphs on every machine."""
    spec = importlib.util.find_spec("matplotlib")
    return Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf"


def _register() -> set[int]:
    """Register the fonts once; the code points the regular font covers."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for name, file in _FONTS.items():
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(_font_dir() / file)))
    return set(pdfmetrics.getFont("BmSans").face.charToGlyph)


class _Writer:
    def __init__(self, covered: set[int]):
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle

        self.covered, self.colors = covered, colors
        base = ParagraphStyle("bm", fontName="BmSans", fontSize=9.5, leading=13, spaceAfter=5)
        self.s = {
            "title": ParagraphStyle("bm-t", base, fontName="BmSans-Bold", fontSize=16, leading=20, spaceAfter=6),
            "h2": ParagraphStyle("bm-h", base, fontName="BmSans-Bold", fontSize=12, leading=15, spaceBefore=9, spaceAfter=5),
            "body": base,
            **{tone: ParagraphStyle(f"bm-{tone}", base, fontName="BmSans-Bold", fontSize=12, leading=15,
                                    textColor=colors.HexColor(hexcolor)) for tone, hexcolor in (("ok", _OK), ("bad", _BAD))},
            "key": ParagraphStyle("bm-k", base, fontName="BmSans-Bold", fontSize=8, leading=10, spaceAfter=0),
            "cell": ParagraphStyle("bm-c", base, fontSize=8, leading=10, spaceAfter=0),
            "wrap": ParagraphStyle("bm-w", base, fontSize=8, leading=10, spaceAfter=0, wordWrap="CJK"),  # breaks long hashes
            "cap": ParagraphStyle("bm-cap", base, fontSize=5.5, leading=6.5, alignment=1, spaceAfter=0),
            "code": ParagraphStyle("bm-code", base, fontName="BmMono", fontSize=8, leading=10.5,
                                   backColor=colors.HexColor("#f3f3f3"),
                                   borderPadding=5, leftIndent=5, rightIndent=5, spaceBefore=4, spaceAfter=8),
            "mono": ParagraphStyle("bm-m", base, fontName="BmMono", fontSize=7.5, leading=9.5, wordWrap="CJK"),
        }

    def cover(self, value) -> str:
        """Characters the font lacks as visible \\uXXXX escapes (a box or a gap would hide them)."""
        return "".join(ch if ord(ch) in self.covered or ch == "\n" else f"\\u{ord(ch):04x}" for ch in str(value))

    def text(self, value) -> str:
        """Plain text as Paragraph markup: covered, escaped, newlines kept."""
        return escape(self.cover(value)).replace("\n", "<br/>")

    def p(self, value, style="body", *, lead: str = ""):
        """A paragraph of plain text (``lead``: a few words in bold before it)."""
        from reportlab.platypus import Paragraph

        head = f'<font name="BmSans-Bold">{self.text(lead)}</font> ' if lead else ""
        return Paragraph(head + self.text(value), self.s[style])

    def pre(self, value, style="code"):
        """Preformatted text: no markup, lines kept as they are."""
        from reportlab.platypus import Preformatted

        return Preformatted(self.cover(value), self.s[style])


def _chart(shapes, width: float):
    """The chart's layout as a ReportLab drawing, scaled to ``width`` points (y flipped: PDF y grows upwards)."""
    from reportlab.graphics.shapes import Drawing, Group, String
    from reportlab.graphics.shapes import Line as RLine
    from reportlab.graphics.shapes import Rect as RRect
    from reportlab.lib import colors

    k = width / WIDTH
    g = Group()
    for s in shapes:
        if isinstance(s, Rect):
            g.add(RRect(s.x, HEIGHT - s.y - s.h, s.w, s.h, fillColor=colors.HexColor(s.fill), strokeColor=None))
        elif isinstance(s, Line):
            g.add(RLine(s.x1, HEIGHT - s.y1, s.x2, HEIGHT - s.y2, strokeColor=colors.HexColor(s.stroke), strokeWidth=s.width,
                        strokeDashArray=[5, 3] if s.dash else None))
        elif isinstance(s, Text):
            g.add(String(s.x, HEIGHT - s.y, s.text, fontName="BmSans", fontSize=s.size, fillColor=colors.HexColor(s.fill),
                         textAnchor=s.anchor))
    g.scale(k, k)
    d = Drawing(width, HEIGHT * k)
    d.add(g)
    return d


def _thumbnail(b64: str, side: float):
    from PIL import Image as PILImage
    from reportlab.platypus import Image

    im = PILImage.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    big = im.resize((im.width * 4, im.height * 4), PILImage.NEAREST)  # crisp pixels: viewers smooth small images
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    buf.seek(0)
    return Image(buf, width=side, height=side * im.height / im.width)


def _story(c: Content, w: _Writer, width: float) -> list:
    from reportlab.lib import colors
    from reportlab.platypus import KeepTogether, ListFlowable, ListItem, Table, TableStyle

    grey = colors.HexColor("#bbbbbb")
    bullets = lambda items: ListFlowable([ListItem(w.p(t), leftIndent=10) for t in items], bulletType="bullet",  # noqa: E731
                                         start="\u2022", leftIndent=10, bulletFontName="BmSans")
    tone = colors.HexColor("#e3f4ea" if c.evidence else "#fbe9e7")
    verdict = Table([[w.p(c.verdict, "ok" if c.evidence else "bad")]], colWidths=[width])
    verdict.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), tone), ("BOX", (0, 0), (-1, -1), 0.8, grey)]))
    story = [w.p(c.title, "title"), verdict, w.p("Summary", "h2"), *[w.p(t) for t in c.summary],
             w.p(c.shows, lead="What this shows."), w.p("", lead="What it does not show."), bullets(c.does_not_show)]
    block = [w.p("The test: matches by chance", "h2")]
    if c.chart is not None:
        block.append(_chart(layout(c.chart), width))
    story.append(KeepTogether([*block, w.p(c.chart_caption, "cell")]))
    rows = [[w.p(k, "key"), w.p(v, "wrap" if any(len(t) > 30 for t in v.split()) else "cell")] for k, v in c.rows]
    table = Table(rows, colWidths=[0.22 * width, 0.78 * width])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.4, grey),
                               ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f0f3f7"))]))
    story += [w.p("The record", "h2"), table]
    ncol, cell = 10, width / 10
    cells = [[_thumbnail(el.image_png, cell - 14), w.p(f"{el.caption} {'✓' if el.hit else '✗'}", "cap")] for el in c.elements]
    if cells:
        grid = Table([cells[i:i + ncol] + [""] * (ncol - len(cells[i:i + ncol])) for i in range(0, len(cells), ncol)],
                     colWidths=[cell] * ncol)
        grid.setStyle(TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                  ("LEFTPADDING", (0, 0), (-1, -1), 1), ("RIGHTPADDING", (0, 0), (-1, -1), 1)]))
        story += [w.p(f"Opened trigger images ({len(cells)}): the key's label and the model's answer", "h2"), grid]
    story += [w.p("Limitations", "h2"), bullets(c.limitations), w.p("How to re-check this report", "h2"),
              w.pre(_wrap_command(c.recheck, int((width - 20) / (0.6 * 8)))), bullets(c.recheck_notes),
              w.p("Signature", "h2"), w.p("Ed25519 by the owner key over the canonical JSON record:"), w.p(c.signature, "mono")]
    return story


def _wrap_command(command: str, width: int) -> str:
    """Cut at spaces into lines ending in `` \\``, so the command copied out of the PDF still runs in a shell."""
    parts = textwrap.wrap(command, width=width - 2, break_long_words=True, break_on_hyphens=False, subsequent_indent="  ")
    return "\n".join([p + " \\" for p in parts[:-1]] + parts[-1:])


def _canvas(footer: str):
    """A canvas writing ``footer`` and "page i of n" on every page (n known after the last page)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.pdfgen.canvas import Canvas

    class Numbered(Canvas):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("initialFontName", "BmSans")  # else an unembedded Helvetica is referenced
            super().__init__(*args, **kwargs)
            self._pages = []

        def showPage(self):
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont("BmSans", 7)
                self.setFillColor(colors.HexColor("#666666"))
                self.drawCentredString(A4[0] / 2, 1.2 * cm, f"{footer}  Page {self._pageNumber} of {len(self._pages)}")
                super().showPage()
            super().save()

    return Numbered


def render_pdf(doc: dict) -> bytes:
    """The PDF bytes of a signed report document."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import SimpleDocTemplate

    c = read_report(doc)
    w = _Writer(_register())
    buf = io.BytesIO()
    pdf = SimpleDocTemplate(buf, pagesize=A4, leftMargin=1.8 * cm, rightMargin=1.8 * cm, topMargin=1.8 * cm,
                            bottomMargin=2 * cm, title=c.title, subject=c.verdict, author="backmark", creator="backmark",
                            invariant=1)  # fixed creation date and id: the real time is in the record's fields
    pdf.build(_story(c, w, pdf.width), canvasmaker=_canvas(FOOTER))
    return buf.getvalue()


__all__ = ["FOOTER", "render_pdf"]
