"""A4 pages for a PDF report, drawn with matplotlib: headings, text, key-value lines, tables
and plot areas, filled from the top of each page.

Everything stays inside the page's text frame (``MARGIN`` on each side, above the footer):
text is wrapped on its measured width, a name too long for its line or cell is broken, not
cut, and whatever does not fit goes on to a continuation page of the same title. Plots are
fitted into the area they were given when the page is closed. Text is drawn as plain text:
a ``$`` from data, config or a person is a dollar sign, never matplotlib mathtext.

matplotlib is imported when a page is drawn, not at import.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

import numpy as np

# Page geometry, in inches: A4 portrait.
A4 = (8.27, 11.69)
MARGIN = 0.6
TOP = 1.05
BOTTOM = A4[1] - 0.7  # the lowest any content reaches; the footer sits below it
FOOTER = A4[1] - 0.35
CONTENT_WIDTH = A4[0] - 2 * MARGIN
BODY = 9  # font sizes, in points
SMALL = 8
LINE_SPACING = 1.45  # a text line's height, in font sizes
CELL_LINE_SPACING = 1.25
CELL_PADDING = 0.04  # inches left of a cell's text, and the room kept on its right
MEASURE_SLACK = 1.03  # measured widths are widened a little: PDF glyph widths can differ from Agg's hinted ones
CONTINUED = " (continued)"
PLOT_INSET = 0.15  # inches kept clear between a plot's outermost text and its room's sides
# Where a plot area starts inside the area it is given, in inches from the area's left and right:
# about where fitting ends for the usual tick labels (an axis label and "1000" on the left, a "1.0"
# overhanging the right end), so most plots fit at their first measurement (each costs a layout).
AXES_START = (0.18, 0.27)
# Where a name too long for its line may break: after these characters, else anywhere.
BREAK_AFTER = "_./-\\:,;=)]}"
# The pieces of a cell a column should hold whole: words, a long name split after its
# separators, but numbers, dates and times (with their ".", "-" and ":") kept in one piece.
NAME_PIECE = r"[^\s_/\\,;=)\]}]+[_/\\,;=)\]}]*"


def pyplot() -> Any:
    """pyplot on the file-only Agg backend, imported when a report is drawn, not at import.

    Mathtext is switched off for every text created from here on: a report draws names and
    notes from data, config and people, in which ``$`` is a dollar sign (a column ``amount_$``
    or an approver's ``$\\frac{a}{$`` made matplotlib fail or garble the text).
    """
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["text.usetex"] = False
    import matplotlib.pyplot as plt

    return plt


def text_lines() -> Any:
    """An artist drawing a page's lines of plain text where matplotlib's ``Text`` would put them.

    A page has hundreds of lines; a ``Text`` each costs its creation and, at every save, a layout
    that measures its line again. This one draws each line with the renderer's own ``draw_text``
    (the same glyphs, font, colour and position) and takes the measures from ``GlyphMetrics``.
    """
    return _text_lines_class()()


@functools.cache
def _text_lines_class() -> type:
    pyplot()
    import matplotlib
    from matplotlib.artist import Artist

    class TextLines(Artist):
        zorder = 3  # where matplotlib draws a figure's Text: above the table fills and the rule

        def __init__(self) -> None:
            super().__init__()
            # x, y (figure fractions), text, font (size, bold, mono), colour, horizontal and vertical alignment
            self.lines: list[tuple[float, float, str, tuple[float, bool, bool], str, str, str]] = []

        def draw(self, renderer: Any) -> None:
            if not self.get_visible():
                return
            transform = self.get_transform()
            pdf_text = PdfText.for_renderer(renderer)
            for x, y, text, key, color, ha, va in self.lines:
                if not text:
                    continue
                x, y = transform.transform((x, y))
                font = _font(*key)
                dx, dy = _alignment_offsets(renderer, text, key, ha, va)
                gc = renderer.new_gc()
                gc.set_foreground(color)
                gc.set_alpha(None)
                gc.set_url(None)
                gc.set_antialiased(matplotlib.rcParams["text.antialiased"])
                renderer.open_group("text", None)
                if pdf_text is None or not pdf_text.draw(gc, dx + x, dy + y, text, font):
                    renderer.draw_text(gc, dx + x, dy + y, text, font, 0.0, ismath=False)
                gc.restore()
                renderer.close_group("text")
            self.stale = False

    return TextLines


class PdfText:
    """Writes a line of plain text into a PDF as matplotlib's ``RendererPdf.draw_text`` does for a
    Type 3 font (the default), the same bytes, with each glyph index and kerning pair looked up once.

    ``draw_text`` lays the line out glyph by glyph again on every call (loading and measuring each
    glyph) though only the glyph indices and kernings reach the PDF; a report draws hundreds of lines.
    A line with a character its font lacks or beyond one byte (``…``, ``→``, ``•``) is left to
    ``draw_text``, which takes fallback fonts and draws such glyphs as separate objects.
    tests/report/test_layout.py checks the bytes are ``draw_text``'s.
    """

    # (font file, size) -> character -> glyph index (0: the font lacks it); (font file, size) -> index pair -> kern
    _glyphs: dict[tuple[str, float], dict[str, int]] = {}
    _kerns: dict[tuple[str, float], dict[tuple[int, int], float]] = {}

    def __init__(self, renderer: Any):
        self.renderer = renderer

    @classmethod
    def for_renderer(cls, renderer: Any) -> PdfText | None:
        """A writer for ``renderer`` when it is the PDF renderer with Type 3 fonts, else None."""
        import matplotlib
        from matplotlib.backends.backend_pdf import RendererPdf

        inner = getattr(renderer, "_renderer", renderer)
        rc = matplotlib.rcParams
        if type(inner) is not RendererPdf or rc["pdf.fonttype"] != 3 or rc["pdf.use14corefonts"]:
            return None
        return cls(inner)

    def draw(self, gc: Any, x: float, y: float, text: str, prop: Any) -> bool:
        """Draw ``text`` with its baseline start at (x, y); False, drawing nothing, where ``draw_text`` must."""
        from matplotlib.backends.backend_pdf import Op
        from matplotlib.ft2font import Kerning

        renderer, file = self.renderer, self.renderer.file
        fontsize = prop.get_size_in_points()
        font = renderer._get_font_ttf(prop)
        key = (font.fname, fontsize)
        glyphs = self._glyphs.setdefault(key, {})
        kerns = self._kerns.setdefault(key, {})
        kerns_or_chars: list[str | float] = []
        previous = 0
        for char in text:
            index = glyphs.get(char)
            if index is None:
                index = glyphs[char] = font.get_char_index(ord(char)) if ord(char) <= 255 else 0
            if not index:
                return False
            if previous:
                pair = (previous, index)
                kern = kerns.get(pair)
                if kern is None:
                    kern = kerns[pair] = font.get_kerning(previous, index, Kerning.UNFITTED) / 64
                if kern:
                    kerns_or_chars.append(kern)
            kerns_or_chars.append(char)
            previous = index
        # draw_text's steps, in its order, for a line of one chunk of one-byte glyphs at angle 0
        renderer.check_gc(gc, gc._rgb)
        file._character_tracker.used.setdefault(font.fname, set()).update(map(ord, text))
        file.output(Op.gsave)
        file.output(1.0, 0.0, -0.0, 1.0, x, y, Op.concat_matrix)  # draw_text's rotation at angle 0: cos, sin, -sin, cos
        file.output(Op.begin_text)
        file.output(file.fontName(font.fname), fontsize, Op.selectfont)
        renderer._setup_textpos(0.0, 0, 0, 0, 0, 0)
        file.output(
            [
                -1000 * next(group) / fontsize if kind is float else renderer.encode_string("".join(group), 3)
                for kind, group in itertools.groupby(kerns_or_chars, type)
            ],
            Op.showkern,
        )
        file.output(Op.end_text)
        file.output(Op.grestore)
        return True


def _alignment_offsets(
    renderer: Any, text: str, key: tuple[float, bool, bool], ha: str, va: str
) -> tuple[float, float]:
    """Where matplotlib's ``Text`` puts a line's baseline start relative to its anchor (``Text._get_layout``
    for one unrotated line): "right" moves it left by the line's width, "top" down by its ascent, at least
    that of "lp"."""
    dx, dy = 0.0, 0.0
    if ha == "right" or va == "top":
        width, height, descent = _metrics(renderer, text, key)
        dx = -width if ha == "right" else 0.0
        if va == "top":
            _, lp_height, lp_descent = _metrics(renderer, "lp", key)
            dy = -(max(height, lp_height) - max(descent, lp_descent))
    return dx, dy


def _metrics(renderer: Any, text: str, key: tuple[float, bool, bool]) -> tuple[float, float, float]:
    """A line's width, height and descent as ``renderer`` measures them: the PDF renderer's (unhinted,
    72 dpi) from the cached glyphs, any other's by the renderer."""
    from matplotlib.backends.backend_pdf import RendererPdf

    if isinstance(getattr(renderer, "_renderer", renderer), RendererPdf):
        found = glyph_metrics(*key, hinted=False).width_height_descent(text)
        if found is not None:
            return found
    return renderer.get_text_width_height_descent(text, _font(*key), ismath=False)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as a report shows it; "n/a" for nothing."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)) and float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return (
            f"{value:,.0f}"
            if abs(value) >= 10_000
            else f"{value:.{digits}g}"
            if abs(value) >= 1
            else f"{value:.{digits}f}"
        )
    return str(value)


