"""Write the reports of a deployed version: confusion matrix, full model report (PDF) and its JSON.

``python reporting.py [--config PATH] [--version vN] [--refresh-diagnostics]`` writes, into
``<reports>/<version>/``:

- ``confusionmatrix.png``: the version's model on the test data;
- ``model_report.pdf``: everything a validator needs to sign the version off, on A4 pages;
- ``model_report.json``: the figures the PDF states, to check against scoring and diagnostics;
- ``model_card.md``: the model card (modelcard.py), also the PDF's second page.

Every version keeps its own folder; a new deployment never touches an older one's. The data
sections restate ``diagnostics.json`` of the version, made first if it is absent.
"""
from __future__ import annotations

import json
import logging
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn import metrics

import deployment
import diagnostics
import drift
import fairness
import modelcard
import scoring
import ledger
import training
import records
from fsutil import atomic_path, atomic_write_json, atomic_write_text, configure_logging, read_json_lines, sha256_file
from settings import SCORE_METRICS, Config, ConfigError, load_config, script_parser
from records import CONFUSION_FILE, REPORT_JSON, REPORT_PDF

logger = logging.getLogger(__name__)

PERMUTATION_REPEATS = 10
FIRST_PAGE_WARNINGS = 12
SIGN_OFF_ROOM = 1.3  # inches kept below page 1's warnings for the sign-off and a "more" line
CALIBRATION_BINS = 10

# Page geometry, in inches: A4 portrait.
A4 = (8.27, 11.69)
MARGIN = 0.6
TOP = 1.05
BOTTOM = A4[1] - 0.7
CONTENT_WIDTH = A4[0] - 2 * MARGIN
PNG_SIZE = (6.0, 5.0)
PNG_DPI = 150
BODY = 9
SMALL = 8
BAND_FILLS = {"stable": "#d4edda", "moderate": "#ffe8a1", "significant": "#f5c2c0", None: "#eeeeee"}
STATUS_FILLS = {"outdated": "#ffe8a1", "up to date": "#d4edda", "installed differs from pin": "#f5c2c0", "not installed": "#f5c2c0"}


@dataclass
class Evidence:
    """What the report states (``summary``, the JSON) and the per-row arrays its figures plot."""

    summary: dict[str, Any]
    y: np.ndarray
    risk: np.ndarray


# --- gathering the facts ------------------------------------------------------------------------


def gather_evidence(
    config: Config, version: str | None = None, refresh_diagnostics: bool = False, run_record: dict[str, Any] | None = None
) -> Evidence:
    """Score ``version`` on the test data and collect everything the report states."""
    version = diagnostics.resolve_version(config, version)
    deployed = deployment.load_deployed_model(config, version)
    test = scoring.load_test_data(config)
    y = scoring.binary_target(test[config.target], config.positive_label)
    risk, predicted = diagnostics.risk_and_predictions(deployed, test)
    with drift.captured_warnings() as caught:  # e.g. precision undefined when nothing is flagged
        scores = scoring.classification_metrics(y, risk, predicted, config["cost_matrix"])
    for message in caught:
        logger.debug("metrics of %s on the test data: %s", version, message)
    found = None if refresh_diagnostics else diagnostics.load_diagnostics(config, version)
    diagnosed = found if found and found.get("version") == version else _fresh_diagnostics(config, version, run_record)
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    checks = model_checks(deployed)
    summary = {
        "version": version,
        "generated_at": generated_at,
        # True when the report was written: a later deployment or rollback does not change the PDF.
        "current": version == deployment.current_version(config),
        "status": _status_when_written(config, version, generated_at),
        "model_checks": checks,
        "deployment": _deployment_facts(config, deployed, run_record),
        "lineage": _lineage(deployed),
        "test_data": _test_data_facts(config, y),
        "metrics": scores,
        "stored_scores": deployed.scores,
        "metrics_match_stored_scores": _metrics_match(deployed.scores, scores),
        "previous_metrics": _previous_scores(config, deployed),
        "class_labels": _class_labels(config),
        "curves": _curve_facts(y, risk),
        "calibration": _calibration(y, risk),
        "score_distribution": _score_distribution(y, risk, deployed.metadata["threshold"]),
        "permutation_importance": _permutation_importance(config, deployed, test, y),
        "data": _data_facts(diagnosed),
        "drift": _drift_facts(diagnosed["data_drift"]),
        # Read again: diagnostics saved during the deploying run could not list that run.
        "execution_time": {**diagnosed["execution_time"], "recent_runs": diagnostics.recent_runs(config, version, run_record)},
        "outdated_packages": diagnosed["outdated_packages"],
        "diagnostics": {"file": diagnostics.display_path(config, diagnostics.diagnostics_path(config, version)), "generated_at": diagnosed["generated_at"]},
        "warnings": checks["warnings"] + list(diagnosed["warnings"]),
        "cost": _cost_facts(config, deployed, y, risk, scores),
        "fairness": _fairness_facts(config, deployed, test, y, risk, predicted),
        "champion_challenger": _champion_challenger(deployed),
        "approval": approval_facts(config, version),
    }
    if not summary["metrics_match_stored_scores"]:
        summary["warnings"].insert(0, f"the test data has changed since {version} was deployed: its metrics differ from scores.json")
    summary["model_card"] = modelcard.build_card(config, diagnostics.json_ready(summary), deployed.path, y, risk, predicted)
    return Evidence(diagnostics.json_ready(summary), y, risk)


def _metrics_match(stored: dict[str, Any], scores: dict[str, Any]) -> bool:
    """Whether the test data scores as it did when the version was scored.

    The cost is left out where the version was scored under another (or no) cost matrix:
    a changed config, not changed data.
    """
    same_costs = stored.get("cost_matrix") == scores.get("cost_matrix")
    return all(stored.get(k) == v for k, v in scores.items() if same_costs or k not in ("cost", "cost_matrix"))


def _cost_facts(config: Config, deployed: deployment.DeployedModel, y: np.ndarray, risk: np.ndarray, scores: dict[str, Any]) -> dict[str, Any] | None:
    """Expected cost per client against the threshold (out of fold and on the test data); None without a cost matrix."""
    costs = config["cost_matrix"]
    if costs is None:
        return None
    meta = deployed.metadata
    chosen = meta.get("candidates", {}).get(meta.get("model"), {})
    return {
        "cost_matrix": costs,
        "threshold": meta["threshold"],
        "metric": meta.get("metric"),
        "test_cost": scores.get("cost"),
        "flag_everyone_test_cost": scoring.expected_cost(y, np.ones(len(y), dtype=int), costs),
        "flag_nobody_test_cost": scoring.expected_cost(y, np.zeros(len(y), dtype=int), costs),
        "thresholds": training.THRESHOLD_GRID.tolist(),
        "test_curve": [float(v) for v in training.threshold_curve("cost", y, risk, costs)],
        # Trained with this cost matrix: the curve the threshold was tuned on. Older versions lack it.
        "out_of_fold_curve": (chosen.get("cost_curve") or {}).get("cost"),
        "out_of_fold_matrix_matches": chosen.get("cost_curve") is not None and meta.get("metric") == "cost",
    }


