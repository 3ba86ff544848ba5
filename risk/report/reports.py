"""Write the reports of a deployed version: confusion matrix, full model report (PDF) and its JSON.

``python reporting.py [--config PATH] [--version vN] [--refresh-diagnostics]`` writes, into
``<reports>/<version>/``:

- ``confusionmatrix.png``: the version's model on the test data;
- ``model_report.pdf``: everything a validator needs to sign the version off, on A4 pages;
- ``model_report.json``: the figures the PDF states, to check against scoring and diagnostics;
- ``model_card.md``: the model card (risk/report/card.py), also the PDF's second page.

Every version keeps its own folder; a new deployment never touches an older one's. The data
sections restate ``diagnostics.json`` of the version, made first if it is absent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from risk.core import artefacts, logbook, logs
from risk.core.artefacts import CONFUSION_FILE, REPORT_JSON, REPORT_PDF
from risk.core.files import atomic_write_json, atomic_write_text, sha256_file
from risk.core.jsonfiles import json_ready, read_json, read_json_lines
from risk.core.settings import Config
from risk.data import ledger
from risk.model import scoring, selection
from risk.model.compute import single_threaded
from risk.monitoring import diagnostics, fairness
from risk.registry import versions
from risk.registry.predictions import risk_and_predictions
from risk.registry.versions import report_folder, resolve_version
from risk.report import card
from risk.report.pages import Evidence, save_confusion_png, save_pdf

logger = logging.getLogger(__name__)


def refresh_reports(config: Config, version: str) -> str:
    """Write the version's reports again so page 1's sign-off shows the approval: "ok" or why not.

    The approval stands either way; a failure here is reported, and `make report VERSION=vN` retries.
    """
    try:
        from risk.report import reports

        reports.write_reports(config, version)
        return "ok"
    except Exception as exc:  # a report must not undo a recorded approval
        logger.exception("the reports of %s could not be rewritten after its approval decision", version)
        return f"failed: {type(exc).__name__}: {exc}"


PERMUTATION_REPEATS = 10
CALIBRATION_BINS = 10


# --- the step: gather the facts, then write every file ------------------------------------------


def write_reports(
    config: Config,
    version: str | None = None,
    refresh_diagnostics: bool = False,
    run_record: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the confusion matrix, the model card, the PDF report and its JSON for ``version`` (default: current).

    ``run_record``: the audit fields of the fullprocess run that deployed ``version``, when it
    is the caller.
    """
    evidence = gather_evidence(config, version, refresh_diagnostics=refresh_diagnostics, run_record=run_record)
    folder = report_folder(config, evidence.summary["version"])
    paths = {
        "confusion_matrix": folder / CONFUSION_FILE,
        "report_pdf": folder / REPORT_PDF,
        "report_json": folder / REPORT_JSON,
        "diagnostics": diagnostics.diagnostics_path(config, evidence.summary["version"]),
    }
    paths["model_card"] = folder / card.CARD_FILE
    save_confusion_png(paths["confusion_matrix"], evidence)
    atomic_write_text(paths["model_card"], card.to_markdown(evidence.summary["model_card"]))
    titles = save_pdf(paths["report_pdf"], evidence)
    evidence.summary["pages"] = [{"page": number, "title": title} for number, title in enumerate(titles, start=1)]
    atomic_write_json(paths["report_json"], evidence.summary)
    logger.info("wrote the reports of %s to %s (%d pages)", evidence.summary["version"], folder, len(titles))
    return paths


# --- gathering the facts ------------------------------------------------------------------------