def p_value(value: float | None) -> str:
    """A p-value as a report shows it: tiny ones as "< 0.0001", not as zero."""
    if value is None:
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


# --- measuring and wrapping text ------------------------------------------------------------------


@functools.cache
def _renderer() -> Any:
    """An Agg renderer at 72 dpi, so a measured width in pixels is one in points."""
    pyplot()
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(10, 10, 72)


@functools.cache
def _font(size: float, bold: bool, mono: bool) -> Any:
    """The font of a report's text, made once (shared: its users only read it)."""
    from matplotlib.font_manager import FontProperties

    return FontProperties(family="monospace" if mono else "sans-serif", size=size, weight="bold" if bold else "normal")


@functools.lru_cache(maxsize=20_000)
def text_width(text: str, size: float, bold: bool = False, mono: bool = False) -> float:
    """The width ``text`` takes on one line, in inches."""
    if not text:
        return 0.0
    width = glyph_metrics(size, bold, mono).width(text)
    return (width if width is not None else rendered_width(text, size, bold, mono)) * MEASURE_SLACK / 72


def rendered_width(text: str, size: float, bold: bool = False, mono: bool = False) -> float:
    """The width in points the Agg renderer gives ``text`` (it lays out and hints every glyph on each call)."""
    width, _, _ = _renderer().get_text_width_height_descent(text, _font(size, bold, mono), ismath=False)
    return width


