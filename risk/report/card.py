"""The model card of a deployed version: ``<reports>/<version>/model_card.md``, and the report's second page.

Purpose and intended use (config text), training data window and files (the version's own
ingestion record), features, test metrics with seeded bootstrap intervals (ROC AUC's from
DeLong's closed form on large test data), the threshold and how it was tuned, the fairness
summary, limitations and warnings, and the approval (from
``<deployment>/history.jsonl`` lines with ``"action": "approve"`` or ``"reject"``). Every
value that comes from data or config is escaped where Markdown would misread it.
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from risk.core import artefacts, logbook
from risk.core.jsonfiles import read_json_lines
from risk.core.settings import LOWER_IS_BETTER, Config
from risk.data import ledger
from risk.model import scoring
from risk.monitoring import fairness
from risk.registry import promotion

CARD_FILE = "model_card.md"
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
# From this many test rows (and of each class) ROC AUC's interval is DeLong's closed form: a bootstrap
# draws every row per resample (7 s at 300,000 rows), and at this size the two agree (tested).
CLOSED_FORM_MIN_ROWS = 20_000
CLOSED_FORM_MIN_CLASS_ROWS = 200
# An interval of no width (every positive scored above every negative, or every score tied): the
# resamples and DeLong's variance see no spread, which is not certainty about new data.
ZERO_WIDTH = (
    "no interval: it has no width on this test data (the scores separate the classes perfectly or all tie), "
    "which does not show how the model will do on new data"
)
NOT_CONFIGURED = "not configured (set {key} in config.json)"
METRIC_LABELS = {"roc_auc": "ROC AUC", "cost": "expected cost per client", "f1": "F1"}
# What Markdown would misread anywhere in a line: code spans, emphasis, links, strikethrough, HTML.
_MARKDOWN_INLINE = re.compile(r"([\\`*\[\]<~])")
# An underscore opens or closes emphasis only at a word's edge (CommonMark: never inside a word).
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
# At the start of a list item's text, these begin a heading, a quote or a nested list.
# (A marker must be followed by a space or end the line: "0.5467" and "-5" are text.)
_BLOCK_START = re.compile(r"^(>|[#+-](?=\s|$))")
_ORDERED_START = re.compile(r"^(\d{1,9})([.)])(?=\s|$)")


def md_escape(text: Any) -> str:
    """``text`` safe inside a Markdown line, and still readable as plain text.

    Only what Markdown would misread is escaped: ``model_purpose``, ``(UTC)`` or a time zone's
    ``+00:00`` stay as they are; ``*``, backticks, brackets, ``<``, an underscore at a word's edge,
    an entity's ``&`` and a leading ``#``, ``>``, ``-``, ``+`` or ``1.`` do not. Line breaks become spaces.
    """
    flat = " ".join(str(text).split())
    escaped = _ENTITY.sub(r"\\&", _EDGE_UNDERSCORE.sub(r"\\_", _MARKDOWN_INLINE.sub(r"\\\1", flat)))
    return _ORDERED_START.sub(r"\1\\\2", _BLOCK_START.sub(r"\\\1", escaped))


def bootstrap_interval(
    metric: str,
    y: np.ndarray,
    risk: np.ndarray,
    predicted: np.ndarray,
    seed: int,
    cost_matrix: dict[str, float] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of ``metric`` over resampled test rows (seeded); None where undefined.

    promotion.bootstrap_metric scores the resamples: each one's counts per cell of the metric
    (the scores sorted once), the same figures as scoring every resample with scikit-learn, in time
    linear in the rows per resample for ROC AUC and average precision, constant for the others.
    """
    if len(y) < 2 or (metric == "cost" and cost_matrix is None):
        return None
    y, risk, predicted = np.asarray(y).astype(int), np.asarray(risk), np.asarray(predicted)
    values = promotion.bootstrap_metric(metric, y, risk, predicted, np.random.default_rng(seed), resamples, cost_matrix)
    defined = values[~np.isnan(values)]
    if len(defined) < resamples / 2:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


def uses_closed_form(metric: str, y: np.ndarray) -> bool:
    """Whether ``metric``'s interval on these test labels is DeLong's closed form rather than the bootstrap."""
    if metric != "roc_auc" or len(y) < CLOSED_FORM_MIN_ROWS:
        return False
    positives = int(np.asarray(y).astype(bool).sum())
    return min(positives, len(y) - positives) >= CLOSED_FORM_MIN_CLASS_ROWS


def delong_interval(y: np.ndarray, risk: np.ndarray) -> tuple[float, float, float] | None:
    """ROC AUC's normal interval from DeLong's (1988) standard error: (low, high, standard error),
    within 0 and 1; None with fewer than two rows of a class."""
    found = scoring.delong_roc_auc(y, risk)
    if found is None:
        return None
    auc, error = found
    half = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2) * error
    return max(auc - half, 0.0), min(auc + half, 1.0), error


