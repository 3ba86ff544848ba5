"""Diagnose the deployed model and its data: summaries, missing values, timings, packages, drift, fairness.

One JSON document per version, saved as ``<reports>/<version>/diagnostics.json`` beside the
reports of the version it describes (``diagnostics.py`` makes and prints it). The API serves that file; it never computes it. Top-level keys: ``version``,
``generated_at``, ``summary_statistics``, ``missing_data``, ``execution_time``,
``outdated_packages`` (packages.py), ``data_drift``, ``fairness`` (fairness.py) and
``warnings``.

Data drift compares the newest ingested batch (``<output>/latest_batch.csv``) with the
training data of the version that was current when the batch arrived (the reference sample
stored in that version at deployment time, ``reference_data.csv``): a version's own
training data already holds the batch that made it. Before any version (the batch is the
first training data) the test data is compared with the training data instead. See
``drift.py`` for the method.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from risk.core import artefacts, logbook, tables
from risk.core.artefacts import DIAGNOSTICS_FILE
from risk.core.files import atomic_write_json
from risk.core.jsonfiles import json_ready, read_json, read_json_lines, read_json_or_none
from risk.core.settings import PATH_KEYS, Config, load_config
from risk.core.tables import as_text, read_typed_csv, rows_also_in
from risk.data import ingest, ledger, masterstore
from risk.model import compute, scoring
from risk.monitoring import drift, fairness
from risk.monitoring.packages import UNKNOWN, outdated_packages_list
from risk.registry import versions
from risk.registry.predictions import risk_and_predictions
from risk.registry.versions import report_folder, resolve_version

logger = logging.getLogger(__name__)

MAX_LEVELS = 20  # level counts listed per categorical column; the rest are summed
MOSTLY_MISSING_SHARE = 0.5
RECENT_RUNS = 10


# --- where things are -----------------------------------------------------------------------


def diagnostics_path(config: Config, version: str) -> Path:
    return report_folder(config, version) / DIAGNOSTICS_FILE


# --- predictions ----------------------------------------------------------------------------


def model_predictions(
    config: Config, data: pd.DataFrame | None = None, version: str | None = None
) -> list[dict[str, Any]]:
    """One ``{"risk", "prediction"}`` per row of ``data`` (default: the test data), in row order.

    ``prediction`` is 1 where the model expects the configured positive label, at its tuned
    threshold; ``risk`` is the predicted probability of that label.
    """
    deployed = versions.load_deployed_model(config, version)
    if data is None:
        data = scoring.load_test_data(config)
    risk, predicted = risk_and_predictions(deployed, data)
    return [{"risk": float(r), "prediction": int(p)} for r, p in zip(risk, predicted)]


# --- data summaries -------------------------------------------------------------------------


def _finite_float(value: Any) -> float | None:
    """``value`` as a float; None for NaN, infinity or nothing (a statistic of no values)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def dataframe_summary(config: Config, data: pd.DataFrame | None = None) -> dict[str, Any]:
    """Count, mean, median, std, min and max of numeric columns; level counts of categorical ones.

    ``data`` defaults to the master dataset. Identifier and dropped columns (``id_columns``,
    ``drop_columns``) get counts of values only: their levels say nothing.
    """
    if data is None:
        data = masterstore.load_master(config)
    identifiers = set(config.excluded_columns)
    numeric, categorical, other = {}, {}, {}
    for column in data.columns:
        values = data[column]
        if column in identifiers:
            other[column] = {"count": int(values.notna().sum()), "unique": int(values.nunique())}
        elif _is_numeric(values):
            numeric[column] = _numeric_summary(values)
        else:
            categorical[column] = _level_summary(values)
    return {"rows": int(len(data)), "numeric": numeric, "categorical": categorical, "identifiers": other}


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _numeric_summary(values: pd.Series) -> dict[str, Any]:
    values = values.astype("float64")
    if values.isna().all():  # nothing to average; say so without numpy's empty-slice warning
        return {"count": 0, **dict.fromkeys(("mean", "median", "std", "min", "max"))}
    return {
        "count": int(values.notna().sum()),
        "mean": _finite_float(values.mean()),
        "median": _finite_float(values.median()),
        "std": _finite_float(values.std()),
        "min": _finite_float(values.min()),
        "max": _finite_float(values.max()),
    }


def _level_summary(values: pd.Series) -> dict[str, Any]:
    counts = as_text(values).value_counts()  # missing values are not a level
    listed = counts.iloc[:MAX_LEVELS]
    return {
        "count": int(values.notna().sum()),
        "unique": int(len(counts)),
        "levels": {str(level): int(count) for level, count in listed.items()},
        "other_levels_count": int(counts.iloc[MAX_LEVELS:].sum()),
    }