def gather_evidence(
    config: Config,
    version: str | None = None,
    refresh_diagnostics: bool = False,
    run_record: dict[str, Any] | None = None,
) -> Evidence:
    """Score ``version`` on the test data and collect everything the report states."""
    version = resolve_version(config, version)
    deployed = versions.load_deployed_model(config, version)
    test, y, risk, predicted, scores = _score_on_test_data(config, deployed)
    sample = report_sample(len(y), config["report_sample_rows"], config["random_seed"])
    diagnosed = _diagnostics_of(config, version, refresh_diagnostics, run_record)
    generated_at = artefacts.utc_now()
    checks = model_checks(deployed)
    summary = {
        "version": version,
        "generated_at": generated_at,
        # True when the report was written: a later deployment or rollback does not change the PDF.
        "current": version == versions.current_version(config),
        "status": _status_when_written(config, version, generated_at),
        "model_checks": checks,
        "deployment": _deployment_facts(config, deployed, run_record),
        "lineage": _lineage(deployed),
        "test_data": _test_data_facts(config, y),
        "metrics": scores,
        "stored_scores": deployed.scores,
        "metrics_match_stored_scores": _metrics_match(deployed.scores, scores),
        "previous_metrics": _previous_scores(config, deployed, test, y),
        "class_labels": class_labels(config, test[config.target]),
        "curves": _curve_facts(y, risk),
        "sample": _sample_facts(sample, len(y), config),
        "calibration": _calibration(y[sample], risk[sample]),
        "score_distribution": _score_distribution(y, risk, deployed.metadata["threshold"]),
        "permutation_importance": _permutation_importance(config, deployed, test.iloc[sample], y[sample]),
        "data": _data_facts(diagnosed),
        "drift": _drift_facts(diagnosed["data_drift"]),
        # Read again: diagnostics saved during the deploying run could not list that run.
        "execution_time": {
            **diagnosed["execution_time"],
            "recent_runs": diagnostics.recent_runs(config, version, run_record),
        },
        "outdated_packages": diagnosed["outdated_packages"],
        "diagnostics": {
            "file": config.display_path(diagnostics.diagnostics_path(config, version)),
            "generated_at": diagnosed["generated_at"],
        },
        "warnings": checks["warnings"] + list(diagnosed["warnings"]),
        "cost": _cost_facts(config, deployed, y, risk, scores),
        "fairness": fairness.assess(config, deployed.model, deployed.metadata, test, y, risk, predicted),
        "champion_challenger": _champion_challenger(deployed),
        "approval": approval_facts(config, version),
    }
    if not summary["metrics_match_stored_scores"]:
        summary["warnings"].insert(
            0, f"the test data has changed since {version} was deployed: its metrics differ from scores.json"
        )
    summary["model_card"] = card.build_card(config, json_ready(summary), deployed.path, y, risk, predicted)
    return Evidence(json_ready(summary), y[sample], risk[sample])


def report_sample(rows: int, cap: int, seed: int) -> np.ndarray:
    """Positions (in order) of the test rows the per-row figures use: all of them up to ``cap``
    (0: no cap), else a sample of ``cap`` drawn with ``seed``, the same on every run."""
    if cap == 0 or rows <= cap:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))


def _sample_facts(sample: np.ndarray, rows: int, config: Config) -> dict[str, Any]:
    """Which test rows importance, calibration and the figures use, in words the report prints."""
    whole = len(sample) == rows
    words = (
        f"on all {rows:,} test rows"
        if whole
        else f"on a seeded sample of {len(sample):,} of the {rows:,} test rows (report_sample_rows, random_seed {config['random_seed']})"
    )
    return {
        "rows": int(len(sample)),
        "of_rows": int(rows),
        "whole": whole,
        "seed": config["random_seed"],
        "words": words,
    }