def approvals(config: Config, version: str) -> list[dict[str, Any]]:
    """The approve and reject lines recorded for ``version``, oldest first."""
    lines = logbook.read_history(config)
    return [
        {key: line.get(key) for key in ("action", "by", "at", "note")}
        for line in lines
        if line.get("version") == version and line.get("action") in ("approve", "reject")
    ]


def training_window(version_folder: Path) -> dict[str, Any]:
    """The files the version was trained on and when they arrived, from its own ingestion record."""
    entries = [
        e for e in read_json_lines(version_folder / artefacts.RECORD_FILE) if e.get("status") == ledger.STATUS_INGESTED
    ]
    times = sorted(str(e["ingested_at"]) for e in entries if e.get("ingested_at"))
    return {
        "first_ingested_at": times[0] if times else None,
        "last_ingested_at": times[-1] if times else None,
        "files": [
            {"name": e["name"], "rows_added": e.get("rows_added"), "ingested_at": e.get("ingested_at")} for e in entries
        ],
    }


def build_card(
    config: Config,
    summary: dict[str, Any],
    version_folder: Path,
    y: np.ndarray,
    risk: np.ndarray,
    predicted: np.ndarray,
) -> dict[str, Any]:
    """The card's facts (JSON-ready): what model_card.md and the report's second page state."""
    lineage, scores = summary["lineage"], summary["metrics"]
    metric = lineage["metric"] or config["metric"]
    seed, costs = config["random_seed"], config["cost_matrix"]
    intervals = {}
    for name in dict.fromkeys([metric, "roc_auc"]):
        if uses_closed_form(name, y):
            interval = delong_interval(y, risk)
            method = {"method": "delong", "standard_error": interval[2] if interval else None}
        else:
            interval = bootstrap_interval(name, y, risk, predicted, seed, costs)
            method = {"method": "bootstrap"}
        intervals[name] = {
            "value": scores.get(name),
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
            **method,
        }
    checks = summary["model_checks"]
    return {
        "version": summary["version"],
        "purpose": config["model_purpose"] or NOT_CONFIGURED.format(key="model_purpose"),
        "intended_use": config["intended_use"] or NOT_CONFIGURED.format(key="intended_use"),
        "model": lineage["model"],
        "trained_at": lineage["trained_at"],
        "training_rows": lineage["training_rows"],
        "training_data": training_window(version_folder),
        "features": lineage["features"],
        "protected_attributes": list(config["protected_attributes"]),
        "protected_excluded_from_features": bool(config["exclude_protected_from_features"]),
        "metric": metric,
        "intervals": intervals,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "confidence": CONFIDENCE, "seed": seed, "rows": int(len(y))},
        "threshold": lineage["threshold"],
        "threshold_reason": threshold_reason(metric, costs),
        "fairness": fairness.summary_lines(summary["fairness"])
        if summary["fairness"]["attributes"]
        else [summary["fairness"].get("note", "")],
        "uninformative": checks.get("uninformative"),
        "warnings": list(summary["warnings"]),
        "approvals": approvals(config, summary["version"]),
        "approval_required": bool((summary.get("approval") or {}).get("required")),
        "automatic_rule": automatic_rule(summary),
    }


def automatic_rule(summary: dict[str, Any]) -> str:
    """Which rule deployed the version when no person had to approve it, in words."""
    deployment = summary["deployment"]
    found = summary.get("champion_challenger")
    if found:
        rule = (
            f"the champion-challenger rule: {summary['version']} against {found.get('champion')} on the same test "
            f"rows, promotion_margin {found.get('margin', 0):+g}"
        )
    elif not deployment.get("previous_version"):
        rule = "the first-version rule: nothing was deployed before, so the first trained model goes live"
    else:
        rule = "the redeployment rule of the run, without a champion comparison recorded"
    return f"{rule} (reason recorded: {deployment.get('reason') or 'none'})"


def threshold_reason(metric: str, cost_matrix: dict[str, float] | None) -> str:
    if metric == "cost" and cost_matrix:
        return (
            f"the threshold with the lowest expected cost per client on the out-of-fold risk scores, a missed risky "
            f"client costing {cost_matrix['false_negative']:g} and a false alarm {cost_matrix['false_positive']:g}"
        )
    if metric in scoring.THRESHOLD_METRICS:
        return f"the threshold with the highest out-of-fold {metric}"
    return (
        f"the threshold with the highest out-of-fold F1 ({metric} ranks risk scores and does not depend on a threshold)"
    )