def missing_data(config: Config, data: pd.DataFrame | None = None) -> dict[str, Any]:
    """Per column, how many values are missing and their share of the rows (master by default)."""
    if data is None:
        data = masterstore.load_master(config)
    rows = len(data)
    missing = data.isna().sum()
    return {
        "rows": int(rows),
        "columns": {
            str(column): {"missing": int(missing[column]), "share": int(missing[column]) / rows if rows else None}
            for column in data.columns
        },
    }


# --- timings --------------------------------------------------------------------------------


def execution_time(
    config: Config, version: str | None = None, measure: bool = False, run_record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Seconds taken by ingestion and training, as real runs recorded them.

    Ingestion: the last run that did work (``last_ingestion.json``). Training: the training of
    ``version`` (its ``trainedmodel.json``). ``recent_runs`` lists the timings in the audit log
    (see recent_runs). ``measure`` also re-runs both on a copy of the input data (see
    measure_execution_time).
    """
    version = resolve_version(config, version)
    last_ingestion = read_json_or_none(config.output_folder / artefacts.LAST_RUN_FILE) or {}
    trained = read_json(versions.version_path(config, version) / artefacts.METADATA_FILE)
    return {
        "ingestion_seconds": last_ingestion.get("seconds"),
        "ingestion_finished_at": last_ingestion.get("finished_at"),
        "ingestion_files": last_ingestion.get("files_ingested", []),
        "training_seconds": trained.get("training_seconds"),
        "training_finished_at": trained.get("trained_at"),
        "training_version": version,
        "recent_runs": recent_runs(config, version, run_record),
        "measured": measure_execution_time(config) if measure else None,
    }


RUN_KEYS = ("started_at", "decision", "ingestion_seconds", "training_seconds", "duration_seconds", "version_deployed")


def recent_runs(config: Config, version: str, run_record: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The last pipeline runs that did work, always with the one that deployed ``version``.

    The audit line of a run is written when it ends, after the reports of the version it
    deployed: ``run_record`` is that run's record while it is under way. Without either, the
    version's manifest stands in for the run (a deployment by hand has no run at all).
    Each row says whether it ``deployed_this_version`` and whether it is ``in_progress``.
    """
    runs = [
        {**r, "in_progress": False}
        for r in logbook.read_audit(config)
        if "ingestion_seconds" in r or r.get("version_deployed")
    ]
    if run_record and run_record.get("version_deployed") == version and not _deploying_runs(runs, version):
        runs.append({**run_record, "in_progress": True})
    deploying = _deploying_runs(runs, version)
    shown = runs[-RECENT_RUNS:]
    if deploying and deploying[-1] not in shown:
        shown = [deploying[-1]] + shown[1:]
    rows = [
        {
            **{key: run.get(key) for key in RUN_KEYS},
            "in_progress": run["in_progress"],
            "deployed_this_version": run.get("version_deployed") == version,
        }
        for run in shown
    ]
    if not deploying:
        rows.append(_manifest_run(config, version))
        rows.sort(key=lambda row: str(row["started_at"] or ""))
    return rows


def _deploying_runs(runs: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    return [run for run in runs if run.get("version_deployed") == version]


def _manifest_run(config: Config, version: str) -> dict[str, Any]:
    """A row for a deployment the audit log does not hold, from the version's manifest."""
    manifest = versions.read_manifest(versions.version_path(config, version))
    return {
        **dict.fromkeys(RUN_KEYS),
        "started_at": manifest.get("deployed_at"),
        "version_deployed": version,
        "decision": "deployed (no audit line: by hand, or the run is still under way)",
        "in_progress": False,
        "deployed_this_version": True,
    }


def measure_execution_time(config: Config) -> dict[str, Any]:
    """Time a full ingestion and a training on copies, never on the live master or deployment.

    The input files are copied into a temporary project whose every folder is temporary; the
    trained model is discarded.
    """
    # Only --measure needs training (timing a training means running one; a subprocess would time
    # interpreter start-up too), so diagnostics import it here and nowhere else.
    from risk.model import training

    with tempfile.TemporaryDirectory(prefix="diagnostics-measure-") as tmp:
        root = Path(tmp)
        values = {**config.values, **{key: key.replace("_path", "") for key in PATH_KEYS}}
        shutil.copytree(config.input_folder, root / values["input_folder_path"], ignore=shutil.ignore_patterns(".*"))
        atomic_write_json(root / "config.json", values)
        copy = load_config(root / "config.json")
        started = time.perf_counter()
        ingested = ingest.ingest_new_files(copy)
        ingested_at = time.perf_counter()
        _, trained = training.train_model(copy)
        finished = time.perf_counter()
    return {
        "ingestion_seconds": round(ingested_at - started, 4),
        "training_seconds": round(finished - ingested_at, 4),
        "files": len(ingested.files_ingested),
        "rows": ingested.rows_added,
        "model": trained["model"],
        "measured_at": artefacts.utc_now(),
    }


# --- drift ----------------------------------------------------------------------------------

NEWEST_BATCH = "newest_batch"
TEST_DATA = "test_data"
GIVEN_BATCH = "given_batch"


def data_drift(config: Config, version: str | None = None, batch: pd.DataFrame | None = None) -> dict[str, Any]:
    """Drift of the newest ingested batch (or ``batch``) from the data the serving model knew.

    The newest batch is compared with the training data of the version that was current when
    it arrived: the model that then had to score it. Where no version was current (the batch
    is the data the first version was trained on), the test data is compared with the
    training data of ``version`` instead, and titled so. A ``batch`` given is compared with
    the training data of ``version``. Per model feature: PSI with its band, a KS or
    chi-squared test, missing shares and the noise floor; and the PSI of that model's risk
    scores. See drift.py for the method.
    """
    deployed = versions.load_deployed_model(config, version)
    batch_file = config.output_folder / artefacts.LATEST_BATCH_FILE
    if batch is not None:
        origin = {"source": "the batch given", "files": [], "ingested_at": None}
        return _compare_with_training(config, deployed, batch, origin, GIVEN_BATCH)
    if not batch_file.is_file():
        result = _drift_skeleton(config, deployed, NEWEST_BATCH)
        result["warnings"].append(f"no ingested batch yet ({config.display_path(batch_file)}): drift not measured")
        return result
    arrival = _batch_origin(config)
    origin = {
        "source": config.display_path(batch_file),
        "files": arrival["files"],
        "ingested_at": arrival["ingested_at"],
    }
    if arrival["run_id"] is None:  # the ingestion record does not say when it came: against ``version``'s training data
        frame = read_typed_csv(batch_file, deployed.metadata["column_kinds"])
        return _compare_with_training(config, deployed, frame, {**origin, "current_on_arrival": None}, NEWEST_BATCH)
    on_arrival = version_current_on_arrival(config, arrival["run_id"], arrival["ingested_at"])
    if on_arrival is None:
        test = scoring.load_test_data(config)
        files = [path.name for path in artefacts.csv_files(config.test_data_folder)]
        test_origin = {
            "source": config.display_path(config.test_data_folder),
            "files": files,
            "ingested_at": None,
            "current_on_arrival": None,
            "newest_batch": origin,
        }
        return _compare_with_training(config, deployed, test, test_origin, TEST_DATA)
    try:
        serving = deployed if on_arrival == deployed.version else versions.load_deployed_model(config, on_arrival)
    except versions.LOAD_ERRORS as exc:
        result = _drift_skeleton(config, deployed, NEWEST_BATCH)
        result["warnings"].append(
            f"drift not measured: {on_arrival}, current when the newest batch arrived, cannot be loaded ({exc})"
        )
        return result
    frame = read_typed_csv(batch_file, serving.metadata["column_kinds"])
    return _compare_with_training(config, serving, frame, {**origin, "current_on_arrival": on_arrival}, NEWEST_BATCH)


def version_current_on_arrival(config: Config, run_id: str, ingested_at: str | None) -> str | None:
    """The version that was current when ingestion run ``run_id`` added its rows; None if none was.

    Read from the deployment history (oldest first): every deploy or switch before the run
    counts. A version whose own copy of the ingestion record holds the run was deployed after
    it, so an event naming such a version, and every later one, came after the batch; a
    switch to an older version (a rollback) came after it if it is dated later.
    """
    current = None
    record_holds_run: dict[str, bool] = {}
    for event in logbook.read_history(config):
        version = event.get("version")
        if not version:
            continue
        if version not in record_holds_run:
            entries = read_json_lines(versions.versions_folder(config) / version / artefacts.RECORD_FILE)
            record_holds_run[version] = any(entry.get("run_id") == run_id for entry in entries)
        if record_holds_run[version]:
            break
        if event.get("action") != "deploy" and ingested_at is not None and str(event.get("at", "")) > ingested_at:
            break
        if event.get("pending_approval") or event.get("action") in ("reject", "supersede"):
            continue  # a version awaiting approval, rejected or superseded was not current
        current = version
    return current


def _drift_skeleton(config: Config, reference_model: versions.DeployedModel, comparison: str) -> dict[str, Any]:
    reference_file = reference_model.path / artefacts.REFERENCE_FILE
    return {
        "comparison": comparison,
        "title": _drift_title(comparison, reference_model.version),
        "reference": {"version": reference_model.version, "file": config.display_path(reference_file), "rows": None},
        "batch": None,
        "model_version": reference_model.version,
        "bands": {"stable_below": drift.STABLE_BELOW, "significant_above": drift.SIGNIFICANT_ABOVE},
        "method": "PSI on reference deciles (categories as bins, missing as a bin, shares floored at 1e-4); "
        "KS test for numeric, chi-squared for categorical features",
        "features": [],
        "prediction_psi": None,
        "drifted_features": [],
        "warnings": [],
    }


def _drift_title(comparison: str, version: str) -> str:
    subject = {NEWEST_BATCH: "newest batch", TEST_DATA: "test data", GIVEN_BATCH: "given batch"}[comparison]
    return f"{subject} against {version}'s training data"


def _compare_with_training(
    config: Config,
    reference_model: versions.DeployedModel,
    batch: pd.DataFrame,
    origin: dict[str, Any],
    comparison: str,
) -> dict[str, Any]:
    """Every drift figure of ``batch`` against the reference sample of ``reference_model``'s training data."""
    result = _drift_skeleton(config, reference_model, comparison)
    kinds = reference_model.metadata["column_kinds"]
    reference = read_typed_csv(reference_model.path / artefacts.REFERENCE_FILE, kinds)
    result["reference"]["rows"] = int(len(reference))
    result["batch"] = {**origin, "rows": int(len(batch)), "rows_in_reference": rows_also_in(batch, reference, kinds)}
    # Only the newest batch is one file the cluster's workers can read for themselves.
    batch_file = config.output_folder / artefacts.LATEST_BATCH_FILE if comparison == NEWEST_BATCH else None
    reference_file = reference_model.path / artefacts.REFERENCE_FILE
    result["features"] = _feature_drift(config, reference_file, batch_file, reference, batch, reference_model.metadata)
    reference_risk, _ = risk_and_predictions(reference_model, reference)
    batch_risk, _ = risk_and_predictions(reference_model, batch)
    result["prediction_psi"] = drift.compare_feature(
        "predicted_risk", pd.Series(reference_risk), pd.Series(batch_risk), tables.NUMERIC
    )
    result["drifted_features"] = [row["feature"] for row in result["features"] if row["drifted"]]
    result["warnings"] = _drift_warnings(result)
    return result


def _feature_drift(
    config: Config,
    reference_file: Path,
    batch_file: Path | None,
    reference: pd.DataFrame,
    batch: pd.DataFrame,
    metadata: dict[str, Any],
) -> list[dict[str, Any]]:
    """drift.compare_frames, on the Dask cluster's workers (reading both files there) when one
    is configured and the batch is a file they can read."""
    if not config["dask_scheduler_address"] or batch_file is None:
        return drift.compare_frames(reference, batch, metadata["features"])

    with compute.open_runner(config) as runner:
        return drift.compare_files(
            runner, str(reference_file), str(batch_file), metadata["column_kinds"], metadata["features"]
        )


def _batch_origin(config: Config) -> dict[str, Any]:
    """The files, time and run id of the ingestion run that produced ``latest_batch.csv``."""
    runs = [e for e in ledger.read_record(config) if e["status"] == ledger.STATUS_INGESTED and e.get("rows_added")]
    if not runs:
        return {"files": [], "ingested_at": None, "run_id": None}
    last = [e for e in runs if e["run_id"] == runs[-1]["run_id"]]
    return {"files": [e["name"] for e in last], "ingested_at": last[-1]["ingested_at"], "run_id": runs[-1]["run_id"]}


def _drift_warnings(result: dict[str, Any]) -> list[str]:
    warnings = []
    version, batch = result["reference"]["version"], result["batch"]
    subject = "test data" if result["comparison"] == TEST_DATA else "batch"
    floors = [
        row["noise_floor"] for row in result["features"] + [result["prediction_psi"]] if row["noise_floor"] is not None
    ]
    if result["comparison"] == TEST_DATA:
        warnings.append(
            "no version was current when the newest batch arrived (it is the first data ingested, part of every training "
            f"set since): the test data is compared with {version}'s training data instead"
        )
    if batch["rows"] == 0:
        warnings.append(f"the {subject} is empty: drift not measured")
    elif floors and max(floors) >= drift.NOISE_FLOOR_WARNING:
        warnings.append(
            f"the {subject} ({batch['rows']} rows) is too small for the drift figures to mean much: "
            f"sampling alone gives PSI values up to {max(floors):.3f}"
        )
    if batch["rows_in_reference"] and result["comparison"] == TEST_DATA:
        warnings.append(
            f"{batch['rows_in_reference']} of the test data's {batch['rows']} rows are also in {version}'s training data "
            "(its reference sample): they are not held out"
        )
    elif batch["rows_in_reference"]:
        warnings.append(
            f"{batch['rows_in_reference']} of the batch's {batch['rows']} rows are in {version}'s training data, "
            "so drift against it is understated"
        )
    for row in result["features"]:
        if row["drifted"]:
            warnings.append(f"data drift in {row['feature']}: PSI {row['psi']:.3f} ({row['band']})")
    prediction = result["prediction_psi"]
    if prediction["drifted"]:
        warnings.append(f"the predicted risk scores drifted: PSI {prediction['psi']:.3f} ({prediction['band']})")
    return warnings


# --- the document ---------------------------------------------------------------------------


def build_diagnostics(
    config: Config,
    version: str | None = None,
    measure: bool = False,
    refresh_packages: bool = False,
    run_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every diagnostic of ``version`` (default: current) as one JSON-ready document.

    ``run_record``: the record of the fullprocess run that deployed ``version``, when it is the
    caller (its audit line is written only when it ends).
    """
    version = resolve_version(config, version)  # resolved once: every part describes one version
    master = masterstore.load_master(config)
    document = {
        "version": version,
        "generated_at": artefacts.utc_now(),
        "summary_statistics": dataframe_summary(config, master),
        "missing_data": missing_data(config, master),
        "execution_time": execution_time(config, version, measure=measure, run_record=run_record),
        "outdated_packages": outdated_packages_list(config, use_cache=not refresh_packages),
        "data_drift": data_drift(config, version),
        "fairness": fairness_section(config, version),
    }
    document["warnings"] = _document_warnings(document)
    return json_ready(document)


def fairness_section(config: Config, version: str) -> dict[str, Any]:
    """The fairness checks of ``version`` on the test data, per protected attribute (fairness.py)."""
    if not config["protected_attributes"]:  # nothing to measure: the model and test data stay unloaded
        return fairness.nothing_measured()
    deployed = versions.load_deployed_model(config, version)
    test = scoring.load_test_data(config)
    y = scoring.binary_target(test[config.target], config.positive_label)
    risk, predicted = risk_and_predictions(deployed, test)
    return fairness.assess(config, deployed.model, deployed.metadata, test, y, risk, predicted)


def _document_warnings(document: dict[str, Any]) -> list[str]:
    warnings = list(document["data_drift"]["warnings"])
    for column, missing in document["missing_data"]["columns"].items():
        if missing["share"] is not None and missing["share"] >= MOSTLY_MISSING_SHARE:
            warnings.append(f"column {column} is {missing['share']:.0%} missing in the master dataset")
    for attribute, entry in document.get("fairness", {}).get("attributes", {}).items():
        if entry.get("four_fifths", {}).get("flagged"):
            warnings.append(f"fairness screening flag on {attribute}: {entry['four_fifths']['statement']}")
    timings = document["execution_time"]
    if timings["ingestion_seconds"] is None:
        warnings.append("no ingestion timing recorded yet")
    packages = document["outdated_packages"]
    for package in packages["packages"]:
        if package["status"] in ("not installed", "installed differs from pin"):
            warnings.append(
                f"package {package['name']}: {package['status']} (pinned {package['pinned']}, installed {package['installed']})"
            )
    unknown = [p["name"] for p in packages["packages"] if p["latest"] == UNKNOWN]
    if unknown:
        why = (
            "the package index was not reached in time"
            if packages["index_budget_seconds"]
            else "package_check_seconds is 0"
        )
        warnings.append(f"latest version unknown for {len(unknown)} package(s): {why}")
    return warnings


def save_diagnostics(
    config: Config,
    version: str | None = None,
    measure: bool = False,
    refresh_packages: bool = False,
    run_record: dict[str, Any] | None = None,
) -> Path:
    """Build the diagnostics of ``version`` (default: current) and write them beside its reports."""
    document = build_diagnostics(
        config, version, measure=measure, refresh_packages=refresh_packages, run_record=run_record
    )
    path = diagnostics_path(config, document["version"])
    atomic_write_json(path, document)
    logger.info("wrote %s (%d warning(s))", path, len(document["warnings"]))
    return path


def load_diagnostics(config: Config, version: str) -> dict[str, Any] | None:
    """The saved diagnostics of ``version``, or None where there are none yet."""
    return read_json_or_none(diagnostics_path(config, version))