def _fairness_facts(
    config: Config, deployed: deployment.DeployedModel, test: pd.DataFrame, y: np.ndarray, risk: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    if not config["protected_attributes"]:
        return {"attributes": {}, "note": "no protected_attributes configured: nothing measured"}
    with diagnostics.single_threaded():
        return fairness.assess(config, deployed.model, deployed.metadata, test, y, risk, predicted)


def _champion_challenger(deployed: deployment.DeployedModel) -> dict[str, Any] | None:
    """The comparison with the champion that decided this version's deployment (None: there was no champion)."""
    decision = deployed.manifest.get("decision")
    return decision.get("champion_challenger") if isinstance(decision, dict) else None


def approval_facts(config: Config, version: str) -> dict[str, Any]:
    """Whether the version needed approval and who decided, when, with what note (the history's lines)."""
    state = deployment.approval_states(config).get(version, {})
    manifest = deployment.read_manifest(deployment.versions_folder(config) / version)
    return {
        "required": bool(manifest.get("pending_approval", False)),
        "state": state.get("state"),
        "by": state.get("by"),
        "at": state.get("at"),
        "note": state.get("note"),
    }


def _fresh_diagnostics(config: Config, version: str, run_record: dict[str, Any] | None = None) -> dict[str, Any]:
    path = diagnostics.save_diagnostics(config, version, run_record=run_record)
    return json.loads(path.read_text(encoding="utf-8"))


def model_checks(deployed: deployment.DeployedModel) -> dict[str, Any]:
    """What training and scoring found doubtful about the model, as the version recorded it.

    Read with defaults: versions trained before these checks existed lack them (None: not
    checked). ``warnings`` is every sentence, training's first.
    """
    meta, scores = deployed.metadata, deployed.scores
    training_warnings = list(meta.get("warnings") or [])
    scoring_warnings = list(scores.get("warnings") or [])
    uninformative = meta.get("uninformative")
    if uninformative and not any("no better than chance" in warning for warning in training_warnings):
        training_warnings.insert(0, "the model is no better than chance: no candidate beat chance and the rule \"flag everyone\"")
    return {
        "uninformative": uninformative,
        "training_warnings": training_warnings,
        "scoring_warnings": scoring_warnings,
        "test_rows_in_training": scores.get("test_rows_in_training"),
        "test_rows_in_training_share": scores.get("test_rows_in_training_share"),
        "warnings": training_warnings + scoring_warnings,
    }


def _status_when_written(config: Config, version: str, generated_at: str) -> str:
    """Whether ``version`` was current when the report was written, dated: a PDF cannot follow later switches."""
    current = deployment.current_version(config)
    events = [e for e in records.read_history(config) if e.get("version")]
    if current == version:
        made = [e for e in events if e["version"] == version]
        since = f", since the {made[-1].get('action', 'deploy')} at {made[-1].get('at')}" if made else ""
        return (f"the current version when this report was written ({generated_at}){since}. A later deployment or "
                "rollback does not change this page: `make versions` shows which version is current now")
    switched = [e for e in events if e["version"] == current]
    how = f" by the {switched[-1].get('action', 'deploy')} at {switched[-1].get('at')}" if switched else ""
    return f"not current when this report was written ({generated_at}): {current or 'no version'} was made current{how}"


def _deployment_facts(
    config: Config, deployed: deployment.DeployedModel, run_record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """When and why the version was deployed: its manifest, the audited run that deployed it.

    fullprocess passes the record of the run still under way (its audit line is written when
    the run ends), so a report written during that run can name it.
    """
    runs = [r for r in [*records.read_audit(config), run_record or {}] if r.get("version_deployed") == deployed.version]
    audit_keys = ("started_at", "decision", "reason", "deployed_version", "deployed_score", "new_score", "files_ingested", "rows_added", "test_score", "duration_seconds")
    manifest = deployed.manifest
    return {
        "deployed_at": manifest["deployed_at"],
        "reason": manifest["reason"],
        "previous_version": manifest.get("previous_version"),
        "audit": {key: runs[-1].get(key) for key in audit_keys} if runs else None,
        "last_ingestion": _last_ingestion(deployed),
        "history": [h for h in records.read_history(config) if h.get("version") == deployed.version],
    }


def _last_ingestion(deployed: deployment.DeployedModel) -> dict[str, Any] | None:
    """The last ingestion run before the deployment, from the version's own copy of the record.

    fullprocess writes its audit line when the run ends, after these reports: this is what
    a report written during the run can say about the data that triggered it.
    """
    entries = read_json_lines(deployed.path / records.RECORD_FILE)
    if not entries:
        return None
    run = [e for e in entries if e["run_id"] == entries[-1]["run_id"]]
    return {
        "ingested_at": run[0]["ingested_at"],
        "files_ingested": [e["name"] for e in run if e["status"] == ledger.STATUS_INGESTED],
        "files_set_aside": [e["name"] for e in run if e["status"] == ledger.STATUS_SET_ASIDE],
        "rows_added": sum(e.get("rows_added", 0) for e in run),
    }


def _lineage(deployed: deployment.DeployedModel) -> dict[str, Any]:
    meta = deployed.metadata
    keys = ("model", "threshold", "metric", "trained_at", "training_seconds", "training_rows", "training_positives",
            "training_data_sha256", "training_files", "features", "parameters", "candidates", "package_versions",
            "python_version", "cv_folds", "random_seed")
    return {**{key: meta.get(key) for key in keys}, "model_file": deployed.model_file, "model_sha256": deployed.model_sha256}


def _test_data_facts(config: Config, y: np.ndarray) -> dict[str, Any]:
    files = sorted(p for p in config.test_data_folder.glob("*.csv") if not p.name.startswith("."))
    return {"files": [{"name": p.name, "sha256": sha256_file(p)} for p in files], "rows": int(len(y)), "positives": int(y.sum())}


def _previous_scores(config: Config, deployed: deployment.DeployedModel) -> dict[str, Any] | None:
    previous = deployed.manifest.get("previous_version")
    folder = deployment.versions_folder(config) / str(previous)
    if not previous or not (folder / records.MANIFEST_FILE).is_file():
        return None
    try:
        return {"version": previous, **deployment.read_manifest(folder)["scores"]}
    except deployment.DeploymentError:  # a broken previous version has no scores to compare with
        return None


def _scored_on_other_test_data(previous: dict[str, Any], test_data: dict[str, Any]) -> bool:
    """Whether the previous version's stored scores came from test data other than today's."""
    return previous.get("rows") != test_data.get("rows") or previous.get("positives") != test_data.get("positives")


def _class_labels(config: Config) -> dict[str, str]:
    return {"positive": f"{config.target} = {config.positive_label}", "negative": f"{config.target} ≠ {config.positive_label}"}


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _curve_facts(y: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    if not _both_classes(y):
        return {"roc_auc": None, "average_precision": None, "brier_score": None, "note": "one class only in the test data"}
    return {
        "roc_auc": float(metrics.roc_auc_score(y, risk)),
        "average_precision": float(metrics.average_precision_score(y, risk)),
        "brier_score": float(metrics.brier_score_loss(y, risk)),
    }


def _calibration(y: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    """Observed positive share against mean predicted risk, on deciles of the risk."""
    edges = np.unique(np.quantile(risk, np.linspace(0, 1, CALIBRATION_BINS + 1)))
    index = np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, len(edges) - 2) if len(edges) > 1 else np.zeros(len(risk), int)
    bins = []
    for b in np.unique(index):
        inside = index == b
        bins.append({"rows": int(inside.sum()), "mean_risk": float(risk[inside].mean()), "observed_share": float(y[inside].mean())})
    return {"strategy": "deciles of the predicted risk", "bins": bins}


def _score_distribution(y: np.ndarray, risk: np.ndarray, threshold: float) -> dict[str, Any]:
    def describe(mask: np.ndarray) -> dict[str, Any]:
        values = risk[mask]
        if values.size == 0:
            return {"rows": 0, "mean_risk": None, "median_risk": None, "share_at_or_above_threshold": None}
        return {"rows": int(values.size), "mean_risk": float(values.mean()), "median_risk": float(np.median(values)),
                "share_at_or_above_threshold": float((values >= threshold).mean())}

    return {"threshold": float(threshold), "positive": describe(y == 1), "negative": describe(y == 0)}


def _permutation_importance(config: Config, deployed: deployment.DeployedModel, test: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """How much the configured metric drops on the test data when each feature is shuffled."""
    from sklearn.inspection import permutation_importance

    metric = config["metric"]
    result: dict[str, Any] = {"scoring": metric, "repeats": PERMUTATION_REPEATS, "features": []}
    if not _both_classes(y):
        result["note"] = "not computed: one class only in the test data"
        return result
    features = scoring.feature_frame(test, deployed.metadata["features"])
    scorer: Any = metric
    if metric == "cost":  # no scikit-learn scorer: the negated expected cost, so a drop still means worse
        from sklearn.metrics import make_scorer

        scorer = make_scorer(scoring.expected_cost, greater_is_better=False, cost_matrix=config["cost_matrix"])
        result["scoring"] = "negated expected cost (a drop: the cost rises)"
    with diagnostics.single_threaded(), drift.captured_warnings() as caught:
        outcome = permutation_importance(
            deployed.model, features, y, scoring=scorer, n_repeats=PERMUTATION_REPEATS, random_state=config["random_seed"], n_jobs=1
        )
    if caught:  # a shuffle that leaves nothing flagged makes precision undefined: worth a note, not a console line
        result["notes"] = caught
        logger.debug("permutation importance of %s: %s", deployed.version, "; ".join(caught))
    rows = [
        {"feature": name, "mean": float(mean), "std": float(std)}
        for name, mean, std in zip(features.columns, outcome.importances_mean, outcome.importances_std)
    ]
    result["features"] = sorted(rows, key=lambda row: -row["mean"])
    return result


def _data_facts(diagnosed: dict[str, Any]) -> dict[str, Any]:
    return {"summary_statistics": diagnosed["summary_statistics"], "missing_data": diagnosed["missing_data"]}


def _drift_facts(drifted: dict[str, Any]) -> dict[str, Any]:
    """The drift table as the report shows it: every figure but the per-bin shares."""
    def row(entry: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if entry is None else {k: v for k, v in entry.items() if k != "bins"}

    return {
        # Diagnostics written before the reference was chosen by arrival lack these three.
        "comparison": drifted.get("comparison", diagnostics.NEWEST_BATCH),
        "title": drifted.get("title", "newest batch against the training data"),
        "model_version": drifted.get("model_version", drifted["reference"]["version"]),
        "reference": drifted["reference"],
        "batch": drifted["batch"],
        "bands": drifted["bands"],
        "features": [row(entry) for entry in drifted["features"]],
        "prediction_psi": row(drifted["prediction_psi"]),
        "drifted_features": drifted["drifted_features"],
        "warnings": drifted["warnings"],
    }


# --- page layout --------------------------------------------------------------------------------


def _pyplot() -> Any:
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
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
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

    def page(self, title: str) -> "Page":
        self.titles.append(title)
        return Page(self, title, len(self.titles))


class Page:
    """One A4 page filled from the top; ``y`` is the next free height in inches from the top edge."""

    def __init__(self, document: Document, title: str, number: int):
        self.plt = _pyplot()
        self.document = document
        self.figure = self.plt.figure(figsize=A4)
        self.y = TOP
        self.figure.text(self._x(MARGIN), self._y(0.55), title, fontsize=15, weight="bold", va="baseline")
        self.figure.text(self._x(A4[0] - MARGIN), self._y(0.55), f"Model report · {document.version}", fontsize=9, color="#555555", ha="right", va="baseline")
        self.figure.add_artist(self.plt.Line2D([self._x(MARGIN), self._x(A4[0] - MARGIN)], [self._y(0.72)] * 2, color="#333333", linewidth=0.8))
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

    def paragraph(self, text: str, size: float = BODY, indent: float = 0.0, color: str = "black", mono: bool = False) -> None:
        for line in self._lines(text, size, indent, mono):
            self.figure.text(self._x(MARGIN + indent), self._y(self.y), line, fontsize=size, va="top", color=color,
                             family="monospace" if mono else "sans-serif")
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
            self._row([fmt(v) for v in row], widths, [f or stripe for f in row_fills], size, height, mono_columns=mono_columns)
            drawn += 1
        self.y += 0.12
        return rows[drawn:], (fills[drawn:] if fills else None)

    def _row(self, cells: list[str], widths: list[float], fills: list[str | None], size: float, height: float,
             bold: bool = False, mono_columns: tuple[int, ...] = ()) -> None:
        x = MARGIN
        for column, (cell, width, fill) in enumerate(zip(cells, widths, fills)):
            if fill:
                self.figure.add_artist(self.plt.Rectangle(
                    (self._x(x), self._y(self.y + height)), width / A4[0], height / A4[1],
                    transform=self.figure.transFigure, facecolor=fill, edgecolor="none", zorder=0))
            mono = column in mono_columns
            limit = max(3, int((width - 0.08) / (size * (0.61 if mono else 0.56) / 72)))
            text = cell if len(cell) <= limit else cell[: limit - 1] + "…"
            self.figure.text(self._x(x + 0.04), self._y(self.y + height / 2), text, fontsize=size, va="center",
                             weight="bold" if bold else "normal", family="monospace" if mono else "sans-serif")
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


def long_table(document: Document, page: Page, title: str, headers: list[str], rows: list[list[Any]], widths: list[float], **options: Any) -> Page:
    """A table continued on as many pages as it needs; returns the page it ends on."""
    fills = options.pop("fills", None)
    rows, fills = page.table(headers, rows, widths, fills=fills, **options)
    while rows:
        page.close()
        page = document.page(f"{title} (continued)")
        rows, fills = page.table(headers, rows, widths, fills=fills, **options)
    return page


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
            ax.text(j, i, f"{matrix[i, j]:,}\n{matrix[i, j] / total:.1%}\n{names[i][j]}", ha="center", va="center",
                    fontsize=11, color="white" if dark else "black")
    ticks = [labels["negative"], labels["positive"]]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks, rotation=90, va="center")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Actual class")
    ax.set_title(title)


def save_confusion_png(path: Path, evidence: Evidence) -> None:
    plt = _pyplot()
    summary = evidence.summary
    figure, ax = plt.subplots(figsize=PNG_SIZE)
    title = (f"Confusion matrix: {summary['version']} on the test data\n"
             f"{summary['metrics']['rows']:,} rows, threshold {summary['lineage']['threshold']:.2f}")
    draw_confusion_matrix(ax, summary["metrics"]["confusion"], summary["class_labels"], title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=PNG_DPI)
    plt.close(figure)


def _roc_and_pr(axes: list[Any], evidence: Evidence) -> None:
    y, risk, summary = evidence.y, evidence.risk, evidence.summary
    scores = summary["metrics"]
    roc_ax, pr_ax = axes
    if _both_classes(y):
        fpr, tpr, _ = metrics.roc_curve(y, risk)
        roc_ax.plot(fpr, tpr, label=f"model (AUC {scores['roc_auc']:.3f})")
        precision, recall, _ = metrics.precision_recall_curve(y, risk)
        pr_ax.plot(recall, precision, label=f"model (AP {scores['average_precision']:.3f})")
    confusion = scores["confusion"]
    negatives = confusion["tn"] + confusion["fp"]
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    roc_ax.scatter([confusion["fp"] / negatives if negatives else 0], [scores["recall"]], color="red", zorder=3, label="at the threshold")
    roc_ax.set(title="ROC curve", xlabel="False positive rate", ylabel="True positive rate (recall)", xlim=(0, 1), ylim=(0, 1.01))
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
    ax.plot([b["mean_risk"] for b in bins], [b["observed_share"] for b in bins], marker="o", label="model (deciles of risk)")
    ax.set(title="Calibration curve", xlabel="Mean predicted risk in the bin", ylabel="Observed share of positives", xlim=(0, 1), ylim=(0, 1))
    ax.set_aspect("equal")  # the diagonal at 45 degrees, so distances from it read true
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _score_histogram(ax: Any, evidence: Evidence) -> None:
    labels, threshold = evidence.summary["class_labels"], evidence.summary["score_distribution"]["threshold"]
    edges = np.linspace(0, 1, 41)
    for value, name, colour in ((0, labels["negative"], "tab:blue"), (1, labels["positive"], "tab:red")):
        ax.hist(evidence.risk[evidence.y == value], bins=edges, alpha=0.55, color=colour, label=f"actual {name} ({int((evidence.y == value).sum()):,})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set(title="Predicted risk by actual class (test data)", xlabel="Predicted risk", ylabel="Rows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _importance_plot(ax: Any, importance: dict[str, Any]) -> None:
    rows = list(reversed(importance["features"]))
    ax.barh([r["feature"] for r in rows], [r["mean"] for r in rows], xerr=[r["std"] for r in rows], color="tab:blue", capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(title=f"Permutation feature importance ({importance['repeats']} repeats on the test data)",
           xlabel=f"Drop in {importance['scoring']} when the feature is shuffled", ylabel="Feature")
    ax.grid(axis="x", alpha=0.3)


def _missing_plot(ax: Any, missing: dict[str, Any]) -> None:
    columns = list(missing["columns"])
    shares = [missing["columns"][c]["share"] or 0.0 for c in columns]
    ax.barh(columns[::-1], shares[::-1], color="tab:orange")
    for index, share in enumerate(shares[::-1]):
        ax.text(share, index, f" {share:.1%}", va="center", fontsize=8)
    ax.set(title=f"Missing values in the master dataset ({missing['rows']:,} rows)", xlabel="Share of rows missing",
           ylabel="Column", xlim=(0, max(max(shares, default=0) * 1.25, 0.05)))
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    ax.grid(axis="x", alpha=0.3)


def _psi_plot(ax: Any, drift_facts: dict[str, Any]) -> None:
    rows = [r for r in drift_facts["features"] if r["psi"] is not None]
    if drift_facts["prediction_psi"] and drift_facts["prediction_psi"]["psi"] is not None:
        rows.append({**drift_facts["prediction_psi"], "feature": "predicted risk"})
    bands = drift_facts["bands"]
    top = max([r["psi"] for r in rows] + [bands["significant_above"] * 1.4]) * 1.1
    ax.axvspan(0, bands["stable_below"], color=BAND_FILLS["stable"], label="stable (< 0.10)")
    ax.axvspan(bands["stable_below"], bands["significant_above"], color=BAND_FILLS["moderate"], label="moderate (0.10-0.25)")
    ax.axvspan(bands["significant_above"], top, color=BAND_FILLS["significant"], label="significant (> 0.25)")
    names = [r["feature"] for r in rows][::-1]
    ax.barh(names, [r["psi"] for r in rows][::-1], color="#333333", height=0.5)
    ax.set(title=f"Population Stability Index: {drift_facts['title']}", xlabel="PSI", ylabel="Feature", xlim=(0, top))
    ax.legend(loc="lower right", fontsize=7)


# --- pages ------------------------------------------------------------------------------------


def _cover_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    page = document.page(f"Model report: version {s['version']}")
    lineage, deployed = s["lineage"], s["deployment"]
    page.key_values([
        ("Version", s["version"]),
        ("Status", s["status"] + ("; AWAITING APPROVAL: not served until approved" if (s.get("approval") or {}).get("state") == "pending" else "")),
        ("Model", f"{lineage['model']}, decision threshold {lineage['threshold']:.2f}, chosen on {lineage['metric']}"),
        ("Deployed at", f"{deployed['deployed_at']} (UTC)"),
        ("Deployed because", deployed["reason"]),
        ("Previous version", deployed["previous_version"] or "none"),
        ("Trained at", f"{lineage['trained_at']} on {lineage['training_rows']:,} rows"),
    ])
    audit, last = deployed["audit"], deployed["last_ingestion"]
    page.heading("The run that deployed it" if audit else "The last ingestion before the deployment")
    if audit:
        page.key_values([
            ("Run started", audit["started_at"]),
            ("Files ingested", ", ".join(audit["files_ingested"] or []) or "none"),
            ("Rows added", audit["rows_added"]),
            ("Score on new rows", f"{fmt(audit['new_score'])} (deployed {audit['deployed_version'] or 'none'}: {fmt(audit['deployed_score'])})"),
            ("Decision", f"{audit['decision']}: {audit['reason']}"),
        ])
    elif last:
        page.key_values([
            ("Ingested at", last["ingested_at"]),
            ("Files ingested", ", ".join(last["files_ingested"]) or "none"),
            ("Files set aside", ", ".join(last["files_set_aside"]) or "none"),
            ("Rows added", last["rows_added"]),
        ])
        page.paragraph("From the version's ingestion record: the audit log's line for the deploying run is written when "
                       "the run ends, after this report.", size=SMALL)
    else:
        page.paragraph("No ingestion is recorded for this version.")
    _model_checks_section(page, s)
    _champion_challenger_section(page, s)
    page.heading("Performance on the test data")
    previous = s["previous_metrics"]
    rows = [[name, s["metrics"][name], previous.get(name) if previous else None, _change(s["metrics"][name], previous.get(name) if previous else None)] for name in SCORE_METRICS]
    page.table(["Metric", s["version"], previous["version"] if previous else "previous", "Change"], rows, [2.0, 1.4, 1.4, 1.4])
    page.paragraph(f"{s['test_data']['rows']:,} test rows, {s['test_data']['positives']:,} positive ({s['class_labels']['positive']}). "
                   f"Metrics match the version's scores.json: {fmt(s['metrics_match_stored_scores'])}.", size=SMALL)
    if previous and _scored_on_other_test_data(previous, s["test_data"]):
        then = f"{previous['rows']:,}" if isinstance(previous.get("rows"), int) else "an unknown number of"
        page.paragraph(f"{previous['version']}'s figures are its own scores from when it was deployed, on "
                       f"{then} test rows; the test data has changed since, so the "
                       "Change column compares different rows (the champion and challenger lines compare both on the same rows).",
                       size=SMALL)
    page.heading(f"Warnings ({len(s['warnings'])})")
    if s["warnings"]:
        shown = 0
        for warning in s["warnings"][:FIRST_PAGE_WARNINGS]:
            if page.room() < SIGN_OFF_ROOM + page.text_height(warning, SMALL, indent=0.22):
                break  # the sign-off must stay on the page
            page.bullets([warning], size=SMALL, color="#9c2a00")
            shown += 1
        if len(s["warnings"]) > shown:
            page.paragraph(f"… and {len(s['warnings']) - shown} more in model_report.json", size=SMALL)
    else:
        page.paragraph("None.", size=SMALL)
    page.heading("Validator sign-off")
    for line in sign_off_lines(s.get("approval") or {}, s["version"]):
        page.paragraph(line, size=BODY)
    page.close()


def sign_off_lines(approval: dict[str, Any], version: str = "vN") -> list[str]:
    """The sign-off box: the recorded decision (deployment.py --approve / --reject), else lines to fill by hand."""
    state = approval.get("state")
    if state in ("approved", "rejected", "superseded"):
        who = "the system (a newer version came first)" if state == "superseded" else approval.get("by")
        return [f"{state.capitalize()} by {who} at {approval.get('at')} (UTC), recorded in the deployment history",
                f"Comments: {approval.get('note') or 'none'}"]
    if state == "pending":
        return [f"Awaiting approval: not served until a person approves it (python deployment.py --approve {version} --by NAME)",
                "Approved / rejected: ____________    Name: ______________________    Date: ____________"]
    return ["Approved / rejected: ____________    Name: ______________________    Date: ____________",
            "Comments: ___________________________________________________________________________"]


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
            rows.append((f"{name}: {found['champion']} / {s['version']}", f"{fmt(f['champion_score'])} / {fmt(f['challenger_score'])}, "
                         f"gain {'n/a' if f['gain'] is None else format(f['gain'], '+.4f')}, "
                         f"{f['confidence']:.0%} CI {interval} ({f['resamples']} resamples)"))
    rows.append(("Decision", f"{found.get('decision', '?')} (promotion_margin {found['margin']:+g})"))
    page.key_values(rows, key_width=2.4, size=SMALL)


def _model_checks_section(page: Page, s: dict[str, Any]) -> None:
    """Whether the model beats chance and whether its test data is held out, in plain words."""
    checks = s["model_checks"]
    page.heading("Model checks")
    if checks["uninformative"] is None:
        informative = "not checked (this version was trained before the check existed)"
    elif checks["uninformative"]:
        informative = "NO: the model is no better than chance (no candidate beat chance and the rule \"flag everyone\")"
    else:
        informative = "yes: it beats chance and the rule \"flag everyone\" out of fold"
    page.key_values([
        ("Better than chance", informative),
        ("Test data held out", held_out_sentence(s["test_data"]["rows"], checks)),
    ], size=SMALL)


def held_out_sentence(rows: int, checks: dict[str, Any]) -> str:
    """Whether the test rows are unseen by the model, as far as scoring counted them."""
    found, share = checks["test_rows_in_training"], checks["test_rows_in_training_share"]
    if found is None:
        return "not checked (this version was scored before the check existed)"
    if found == 0:
        return f"yes: none of the {rows:,} test rows is in the training data"
    share_text = f" ({share:.1%})" if share is not None else ""
    return f"NO: {found:,} of the {rows:,} test rows{share_text} are also in the training data, so the test figures overstate the model"


def _change(current: float | None, previous: float | None) -> str:
    if current is None or previous is None:
        return "n/a"
    return f"{current - previous:+.4f}"


def _lineage_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    lineage = s["lineage"]
    page = document.page("Lineage: data, training and environment")
    page.key_values([
        ("Training rows", f"{lineage['training_rows']:,} ({lineage['training_positives']:,} positive)"),
        ("Training time", f"{lineage['training_seconds']} s, finished {lineage['trained_at']}"),
        ("Cross-validation", f"{lineage['cv_folds']} stratified folds, seed {lineage['random_seed']}"),
        ("Numeric features", ", ".join(lineage["features"]["numeric"]) or "none"),
        ("Categorical features", ", ".join(lineage["features"]["categorical"]) or "none"),
        ("Python", lineage["python_version"]),
        ("Packages", ", ".join(f"{k} {v}" for k, v in sorted(lineage["package_versions"].items()))),
    ])
    hashes = [["master dataset (finaldata.csv)", lineage["training_data_sha256"]], [f"model ({lineage.get('model_file') or 'file'})", lineage["model_sha256"]]]
    page.table(["Artefact", "SHA-256"], hashes, [2.2, 4.85], mono_columns=(1,))
    page.heading("Training data files")
    files = [[f["name"], f["sha256"], f["rows_added"]] for f in lineage["training_files"]]
    page = long_table(document, page, "Lineage", ["File", "SHA-256", "Rows added"], files, [1.65, 4.5, 0.9], mono_columns=(1,))
    page.heading("Candidate models (cross-validated)")
    candidates = [[name, c["mean"], c["std"], c["threshold"], "chosen" if name == lineage["model"] else ""]
                  for name, c in lineage["candidates"].items()]
    page = long_table(document, page, "Lineage", ["Model", f"CV {lineage['metric']} mean", "std", "threshold", ""], candidates, [2.3, 1.3, 1.1, 1.1, 1.0])
    page.heading(f"Parameters of the chosen model ({lineage['model']})")
    # Two parameters a row: a model has a score of them, and they are short.
    items = [[name, repr(value) if isinstance(value, str) else str(value)] for name, value in lineage["parameters"].items()]
    half = (len(items) + 1) // 2
    parameters = [left + right for left, right in zip(items[:half], items[half:] + [["", ""]])]
    page = long_table(document, page, "Lineage", ["Parameter", "Value", "Parameter", "Value"], parameters, [1.8, 1.7, 1.8, 1.7])
    page.close()


def _performance_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    page = document.page("Performance on the test data")
    page.paragraph(f"{performance_sentence(s)} The red dot marks the decision threshold {s['lineage']['threshold']:.2f}.", size=SMALL)
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
        return (f"The deployed model scores {rows:,} labelled rows ({files}); the test data has changed since the version "
                "was scored, so whether the model was trained on any of them is not known.")
    if found is None:
        return (f"The deployed model scores {rows:,} labelled rows ({files}); whether any of them is in its training "
                "data was not checked for this version.")
    if found == 0:
        return f"The deployed model scores {rows:,} labelled rows it was never trained on ({files})."
    share_text = f" ({share:.1%})" if share is not None else ""
    return (f"The deployed model scores {rows:,} labelled rows ({files}), but {found:,} of them{share_text} are also in "
            "its training data: the figures below overstate how it does on clients it has not seen.")


def _calibration_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    page = document.page("Calibration and risk scores")
    curves, dist = s["curves"], s["score_distribution"]
    page.paragraph(f"Brier score {fmt(curves['brier_score'])} (lower is better). Points above the diagonal: the model "
                   f"underestimates the risk there; below: it overestimates it.", size=SMALL)
    [ax] = page.axes(3.5)
    _calibration_plot(ax, s["calibration"])
    [ax] = page.axes(3.3)
    _score_histogram(ax, evidence)
    rows = [[s["class_labels"][name], d["rows"], d["mean_risk"], d["median_risk"], d["share_at_or_above_threshold"]]
            for name, d in (("positive", dist["positive"]), ("negative", dist["negative"]))]
    page.table(["Actual class", "Rows", "Mean risk", "Median risk", "Share flagged"], rows, [2.0, 1.1, 1.3, 1.3, 1.3])
    page.close()


def _importance_page(document: Document, evidence: Evidence) -> None:
    importance = evidence.summary["permutation_importance"]
    page = document.page("Permutation feature importance")
    page.paragraph(f"Each feature's values are shuffled across the test rows, breaking its link to the outcome; the bar is "
                   f"the mean drop in {importance['scoring']} over {importance['repeats']} shuffles, the whisker one standard "
                   f"deviation. A feature near zero does not help the model on this data.", size=SMALL)
    if not importance["features"]:
        page.paragraph(importance.get("note", "not computed"))
        page.close()
        return
    [ax] = page.axes(min(0.45 * len(importance["features"]) + 1.0, 6.5), left=1.9)
    _importance_plot(ax, importance)
    rows = [[r["feature"], r["mean"], r["std"]] for r in importance["features"]]
    page = long_table(document, page, "Permutation feature importance", ["Feature", "Mean drop", "Std"], rows, [3.0, 1.5, 1.5])
    page.close()


def _data_page(document: Document, evidence: Evidence) -> None:
    data = evidence.summary["data"]
    summary, missing = data["summary_statistics"], data["missing_data"]
    title = "Data: summary and missing values"
    page = document.page(title)
    page.paragraph(f"The master dataset, {summary['rows']:,} rows, as diagnostics.json states it "
                   f"({evidence.summary['diagnostics']['generated_at']}).", size=SMALL)
    page.heading("Numeric columns")
    rows = [[name, st["count"], st["mean"], st["median"], st["std"], st["min"], st["max"]] for name, st in summary["numeric"].items()]
    page = long_table(document, page, title, ["Column", "Count", "Mean", "Median", "Std", "Min", "Max"], rows, [2.2, 0.8, 0.85, 0.8, 0.85, 0.7, 0.85])
    if summary["categorical"]:
        page.heading("Categorical columns (most frequent levels)")
        levels = [[name, level, count] for name, st in summary["categorical"].items() for level, count in st["levels"].items()]
        page = long_table(document, page, title, ["Column", "Level", "Rows"], levels, [2.4, 3.0, 1.2])
    if summary["identifiers"]:
        page.heading("Identifier columns (not used as features)")
        ids = [[name, st["count"], st["unique"]] for name, st in summary["identifiers"].items()]
        page = long_table(document, page, title, ["Column", "Values", "Distinct"], ids, [2.4, 1.5, 1.5])
    if page.room() < 0.35 * len(missing["columns"]) + 1.4:
        page.close()
        page = document.page(f"{title} (continued)")
    [ax] = page.axes(min(0.3 * len(missing["columns"]) + 0.5, 7.0), left=1.9)
    _missing_plot(ax, missing)
    page.close()


def _drift_page(document: Document, evidence: Evidence) -> None:
    drift_facts = evidence.summary["drift"]
    subject = {diagnostics.TEST_DATA: "the test data", diagnostics.GIVEN_BATCH: "a given batch"}.get(drift_facts["comparison"], "the newest batch")
    title = f"Data drift of {subject}"
    page = document.page(title)
    page.key_values(_drift_sources(drift_facts), key_width=1.8, size=SMALL)
    page.paragraph("PSI on the reference's deciles (categories as bins, missing values as a bin): below 0.10 stable, 0.10-0.25 "
                   "moderate, above 0.25 significant. Tests: Kolmogorov-Smirnov (KS) on present values, chi-squared on levels, and "
                   "chi-squared on the missing share of numeric features. Flagged: PSI of 0.10 or more and a test's p-value below "
                   "0.05. Noise: the PSI sampling alone would give.", size=SMALL)
    rows, fills = [], []
    entries = drift_facts["features"] + ([{**drift_facts["prediction_psi"], "feature": "predicted risk"}] if drift_facts["prediction_psi"] else [])
    for r in entries:
        test = {"kolmogorov-smirnov": "KS", "chi-squared": "chi²"}.get(r["test"], r["test"])
        missing = f"{fmt(r['reference_missing_share'], 2)} → {fmt(r['batch_missing_share'], 2)}"
        rows.append([r["feature"], r["psi"], r["band"] or "n/a", test, p_value(r["p_value"]), missing, p_value(r["missing_p_value"]),
                     r["noise_floor"], "YES" if r["drifted"] else "no"])
        fills.append([None, None, BAND_FILLS[r["band"]], None, None, None, None, None, BAND_FILLS["significant"] if r["drifted"] else None])
    headers = ["Feature", "PSI", "Band", "Test", "p-value", "Missing ref → batch", "p missing", "Noise", "Flagged"]
    page = long_table(document, page, title, headers, rows, [1.75, 0.6, 0.85, 0.45, 0.7, 1.2, 0.7, 0.5, 0.55], fills=fills, size=7.5)
    if rows:
        if page.room() < 0.3 * len(rows) + 1.6:
            page.close()
            page = document.page(f"{title} (continued)")
        [ax] = page.axes(min(0.3 * len(rows) + 0.8, 6.0), left=1.9)
        _psi_plot(ax, drift_facts)
    notes = drift_facts["warnings"] + [f"{r['feature']}: {note}" for r in entries for note in r.get("notes", [])]
    if notes:
        page.heading("Notes")
        page.bullets(notes[:15], size=SMALL)
    page.close()


def _drift_sources(drift_facts: dict[str, Any]) -> list[tuple[str, str]]:
    """What was compared with what, and why that reference: the lines above the drift table."""
    reference, batch = drift_facts["reference"], drift_facts["batch"]
    version = reference["version"]
    rows = "n/a" if reference["rows"] is None else f"{reference['rows']:,} rows"
    pairs = [("Compared", drift_facts["title"][0].upper() + drift_facts["title"][1:]),
             ("Reference", f"training data of {version}: {rows} ({reference['file']})")]
    if batch is None:
        return pairs + [("Newest batch", "none yet")]
    files = ", ".join(batch["files"]) or batch["source"]
    ingested = f", ingested {batch['ingested_at']}" if batch.get("ingested_at") else ""
    if drift_facts["comparison"] == diagnostics.TEST_DATA:
        newest = batch.get("newest_batch") or {}
        pairs += [
            ("Test data", f"{batch['rows']:,} rows ({files})"),
            ("Why the test data", f"no version was current when the newest batch ({', '.join(newest.get('files', [])) or 'n/a'}) "
                                  f"arrived: it is the first data ingested, part of {version}'s training data, so it cannot show drift"),
            ("Test rows in reference", f"{batch['rows_in_reference']:,}"),
        ]
    elif drift_facts["comparison"] == diagnostics.GIVEN_BATCH:
        pairs += [("Batch", f"the batch given, {batch['rows']:,} rows"), ("Batch rows in reference", f"{batch['rows_in_reference']:,}")]
    else:
        on_arrival = batch.get("current_on_arrival")
        why = (f"{on_arrival} was current when the batch arrived: the batch is measured against the data the model then "
               "serving was trained on"
               if on_arrival else "the ingestion record does not say which version was current when the batch arrived")
        pairs += [
            ("Newest batch", f"{batch['rows']:,} rows from {files}{ingested}"),
            ("Why this reference", why),
            ("Batch rows in reference", f"{batch['rows_in_reference']:,}"),
        ]
    pairs.append(("Predicted risk by", f"the model of {drift_facts['model_version']}"))
    return pairs


def _operations_page(document: Document, evidence: Evidence) -> None:
    s = evidence.summary
    timings = s["execution_time"]
    title = "Operations: timings and packages"
    page = document.page(title)
    pairs = [
        ("Ingestion", f"{fmt(timings['ingestion_seconds'])} s (last run with work, finished {timings['ingestion_finished_at'] or 'n/a'}: "
                      f"{', '.join(timings['ingestion_files']) or 'no files'})"),
        ("Training", f"{fmt(timings['training_seconds'])} s (training of {timings['training_version']}, finished {timings['training_finished_at']})"),
    ]
    if timings.get("measured"):
        measured = timings["measured"]
        pairs.append(("Measured on copies", f"ingestion {measured['ingestion_seconds']} s, training {measured['training_seconds']} s "
                                            f"({measured['rows']:,} rows, {measured['measured_at']})"))
    page.key_values(pairs, key_width=1.5, size=SMALL)
    page.heading("Recent pipeline runs (audit log)")
    runs, fills = [], []
    for r in timings["recent_runs"]:
        deployed_it = r.get("deployed_this_version", r["version_deployed"] == s["version"])
        total = "running" if r.get("in_progress") else r["duration_seconds"]
        runs.append([r["started_at"], r["decision"], r["ingestion_seconds"], r["training_seconds"], total,
                     f"{r['version_deployed']} (this)" if deployed_it else r["version_deployed"] or ""])
        fills.append([BAND_FILLS["stable"] if deployed_it else None] * 6)
    page = long_table(document, page, title, ["Started (UTC)", "Decision", "Ingestion s", "Training s", "Total s", "Deployed"], runs,
                      [1.9, 1.3, 1.0, 1.0, 0.9, 0.9], fills=fills)
    page.paragraph(f"Green: the run that deployed {s['version']} (\"running\": the report was written during that run).", size=SMALL)
    page.heading("Packages in requirements.txt")
    packages = s["outdated_packages"]["packages"]
    rows = [[p["name"], p["pinned"], p["installed"], p["latest"], p["status"]] for p in packages]
    fills = [[None, None, None, None, STATUS_FILLS.get(p["status"], "#eeeeee")] for p in packages]
    page = long_table(document, page, title, ["Package", "Pinned", "Installed", "Latest", "Status"], rows, [1.8, 1.1, 1.1, 1.1, 1.9], fills=fills)
    checked = s["outdated_packages"]
    page.paragraph(f"Latest: the newest release pip's configured package index offered, asked at {checked['checked_at']} "
                   f"({len(checked['asked_index'])} asked, {len(checked['from_cache'])} from the cache of earlier answers); "
                   "\"unknown\" where the index could not be reached in time.", size=SMALL)
    page.close()


# --- governance pages: model card, business cost, fairness ----------------------------------------


def _model_card_page(document: Document, evidence: Evidence) -> None:
    """The model card (model_card.md) as the report's second page."""
    card = evidence.summary["model_card"]
    page = document.page("Model card")
    for heading, items in modelcard.card_sections(card):
        if page.room() < 0.7:
            page.paragraph("… continued in model_card.md beside this report.", size=SMALL, color="#9c2a00")
            break
        page.heading(heading)
        for label, text in items:
            if page.room() < 0.45:
                page.paragraph("… more in model_card.md beside this report.", size=SMALL, color="#9c2a00")
                break
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
        f"{fmt(matrix['false_positive'])}. The decision threshold {cost['threshold']:.2f} was {tuned}.", size=SMALL)
    page.key_values([
        ("Cost at the threshold", f"{fmt(cost['test_cost'])} per client on the test data"),
        ("Flag everyone", f"{fmt(cost['flag_everyone_test_cost'])} per client"),
        ("Flag nobody", f"{fmt(cost['flag_nobody_test_cost'])} per client"),
    ], size=SMALL)
    [ax] = page.axes(4.2)
    thresholds = cost["thresholds"]
    ax.plot(thresholds, cost["test_curve"], color="tab:blue", label="test data")
    if cost["out_of_fold_curve"]:
        ax.plot(thresholds, cost["out_of_fold_curve"], color="tab:orange", linestyle="--", label="training, out of fold (tuned on)")
    at = float(np.interp(cost["threshold"], thresholds, cost["test_curve"]))
    ax.plot([cost["threshold"]], [cost["test_cost"] if cost["test_cost"] is not None else at], "o", color="red", markersize=8,
            label=f"chosen threshold {cost['threshold']:.2f}")
    ax.set(title="Expected cost per client against the decision threshold", xlabel="Decision threshold (flag at or above)",
           ylabel="Expected cost per client", xlim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    page.paragraph("Lower is better. The curve on the test data shows what another threshold would have cost on these rows; "
                   "the threshold itself was chosen on the training data only.", size=SMALL)
    page.close()


def _fairness_page(document: Document, evidence: Evidence) -> None:
    """Per protected attribute: the group table, the disparities, the four-fifths flag and the invariance check."""
    section = evidence.summary["fairness"]
    if not section["attributes"]:
        return
    title = "Fairness across protected groups"
    page = document.page(title)
    page.paragraph(f"On the {section['rows']:,} test rows. {section['note']}", size=SMALL)
    for attribute, entry in section["attributes"].items():
        page.heading(f"{attribute}")
        if not entry.get("measurable"):
            page.paragraph(entry["note"], size=SMALL)
            continue
        used = "used by the model" if entry["used_by_model"] else "not used by the model (excluded from its features)"
        page.paragraph(f"Groups: {entry['binning']}; {used}.", size=SMALL)
        rows = [[group, r["rows"], r["base_rate"], r["selection_rate"], r["true_positive_rate"], r["false_positive_rate"],
                 r["roc_auc"] if r["roc_auc"] is not None else "not measurable"] for group, r in entry["groups"].items()]
        page = long_table(document, page, title, ["Group", "Rows", "Base rate", "Selection rate", "TPR", "FPR", "ROC AUC"], rows,
                          [1.45, 0.7, 0.9, 1.05, 0.9, 0.9, 1.15])
        parity, opportunity, check = entry["demographic_parity"], entry["equal_opportunity"], entry["invariance"]
        page.key_values([
            ("Demographic parity", _spread_text(parity, "selection rate")),
            ("Equal opportunity", _spread_text(opportunity, "true positive rate")),
            ("Four-fifths rule", entry["four_fifths"]["statement"]),
            ("Invariance", _invariance_text(check)),
        ], key_width=1.55, size=SMALL)
    page.close()


def _spread_text(spread: dict[str, Any], basis: str) -> str:
    if spread["difference"] is None:
        return spread.get("note", "not measurable")
    ratio = "not measurable" if spread["ratio"] is None else f"{spread['ratio']:.3f}"
    return (f"{basis} ratio lowest/highest {ratio} ({spread['lowest_group']} / {spread['highest_group']}), "
            f"difference {spread['difference']:.3f}")


def _invariance_text(check: dict[str, Any]) -> str:
    if not check.get("measurable"):
        return check["note"]
    return (f"with the attribute swapped to each other level, {check['share_of_rows_whose_decision_changes']:.1%} of rows "
            f"({check['rows_whose_decision_changes']:,}) change decision; largest change in risk {check['largest_risk_change']:.4f}")


PAGES: tuple[Callable[[Document, Evidence], None], ...] = (
    _cover_page, _model_card_page, _lineage_page, _performance_page, _cost_page, _fairness_page, _calibration_page, _importance_page,
    _data_page, _drift_page, _operations_page,
)


def save_pdf(path: Path, evidence: Evidence) -> list[str]:
    """Write the model report; returns the title of every page, in order."""
    from matplotlib.backends.backend_pdf import PdfPages

    _pyplot()
    version = evidence.summary["version"]
    with atomic_path(path) as tmp:
        with PdfPages(tmp, metadata={"Title": f"Model report {version}", "Subject": "Dynamic risk assessment system"}) as pdf:
            document = Document(pdf, version, evidence.summary["generated_at"])
            for draw in PAGES:
                draw(document, evidence)
    return document.titles


# --- entry points -----------------------------------------------------------------------------


def write_reports(
    config: Config, version: str | None = None, refresh_diagnostics: bool = False, run_record: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write the confusion matrix, the PDF report and its JSON for ``version`` (default: current).

    ``run_record``: the audit fields of the fullprocess run that deployed ``version``, when it
    is the caller.
    """
    evidence = gather_evidence(config, version, refresh_diagnostics=refresh_diagnostics, run_record=run_record)
    folder = diagnostics.report_folder(config, evidence.summary["version"])
    paths = {
        "confusion_matrix": folder / CONFUSION_FILE,
        "report_pdf": folder / REPORT_PDF,
        "report_json": folder / REPORT_JSON,
        "diagnostics": diagnostics.diagnostics_path(config, evidence.summary["version"]),
    }
    paths["model_card"] = folder / modelcard.CARD_FILE
    save_confusion_png(paths["confusion_matrix"], evidence)
    atomic_write_text(paths["model_card"], modelcard.to_markdown(evidence.summary["model_card"]))
    titles = save_pdf(paths["report_pdf"], evidence)
    evidence.summary["pages"] = [{"page": number, "title": title} for number, title in enumerate(titles, start=1)]
    atomic_write_json(paths["report_json"], evidence.summary)
    logger.info("wrote the reports of %s to %s (%d pages)", evidence.summary["version"], folder, len(titles))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--version", help="the deployed version to report on (default: the current one)")
    parser.add_argument("--refresh-diagnostics", action="store_true", help="run diagnostics again instead of reusing the saved ones")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        paths = write_reports(load_config(args.config), args.version, refresh_diagnostics=args.refresh_diagnostics)
    except (ConfigError, deployment.DeploymentError, scoring.ScoringError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps({name: str(path) for name, path in paths.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
