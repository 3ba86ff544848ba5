"""risk.report.layout: every word of the model report inside the page's text frame and above the
footer, on reports made from the sample data and from the team's real German credit data; long
names wrapped, not cut; text from data, config and people drawn as plain text, not mathtext.

The checks read the PDF's word boxes (poppler's ``pdftotext -bbox``), not the drawing code's
intentions. Each report is built once per module.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import deployment
import fullprocess
from risk.core.settings import Config, load_config
from risk.data import sample
from risk.report import layout
from tests.conftest import SHARED_DATA, page_text, skip_or_fail_in_ci, write_config

POINTS = 72
FRAME_LEFT = layout.MARGIN * POINTS
FRAME_BOTTOM = layout.BOTTOM * POINTS
SLACK = 0.5  # points: pdftotext rounds its boxes

COSTS = {"false_negative": 5, "false_positive": 1}
# The German credit data with the long category (and column) names a bank's own extract has.
LONG_NAMES = {
    "radio/TV": "radio, television and other household electronics bought on credit",
    "furniture/equipment": "furniture_and_equipment_for_the_household_or_a_small_business",
    "car": "a new or used car or another motor vehicle for private use",
    "female": "female applicant (as recorded on the application form)",
    "male": "male applicant (as recorded on the application form)",
}
LONG_COLUMN = "purpose_of_the_credit_as_stated_by_the_applicant_at_the_branch"


@dataclass
class Word:
    page: int
    width: float
    x0: float
    y0: float
    x1: float
    y1: float
    text: str


def word_boxes(pdf: Path) -> list[Word]:
    """Every word of the PDF with its box in points from the page's top left, by ``pdftotext -bbox``."""
    if shutil.which("pdftotext") is None:
        skip_or_fail_in_ci("pdftotext is absent: apt-get install poppler-utils to read the report's word boxes")
    boxes = subprocess.run(
        ["pdftotext", "-bbox", str(pdf), "-"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    words = []
    pages = re.findall(r'<page width="([\d.]+)" height="[\d.]+">(.*?)</page>', boxes, flags=re.S)
    for number, (width, body) in enumerate(pages, start=1):
        for found in re.finditer(
            r'<word xMin="([-\d.]+)" yMin="([-\d.]+)" xMax="([-\d.]+)" yMax="([-\d.]+)">(.*?)</word>', body
        ):
            x0, y0, x1, y1 = map(float, found.groups()[:4])
            words.append(Word(number, float(width), x0, y0, x1, y1, html.unescape(found.group(5))))
    return words


def words_outside_the_frame(pdf: Path, version: str = "v1") -> list[str]:
    """Each word outside the text frame or in the footer's room, except the footer itself, described."""
    problems = []
    words = word_boxes(pdf)
    for number in sorted({w.page for w in words}):
        on_page = [w for w in words if w.page == number]
        for w in on_page:
            if w.x0 < FRAME_LEFT - SLACK or w.x1 > w.width - FRAME_LEFT + SLACK or w.y0 < 0:
                problems.append(
                    f"page {number}: {w.text!r} at x {w.x0:.0f}-{w.x1:.0f}, y {w.y0:.0f} (outside the frame)"
                )
        below = [w for w in on_page if w.y1 > FRAME_BOTTOM + SLACK]
        text = " ".join(w.text for w in below)
        if not re.fullmatch(rf"Model report {version} · page {number} · generated \S+ \(UTC\)", text):
            problems.append(f"page {number}: below the frame, beside the footer: {text!r}")
    return problems


def german_credit_project(folder: Path, rename: dict[str, str] | None = None, **settings) -> Config:
    """The German credit data, 80% as the source and the rest as test data, deployed by fullprocess."""
    config = write_config(folder, target="Risk", positive_label="bad", id_columns=["Unnamed: 0"], **settings)
    text = (SHARED_DATA / "german_credit_kaggle.csv").read_text(encoding="utf-8")
    header, *rows = [line for line in text.splitlines() if line]
    if rename:  # whole cells only; the German credit data has no quoted commas
        header = ",".join(rename.get(cell, cell) for cell in header.split(","))
        rows = [",".join(f'"{rename[cell]}"' if cell in rename else cell for cell in row.split(",")) for row in rows]
    cut = int(len(rows) * 0.8)
    for part_folder, name, part in (
        (config.input_folder, "credit.csv", rows[:cut]),
        (config.test_data_folder, "test.csv", rows[cut:]),
    ):
        part_folder.mkdir(parents=True, exist_ok=True)
        (part_folder / name).write_text("\n".join([header, *part]) + "\n", encoding="utf-8")
    assert fullprocess.main(["--config", str(config.path)]) == 0
    return config


def report_pdf(config: Config) -> Path:
    path = config.reports_folder / "v1" / "model_report.pdf"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def german_cost_fairness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """German credit on the cost metric, Sex protected: the cost and fairness pages."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the real-dataset tests need the team's shared data")
    folder = tmp_path_factory.mktemp("german_cost") / "project"
    config = german_credit_project(folder, metric="cost", cost_matrix=COSTS, protected_attributes=["Sex"])
    return report_pdf(config)


@pytest.fixture(scope="module")
def german_long_names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """German credit whose categories (and one column) carry long names."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the real-dataset tests need the team's shared data")
    folder = tmp_path_factory.mktemp("german_long") / "project"
    config = german_credit_project(folder, rename={"Purpose": LONG_COLUMN, **LONG_NAMES}, protected_attributes=["Sex"])
    return report_pdf(config)


@pytest.fixture
def sample_report(deployed_template: Path) -> Path:
    """The sample data's v1 report, as fullprocess wrote it (read only)."""
    return report_pdf(load_config(deployed_template / "config.json"))


@pytest.mark.parametrize(
    "report",
    [
        "sample_report",
        pytest.param("german_cost_fairness", marks=pytest.mark.slow),
        pytest.param("german_long_names", marks=pytest.mark.slow),
    ],
)
def test_every_word_lies_inside_the_frame_and_above_the_footer(report: str, request: pytest.FixtureRequest) -> None:
    pdf = request.getfixturevalue(report)
    assert word_boxes(pdf), "the report has text"
    assert words_outside_the_frame(pdf) == []


@pytest.mark.slow
def test_long_category_names_are_wrapped_whole_not_cut(german_long_names: Path) -> None:
    words = word_boxes(german_long_names)
    assert not [w.text for w in words if "…" in w.text], "no name cut short with an ellipsis"
    texts = {w.text for w in words}
    assert "Flagged" in texts and "0." not in texts, "a long name takes room from its column, not from the numbers'"
    text = "".join(w.text for w in words)  # a name broken over lines reads whole without the spaces
    for name in (*LONG_NAMES.values(), LONG_COLUMN):
        assert name.replace(" ", "") in text, name


# --- the primitives ---------------------------------------------------------------------------------


def test_a_name_wider_than_its_line_breaks_after_a_separator() -> None:
    lines = layout.wrap("logistic_regression.intercept_scaling", 1.6, layout.SMALL)
    assert lines == ["logistic_regression.", "intercept_scaling"]
    assert all(layout.text_width(line, layout.SMALL) <= 1.6 for line in lines)
    assert "".join(layout.wrap("x" * 300, 1.0, layout.SMALL)) == "x" * 300, "no separator: broken anywhere, kept whole"


def test_widths_from_cached_glyphs_are_the_widths_the_renderers_measure() -> None:
    import io

    from matplotlib.backends.backend_pdf import PdfFile, RendererPdf

    pdf = RendererPdf(PdfFile(io.BytesIO()), 72, *layout.A4)
    # Names, numbers, separators and the report's own signs (µ → ² • · … — ·) at the report's sizes.
    texts = [
        "Model report · v12",
        "logistic_regression.intercept_scaling",
        "AVAToT.,f j ff.",
        "serving µs: 1,234 → 5,678 (chi²) • a … b — c",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "  two  spaces, and one at the end ",
        "Ärger über Öl, façade, naïve, 100 % of $5",
    ]
    for size in (7, 7.5, layout.SMALL, layout.BODY, 11.5, 12.5, 15):
        for bold in (False, True):
            for mono in (False, True):
                for text in texts:
                    measured = layout.rendered_width(text, size, bold, mono)
                    assert layout.glyph_metrics(size, bold, mono).width(text) == measured, (text, size, bold, mono)
                    assert layout.text_width(text, size, bold, mono) == measured * layout.MEASURE_SLACK / 72
                    font = layout._font(size, bold, mono)
                    assert layout.glyph_metrics(size, bold, mono, hinted=False).width_height_descent(
                        text
                    ) == pdf.get_text_width_height_descent(text, font, ismath=False), ("pdf", text, size, bold, mono)
    assert layout.glyph_metrics(layout.BODY, False, False).width("chart 中") is None, (
        "a glyph the font lacks: the renderer's"
    )


def test_lines_written_from_cached_glyphs_are_the_bytes_the_pdf_renderer_writes() -> None:
    import io

    from matplotlib.backends.backend_pdf import PdfFile, RendererPdf

    layout.pyplot()
    texts = [
        "Model report · v12",
        "AVAToT.,f j ff. WAVE Te Yo",
        "logistic_regression.intercept_scaling = 1e-05; 100 % of $5",
        "Ärger über Öl, façade, naïve (chi²)",
        "serving µs: 1,234 → 5,678 • a … b",  # beyond one byte: drawn by draw_text
    ]
    written = []
    for fast in (False, True):
        buffer = io.BytesIO()
        file = PdfFile(buffer)
        renderer = RendererPdf(file, 72, *layout.A4)
        file.newPage(*layout.A4)
        pdf_text = layout.PdfText.for_renderer(renderer)
        drawn_fast = 0
        for size in (7, layout.SMALL, layout.BODY, 15):
            for bold in (False, True):
                for mono in (False, True):
                    for index, text in enumerate(texts):
                        gc = renderer.new_gc()
                        gc.set_foreground(["black", "#555555"][index % 2])
                        font = layout._font(size, bold, mono)
                        x, y = 43.2 + index, 700.5 - 9.3 * index
                        if fast and pdf_text.draw(gc, x, y, text, font):
                            drawn_fast += 1
                        else:
                            renderer.draw_text(gc, x, y, text, font, 0.0, ismath=False)
                        gc.restore()
        file.endStream()
        written.append((buffer.getvalue(), file._character_tracker.used))
    assert drawn_fast == 4 * 2 * 2 * 4, "every line of one-byte glyphs the font has is written from the cache"
    assert written[1] == written[0]


def test_tables_rows_and_notes_too_long_for_a_page_continue_inside_the_frame(tmp_path: Path) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "long.pdf"
    names = [f"logistic_regression.intercept_scaling_{number}" for number in range(60)]
    with PdfPages(path) as pdf:
        document = layout.Document(pdf, "v1", "2026-01-01T00:00:00+00:00")
        page = document.page("Parameters")
        page.table(["Parameter", "Value", "Parameter", "Value"], [[n, 1.0, n, "x" * 80] for n in names], [1.8] * 4)
        page.heading("Notes")
        page.bullets([f"note {number}: " + "a long sentence about drift " * 12 for number in range(12)], size=8)
        page.key_values([("A key far too long to fit beside what follows", "value " * 200)], key_width=1.5)
        page.table(["Group", "Remarks"], [["one row taller than a page", "remark " * 1500]], [1.0, 1.5])
        page.close()
    assert document.titles[0] == "Parameters" and set(document.titles[1:]) == {"Parameters (continued)"}
    assert len(document.titles) >= 3
    assert words_outside_the_frame(path) == []
    text = "".join(w.text for w in word_boxes(path))
    assert all(name in text for name in names) and "…" not in text
    assert text.count("note") == 12 and text.count("value") == 200 and text.count("remark") == 1500


# --- plain text, not mathtext -------------------------------------------------------------------------

DOLLAR_COLUMNS = {"lastmonth_activity": "amount_$", "lastyear_activity": "term_$"}
APPROVER = r"x $\frac{a}{$"
NOTE = "saves $5 a month and $4 a week"


@pytest.mark.slow
def test_dollar_signs_from_data_config_and_people_print_as_written(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "project", require_approval=True, model_purpose=f"Find clients at risk; {NOTE}")
    sample.write_sample_data(config)
    for path in config.root.rglob("*.csv"):
        text = path.read_text(encoding="utf-8")
        header, rest = text.split("\n", 1)
        for old, new in DOLLAR_COLUMNS.items():
            header = header.replace(old, new)
        path.write_text(f"{header}\n{rest}", encoding="utf-8")

    assert fullprocess.main(["--config", str(config.path)]) == 0
    capsys.readouterr()
    assert deployment.main(["--config", str(config.path), "--approve", "v1", "--by", APPROVER, "--note", NOTE]) == 0
    assert "reports rewritten: ok" in capsys.readouterr().out

    pdf = report_pdf(config)
    first, card, lineage = page_text(pdf, 1), page_text(pdf, 2), page_text(pdf, 3)
    assert f"Approved by {APPROVER}" in first and f"Comments: {NOTE}" in first
    assert NOTE in card
    assert "amount_$" in lineage and "term_$" in lineage
    assert words_outside_the_frame(pdf) == []


def test_a_model_card_longer_than_a_page_continues_on_the_next(deployed_template: Path, tmp_path: Path) -> None:
    import json

    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages

    from risk.report import pages

    report = json.loads((report_pdf(load_config(deployed_template / "config.json")).with_suffix(".json")).read_text())
    card = {**report["model_card"], "warnings": [f"warning {n}: " + "the data moved a little " * 8 for n in range(40)]}
    path = tmp_path / "card.pdf"
    with PdfPages(path) as pdf:
        document = layout.Document(pdf, "v1", "2026-01-01T00:00:00+00:00")
        pages._model_card_page(document, pages.Evidence({"model_card": card}, np.zeros(0), np.zeros(0)))
    assert document.titles[0] == "Model card" and set(document.titles[1:]) == {"Model card (continued)"}
    assert words_outside_the_frame(path) == []
    last = page_text(path, len(document.titles))
    assert "warning 39:" in last and "Approval" in last, "every section and warning, the last ones on the next page"


def test_every_drift_note_is_drawn_continuing_on_the_next_page(deployed_template: Path, tmp_path: Path) -> None:
    import json

    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages

    from risk.report import pages

    report = json.loads((report_pdf(load_config(deployed_template / "config.json")).with_suffix(".json")).read_text())
    notes = [f"drift note {n}: " + "sampling alone gives PSI values up to 0.056 " * 3 for n in range(40)]
    drift = {**report["drift"], "warnings": notes}
    path = tmp_path / "drift.pdf"
    with PdfPages(path) as pdf:
        document = layout.Document(pdf, "v1", "2026-01-01T00:00:00+00:00")
        pages._drift_page(document, pages.Evidence({"drift": drift}, np.zeros(0), np.zeros(0)))
    assert len(document.titles) >= 2 and document.titles[-1].endswith("(continued)")
    assert words_outside_the_frame(path) == []
    assert "drift note 39:" in page_text(path, len(document.titles)), "the last note, on the last page"
