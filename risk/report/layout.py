"""A4 pages for a PDF report, drawn with matplotlib: headings, text, key-value lines, tables
that continue on new pages, and plot areas, filled from the top of each page.

matplotlib is imported when a page is drawn, not at import.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

# Page geometry, in inches: A4 portrait.
A4 = (8.27, 11.69)
MARGIN = 0.6
TOP = 1.05
BOTTOM = A4[1] - 0.7
CONTENT_WIDTH = A4[0] - 2 * MARGIN
BODY = 9  # font sizes, in points
SMALL = 8


def pyplot() -> Any:
    """pyplot on the file-only Agg backend, imported when a report is drawn, not at import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


class Document:
    """The PDF being written: opens pages in order and remembers their titles."""

    def __init__(self, pdf: Any, version: str, generated_at: str):
        self.pdf = pdf
        self.version = version
        self.generated_at = generated_at
        self.titles: list[str] = []

    def page(self, title: str) -> Page:
        self.titles.append(title)
        return Page(self, title, len(self.titles))


class Page:
    """One A4 page filled from the top; ``y`` is the next free height in inches from the top edge."""

    def __init__(self, document: Document, title: str, number: int):
        self.plt = pyplot()
        self.document = document
        self.figure = self.plt.figure(figsize=A4)
        self.y = TOP
        self.figure.text(self._x(MARGIN), self._y(0.55), title, fontsize=15, weight="bold", va="baseline")
        self.figure.text(
            self._x(A4[0] - MARGIN),
            self._y(0.55),
            f"Model report · {document.version}",
            fontsize=9,
            color="#555555",
            ha="right",
            va="baseline",
        )
        self.figure.add_artist(
            self.plt.Line2D(
                [self._x(MARGIN), self._x(A4[0] - MARGIN)], [self._y(0.72)] * 2, color="#333333", linewidth=0.8
            )
        )
        footer = f"Model report {document.version} · page {number} · generated {document.generated_at} (UTC)"
        self.figure.text(self._x(MARGIN), self._y(A4[1] - 0.35), footer, fontsize=7, color="#777777")

    @staticmethod
    def _x(inches: float) -> float:
        return inches / A4[0]

    @staticmethod
    def _y(inches_from_top: float) -> float:
        return 1 - inches_from_top / A4[1]

    def room(self) -> float:
        return BOTTOM - self.y

    def heading(self, text: str) -> None:
        self.y += 0.12
        self.figure.text(self._x(MARGIN), self._y(self.y), text, fontsize=11.5, weight="bold", va="top")
        self.y += 0.3

    @staticmethod
    def _lines(text: str, size: float, indent: float, mono: bool = False) -> list[str]:
        width_chars = int((CONTENT_WIDTH - indent) / (size * (0.61 if mono else 0.55) / 72))
        return textwrap.wrap(text, width_chars) or [""]

    def text_height(self, text: str, size: float = BODY, indent: float = 0.0) -> float:
        """The height ``paragraph`` takes for ``text``, in inches."""
        return len(self._lines(text, size, indent)) * size * 1.45 / 72 + 0.04

    def paragraph(
        self, text: str, size: float = BODY, indent: float = 0.0, color: str = "black", mono: bool = False
    ) -> None:
        for line in self._lines(text, size, indent, mono):
            self.figure.text(
                self._x(MARGIN + indent),
                self._y(self.y),
                line,
                fontsize=size,
                va="top",
                color=color,
                family="monospace" if mono else "sans-serif",
            )
            self.y += size * 1.45 / 72
        self.y += 0.04

    def bullets(self, items: list[str], size: float = BODY, color: str = "black") -> None:
        for item in items:
            self.figure.text(self._x(MARGIN + 0.05), self._y(self.y), "•", fontsize=size, va="top", color=color)
            self.paragraph(item, size=size, indent=0.22, color=color)

    def key_values(self, pairs: list[tuple[str, Any]], key_width: float = 1.9, size: float = BODY) -> None:
        for key, value in pairs:
            self.figure.text(self._x(MARGIN), self._y(self.y), key, fontsize=size, weight="bold", va="top")
            self.paragraph(fmt(value), size=size, indent=key_width)
            self.y -= 0.02

    def table(
        self,
        headers: list[str],
        rows: list[list[Any]],
        widths: list[float],
        fills: list[list[str | None]] | None = None,
        size: float = SMALL,
        mono_columns: tuple[int, ...] = (),
    ) -> tuple[list[list[Any]], list[list[str | None]] | None]:
        """Draw as many rows as fit; return the rows (and their fills) left for the next page."""
        height = size * 2.0 / 72
        self._row(headers, widths, ["#dddddd"] * len(headers), size, height, bold=True)
        drawn = 0
        for index, row in enumerate(rows):
            if self.y + height > BOTTOM:
                break
            row_fills = fills[index] if fills else [None] * len(row)
            stripe = "#f7f7f7" if index % 2 else None
            self._row(
                [fmt(v) for v in row], widths, [f or stripe for f in row_fills], size, height, mono_columns=mono_columns
            )
            drawn += 1
        self.y += 0.12
        return rows[drawn:], (fills[drawn:] if fills else None)

    def _row(
        self,
        cells: list[str],
        widths: list[float],
        fills: list[str | None],
        size: float,
        height: float,
        bold: bool = False,
        mono_columns: tuple[int, ...] = (),
    ) -> None:
        x = MARGIN
        for column, (cell, width, fill) in enumerate(zip(cells, widths, fills)):
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
            mono = column in mono_columns
            limit = max(3, int((width - 0.08) / (size * (0.61 if mono else 0.56) / 72)))
            text = cell if len(cell) <= limit else cell[: limit - 1] + "…"
            self.figure.text(
                self._x(x + 0.04),
                self._y(self.y + height / 2),
                text,
                fontsize=size,
                va="center",
                weight="bold" if bold else "normal",
                family="monospace" if mono else "sans-serif",
            )
            x += width
        self.y += height

    def axes(self, height: float, count: int = 1, gap: float = 0.8, left: float = 0.55) -> list[Any]:
        """``count`` plot areas side by side, ``height`` inches tall, with room for titles and labels."""
        self.y += 0.35  # the axes' titles sit above them
        width = (CONTENT_WIDTH - left - gap * (count - 1)) / count
        areas = []
        for index in range(count):
            x = MARGIN + left + index * (width + gap)
            areas.append(self.figure.add_axes([self._x(x), self._y(self.y + height), width / A4[0], height / A4[1]]))
        self.y += height + 0.6  # tick labels and axis labels below
        return areas

    def close(self) -> None:
        self.document.pdf.savefig(self.figure)
        self.plt.close(self.figure)


def long_table(
    document: Document,
    page: Page,
    title: str,
    headers: list[str],
    rows: list[list[Any]],
    widths: list[float],
    **options: Any,
) -> Page:
    """A table continued on as many pages as it needs; returns the page it ends on."""
    fills = options.pop("fills", None)
    rows, fills = page.table(headers, rows, widths, fills=fills, **options)
    while rows:
        page.close()
        page = document.page(f"{title} (continued)")
        rows, fills = page.table(headers, rows, widths, fills=fills, **options)
    return page
