"""The pages and figures of the model report: what each page of ``model_report.pdf`` shows, and
the confusion matrix PNG, drawn from the facts reporting.py gathered (``Evidence``).

Each page is a function of the document and the evidence; ``PAGES`` lists them in order.
The page machinery (A4 pages, text, tables that continue) is layout.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics

from risk.core.files import atomic_path
from risk.core.settings import METRICS, metric_gain
from risk.monitoring.diagnostics import GIVEN_BATCH, TEST_DATA
from risk.report import card as report_card
from risk.report.layout import BODY, SMALL, Document, Page, fmt, long_table, p_value, pyplot

FIRST_PAGE_WARNINGS = 12
METRIC_NAMES = {"cost": "cost per client"}  # lower is better: the Change column says "better" or "worse"
SIGN_OFF_ROOM = 0.5  # inches for the sign-off's heading, beside its lines: it is never split over two sheets
PNG_SIZE = (6.0, 5.0)
PNG_DPI = 150
BAND_FILLS = {"stable": "#d4edda", "moderate": "#ffe8a1", "significant": "#f5c2c0", None: "#eeeeee"}
STATUS_FILLS = {
    "outdated": "#ffe8a1",
    "up to date": "#d4edda",
    "installed differs from pin": "#f5c2c0",
    "not installed": "#f5c2c0",
}


@dataclass
class Evidence:
    """What the report states (``summary``, the JSON) and the per-row arrays its figures plot."""

    summary: dict[str, Any]
    y: np.ndarray
    risk: np.ndarray


# --- figures --------------------------------------------------------------------------------


def draw_confusion_matrix(ax: Any, confusion: dict[str, int], labels: dict[str, str], title: str) -> None:
    """Counts and shares in each cell, actual classes down, predicted across."""
    matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    total = max(int(matrix.sum()), 1)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    names = [["true negative", "false positive"], ["false negative", "true positive"]]
    for i in range(2):
        for j in range(2):
            dark = matrix[i, j] > 0.6 * matrix.max()
            ax.text(
                j,
                i,
                f"{matrix[i, j]:,}\n{matrix[i, j] / total:.1%}\n{names[i][j]}",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if dark else "black",
            )
    ticks = [labels["negative"], labels["positive"]]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks, rotation=90, va="center")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Actual class")
    ax.set_title(title)


def save_confusion_png(path: Path, evidence: Evidence) -> None:
    plt = pyplot()
    summary = evidence.summary
    figure, ax = plt.subplots(figsize=PNG_SIZE)
    title = (
        f"Confusion matrix: {summary['version']} on the test data\n"
        f"{summary['metrics']['rows']:,} rows, threshold {summary['lineage']['threshold']:.2f}"
    )
    draw_confusion_matrix(ax, summary["metrics"]["confusion"], summary["class_labels"], title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=PNG_DPI)
    plt.close(figure)


def _roc_and_pr(axes: list[Any], evidence: Evidence) -> None:
    y, risk, summary = evidence.y, evidence.risk, evidence.summary
    scores = summary["metrics"]
    roc_ax, pr_ax = axes
    if summary["curves"]["roc_auc"] is not None:  # both classes in the test data
        fpr, tpr, _ = metrics.roc_curve(y, risk)
        roc_ax.plot(fpr, tpr, label=f"model (AUC {scores['roc_auc']:.3f})")
        precision, recall, _ = metrics.precision_recall_curve(y, risk)
        pr_ax.plot(recall, precision, label=f"model (AP {scores['average_precision']:.3f})")
    confusion = scores["confusion"]
    negatives = confusion["tn"] + confusion["fp"]
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    roc_ax.scatter(
        [confusion["fp"] / negatives if negatives else 0],
        [scores["recall"]],
        color="red",
        zorder=3,
        label="at the threshold",
    )
    roc_ax.set(
        title="ROC curve",
        xlabel="False positive rate",
        ylabel="True positive rate (recall)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    prevalence = scores["positives"] / scores["rows"] if scores["rows"] else 0
    pr_ax.axhline(prevalence, linestyle="--", color="grey", label=f"base rate {prevalence:.2f}")
    pr_ax.scatter([scores["recall"]], [scores["precision"]], color="red", zorder=3, label="at the threshold")
    pr_ax.set(title="Precision-recall curve", xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01))
    for ax in axes:
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize=8)
        ax.grid(alpha=0.3)


def _calibration_plot(ax: Any, calibration: dict[str, Any]) -> None:
    bins = calibration["bins"]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(
        [b["mean_risk"] for b in bins], [b["observed_share"] for b in bins], marker="o", label="model (deciles of risk)"
    )
    ax.set(
        title="Calibration curve",
        xlabel="Mean predicted risk in the bin",
        ylabel="Observed share of positives",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.set_aspect("equal")  # the diagonal at 45 degrees, so distances from it read true
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _score_histogram(ax: Any, evidence: Evidence) -> None:
    labels, threshold = evidence.summary["class_labels"], evidence.summary["score_distribution"]["threshold"]
    edges = np.linspace(0, 1, 41)
    for value, name, colour in ((0, labels["negative"], "tab:blue"), (1, labels["positive"], "tab:red")):
        ax.hist(  # one filled outline per class, not a bar per bin: the same area, drawn and measured at once
            evidence.risk[evidence.y == value],
            bins=edges,
            histtype="stepfilled",
            alpha=0.55,
            color=colour,
            label=f"actual {name} ({int((evidence.y == value).sum()):,})",
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set(title="Predicted risk by actual class (test data)", xlabel="Predicted risk", ylabel="Rows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _importance_plot(ax: Any, importance: dict[str, Any]) -> None:
    rows = list(reversed(importance["features"]))
    ax.barh(
        [r["feature"] for r in rows],
        [r["mean"] for r in rows],
        xerr=[r["std"] for r in rows],
        color="tab:blue",
        capsize=3,
    )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(
        title=f"Permutation feature importance ({importance['repeats']} repeats, {importance['rows']:,} test rows)",
        xlabel=f"Drop in {importance['scoring']} when the feature is shuffled",
        ylabel="Feature",
    )
    ax.grid(axis="x", alpha=0.3)


def _missing_plot(ax: Any, missing: dict[str, Any]) -> None:
    columns = list(missing["columns"])
    shares = [missing["columns"][c]["share"] or 0.0 for c in columns]
    ax.barh(columns[::-1], shares[::-1], color="tab:orange")
    for index, share in enumerate(shares[::-1]):
        ax.text(share, index, f" {share:.1%}", va="center", fontsize=8)
    ax.set(
        title=f"Missing values in the master dataset ({missing['rows']:,} rows)",
        xlabel="Share of rows missing",
        ylabel="Column",
        xlim=(0, max(max(shares, default=0) * 1.25, 0.05)),
    )
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    ax.grid(axis="x", alpha=0.3)


def _psi_plot(ax: Any, drift_facts: dict[str, Any]) -> None:
    rows = [r for r in drift_facts["features"] if r["psi"] is not None]
    if drift_facts["prediction_psi"] and drift_facts["prediction_psi"]["psi"] is not None:
        rows.append({**drift_facts["prediction_psi"], "feature": "predicted risk"})
    bands = drift_facts["bands"]
    top = max([r["psi"] for r in rows] + [bands["significant_above"] * 1.4]) * 1.1
    ax.axvspan(0, bands["stable_below"], color=BAND_FILLS["stable"], label="stable (< 0.10)")
    ax.axvspan(
        bands["stable_below"], bands["significant_above"], color=BAND_FILLS["moderate"], label="moderate (0.10-0.25)"
    )
    ax.axvspan(bands["significant_above"], top, color=BAND_FILLS["significant"], label="significant (> 0.25)")
    names = [r["feature"] for r in rows][::-1]
    ax.barh(names, [r["psi"] for r in rows][::-1], color="#333333", height=0.5)
    ax.set(title=f"Population Stability Index: {drift_facts['title']}", xlabel="PSI", ylabel="Feature", xlim=(0, top))
    ax.legend(loc="lower right", fontsize=7)


# --- pages ------------------------------------------------------------------------------------


def _cover_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    page = document.page(f"Model report: version {s['version']}")
    page.key_values(_cover_facts(s))
    _deploying_run_section(page, s["deployment"], s.get("approval") or {})
    _model_checks_section(page, s)
    _champion_challenger_section(page, s)
    _cover_performance_section(page, s)
    _cover_warnings_section(page, s["warnings"])
    lines = sign_off_lines(s.get("approval") or {}, s["version"])
    page.need(SIGN_OFF_ROOM + sum(page.text_height(line) for line in lines))  # the sign-off is kept whole
    page.heading("Validator sign-off")
    for line in lines:
        page.paragraph(line, size=BODY)
    page.close()


def _cover_facts(s: dict[str, Any]) -> list[tuple[str, Any]]:
    """The version at a glance: status, model, when and why it was deployed, when trained."""
    lineage, deployed = s["lineage"], s["deployment"]
    return [
        ("Version", s["version"]),
        (
            "Status",
            s["status"]
            + (
                "; AWAITING APPROVAL: not served until approved"
                if (s.get("approval") or {}).get("state") == "pending"
                else ""
            ),
        ),
        (
            "Model",
            f"{lineage['model']}, decision threshold {lineage['threshold']:.2f}, chosen on {lineage['metric']}",
        ),
        ("Deployed at", f"{deployed['deployed_at']} (UTC)"),
        ("Deployed because", deployed["reason"]),
        ("Previous version", deployed["previous_version"] or "none"),
        ("Trained at", f"{lineage['trained_at']} on {lineage['training_rows']:,} rows"),
    ]


def _deploying_run_section(page: Page, deployed: dict[str, Any], approval: dict[str, Any]) -> None:
    """The audit line of the run that deployed the version, else its last ingestion record."""
    audit, last = deployed["audit"], deployed["last_ingestion"]
    page.heading("The run that deployed it" if audit else "The last ingestion before the deployment")
    if audit:
        page.key_values(
            [
                ("Run started", audit["started_at"]),
                ("Files ingested", ", ".join(audit["files_ingested"] or []) or "none"),
                ("Rows added", audit["rows_added"]),
                ("Score on new rows", _new_rows_score(audit)),
                ("Decision", f"{audit['decision']}: {audit['reason']}{decided_since(approval)}"),
            ]
        )
    elif last:
        page.key_values(
            [
                ("Ingested at", last["ingested_at"]),
                ("Files ingested", ", ".join(last["files_ingested"]) or "none"),
                ("Files set aside", ", ".join(last["files_set_aside"]) or "none"),
                ("Rows added", last["rows_added"]),
            ]
        )
        page.paragraph(
            "From the version's ingestion record: the audit log's line for the deploying run is written when "
            "the run ends, after this report.",
            size=SMALL,
        )
    else:
        page.paragraph("No ingestion is recorded for this version.")


def _new_rows_score(audit: dict[str, Any]) -> str:
    """The new rows' score beside the deployed version's, with the same decimals."""
    new, deployed = same_decimals([audit["new_score"], audit["deployed_score"]])
    return f"{new} (deployed {audit['deployed_version'] or 'none'}: {deployed})"


def decided_since(approval: dict[str, Any]) -> str:
    """What a person decided after the run: the run's own words above stay as it recorded them."""
    state = approval.get("state")
    if state in ("approved", "rejected"):
        return f". Since then {state} by {approval.get('by')} at {approval.get('at')} (UTC)"
    if state == "superseded":
        return f". Since then superseded at {approval.get('at')} (UTC): a newer version came before a decision"
    return ""