@functools.lru_cache(maxsize=128)
def glyph_metrics(size: float, bold: bool, mono: bool, hinted: bool = True) -> GlyphMetrics:
    """A font's glyphs as the Agg renderer measures them (``hinted``), or as the PDF renderer does."""
    pyplot()
    from matplotlib import ft2font
    from matplotlib.backends.backend_agg import get_hinting_flag

    return GlyphMetrics(_font(size, bold, mono), get_hinting_flag() if hinted else ft2font.LoadFlags.NO_HINTING)


class GlyphMetrics:
    """A line's width, height and descent in one font, from each glyph and kerning pair, loaded once.

    matplotlib measures a line with ``FT2Font.set_text``: its width is the pen's travel (the sum
    of the glyphs' advances and kernings), its height and descent the extent of the glyphs' boxes.
    That loads, and for Agg hints, every glyph again on each call, and wrapping measures a line a
    word at a time; here each glyph and pair is loaded once. Equal to the renderers' figures
    (tests/report/test_layout.py checks it); None for a character the font lacks (the renderer's
    fallback fonts measure it).
    """

    def __init__(self, prop: Any, flags: Any):
        import matplotlib
        from matplotlib import ft2font
        from matplotlib.font_manager import findfont

        self.factor = int(matplotlib.rcParams["text.hinting_factor"])
        self.flags = flags
        self.kerning = ft2font.Kerning.DEFAULT
        # A font of our own: the renderers' shared FT2Font objects keep the glyphs of their last line.
        self.font = ft2font.FT2Font(findfont(prop), hinting_factor=self.factor)
        self.font.set_size(prop.get_size_in_points(), 72)
        self.usable = matplotlib.rcParams["text.kerning_factor"] == 0
        # character: (glyph index, advance, lowest and highest point), in 1/64 points
        self.glyphs: dict[str, tuple[int, int, int, int] | None] = {}
        self.kerns: dict[tuple[int, int], int] = {}

    def width(self, text: str) -> float | None:
        """``text``'s width in points (pixels at 72 dpi), None where the renderer must measure it."""
        measured = self._measure(text)
        return None if measured is None else measured[0] / 64

    def width_height_descent(self, text: str) -> tuple[float, float, float] | None:
        """As the renderer's ``get_text_width_height_descent``, in points; None where it must measure."""
        measured = self._measure(text)
        if measured is None:
            return None
        pen, low, high = measured
        return pen / 64, (high - low) / 64, -low / 64

    def _measure(self, text: str) -> tuple[int, int, int] | None:
        if not self.usable or not text:
            return None
        pen, previous, low, high = 0, 0, 32000, -32000
        for char in text:
            glyph = self.glyphs[char] if char in self.glyphs else self._load(char)
            if glyph is None:
                return None
            index, advance, bottom, top = glyph
            if previous:
                pair = (previous, index)
                pen += self.kerns[pair] if pair in self.kerns else self._kern(pair)
            pen += advance
            previous = index
            low, high = min(low, bottom), max(high, top)
        return pen, low, high

    def _load(self, char: str) -> tuple[int, int, int, int] | None:
        index = self.font.get_char_index(ord(char))
        if not index:
            self.glyphs[char] = None
            return None
        glyph = self.font.load_char(ord(char), flags=self.flags)
        # The font's transform narrows the glyph by the hinting factor: FreeType's FT_MulFix, rounded.
        advance = (glyph.horiAdvance * (65536 // self.factor) + 0x8000) >> 16
        _, bottom, _, top = glyph.bbox
        self.glyphs[char] = (index, advance, bottom, top)
        return self.glyphs[char]

    def _kern(self, pair: tuple[int, int]) -> int:
        self.kerns[pair] = self.font.get_kerning(*pair, self.kerning)
        return self.kerns[pair]


def wrap(text: str, width: float, size: float, bold: bool = False, mono: bool = False) -> list[str]:
    """``text`` in lines no wider than ``width`` inches: broken between words, and a word wider
    than a line broken after a separator (``_``, ``.``, ``/`` ...) or, failing that, anywhere."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_width(candidate, size, bold, mono) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            pieces = _break_word(word, width, size, bold, mono)
            lines.extend(pieces[:-1])
            line = pieces[-1]
        lines.append(line)
    return lines


def _break_word(word: str, width: float, size: float, bold: bool, mono: bool) -> list[str]:
    """A word in pieces that each fit ``width``, the last one possibly shorter."""
    pieces = []
    while text_width(word, size, bold, mono) > width and len(word) > 1:
        fits = 1
        while fits < len(word) and text_width(word[: fits + 1], size, bold, mono) <= width:
            fits += 1
        separator = max(word.rfind(mark, 0, fits) for mark in BREAK_AFTER)
        cut = separator + 1 if separator >= fits // 3 else fits  # a separator not too near the start
        pieces.append(word[:cut])
        word = word[cut:]
    return [*pieces, word]


def line_height(size: float) -> float:
    return size * LINE_SPACING / 72


# --- the document and its pages ---------------------------------------------------------------------


class Document:
    """The PDF being written: opens pages in order and remembers their titles."""

    def __init__(self, pdf: Any, version: str, generated_at: str):
        self.pdf = pdf
        self.version = version
        self.generated_at = generated_at
        self.titles: list[str] = []

    def page(self, title: str) -> Page:
        return Page(self, title)


class Page:
    """A page of the report, filled from the top; ``y`` is the next free height in inches from the top edge.

    What does not fit goes on to a new sheet titled "<title> (continued)": the same Page object
    carries on there, so a caller never holds a page that has been closed.
    """

    def __init__(self, document: Document, title: str):
        self.plt = pyplot()
        self.document = document
        self.title = title
        self._open(title)

    def _open(self, title: str) -> None:
        self.document.titles.append(title)
        self.figure = self.plt.figure(figsize=A4)
        self.lines = text_lines()
        self.figure.add_artist(self.lines)
        self.y = TOP
        self.plots: list[tuple[Any, tuple[float, float, float, float]]] = []  # axes, (left, top, right, bottom)
        self._draw_frame(title, len(self.document.titles))

    def _draw_frame(self, title: str, number: int) -> None:
        """The title and version above the rule, and the footer below ``BOTTOM``."""
        label = f"Model report · {self.document.version}"
        room = CONTENT_WIDTH - text_width(label, 9) - 0.25
        size = 15.0
        while size > 11 and text_width(title, size, bold=True) > room:
            size -= 0.5
        lines = wrap(title, room, size, bold=True)
        if len(lines) > 2:  # a title of names longer than two lines: the page says the rest
            lines = [lines[0], lines[1] + " …"]
        for index, line in enumerate(lines):
            baseline = 0.55 - (len(lines) - 1 - index) * line_height(size) * 0.85
            self._text(MARGIN, baseline, line, size=size, bold=True, va="baseline")
        self._text(A4[0] - MARGIN, 0.55, label, size=9, color="#555555", ha="right", va="baseline")
        self.figure.add_artist(
            self.plt.Line2D(
                [self._x(MARGIN), self._x(A4[0] - MARGIN)], [self._y(0.72)] * 2, color="#333333", linewidth=0.8
            )
        )
        footer = f"Model report {self.document.version} · page {number} · generated {self.document.generated_at} (UTC)"
        for index, line in enumerate(wrap(footer, CONTENT_WIDTH, 7)[:2]):
            self._text(MARGIN, FOOTER + index * line_height(7), line, size=7, color="#777777", va="baseline")

    @staticmethod
    def _x(inches: float) -> float:
        return inches / A4[0]

    @staticmethod
    def _y(inches_from_top: float) -> float:
        return 1 - inches_from_top / A4[1]

    def _text(
        self,
        x: float,
        y: float,
        text: str,
        size: float,
        bold: bool = False,
        mono: bool = False,
        color: str = "black",
        ha: str = "left",
        va: str = "top",
    ) -> None:
        """One line of plain text at (x, y) inches from the page's top left corner."""
        self.lines.lines.append((self._x(x), self._y(y), text, (size, bold, mono), color, ha, va))

    def room(self) -> float:
        return BOTTOM - self.y

    def next_page(self) -> None:
        """Close this sheet and carry on at the top of a new one, "<title> (continued)"."""
        self._save()
        self._open(self.title + CONTINUED)

    def need(self, height: float) -> None:
        """Go on to a new sheet unless ``height`` inches fit below ``y`` (or the sheet is still empty)."""
        if self.y + height > BOTTOM and self.y > TOP + 1e-6:
            self.next_page()

    def heading(self, text: str, size: float = 11.5) -> None:
        lines = wrap(text, CONTENT_WIDTH, size, bold=True)
        # Kept with what follows it: the heading and about two lines of it.
        self.need(0.12 + len(lines) * line_height(size) + 0.1 + 2 * line_height(BODY))
        self.y += 0.12
        for line in lines:
            self._text(MARGIN, self.y, line, size=size, bold=True)
            self.y += line_height(size)
        self.y += 0.07  # below the heading's last line

    def _lines(self, text: str, size: float, indent: float, mono: bool = False) -> list[str]:
        return wrap(text, CONTENT_WIDTH - indent, size, mono=mono) or [""]

    def text_height(self, text: str, size: float = BODY, indent: float = 0.0) -> float:
        """The height ``paragraph`` takes for ``text``, in inches."""
        return len(self._lines(text, size, indent)) * line_height(size) + 0.04

    def paragraph(
        self, text: str, size: float = BODY, indent: float = 0.0, color: str = "black", mono: bool = False
    ) -> None:
        for line in self._lines(text, size, indent, mono):
            self.need(line_height(size))
            self._text(MARGIN + indent, self.y, line, size=size, color=color, mono=mono)
            self.y += line_height(size)
        self.y += 0.04

    def bullets(self, items: list[str], size: float = BODY, color: str = "black") -> None:
        for item in items:
            self.need(line_height(size))  # the bullet stays with its first line
            self._text(MARGIN + 0.05, self.y, "•", size=size, color=color)
            self.paragraph(item, size=size, indent=0.22, color=color)

    def key_values(self, pairs: list[tuple[str, Any]], key_width: float = 1.9, size: float = BODY) -> None:
        for key, value in pairs:
            keys = wrap(str(key), key_width - 0.1, size, bold=True)
            values = self._lines(fmt(value), size, key_width)
            self.need(max(len(keys), min(len(values), 2)) * line_height(size))
            top, sheet = self.y, len(self.document.titles)
            for index, line in enumerate(keys):
                self._text(MARGIN, top + index * line_height(size), line, size=size, bold=True)
            for line in values:
                self.need(line_height(size))
                self._text(MARGIN + key_width, self.y, line, size=size)
                self.y += line_height(size)
            if sheet == len(self.document.titles):  # a key longer than its value
                self.y = max(self.y, top + len(keys) * line_height(size))
            self.y += 0.02

    def table(
        self,
        headers: list[str],
        rows: list[list[Any]],
        widths: list[float],
        fills: list[list[str | None]] | None = None,
        size: float = SMALL,
        mono_columns: tuple[int, ...] = (),
    ) -> tuple[list[list[Any]], list[list[str | None]] | None]:
        """Draw the table, its cells wrapped to their column, going on to new sheets (headers
        repeated) as it needs; returns nothing left over (the signature of the days it did)."""
        widths = fit_widths(widths, [headers, *rows], size, mono_columns)
        header = self._cells(headers, widths, size, bold=True)
        self.need(
            self._row_height(header, size)
            + (self._row_height(self._cells(rows[0], widths, size, mono_columns), size) if rows else 0)
        )
        self._row(header, widths, ["#dddddd"] * len(headers), size, bold=True)
        for index, row in enumerate(rows):
            cells = self._cells(row, widths, size, mono_columns)
            row_fills = fills[index] if fills else [None] * len(row)
            stripe = "#f7f7f7" if index % 2 else None
            while cells:
                part, cells = self._split_row(cells, size, self._row_height(header, size))
                if not part:
                    self.next_page()
                    self._row(header, widths, ["#dddddd"] * len(headers), size, bold=True)
                    continue
                self._row(part, widths, [f or stripe for f in row_fills], size, mono_columns=mono_columns)
        self.y += 0.12
        return [], ([] if fills else None)

    @staticmethod
    def _cells(
        row: list[Any], widths: list[float], size: float, mono_columns: tuple[int, ...] = (), bold: bool = False
    ) -> list[list[str]]:
        """Each cell's text in lines that fit its column."""
        return [
            wrap(fmt(value), width - 2 * CELL_PADDING, size, bold=bold, mono=column in mono_columns)
            for column, (value, width) in enumerate(zip(row, widths))
        ]

    def _split_row(
        self, cells: list[list[str]], size: float, header_height: float
    ) -> tuple[list[list[str]], list[list[str]]]:
        """The part of a row that fits below ``y`` and the rest: the whole row where it fits,
        nothing where it would fit on a fresh sheet, else as many of its lines as fit."""
        if self.y + self._row_height(cells, size) <= BOTTOM:
            return cells, []
        if TOP + header_height + self._row_height(cells, size) <= BOTTOM:
            return [], cells
        lines = int((BOTTOM - self.y - 0.75 * size / 72) / (CELL_LINE_SPACING * size / 72))
        if lines < 1:
            return [], cells
        rest = [cell[lines:] for cell in cells]
        return [cell[:lines] for cell in cells], (rest if any(rest) else [])

    @staticmethod
    def _row_height(cells: list[list[str]], size: float) -> float:
        lines = max((len(cell) for cell in cells), default=1)
        return (lines * CELL_LINE_SPACING + 0.75) * size / 72

    def _row(
        self,
        cells: list[list[str]],
        widths: list[float],
        fills: list[str | None],
        size: float,
        bold: bool = False,
        mono_columns: tuple[int, ...] = (),
    ) -> None:
        height = self._row_height(cells, size)
        x = MARGIN
        for column, (lines, width, fill) in enumerate(zip(cells, widths, fills)):
            if fill:
                self.figure.add_artist(
                    self.plt.Rectangle(
                        (self._x(x), self._y(self.y + height)),
                        width / A4[0],
                        height / A4[1],
                        transform=self.figure.transFigure,
                        facecolor=fill,
                        edgecolor="none",
                        zorder=0,
                    )
                )
            for index, line in enumerate(lines):
                top = self.y + (0.375 + index * CELL_LINE_SPACING) * size / 72
                self._text(x + CELL_PADDING, top, line, size=size, bold=bold, mono=column in mono_columns)
            x += width
        self.y += height

    def axes(self, height: float, count: int = 1, gap: float = 0.8, left: float = 0.55) -> list[Any]:
        """``count`` plot areas side by side, ``height`` inches tall, with room for titles and labels.

        The area runs from ``left`` inches into the frame; when the page closes, each plot with its
        titles, labels and tick labels is fitted inside the frame and the room it was given.
        """
        height = min(height, BOTTOM - TOP - 0.95)
        self.need(0.35 + height + 0.6)
        area_top = self.y
        self.y += 0.35  # the axes' titles sit above them
        left += AXES_START[0]
        width = (CONTENT_WIDTH - left - AXES_START[1] - gap * (count - 1)) / count
        areas = []
        for index in range(count):
            x = MARGIN + left + index * (width + gap)
            ax = self.figure.add_axes([self._x(x), self._y(self.y + height), width / A4[0], height / A4[1]])
            room_left = MARGIN if index == 0 else x - gap + 0.05
            room_right = A4[0] - MARGIN if index == count - 1 else x + width + gap - 0.05
            self.plots.append((ax, (room_left, area_top, room_right, self.y + height + 0.6)))
            areas.append(ax)
        self.y += height + 0.6  # tick labels and axis labels below
        return areas

    def close(self) -> None:
        self._save()

    def _save(self) -> None:
        for ax, room in self.plots:
            fit_plot(self.figure, ax, room)
        self.document.pdf.savefig(self.figure)
        self.plt.close(self.figure)


def fit_widths(widths: list[float], rows: list[list[Any]], size: float, mono_columns: tuple[int, ...]) -> list[float]:
    """Column widths that fit the frame and, where they can, hold each column's longest word
    (header included) whole: a column too narrow for a word is widened, and the excess over the
    frame is taken from the columns with room to spare beyond their longest word."""
    needs = [2 * CELL_PADDING + 0.02] * len(widths)
    for row in rows:
        for column, value in enumerate(row[: len(widths)]):
            pieces = re.findall(NAME_PIECE, fmt(value)) or [""]
            longest = max(text_width(piece, size, bold=True, mono=column in mono_columns) for piece in pieces)
            needs[column] = max(needs[column], min(longest + 2 * CELL_PADDING + 0.01, 0.7 * CONTENT_WIDTH))
    wanted = [max(width, need) for width, need in zip(widths, needs)]
    excess = sum(wanted) - CONTENT_WIDTH
    spare = [width - need for width, need in zip(wanted, needs)]
    if excess <= 0:
        return wanted
    if sum(spare) >= excess:
        return [width - excess * room / sum(spare) for width, room in zip(wanted, spare)]
    return [width * CONTENT_WIDTH / sum(wanted) for width in wanted]


# --- fitting a plot into its room -------------------------------------------------------------------


def fit_plot(figure: Any, ax: Any, room: tuple[float, float, float, float]) -> None:
    """Shrink ``ax`` until it, its titles and its tick labels lie inside ``room``
    (left, top, right, bottom, in inches from the page's top left); long titles, axis labels and
    tick labels are wrapped first so that shrinking can make them fit."""
    left, top, right, bottom = room
    # A little inside the room: a PDF reader's box of a rotated word is as wide as the font is high.
    left, right = left + PLOT_INSET, right - PLOT_INSET
    _wrap_tick_labels(ax, 0.4 * (right - left))
    renderer = figure.canvas.get_renderer()
    for _ in range(4):
        _wrap_labels(ax, room)
        box = ax.get_tightbbox(renderer)
        if box is None:
            return
        dpi = figure.dpi
        x0, x1 = box.x0 / dpi, box.x1 / dpi
        y_top, y_bottom = A4[1] - box.y1 / dpi, A4[1] - box.y0 / dpi
        over = [max(0.0, left - x0), max(0.0, top - y_top), max(0.0, x1 - right), max(0.0, y_bottom - bottom)]
        if max(over) < 0.005:
            return
        position = ax.get_position(original=True)
        px0, pwidth = position.x0 * A4[0], position.width * A4[0]
        ptop, pheight = (1 - position.y1) * A4[1], position.height * A4[1]
        px0, pwidth = px0 + over[0] + 0.01, max(0.5, pwidth - over[0] - over[2] - 0.02)
        ptop, pheight = ptop + over[1] + 0.01, max(0.5, pheight - over[1] - over[3] - 0.02)
        ax.set_position([px0 / A4[0], 1 - (ptop + pheight) / A4[1], pwidth / A4[0], pheight / A4[1]])


def _wrap_labels(ax: Any, room: tuple[float, float, float, float]) -> None:
    """Wrap the title and the x label to the width centred on the axes that the room allows, inside
    its inset (a centred title wider than that would need the axes shrunk by twice its excess)."""
    left, _, right, _ = room
    left, right = left + PLOT_INSET, right - PLOT_INSET
    position = ax.get_position()
    centre = (position.x0 + position.width / 2) * A4[0]
    width = 2 * min(centre - left, right - centre)
    for label in (ax.title, ax.xaxis.label):
        text = " ".join(label.get_text().split())
        if text and text_width(text, label.get_fontsize()) > width:
            label.set_text("\n".join(wrap(text, width, label.get_fontsize())))
    label = ax.yaxis.label
    text = " ".join(label.get_text().split())
    height = position.height * A4[1]
    if text and text_width(text, label.get_fontsize()) > height:
        label.set_text("\n".join(wrap(text, height, label.get_fontsize())))


def _wrap_tick_labels(ax: Any, width: float) -> None:
    """Category names on the y axis wider than ``width`` inches, in lines (never cut)."""
    ticks = ax.get_yticks()
    tick_labels = ax.yaxis.get_majorticklabels()  # each call lays the ticks out again: asked once
    labels = [label.get_text() for label in tick_labels]
    if len(labels) != len(ticks) or not any(
        text_width(text, label.get_fontsize()) > width for text, label in zip(labels, tick_labels)
    ):
        return
    size = tick_labels[0].get_fontsize()
    ax.set_yticks(ticks, ["\n".join(wrap(text, width, size)) for text in labels])


def long_table(
    document: Document,
    page: Page,
    title: str,
    headers: list[str],
    rows: list[list[Any]],
    widths: list[float],
    **options: Any,
) -> Page:
    """A table continued on as many sheets as it needs; returns the page it ends on (``page``,
    which carries on under its own title: ``title`` is kept for the callers written before)."""
    page.table(headers, rows, widths, **options)
    return page