def card_sections(card: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The card as (heading, [(label, plain text)]) in order; labels are ours, texts may hold data."""
    window = card["training_data"]
    files = ", ".join(f"{f['name']} ({f['rows_added']} rows)" for f in window["files"]) or "none recorded"
    excluded = (
        " (excluded from the model's features; still measured)" if card["protected_excluded_from_features"] else ""
    )
    return [
        ("Purpose and intended use", [("purpose", card["purpose"]), ("intended use", card["intended_use"])]),
        (
            "Training data",
            [
                (
                    "window",
                    f"files ingested from {window['first_ingested_at'] or 'unknown'} to {window['last_ingested_at'] or 'unknown'}",
                ),
                ("files", files),
                ("rows", f"{card['training_rows']:,}, trained at {card['trained_at']}"),
            ],
        ),
        (
            "Features",
            [
                ("numeric", ", ".join(card["features"]["numeric"]) or "none"),
                ("categorical", ", ".join(card["features"]["categorical"]) or "none"),
                ("protected", (", ".join(card["protected_attributes"]) or "none configured") + excluded),
            ],
        ),
        ("Metrics on the test data", _metric_items(card)),
        ("Threshold", [("threshold", f"{card['threshold']:.2f} ({card['model']})"), ("why", card["threshold_reason"])]),
        ("Fairness summary", [("", line) for line in card["fairness"]]),
        ("Limitations and warnings", [("", line) for line in _limitations(card)]),
        ("Approval", _approval_items(card) or [_no_decision_item(card)]),
    ]


def _metric_items(card: dict[str, Any]) -> list[tuple[str, str]]:
    """Each test metric with its interval, then how the intervals were computed."""
    metrics = []
    for name, interval in card["intervals"].items():
        direction = " (lower is better)" if name in LOWER_IS_BETTER else ""
        name = METRIC_LABELS.get(name, name)
        if interval["value"] is None:
            metrics.append((name, "not measurable on this test data"))
        elif interval["low"] is None:
            metrics.append((name, f"{interval['value']:.4f}{direction}; no interval (too few rows of each class)"))
        elif interval["low"] == interval["high"]:
            metrics.append((name, f"{interval['value']:.4f}{direction}; {ZERO_WIDTH}"))
        else:
            metrics.append(
                (
                    name,
                    f"{interval['value']:.4f}{direction}, {card['bootstrap']['confidence']:.0%} interval "
                    f"{interval['low']:.4f} to {interval['high']:.4f}",
                )
            )
    metrics.append(("intervals", _interval_methods(card)))
    return metrics


def _interval_methods(card: dict[str, Any]) -> str:
    """How the intervals were computed: the bootstrap's resamples and seed, DeLong's closed form where used."""
    boot = card["bootstrap"]
    bootstrap = (
        f"percentile bootstrap, {boot['resamples']} resamples of the {boot['rows']} test rows, seed {boot['seed']}"
    )
    closed = [name for name, interval in card["intervals"].items() if interval.get("method") == "delong"]
    if not closed:
        return bootstrap
    delong = (
        f"{METRIC_LABELS['roc_auc']}: normal interval from DeLong's (1988) closed-form standard error on the "
        f"{boot['rows']} test rows (used from {CLOSED_FORM_MIN_ROWS:,} rows, {CLOSED_FORM_MIN_CLASS_ROWS} of each "
        "class, where it agrees with the bootstrap)"
    )
    others = [METRIC_LABELS.get(name, name) for name in card["intervals"] if name not in closed]
    return delong + (f"; {', '.join(others)}: {bootstrap}" if others else "")


def _limitations(card: dict[str, Any]) -> list[str]:
    """Whether the model beats chance (when it does not, or was not checked), then the warnings."""
    if card["uninformative"]:
        limits = ["the model is no better than chance: no candidate beat chance and flagging everyone out of fold"]
    elif card["uninformative"] is None:
        limits = ["whether the model beats chance was not checked for this version"]
    else:
        limits = []
    return limits + (card["warnings"] or ([] if limits else ["none recorded"]))


def _approval_items(card: dict[str, Any]) -> list[tuple[str, str]]:
    """Each approve or reject decision recorded for the version: ("approved" / "rejected", by whom, when, note)."""
    return [
        (
            d["action"] + ("d" if d["action"] == "approve" else "ed"),
            f"by {d['by']} at {d['at']}" + (f": {d['note']}" if d.get("note") else ""),
        )
        for d in card["approvals"]
    ]


def _no_decision_item(card: dict[str, Any]) -> tuple[str, str]:
    """No approve or reject line: waiting for a person, or live by rule because none was required."""
    if card.get("approval_required", True) or "automatic_rule" not in card:
        return ("status", "not approved yet")
    return ("status", f"no approval required (require_approval was off): deployed by {card['automatic_rule']}")


def to_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {md_escape(card['version'])}", ""]
    for heading, items in card_sections(card):
        lines += [f"## {heading}", ""]
        for label, text in items:
            lines.append(f"- **{label}:** {md_escape(text)}" if label else f"- {md_escape(text)}")
        lines.append("")
    return "\n".join(lines)