def _cover_performance_section(page: Page, s: dict[str, Any]) -> None:
    """Each metric on the test data beside the previous version's on the same rows, and what the rows were."""
    page.heading("Performance on the test data")
    previous = s["previous_metrics"]
    compared = previous if previous and previous.get("same_test_rows") else None
    chosen = s["lineage"]["metric"]
    rows = [
        [
            METRIC_NAMES.get(name, name) + (" (chosen on)" if name == chosen else ""),
            figure(s["metrics"].get(name)),
            figure(compared.get(name)) if compared else "not compared",
            _change(s["metrics"].get(name), compared.get(name) if compared else None, name),
        ]
        for name in performance_metrics(s["metrics"], chosen)
    ]
    if previous:
        page.table(["Metric", s["version"], previous["version"], "Change"], rows, [2.6, 1.2, 1.4, 1.6])
    else:  # a first version: nothing to compare with
        page.table(["Metric", s["version"]], [row[:2] for row in rows], [2.6, 1.2])
    if compared:
        rows_note = (
            f" {previous['version']} is scored again on these same rows: the Change column compares like with like."
        )
    elif previous:
        rows_note = f" No comparison with {previous['version']}: {previous.get('note')}."
    else:
        rows_note = ""
    page.paragraph(
        f"{s['test_data']['rows']:,} test rows, {s['test_data']['positives']:,} positive ({s['class_labels']['positive']}). "
        f"Metrics match the version's scores.json: {fmt(s['metrics_match_stored_scores'])}.{rows_note}",
        size=SMALL,
    )


