"""The "Outcomes over time" report: ``<reports>/outcomes.pdf`` and ``outcomes.json`` beside it.

One standalone document, not a page of a version's model report: it spans every version (the
version changes are what it marks), it changes when labels arrive rather than when a version is
deployed, and a version's report stays the record of that version as it was signed off. It is
written again when the figures it shows change (``refresh_outcomes_report``: the JSON keeps the
hash of the figures it was made from), like the other reports after a deployment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from risk.core.artefacts import utc_now
from risk.core.files import atomic_path, atomic_write_json
from risk.core.jsonfiles import read_json_or_none
from risk.core.settings import Config
from risk.monitoring import outcomes
from risk.report.layout import Document, Page, fmt, pyplot

logger = logging.getLogger(__name__)

PDF_FILE = "outcomes.pdf"
JSON_FILE = "outcomes.json"
TITLE = "Outcomes over time"


def pdf_path(config: Config) -> Path:
    return config.reports_folder / PDF_FILE


def json_path(config: Config) -> Path:
    return config.reports_folder / JSON_FILE


def figures_hash(figures: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(figures, sort_keys=True, default=str).encode()).hexdigest()


def refresh_outcomes_report(config: Config) -> Path | None:
    """Write the report when its figures changed since it was written (or it is missing); its path,
    or None when nothing changed or there is nothing to show yet."""
    figures = outcomes.summary(config)
    digest = figures_hash(figures)
    written = read_json_or_none(json_path(config))
    unchanged = isinstance(written, dict) and written.get("figures_sha256") == digest and pdf_path(config).is_file()
    if unchanged or (not figures["realised"] and not figures["backtests"]):
        outcomes.clear_report_due(config)
        return None
    return write_outcomes_report(config, figures, digest)


def write_outcomes_report(config: Config, figures: dict[str, Any], digest: str | None = None) -> Path:
    """The PDF, then its JSON (the figures and their hash) last: a JSON never describes an older PDF."""
    from matplotlib.backends.backend_pdf import PdfPages

    pyplot()
    config.reports_folder.mkdir(parents=True, exist_ok=True)
    generated = utc_now()
    with atomic_path(pdf_path(config)) as tmp:
        with PdfPages(tmp, metadata={"Title": TITLE, "Subject": "Dynamic risk assessment system"}) as pdf:
            document = Document(pdf, "outcomes", generated)
            page = document.page(TITLE)
            draw_outcomes_page(page, figures, config["metric"])
            page.close()
    atomic_write_json(
        json_path(config),
        {"generated_at": generated, "figures_sha256": digest or figures_hash(figures), "pages": document.titles},
    )
    outcomes.clear_report_due(config)  # the report shows every record now
    logger.info("wrote %s", pdf_path(config))
    return pdf_path(config)


def draw_outcomes_page(page: Page, figures: dict[str, Any], metric: str) -> None:
    page.paragraph(
        "How each version did on the clients it scored, once their outcome arrived. Realised figures: the "
        "deployed version scored on each labelled batch it judged. Back-test: each labelled batch joined with "
        "the latest call list or logged prediction made before it arrived; clients never labelled are counted "
        "as outcome unknown, not as negatives, and rows that match no earlier prediction are counted, not guessed."
    )
    for note in figures["notes"]:
        page.paragraph(f"Not yet known: {note}.")
    _realised_section(page, figures["realised"], metric)
    _budget_section(page, figures["backtests"])
    _calibration_section(page, figures["last_list"])


def _realised_section(page: Page, realised: list[dict[str, Any]], metric: str) -> None:
    if not realised:
        return
    page.heading("Realised score of each labelled batch")
    ax = page.axes(2.2)[0]
    positions = list(range(1, len(realised) + 1))
    ax.plot(positions, [_nan(r.get("roc_auc")) for r in realised], marker="o", label="ROC AUC")
    ax.plot(positions, [_nan(r.get("score")) for r in realised], marker="s", label=f"{metric} (realised)")
    ax.plot(
        positions, [_nan(r.get("deployed_score")) for r in realised], linestyle=":", label=f"{metric} at deployment"
    )
    for index in range(1, len(realised)):  # a version change: a vertical line, named
        if realised[index]["version"] != realised[index - 1]["version"]:
            ax.axvline(index + 0.5, color="grey", linestyle="--")
            ax.text(index + 0.55, 0.02, realised[index]["version"], fontsize=7, transform=ax.get_xaxis_transform())
    ax.set(
        title=f"Realised ROC AUC and {metric} per batch (first version {realised[0]['version']})",
        xlabel="Labelled batch, oldest first",
    )
    ax.set_xticks(positions)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    rows = [
        [
            r.get("at", ""),
            r["version"],
            r.get("rows"),
            r.get("positives"),
            fmt(r.get("score")),
            fmt(r.get("roc_auc")),
            fmt(r.get("deployed_score")),
        ]
        for r in realised
    ]
    page.table(
        ["Judged at (UTC)", "Version", "Rows", "Positives", f"{metric}", "ROC AUC", f"{metric} at deployment"],
        rows,
        [1.6, 0.7, 0.6, 0.7, 0.8, 0.8, 1.2],
    )
    for r in realised:
        if r.get("note"):
            page.paragraph(f"{r.get('at', '')} ({r['version']}): {r['note']}.")


def _budget_section(page: Page, backtests: list[dict[str, Any]]) -> None:
    if not backtests:
        return
    page.heading("The call list's budget: hit rate against its expected rate")
    rows = []
    for line in backtests:
        for item in line.get("lists", []):
            rows.append(
                [
                    _minute(line["arrived_at"]),
                    f"{Path(item['list']).stem} ({item['version']})",
                    item["rows_matched"],
                    item["outcome_unknown"],
                    f"{_rate(item['contacted']['rate'])} of {item['contacted']['rows']}",
                    _rate(item.get("expected_rate_at_budget")),
                    _rate(item.get("rest", {}).get("rate")),
                    fmt(item.get("recall_at_budget"), 3),
                    fmt(item.get("lift_at_budget"), 2),
                    fmt(item.get("roc_auc"), 3),
                ]
            )
        if not line.get("lists"):
            reason = line.get("note") or "no row matched a call list made before it arrived"
            rows.append([_minute(line["arrived_at"]), reason, line.get("rows_matched", 0), "", "", "", "", "", "", ""])
    page.table(
        [
            "Arrived (UTC)",
            "List (version)",
            "Matched",
            "Unknown",
            "Hit rate",
            "Expected",
            "Rest",
            "Recall",
            "Lift",
            "AUC",
        ],
        rows,
        [1.05, 1.55, 0.6, 0.65, 0.85, 0.65, 0.5, 0.5, 0.35, 0.45],
    )
    page.paragraph(
        "Hit rate: the share who left among the contacted clients (the list's top contact_budget) whose outcome "
        "is known, of how many. Rest: the same among the other labelled clients. Recall and lift at the budget; "
        "AUC: ROC AUC of the list's risk on the labelled clients. Unknown: clients on the list without an outcome."
    )
    unmatched = sum(line.get("rows_unmatched", 0) for line in backtests)
    page.paragraph(
        f"Labelled rows matching no earlier prediction: {unmatched} (counted, not scored). The expected rate is "
        "the mean predicted risk of the contacted clients whose outcome is known; it equals the hit rate when the "
        "risks are calibrated."
    )
    for item in (i for line in backtests for i in line.get("lists", [])):
        for note in item.get("notes", []):
            page.paragraph(f"{item['list']}: {note}.")


def _calibration_section(page: Page, last: dict[str, Any] | None) -> None:
    if last is None:
        return
    page.heading(f"Calibration of the last period ({last['list']}, {last['version']})")
    bins = last.get("calibration") or []
    if not bins:
        page.paragraph("Too few labelled rows for a calibration by risk bins.")
        return
    ax = page.axes(2.4)[0]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([b["mean_risk"] for b in bins], [b["realised_rate"] for b in bins], marker="o", label="risk bins")
    ax.set(
        title="Mean predicted risk against realised rate",
        xlabel="Mean predicted risk",
        ylabel="Realised rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    page.table(
        ["Bin (lowest risk first)", "Rows", "Mean predicted risk", "Realised rate"],
        [[b["bin"], b["rows"], fmt(b["mean_risk"]), fmt(b["realised_rate"])] for b in bins],
        [1.6, 0.8, 1.6, 1.4],
    )


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _minute(text: str) -> str:
    """``2026-12-07T15:24:12+00:00`` as ``2026-12-07 15:24``: the table's column stays narrow."""
    return text[:16].replace("T", " ")


def _rate(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