def _score_on_test_data(
    config: Config, deployed: versions.DeployedModel
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The test data, its 0/1 target, the model's risk and decisions on it, and the metrics."""
    test = scoring.load_test_data(config)
    y = scoring.binary_target(test[config.target], config.positive_label)
    risk, predicted = risk_and_predictions(deployed, test)
    return test, y, risk, predicted, _metrics(config, deployed.version, y, risk, predicted)


def _metrics(config: Config, version: str, y: np.ndarray, risk: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """A version's metrics on the test data; scikit-learn's warnings (precision undefined when
    nothing is flagged...) go to the debug log, not the operator's."""
    with logs.captured_warnings() as caught:
        scores = scoring.classification_metrics(y, risk, predicted, config["cost_matrix"])
    for message in caught:
        logger.debug("metrics of %s on the test data: %s", version, message)
    return scores


def _diagnostics_of(config: Config, version: str, refresh: bool, run_record: dict[str, Any] | None) -> dict[str, Any]:
    """The saved diagnostics of ``version``; made again where absent, of another version, or ``refresh``."""
    found = None if refresh else diagnostics.load_diagnostics(config, version)
    return found if found and found.get("version") == version else _fresh_diagnostics(config, version, run_record)


def _metrics_match(stored: dict[str, Any], scores: dict[str, Any]) -> bool:
    """Whether the test data scores as it did when the version was scored.

    The cost is left out where the version was scored under another (or no) cost matrix:
    a changed config, not changed data.
    """
    same_costs = stored.get("cost_matrix") == scores.get("cost_matrix")
    return all(stored.get(k) == v for k, v in scores.items() if same_costs or k not in ("cost", "cost_matrix"))


def _cost_facts(
    config: Config, deployed: versions.DeployedModel, y: np.ndarray, risk: np.ndarray, scores: dict[str, Any]
) -> dict[str, Any] | None:
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
        "thresholds": selection.THRESHOLD_GRID.tolist(),
        "test_curve": [float(v) for v in selection.threshold_curve("cost", y, risk, costs)],
        # Trained with this cost matrix: the curve the threshold was tuned on. Older versions lack it.
        "out_of_fold_curve": (chosen.get("cost_curve") or {}).get("cost"),
        "out_of_fold_matrix_matches": chosen.get("cost_curve") is not None and meta.get("metric") == "cost",
    }


def _champion_challenger(deployed: versions.DeployedModel) -> dict[str, Any] | None:
    """The comparison with the champion that decided this version's deployment (None: there was no champion)."""
    decision = deployed.manifest.get("decision")
    return decision.get("champion_challenger") if isinstance(decision, dict) else None


def approval_facts(config: Config, version: str) -> dict[str, Any]:
    """Whether the version needed approval and who decided, when, with what note (the history's lines)."""
    state = versions.approval_states(config).get(version, {})
    manifest = versions.read_manifest(versions.versions_folder(config) / version)
    return {
        "required": bool(manifest.get("pending_approval", False)),
        "state": state.get("state"),
        "by": state.get("by"),
        "at": state.get("at"),
        "note": state.get("note"),
    }


def _fresh_diagnostics(config: Config, version: str, run_record: dict[str, Any] | None = None) -> dict[str, Any]:
    path = diagnostics.save_diagnostics(config, version, run_record=run_record)
    return read_json(path)


def model_checks(deployed: versions.DeployedModel) -> dict[str, Any]:
    """What training and scoring found doubtful about the model, as the version recorded it.

    Read with defaults: versions trained before these checks existed lack them (None: not
    checked). ``warnings`` is every sentence, training's first.
    """
    meta, scores = deployed.metadata, deployed.scores
    training_warnings = list(meta.get("warnings") or [])
    scoring_warnings = list(scores.get("warnings") or [])
    uninformative = meta.get("uninformative")
    if uninformative and not any("no better than chance" in warning for warning in training_warnings):
        training_warnings.insert(
            0, 'the model is no better than chance: no candidate beat chance and the rule "flag everyone"'
        )
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
    current = versions.current_version(config)
    events = [e for e in logbook.read_history(config) if e.get("version")]
    if current == version:
        made = [e for e in events if e["version"] == version]
        since = f", since the {made[-1].get('action', 'deploy')} at {made[-1].get('at')}" if made else ""
        return (
            f"the current version when this report was written ({generated_at}){since}. A later deployment or "
            "rollback does not change this page: make versions (deployment.py --list) shows which version is current now"
        )
    switched = [e for e in events if e["version"] == current]
    how = f" by the {switched[-1].get('action', 'deploy')} at {switched[-1].get('at')}" if switched else ""
    return f"not current when this report was written ({generated_at}): {current or 'no version'} was made current{how}"


def _deployment_facts(
    config: Config, deployed: versions.DeployedModel, run_record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """When and why the version was deployed: its manifest, the audited run that deployed it.

    fullprocess passes the record of the run still under way (its audit line is written when
    the run ends), so a report written during that run can name it.
    """
    runs = [r for r in [*logbook.read_audit(config), run_record or {}] if r.get("version_deployed") == deployed.version]
    audit_keys = (
        "started_at",
        "decision",
        "reason",
        "deployed_version",
        "deployed_score",
        "new_score",
        "files_ingested",
        "rows_added",
        "test_score",
        "duration_seconds",
    )
    manifest = deployed.manifest
    return {
        "deployed_at": manifest["deployed_at"],
        "reason": manifest["reason"],
        "previous_version": manifest.get("previous_version"),
        "audit": {key: runs[-1].get(key) for key in audit_keys} if runs else None,
        "last_ingestion": _last_ingestion(deployed),
        "history": [h for h in logbook.read_history(config) if h.get("version") == deployed.version],
    }


def _last_ingestion(deployed: versions.DeployedModel) -> dict[str, Any] | None:
    """The last ingestion run before the deployment, from the version's own copy of the record.

    fullprocess writes its audit line when the run ends, after these reports: this is what
    a report written during the run can say about the data that triggered it.
    """
    entries = read_json_lines(deployed.path / artefacts.RECORD_FILE)
    if not entries:
        return None
    run = [e for e in entries if e["run_id"] == entries[-1]["run_id"]]
    return {
        "ingested_at": run[0]["ingested_at"],
        "files_ingested": [e["name"] for e in run if e["status"] == ledger.STATUS_INGESTED],
        "files_set_aside": [e["name"] for e in run if e["status"] == ledger.STATUS_SET_ASIDE],
        "rows_added": sum(e.get("rows_added", 0) for e in run),
    }


def _lineage(deployed: versions.DeployedModel) -> dict[str, Any]:
    meta = deployed.metadata
    keys = (
        "model",
        "threshold",
        "metric",
        "trained_at",
        "training_seconds",
        "training_rows",
        "selection_rows",
        "training_positives",
        "training_data_sha256",
        "training_files",
        "features",
        "parameters",
        "candidates",
        "selection",
        "serving_measurement",
        "package_versions",
        "python_version",
        "cv_folds",
        "random_seed",
    )
    return {
        **{key: meta.get(key) for key in keys},
        "model_file": deployed.model_file,
        "model_sha256": deployed.model_sha256,
    }


def _test_data_facts(config: Config, y: np.ndarray) -> dict[str, Any]:
    files = artefacts.csv_files(config.test_data_folder)
    return {
        "files": [{"name": p.name, "sha256": sha256_file(p)} for p in files],
        "rows": int(len(y)),
        "positives": int(y.sum()),
    }


def _previous_scores(
    config: Config, deployed: versions.DeployedModel, test: pd.DataFrame, y: np.ndarray
) -> dict[str, Any] | None:
    """The previous version scored again on today's test rows, so page 1 compares both on the same rows.

    None where there is no previous version; ``{"version", "note"}`` without scores where it can
    no longer be loaded (its stored scores came from other rows and are not shown beside these).
    """
    previous = deployed.manifest.get("previous_version")
    if not previous or not (versions.versions_folder(config) / str(previous) / artefacts.MANIFEST_FILE).is_file():
        return None
    try:
        earlier = versions.load_deployed_model(config, str(previous))
        risk, predicted = risk_and_predictions(earlier, test)
    except versions.LOAD_ERRORS as exc:  # a broken previous version: no comparison, and why
        logger.warning("the previous version %s cannot be scored on the test data: %s", previous, exc)
        return {"version": previous, "note": f"{previous} could not be scored on this test data ({exc})"}
    return {"version": previous, "same_test_rows": True, **_metrics(config, str(previous), y, risk, predicted)}


def class_labels(config: Config, target: pd.Series) -> dict[str, str]:
    """Each class as people read it: "exited = 1" and "exited = 0", the other value taken from the data."""
    positive = scoring.binary_target(target.dropna(), config.positive_label)
    others = sorted({_value_text(v) for v in pd.unique(target.dropna()[positive == 0])})  # each value once, not a row
    if len(others) == 1:
        negative = f"{config.target} = {others[0]}"
    else:  # no negative rows, or several values: say it in words rather than with a symbol
        negative = f"{config.target} other than {config.positive_label}"
    return {"positive": f"{config.target} = {config.positive_label}", "negative": negative}


def _value_text(value: Any) -> str:
    """A target value as written in the data: 0, not 0.0."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _curve_facts(y: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    if not _both_classes(y):
        return {
            "roc_auc": None,
            "average_precision": None,
            "brier_score": None,
            "note": "one class only in the test data",
        }
    return {
        "roc_auc": float(metrics.roc_auc_score(y, risk)),
        "average_precision": float(metrics.average_precision_score(y, risk)),
        "brier_score": float(metrics.brier_score_loss(y, risk)),
    }


def _calibration(y: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    """Observed positive share against mean predicted risk, on deciles of the risk."""
    edges = np.unique(np.quantile(risk, np.linspace(0, 1, CALIBRATION_BINS + 1)))
    index = (
        np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, len(edges) - 2)
        if len(edges) > 1
        else np.zeros(len(risk), int)
    )
    bins = []
    for b in np.unique(index):
        inside = index == b
        bins.append(
            {
                "rows": int(inside.sum()),
                "mean_risk": float(risk[inside].mean()),
                "observed_share": float(y[inside].mean()),
            }
        )
    return {"strategy": "deciles of the predicted risk", "bins": bins}


def _score_distribution(y: np.ndarray, risk: np.ndarray, threshold: float) -> dict[str, Any]:
    def describe(mask: np.ndarray) -> dict[str, Any]:
        values = risk[mask]
        if values.size == 0:
            return {"rows": 0, "mean_risk": None, "median_risk": None, "share_at_or_above_threshold": None}
        return {
            "rows": int(values.size),
            "mean_risk": float(values.mean()),
            "median_risk": float(np.median(values)),
            "share_at_or_above_threshold": float((values >= threshold).mean()),
        }

    return {"threshold": float(threshold), "positive": describe(y == 1), "negative": describe(y == 0)}


def _permutation_importance(
    config: Config, deployed: versions.DeployedModel, test: pd.DataFrame, y: np.ndarray
) -> dict[str, Any]:
    """How much the configured metric drops on the test data when each feature is shuffled."""
    from sklearn.inspection import permutation_importance

    metric = config["metric"]
    result: dict[str, Any] = {"scoring": metric, "repeats": PERMUTATION_REPEATS, "rows": int(len(y)), "features": []}
    if not _both_classes(y):
        result["note"] = "not computed: one class only in the test data"
        return result
    features = scoring.feature_frame(test, deployed.metadata["features"])
    scorer: Any = metric
    if metric == "cost":  # no scikit-learn scorer: the negated expected cost, so a drop still means worse
        from sklearn.metrics import make_scorer

        scorer = make_scorer(scoring.expected_cost, greater_is_better=False, cost_matrix=config["cost_matrix"])
        result["scoring"] = "negated expected cost (a drop: the cost rises)"
    with single_threaded(), logs.captured_warnings() as caught:
        outcome = permutation_importance(
            deployed.model,
            features,
            y,
            scoring=scorer,
            n_repeats=PERMUTATION_REPEATS,
            random_state=config["random_seed"],
            n_jobs=1,
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