def performance_metrics(scores: dict[str, Any], chosen: str | None) -> list[str]:
    """The metrics page 1 lists: the one the version was chosen on first, then every other it has (cost included)."""
    names = [name for name in METRICS if name in scores]
    return ([chosen] if chosen in names else []) + [name for name in names if name != chosen]


def same_decimals(values: list[Any]) -> list[str]:
    """Figures that sit together (a row, a list of costs) with the same decimals: 0.7840 beside 1.0800, not 1.08."""
    numbers = [abs(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    largest = max(numbers, default=0)
    decimals = 4 if largest < 10 else 2 if largest < 1000 else 0
    return [
        f"{float(v):,.{decimals}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else fmt(v)
        for v in values
    ]


def figure(value: Any, decimals: int = 4) -> str:
    """A score as page tables show it: the same decimals in every row."""
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.{decimals}f}"
    return fmt(value)


def _cover_warnings_section(page: Page, warnings: list[str]) -> None:
    """Every warning up to FIRST_PAGE_WARNINGS, continuing on the next sheet when page 1 is full, then how many more.

    Never a count with nothing listed: a reader must see at least the warnings the heading announces.
    """
    page.heading(f"Warnings ({len(warnings)})")
    if not warnings:
        page.paragraph("None.", size=SMALL)
        return
    page.bullets(warnings[:FIRST_PAGE_WARNINGS], size=SMALL, color="#9c2a00")
    if len(warnings) > FIRST_PAGE_WARNINGS:
        page.paragraph(f"… and {len(warnings) - FIRST_PAGE_WARNINGS} more in model_report.json", size=SMALL)


def sign_off_lines(approval: dict[str, Any], version: str = "vN") -> list[str]:
    """The sign-off box: the recorded decision (deployment.py --approve / --reject), else lines to fill by hand."""
    state = approval.get("state")
    if state in ("approved", "rejected", "superseded"):
        who = "the system (a newer version came first)" if state == "superseded" else approval.get("by")
        return [
            f"{state.capitalize()} by {who} at {approval.get('at')} (UTC), recorded in the deployment history",
            f"Comments: {approval.get('note') or 'none'}",
        ]
    if state == "pending":
        return [
            f"Awaiting approval: not served until a person approves it (python deployment.py --approve {version} --by NAME)",
            "Approved / rejected: ____________    Name: ______________________    Date: ____________",
        ]
    return [
        "Approved / rejected: ____________    Name: ______________________    Date: ____________",
        "Comments: ___________________________________________________________________________",
    ]


def _champion_challenger_section(page: Page, s: dict[str, Any]) -> None:
    """Champion (the version deployed before) against this version as challenger, with the intervals."""
    found = s.get("champion_challenger")
    if not found:
        return
    page.heading("Champion and challenger (same test data, paired bootstrap)")
    rows = []
    for name in dict.fromkeys([found["metric"], "roc_auc"]):
        if found.get(name):
            f = found[name]
            low, high = f["interval"]
            interval = f"{low:+.4f} to {high:+.4f}" if low is not None and high is not None else "undefined"
            rows.append(
                (
                    f"{name}: {found['champion']} / {s['version']}",
                    f"{fmt(f['champion_score'])} / {fmt(f['challenger_score'])}, "
                    f"gain {'n/a' if f['gain'] is None else format(f['gain'], '+.4f')}, "
                    f"{f['confidence']:.0%} CI {interval} ({f['resamples']} resamples)",
                )
            )
    rows.append(
        (
            "Decision",
            f"{found.get('decision', '?')} (promotion_margin {found['margin']:+g})"
            f"{decided_since(s.get('approval') or {})}",
        )
    )
    page.key_values(rows, key_width=2.4, size=SMALL)


def _model_checks_section(page: Page, s: dict[str, Any]) -> None:
    """Whether the model beats chance and whether its test data is held out, in plain words."""
    checks = s["model_checks"]
    page.heading("Model checks")
    if checks["uninformative"] is None:
        informative = "not checked (this version was trained before the check existed)"
    elif checks["uninformative"]:
        informative = 'NO: the model is no better than chance (no candidate beat chance and the rule "flag everyone")'
    else:
        informative = 'yes: it beats chance and the rule "flag everyone" out of fold'
    page.key_values(
        [
            ("Better than chance", informative),
            ("Test data held out", held_out_sentence(s["test_data"]["rows"], checks)),
        ],
        size=SMALL,
    )


def held_out_sentence(rows: int, checks: dict[str, Any]) -> str:
    """Whether the test rows are unseen by the model, as far as scoring counted them."""
    found, share = checks["test_rows_in_training"], checks["test_rows_in_training_share"]
    if found is None:
        return "not checked (this version was scored before the check existed)"
    if found == 0:
        return f"yes: none of the {rows:,} test rows is in the training data"
    share_text = f" ({share:.1%})" if share is not None else ""
    return f"NO: {found:,} of the {rows:,} test rows{share_text} are also in the training data, so the test figures overstate the model"


def _change(current: float | None, previous: float | None, metric: str = "") -> str:
    """The difference, and whether it is better: a lower cost is."""
    if current is None or previous is None:
        return "n/a"
    gain = metric_gain(metric, current, previous)
    verdict = "better" if gain > 0 else "worse" if gain < 0 else "same"
    return f"{current - previous:+.4f} ({verdict})"


def _lineage_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    lineage = s["lineage"]
    page = document.page("Lineage: data, training and environment")
    page.key_values(
        [
            ("Training rows", f"{lineage['training_rows']:,} ({lineage['training_positives']:,} positive)"),
            ("Training time", f"{lineage['training_seconds']} s, finished {lineage['trained_at']}"),
            ("Cross-validation", cross_validation_text(lineage)),
            ("Numeric features", ", ".join(lineage["features"]["numeric"]) or "none"),
            ("Categorical features", ", ".join(lineage["features"]["categorical"]) or "none"),
            ("Python", lineage["python_version"]),
            ("Packages", ", ".join(f"{k} {v}" for k, v in sorted(lineage["package_versions"].items()))),
        ]
    )
    hashes = [
        ["master dataset (finaldata.csv)", lineage["training_data_sha256"]],
        [f"model ({lineage.get('model_file') or 'file'})", lineage["model_sha256"]],
    ]
    page.table(["Artefact", "SHA-256"], hashes, [2.2, 4.85], mono_columns=(1,))
    page.heading("Training data files")
    files = [[f["name"], f["sha256"], f["rows_added"]] for f in lineage["training_files"]]
    page = long_table(
        document, page, "Lineage", ["File", "SHA-256", "Rows added"], files, [1.65, 4.5, 0.9], mono_columns=(1,)
    )
    page.heading("Candidate models (cross-validated)")
    selection = lineage.get("selection") or {}
    candidates = [
        [
            name,
            figure(c["mean"]),
            figure(c["std"]),
            gap_error_text(name, selection),
            f"{c['threshold']:.2f}",
            serving_text(c.get("serving_us_per_row")),
            "chosen" if name == lineage["model"] else "",
        ]
        for name, c in by_complexity(lineage["candidates"], selection)
    ]
    page = long_table(
        document,
        page,
        "Lineage",
        ["Model", f"CV {lineage['metric']} mean", "std", "gap SE", "threshold", "serving µs", ""],
        candidates,
        [1.9, 1.0, 0.7, 0.9, 0.8, 0.8, 0.7],
    )
    page.paragraph(f"Why {lineage['model']}: {choice_text(selection)}.", size=SMALL)
    page.paragraph(serving_note(lineage.get("serving_measurement")), size=SMALL)
    page.heading(f"Parameters of the chosen model ({lineage['model']})")
    # Two parameters a row: a model has a score of them, and they are short.
    items = [[name, parameter_text(value)] for name, value in lineage["parameters"].items()]
    half = (len(items) + 1) // 2
    parameters = [left + right for left, right in zip(items[:half], items[half:] + [["", ""]])]
    page = long_table(
        document, page, "Lineage", ["Parameter", "Value", "Parameter", "Value"], parameters, [1.8, 1.7, 1.8, 1.7]
    )
    page.close()


def parameter_text(value: Any) -> str:
    """A parameter value as a person reads it: floats to four significant digits (0.2667), text quoted."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(parameter_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {parameter_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def by_complexity(candidates: dict[str, Any], selection: dict[str, Any]) -> list[tuple[str, Any]]:
    """The candidates simplest first, as the one-standard-error rule reads them (as stored where not recorded)."""
    complexity = selection.get("complexity") or {}
    order = list(candidates)
    return sorted(candidates.items(), key=lambda item: (complexity.get(item[0], 0), order.index(item[0])))


def gap_error_text(name: str, selection: dict[str, Any]) -> str:
    """The standard error the one-standard-error rule compared ``name``'s gap to the best with."""
    if name == selection.get("best_on_metric"):
        return "best"
    error = (selection.get("standard_errors") or {}).get(name)
    return "n/a" if error is None else figure(error)


def serving_text(microseconds: float | None) -> str:
    return "n/a" if microseconds is None else f"{microseconds:,.0f}"


def cross_validation_text(lineage: dict[str, Any]) -> str:
    """The folds, and the rows the candidates were chosen on (a sample of them above selection_sample_rows)."""
    folds = f"{lineage['cv_folds']} stratified folds, seed {lineage['random_seed']}"
    rows, total = lineage.get("selection_rows"), lineage["training_rows"]
    if rows is None or rows >= total:  # before selection_sample_rows every choice was made on every row
        return f"{folds}; the candidates were compared on all {total:,} training rows"
    return (
        f"{folds}; the candidates were compared, and the threshold tuned, on a seeded stratified sample of "
        f"{rows:,} of the {total:,} training rows; only the chosen model was refitted on all of them"
    )


def serving_note(measurement: str | None) -> str:
    """What the candidate table's serving column is, as training recorded it."""
    if not measurement:
        return "Serving µs: not measured (trained before serving costs were recorded)."
    return (
        f"Serving µs: {measurement}. A comparison of the candidates, beside whatever else ran then: it does not say "
        "how fast another host serves. Gap SE: the standard error of the paired fold differences between the "
        "candidate and the best one, as the one-standard-error rule used it (n/a: not considered, or not recorded)."
    )


def choice_text(selection: dict[str, Any] | None) -> str:
    """Why training chose the model, as trainedmodel.json recorded it (older versions: the rule only)."""
    if not selection:
        return "not recorded (trained before the choice was recorded)"
    return selection.get("reason") or f"chosen by the rule {selection.get('rule')} (the reason itself was not recorded)"


def _performance_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    page = document.page("Performance on the test data")
    page.paragraph(
        f"{performance_sentence(s)} The red dot marks the decision threshold {s['lineage']['threshold']:.2f}. "
        f"The confusion matrix and the scores use every test row; the two curves are drawn {s['sample']['words']}.",
        size=SMALL,
    )
    [matrix] = page.axes(3.6)  # imshow keeps the matrix square, centred in the area
    draw_confusion_matrix(matrix, s["metrics"]["confusion"], s["class_labels"], "Confusion matrix")
    _roc_and_pr(page.axes(3.0, count=2), evidence)
    page.close()


def performance_sentence(s: dict[str, Any]) -> str:
    """What the test rows are, said truly: held out, partly seen in training, or not known."""
    rows, checks = s["test_data"]["rows"], s["model_checks"]
    files = ", ".join(f["name"] for f in s["test_data"]["files"])
    found, share = checks["test_rows_in_training"], checks["test_rows_in_training_share"]
    if not s["metrics_match_stored_scores"]:
        return (
            f"The deployed model scores {rows:,} labelled rows ({files}); the test data has changed since the version "
            "was scored, so whether the model was trained on any of them is not known."
        )
    if found is None:
        return (
            f"The deployed model scores {rows:,} labelled rows ({files}); whether any of them is in its training "
            "data was not checked for this version."
        )
    if found == 0:
        return f"The deployed model scores {rows:,} labelled rows it was never trained on ({files})."
    share_text = f" ({share:.1%})" if share is not None else ""
    return (
        f"The deployed model scores {rows:,} labelled rows ({files}), but {found:,} of them{share_text} are also in "
        "its training data: the figures below overstate how it does on clients it has not seen."
    )


def _calibration_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    page = document.page("Calibration and risk scores")
    curves, dist = s["curves"], s["score_distribution"]
    page.paragraph(
        f"Brier score {fmt(curves['brier_score'])} (lower is better). Points above the diagonal: the model "
        f"underestimates the risk there; below: it overestimates it. The curve and the histogram are "
        f"{s['sample']['words']}; the Brier score and the table use every test row.",
        size=SMALL,
    )
    [ax] = page.axes(3.5)
    _calibration_plot(ax, s["calibration"])
    [ax] = page.axes(3.3)
    _score_histogram(ax, evidence)
    rows = [
        [
            s["class_labels"][name],
            d["rows"],
            figure(d["mean_risk"]),
            figure(d["median_risk"]),
            figure(d["share_at_or_above_threshold"]),
        ]
        for name, d in (("positive", dist["positive"]), ("negative", dist["negative"]))
    ]
    page.table(["Actual class", "Rows", "Mean risk", "Median risk", "Share flagged"], rows, [2.0, 1.1, 1.3, 1.3, 1.3])
    page.close()


def _importance_page(document: Document, evidence: Evidence) -> None:
    importance = evidence.summary["permutation_importance"]
    page = document.page("Permutation feature importance")
    page.paragraph(
        f"Measured {evidence.summary['sample']['words']}. "
        f"Each feature's values are shuffled across those rows, breaking its link to the outcome; the bar is "
        f"the mean drop in {importance['scoring']} over {importance['repeats']} shuffles, the whisker one standard "
        f"deviation. A feature near zero does not help the model on this data.",
        size=SMALL,
    )
    if not importance["features"]:
        page.paragraph(importance.get("note", "not computed"))
        page.close()
        return
    [ax] = page.axes(min(0.45 * len(importance["features"]) + 1.0, 6.5), left=1.9)
    _importance_plot(ax, importance)
    rows = [[r["feature"], figure(r["mean"]), figure(r["std"])] for r in importance["features"]]
    page = long_table(
        document, page, "Permutation feature importance", ["Feature", "Mean drop", "Std"], rows, [3.0, 1.5, 1.5]
    )
    page.close()


def _data_page(document: Document, evidence: Evidence) -> None:
    data = evidence.summary["data"]
    summary, missing = data["summary_statistics"], data["missing_data"]
    title = "Data: summary and missing values"
    page = document.page(title)
    page.paragraph(
        f"The master dataset, {summary['rows']:,} rows, as diagnostics.json states it "
        f"({evidence.summary['diagnostics']['generated_at']}).",
        size=SMALL,
    )
    page.heading("Numeric columns")
    rows = [
        [name, st["count"], *same_decimals([st["mean"], st["median"], st["std"], st["min"], st["max"]])]
        for name, st in summary["numeric"].items()
    ]
    page = long_table(
        document,
        page,
        title,
        ["Column", "Count", "Mean", "Median", "Std", "Min", "Max"],
        rows,
        [2.2, 0.8, 0.85, 0.8, 0.85, 0.7, 0.85],
    )
    if summary["categorical"]:
        page.heading("Categorical columns (most frequent levels)")
        levels = [
            [name, level, count] for name, st in summary["categorical"].items() for level, count in st["levels"].items()
        ]
        page = long_table(document, page, title, ["Column", "Level", "Rows"], levels, [2.4, 3.0, 1.2])
    if summary["identifiers"]:
        page.heading("Identifier columns (not used as features)")
        ids = [[name, st["count"], st["unique"]] for name, st in summary["identifiers"].items()]
        page = long_table(document, page, title, ["Column", "Values", "Distinct"], ids, [2.4, 1.5, 1.5])
    page.need(0.35 * len(missing["columns"]) + 1.4)
    [ax] = page.axes(min(0.3 * len(missing["columns"]) + 0.5, 7.0), left=1.9)
    _missing_plot(ax, missing)
    page.close()


def _drift_page(document: Document, evidence: Evidence) -> None:
    drift_facts = evidence.summary["drift"]
    subject = {TEST_DATA: "the test data", GIVEN_BATCH: "a given batch"}.get(
        drift_facts["comparison"], "the newest batch"
    )
    title = f"Data drift of {subject}"
    page = document.page(title)
    page.key_values(_drift_sources(drift_facts), key_width=1.8, size=SMALL)
    page.paragraph(
        "PSI on the reference's deciles (categories as bins, missing values as a bin): below 0.10 stable, 0.10-0.25 "
        "moderate, above 0.25 significant. Tests: Kolmogorov-Smirnov (KS) on present values, chi-squared on levels, and "
        "chi-squared on the missing share of numeric features. Flagged: PSI of 0.10 or more and a test's p-value below "
        "0.05. Noise: the PSI sampling alone would give.",
        size=SMALL,
    )
    entries = drift_facts["features"] + (
        [{**drift_facts["prediction_psi"], "feature": "predicted risk"}] if drift_facts["prediction_psi"] else []
    )
    rows, fills = _drift_table_rows(entries)
    headers = ["Feature", "PSI", "Band", "Test", "p-value", "Missing ref → batch", "p missing", "Noise", "Flagged"]
    page = long_table(
        document, page, title, headers, rows, [1.75, 0.6, 0.85, 0.45, 0.7, 1.2, 0.7, 0.5, 0.55], fills=fills, size=7.5
    )
    if rows:
        page.need(0.3 * len(rows) + 1.6)
        [ax] = page.axes(min(0.3 * len(rows) + 0.8, 6.0), left=1.9)
        _psi_plot(ax, drift_facts)
    notes = drift_facts["warnings"] + [f"{r['feature']}: {note}" for r in entries for note in r.get("notes", [])]
    if notes:
        page.heading("Notes")
        page.bullets(notes, size=SMALL)  # every note, continued on the next page where they are many
    page.close()


def _drift_table_rows(entries: list[dict[str, Any]]) -> tuple[list[list[Any]], list[list[str | None]]]:
    """The drift table's row of each feature (and of the predicted risk), with its cell fills."""
    rows, fills = [], []
    for r in entries:
        test = {"kolmogorov-smirnov": "KS", "chi-squared": "chi²"}.get(r["test"], r["test"])
        missing = f"{figure(r['reference_missing_share'], 2)} → {figure(r['batch_missing_share'], 2)}"
        rows.append(
            [
                r["feature"],
                figure(r["psi"]),
                r["band"] or "n/a",
                test,
                p_value(r["p_value"]),
                missing,
                p_value(r["missing_p_value"]),
                figure(r["noise_floor"]),
                "YES" if r["drifted"] else "no",
            ]
        )
        fills.append(
            [
                None,
                None,
                BAND_FILLS[r["band"]],
                None,
                None,
                None,
                None,
                None,
                BAND_FILLS["significant"] if r["drifted"] else None,
            ]
        )
    return rows, fills


def _drift_sources(drift_facts: dict[str, Any]) -> list[tuple[str, str]]:
    """What was compared with what, and why that reference: the lines above the drift table."""
    reference, batch = drift_facts["reference"], drift_facts["batch"]
    version = reference["version"]
    rows = "n/a" if reference["rows"] is None else f"{reference['rows']:,} rows"
    pairs = [
        ("Compared", drift_facts["title"][0].upper() + drift_facts["title"][1:]),
        ("Reference", f"training data of {version}: {rows} ({reference['file']})"),
    ]
    if batch is None:
        return pairs + [("Newest batch", "none yet")]
    files = ", ".join(batch["files"]) or batch["source"]
    ingested = f", ingested {batch['ingested_at']}" if batch.get("ingested_at") else ""
    if drift_facts["comparison"] == TEST_DATA:
        newest = batch.get("newest_batch") or {}
        pairs += [
            ("Test data", f"{batch['rows']:,} rows ({files})"),
            (
                "Why the test data",
                f"no version was current when the newest batch ({', '.join(newest.get('files', [])) or 'n/a'}) "
                f"arrived: it is the first data ingested, part of {version}'s training data, so it cannot show drift",
            ),
            ("Overlap", overlap_sentence(batch, "test data")),
        ]
    elif drift_facts["comparison"] == GIVEN_BATCH:
        pairs += [
            ("Batch", f"the batch given, {batch['rows']:,} rows"),
            ("Overlap", overlap_sentence(batch, "batch")),
        ]
    else:
        on_arrival = batch.get("current_on_arrival")
        why = (
            f"{on_arrival} was current when the batch arrived: the batch is measured against the data the model then "
            "serving was trained on"
            if on_arrival
            else "the ingestion record does not say which version was current when the batch arrived"
        )
        pairs += [
            ("Newest batch", f"{batch['rows']:,} rows from {files}{ingested}"),
            ("Why this reference", why),
            ("Overlap", overlap_sentence(batch, "batch")),
        ]
    pairs.append(("Predicted risk by", f"the model of {drift_facts['model_version']}"))
    return pairs


def overlap_sentence(batch: dict[str, Any], what: str) -> str:
    """How many of the compared rows are also in the reference, as a sentence (they hide drift)."""
    found, rows = batch.get("rows_in_reference"), batch.get("rows")
    if found is None:
        return f"whether rows of the {what} are also in the reference was not counted"
    if found == 0:
        return f"none of the {what}'s {rows:,} rows is in the reference: they are all new to it"
    return (
        f"{found:,} of the {what}'s {rows:,} rows are also in the reference; rows in both make the two look "
        "more alike than new data would"
    )


def _operations_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    title = "Operations: timings and packages"
    page = document.page(title)
    page.key_values(_timing_pairs(s["execution_time"]), key_width=1.5, size=SMALL)
    page.heading("Recent pipeline runs (audit log)")
    runs, fills = _recent_run_rows(s["execution_time"]["recent_runs"], s["version"])
    page = long_table(
        document,
        page,
        title,
        ["Started (UTC)", "Decision", "Ingestion s", "Training s", "Total s", "Deployed"],
        runs,
        [1.9, 1.3, 1.0, 1.0, 0.9, 0.9],
        fills=fills,
    )
    page.paragraph(
        f'Green: the run that deployed {s["version"]} ("running": the report was written during that run).', size=SMALL
    )
    page = _packages_section(document, page, title, s["outdated_packages"])
    page.close()


def _timing_pairs(timings: dict[str, Any]) -> list[tuple[str, str]]:
    """How long ingestion and training took in real runs, and on copies where they were measured."""
    pairs = [
        (
            "Ingestion",
            f"{fmt(timings['ingestion_seconds'])} s (last run with work, finished {timings['ingestion_finished_at'] or 'n/a'}: "
            f"{', '.join(timings['ingestion_files']) or 'no files'})",
        ),
        (
            "Training",
            f"{fmt(timings['training_seconds'])} s (training of {timings['training_version']}, finished {timings['training_finished_at']})",
        ),
    ]
    if timings.get("measured"):
        measured = timings["measured"]
        pairs.append(
            (
                "Measured on copies",
                f"ingestion {measured['ingestion_seconds']} s, training {measured['training_seconds']} s "
                f"({measured['rows']:,} rows, {measured['measured_at']})",
            )
        )
    return pairs


def _recent_run_rows(recent_runs: list[dict[str, Any]], version: str) -> tuple[list[list[Any]], list[list[str | None]]]:
    """The audit log's recent runs as table rows; the run that deployed ``version`` filled green."""
    runs, fills = [], []
    for r in recent_runs:
        deployed_it = r.get("deployed_this_version", r["version_deployed"] == version)
        total = "running" if r.get("in_progress") else r["duration_seconds"]
        runs.append(
            [
                r["started_at"],
                r["decision"],
                figure(r["ingestion_seconds"], 2),
                figure(r["training_seconds"], 2),
                figure(total, 2),
                f"{r['version_deployed']} (this)" if deployed_it else r["version_deployed"] or "",
            ]
        )
        fills.append([BAND_FILLS["stable"] if deployed_it else None] * 6)
    return runs, fills


def _packages_section(document: Document, page: Page, title: str, checked: dict[str, Any]) -> Page:
    """The pinned packages against the installed and latest releases; returns the page it ends on."""
    page.heading("Packages in requirements.txt")
    packages = checked["packages"]
    rows = [[p["name"], p["pinned"], p["installed"], p["latest"], p["status"]] for p in packages]
    fills = [[None, None, None, None, STATUS_FILLS.get(p["status"], "#eeeeee")] for p in packages]
    page = long_table(
        document,
        page,
        title,
        ["Package", "Pinned", "Installed", "Latest", "Status"],
        rows,
        [1.8, 1.1, 1.1, 1.1, 1.9],
        fills=fills,
    )
    page.paragraph(
        f"Latest: the newest release pip's configured package index offered, asked at {checked['checked_at']} "
        f"({len(checked['asked_index'])} asked, {len(checked['from_cache'])} from the cache of earlier answers); "
        '"unknown" where the index could not be reached in time.',
        size=SMALL,
    )
    return page


# --- governance pages: model card, business cost, fairness ----------------------------------------


def _model_card_page(document: Document, evidence: Evidence) -> None:
    """The model card (model_card.md) as the report's second page, continued on the next where it is longer."""
    card = evidence.summary["model_card"]
    page = document.page("Model card")
    for heading, items in report_card.card_sections(card):
        page.heading(heading)
        for label, text in items:
            if label:
                page.key_values([(label[0].upper() + label[1:], text)], key_width=1.8, size=SMALL)
            else:
                page.bullets([text], size=SMALL)
    page.close()


def _cost_page(document: Document, evidence: Evidence) -> None:
    """Expected cost per client against the threshold, with the chosen point; only with a cost matrix."""
    cost = evidence.summary["cost"]
    if cost is None:
        return
    matrix = cost["cost_matrix"]
    page = document.page("Business cost and the decision threshold")
    tuned = "tuned on this cost" if cost["metric"] == "cost" else f"tuned on {cost['metric']}, not on this cost"
    page.paragraph(
        f"Expected cost per client: a missed risky client costs {fmt(matrix['false_negative'])}, a false alarm "
        f"{fmt(matrix['false_positive'])}. The decision threshold {cost['threshold']:.2f} was {tuned}.",
        size=SMALL,
    )
    at_threshold, everyone, nobody = same_decimals(
        [cost["test_cost"], cost["flag_everyone_test_cost"], cost["flag_nobody_test_cost"]]
    )
    page.key_values(
        [
            ("Cost at the threshold", f"{at_threshold} per client on the test data"),
            ("Flag everyone", f"{everyone} per client"),
            ("Flag nobody", f"{nobody} per client"),
        ],
        size=SMALL,
    )
    [ax] = page.axes(4.2)
    thresholds = cost["thresholds"]
    ax.plot(thresholds, cost["test_curve"], color="tab:blue", label="test data")
    if cost["out_of_fold_curve"]:
        ax.plot(
            thresholds,
            cost["out_of_fold_curve"],
            color="tab:orange",
            linestyle="--",
            label="training, out of fold (tuned on)",
        )
    at = float(np.interp(cost["threshold"], thresholds, cost["test_curve"]))
    ax.plot(
        [cost["threshold"]],
        [cost["test_cost"] if cost["test_cost"] is not None else at],
        "o",
        color="red",
        markersize=8,
        label=f"chosen threshold {cost['threshold']:.2f}",
    )
    ax.set(
        title="Expected cost per client against the decision threshold",
        xlabel="Decision threshold (flag at or above)",
        ylabel="Expected cost per client",
        xlim=(0, 1),
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    page.paragraph(
        "Lower is better. The curve on the test data shows what another threshold would have cost on these rows; "
        "the threshold itself was chosen on the training data only.",
        size=SMALL,
    )
    page.close()


def _fairness_page(document: Document, evidence: Evidence) -> None:
    """Per protected attribute: the group table, the disparities, the four-fifths flag and the invariance check."""
    section = evidence.summary["fairness"]
    if not section["attributes"]:
        return
    title = "Fairness across protected groups"
    page = document.page(title)
    page.paragraph(
        " ".join(
            text
            for text in (
                f"On the {section['rows']:,} test rows.",
                section.get("selected_means"),
                section.get("direction"),
                section["note"],
            )
            if text
        ),
        size=SMALL,
    )
    for attribute, entry in section["attributes"].items():
        page.heading(f"{attribute}")
        if not entry.get("measurable"):
            page.paragraph(entry["note"], size=SMALL)
            continue
        used = "used by the model" if entry["used_by_model"] else "not used by the model (excluded from its features)"
        page.paragraph(f"Groups: {entry['binning']}; {used}.", size=SMALL)
        rows = [
            [
                group if r.get("judged", True) else f"{group} (not judged: too few rows)",
                r["rows"],
                figure(r["base_rate"]),
                figure(r["selection_rate"]),
                figure(r["true_positive_rate"]),
                figure(r["false_positive_rate"]),
                figure(r["roc_auc"]) if r["roc_auc"] is not None else "not measurable",
            ]
            for group, r in entry["groups"].items()
        ]
        page = long_table(
            document,
            page,
            title,
            ["Group", "Rows", "Base rate", "Selection rate", "TPR", "FPR", "ROC AUC"],
            rows,
            [1.45, 0.7, 0.9, 1.05, 0.9, 0.9, 1.15],
        )
        parity, opportunity, check = entry["demographic_parity"], entry["equal_opportunity"], entry["invariance"]
        page.key_values(
            [
                ("Demographic parity", _spread_text(parity, "selection rate")),
                ("Equal opportunity", _spread_text(opportunity, "true positive rate")),
                ("Four-fifths rule", entry["four_fifths"]["statement"]),
                ("Invariance", _invariance_text(check)),
            ],
            key_width=1.55,
            size=SMALL,
        )
    page.close()


def _spread_text(spread: dict[str, Any], basis: str) -> str:
    if spread["difference"] is None:
        return spread.get("note", "not measurable")
    ratio = "not measurable" if spread["ratio"] is None else f"{spread['ratio']:.3f}"
    return (
        f"{basis} ratio lowest/highest {ratio} ({spread['lowest_group']} / {spread['highest_group']}), "
        f"difference {spread['difference']:.3f}"
    )


def _invariance_text(check: dict[str, Any]) -> str:
    if not check.get("measurable"):
        return check["note"]
    return (
        f"with the attribute swapped to each other level, {check['share_of_rows_whose_decision_changes']:.1%} of rows "
        f"({check['rows_whose_decision_changes']:,}) change decision; largest change in risk {check['largest_risk_change']:.4f}"
    )


PAGES: tuple[Callable[[Document, Evidence], None], ...] = (
    _cover_page,
    _model_card_page,
    _lineage_page,
    _performance_page,
    _cost_page,
    _fairness_page,
    _calibration_page,
    _importance_page,
    _data_page,
    _drift_page,
    _operations_page,
)


def save_pdf(path: Path, evidence: Evidence) -> list[str]:
    """Write the model report; returns the title of every page, in order."""
    from matplotlib.backends.backend_pdf import PdfPages

    pyplot()
    version = evidence.summary["version"]
    with atomic_path(path) as tmp:
        with PdfPages(
            tmp, metadata={"Title": f"Model report {version}", "Subject": "Dynamic risk assessment system"}
        ) as pdf:
            document = Document(pdf, version, evidence.summary["generated_at"])
            for draw in PAGES:
                draw(document, evidence)
    return document.titles
