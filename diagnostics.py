"""Diagnose the deployed model and its data: summaries, missing values, timings, packages, drift.

``python diagnostics.py [--config PATH] [--version vN] [--measure]`` prints one JSON document
and saves it as ``<reports>/<version>/diagnostics.json``, beside the reports of the version it
describes. The API serves that file; it never computes it. Top-level keys: ``version``,
``generated_at``, ``summary_statistics``, ``missing_data``, ``execution_time``,
``outdated_packages``, ``data_drift`` and ``warnings``.

Data drift compares the newest ingested batch (``<output>/latest_batch.csv``) with the
reference sample stored in the version at deployment time (``reference_data.csv``); see
``drift.py`` for the method.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import deployment
import drift
import fullprocess
import ingestion
import ledger
import scoring
from fsutil import atomic_write_json, configure_logging
from settings import Config, ConfigError, PATH_KEYS, PROJECT_DIR, load_config, script_parser
from training import installed_version

logger = logging.getLogger(__name__)

DIAGNOSTICS_FILE = "diagnostics.json"
PACKAGE_CACHE_FILE = "package_index_cache.json"
REQUIREMENTS_FILE = PROJECT_DIR / "requirements.txt"
UNKNOWN = "unknown"
MAX_LEVELS = 20  # level counts listed per categorical column; the rest are summed
MOSTLY_MISSING_SHARE = 0.5
RECENT_RUNS = 10
PIP_SOCKET_TIMEOUT = 2.0
POLL_SECONDS = 0.05


# --- where things are -----------------------------------------------------------------------


def resolve_version(config: Config, version: str | None = None) -> str:
    """The name of ``version``, or of the current one; DeploymentError if there is none."""
    return deployment.version_path(config, version).name


def report_folder(config: Config, version: str) -> Path:
    """``<reports>/<version>/``: every version keeps its own reports."""
    return config.reports_folder / version


def diagnostics_path(config: Config, version: str) -> Path:
    return report_folder(config, version) / DIAGNOSTICS_FILE


def display_path(config: Config, path: Path) -> str:
    """A path relative to the project where it lies inside it, for people reading reports."""
    try:
        return str(path.relative_to(config.root))
    except ValueError:
        return str(path)


# --- predictions ----------------------------------------------------------------------------


def single_threaded() -> Any:
    """A context in which numerical libraries use one thread.

    Diagnostics predict on a few thousand rows at a time; on a busy host OpenMP's spinning
    threads made each prediction up to thirty times slower than one thread does.
    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    return threadpool_limits(limits=1)


def risk_and_predictions(deployed: deployment.DeployedModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The deployed model's risk scores and 0/1 decisions for every row of ``frame``."""
    features = scoring.feature_frame(frame, deployed.metadata["features"])
    with single_threaded():
        return deployed.model.predict_proba(features)[:, 1], deployed.model.predict(features).astype(int)


def model_predictions(config: Config, data: pd.DataFrame | None = None, version: str | None = None) -> list[dict[str, Any]]:
    """One ``{"risk", "prediction"}`` per row of ``data`` (default: the test data), in row order.

    ``prediction`` is 1 where the model expects the configured positive label, at its tuned
    threshold; ``risk`` is the predicted probability of that label.
    """
    deployed = deployment.load_deployed_model(config, version)
    if data is None:
        data = scoring.load_test_data(config)
    risk, predicted = risk_and_predictions(deployed, data)
    return [{"risk": float(r), "prediction": int(p)} for r, p in zip(risk, predicted)]


# --- data summaries -------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """A float for JSON; None for NaN, infinity or nothing."""
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
        data = ingestion.load_master(config)
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
        "mean": number(values.mean()),
        "median": number(values.median()),
        "std": number(values.std()),
        "min": number(values.min()),
        "max": number(values.max()),
    }


def _level_summary(values: pd.Series) -> dict[str, Any]:
    counts = values.dropna().astype(str).value_counts()
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
        data = ingestion.load_master(config)
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


def execution_time(config: Config, version: str | None = None, measure: bool = False) -> dict[str, Any]:
    """Seconds taken by ingestion and training, as real runs recorded them.

    Ingestion: the last run that did work (``last_ingestion.json``). Training: the training of
    ``version`` (its ``trainedmodel.json``). ``recent_runs`` lists the timings in the audit log.
    ``measure`` also re-runs both on a copy of the input data (see measure_execution_time).
    """
    version = resolve_version(config, version)
    last_ingestion = _read_json(config.output_folder / ingestion.LAST_RUN_FILE) or {}
    trained = json.loads((deployment.version_path(config, version) / deployment.METADATA_FILE).read_text(encoding="utf-8"))
    runs = [r for r in fullprocess.read_audit(config) if "ingestion_seconds" in r]
    return {
        "ingestion_seconds": last_ingestion.get("seconds"),
        "ingestion_finished_at": last_ingestion.get("finished_at"),
        "ingestion_files": last_ingestion.get("files_ingested", []),
        "training_seconds": trained.get("training_seconds"),
        "training_finished_at": trained.get("trained_at"),
        "training_version": version,
        "recent_runs": [
            {key: run.get(key) for key in ("started_at", "decision", "ingestion_seconds", "training_seconds", "duration_seconds", "version_deployed")}
            for run in runs[-RECENT_RUNS:]
        ],
        "measured": measure_execution_time(config) if measure else None,
    }


def measure_execution_time(config: Config) -> dict[str, Any]:
    """Time a full ingestion and a training on copies, never on the live master or deployment.

    The input files are copied into a temporary project whose every folder is temporary; the
    trained model is discarded.
    """
    import training  # scikit-learn's fitting code, only needed here

    with tempfile.TemporaryDirectory(prefix="diagnostics-measure-") as tmp:
        root = Path(tmp)
        values = {**config.values, **{key: key.replace("_path", "") for key in PATH_KEYS}}
        shutil.copytree(config.input_folder, root / values["input_folder_path"], ignore=shutil.ignore_patterns(".*"))
        atomic_write_json(root / "config.json", values)
        copy = load_config(root / "config.json")
        started = time.perf_counter()
        ingested = ingestion.ingest_new_files(copy)
        ingested_at = time.perf_counter()
        _, trained = training.train_model(copy)
        finished = time.perf_counter()
    return {
        "ingestion_seconds": round(ingested_at - started, 4),
        "training_seconds": round(finished - ingested_at, 4),
        "files": len(ingested.files_ingested),
        "rows": ingested.rows_added,
        "model": trained["model"],
        "measured_at": _now(),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file this system wrote, or None where it is absent or damaged (so it is made again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- packages -------------------------------------------------------------------------------


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[tuple[str, str | None]]:
    """``(name, pinned version or specifier)`` for every requirement line; options are skipped."""
    requirements = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)", line)
        if not line or line.startswith("-") or not match:
            continue
        spec = match.group(2).strip()
        requirements.append((match.group(1), spec[2:].strip() if spec.startswith("==") else (spec or None)))
    return requirements


def outdated_packages_list(config: Config, requirements: Path | None = None, use_cache: bool = True) -> dict[str, Any]:
    """Pinned, installed and latest available version of every package in ``requirements.txt``.

    The latest versions come from ``pip index versions`` (so pip's own configuration decides
    which index is asked), at most ``package_check_seconds`` in all; a package not answered in
    time is ``"unknown"``. Answers are kept ``package_cache_hours`` in
    ``<reports>/package_index_cache.json``; ``use_cache=False`` asks again.
    """
    pins = read_requirements(requirements or REQUIREMENTS_FILE)
    cache_path = config.reports_folder / PACKAGE_CACHE_FILE
    stored = _fresh_cache(cache_path, config["package_cache_hours"])
    cache = stored if use_cache else {}
    to_ask = [name for name, _ in pins if name not in cache]
    started = time.monotonic()
    answers = latest_versions(to_ask, config["package_check_seconds"])
    seconds = time.monotonic() - started
    checked_at = _now()
    found = {name: {"latest": latest, "checked_at": checked_at} for name, latest in answers.items() if latest}
    if found:
        atomic_write_json(cache_path, {**stored, **found})
    known = {**{name: entry["latest"] for name, entry in cache.items()}, **{n: e["latest"] for n, e in found.items()}}
    packages = [_package_row(name, pinned, known.get(name)) for name, pinned in pins]
    unknown = [row["name"] for row in packages if row["latest"] == UNKNOWN]
    if unknown and config["package_check_seconds"] > 0:
        logger.warning("latest version unknown for %s: package index unreachable or slow", ", ".join(unknown))
    return {
        "checked_at": checked_at,
        "index_budget_seconds": config["package_check_seconds"],
        "index_seconds": round(seconds, 3),
        "asked_index": to_ask,
        "from_cache": sorted(set(known) & {name for name, _ in pins} - set(found)),
        "packages": packages,
    }


def _package_row(name: str, pinned: str | None, latest: str | None) -> dict[str, Any]:
    installed = installed_version(name)
    return {
        "name": name,
        "pinned": pinned,
        "installed": installed,
        "latest": latest or UNKNOWN,
        "status": _package_status(pinned, installed, latest),
    }


def _package_status(pinned: str | None, installed: str | None, latest: str | None) -> str:
    from packaging.version import InvalidVersion, Version  # a dependency of matplotlib

    if installed is None:
        return "not installed"
    if pinned and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pinned) and pinned != installed:
        return "installed differs from pin"
    if latest is None:
        return "latest unknown"
    try:
        newer = Version(latest) > Version(installed)
    except InvalidVersion:
        newer = latest != installed
    return "outdated" if newer else "up to date"


def _fresh_cache(path: Path, hours: float) -> dict[str, dict[str, str]]:
    """Cached answers younger than ``hours``."""
    cached = _read_json(path) or {}
    oldest = datetime.now(timezone.utc) - timedelta(hours=hours)
    fresh = {}
    for name, entry in cached.items():
        try:
            if datetime.fromisoformat(entry["checked_at"]) >= oldest and entry["latest"]:
                fresh[name] = entry
        except (KeyError, TypeError, ValueError):
            continue  # a damaged entry is asked again
    return fresh


def latest_versions(names: list[str], budget_seconds: float) -> dict[str, str | None]:
    """The newest release of each package per ``pip index versions``; None where unanswered.

    At most as many pip processes as CPUs run at once (more only slow each other down), and
    every one still running when ``budget_seconds`` are up is killed: a cron run never waits
    longer on an unreachable or slow index.
    """
    answers: dict[str, str | None] = {name: None for name in names}
    if budget_seconds <= 0:
        return answers
    deadline = time.monotonic() + budget_seconds
    queue = list(names)
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    slots = max(2, os.cpu_count() or 2)
    try:
        while (queue or running) and time.monotonic() < deadline:
            while queue and len(running) < slots:
                name = queue.pop(0)
                running[name] = _start_pip_query(name, min(PIP_SOCKET_TIMEOUT, budget_seconds))
            for name, (process, output) in list(running.items()):
                if process.poll() is not None:
                    answers[name] = _parse_pip_answer(process.returncode, output)
                    output.close()
                    del running[name]
            time.sleep(POLL_SECONDS)
    finally:
        for process, output in running.values():
            process.kill()
            process.wait()
            output.close()
    return answers


def _start_pip_query(name: str, socket_timeout: float) -> tuple[subprocess.Popen, Any]:
    output = tempfile.TemporaryFile()  # a file, not a pipe: a long answer cannot block pip
    command = [
        sys.executable, "-m", "pip", "index", "versions", name, "--json",
        "--timeout", str(socket_timeout), "--retries", "0", "--disable-pip-version-check", "--no-input",
    ]
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return process, output


def _parse_pip_answer(returncode: int, output: Any) -> str | None:
    if returncode != 0:
        return None
    output.seek(0)
    try:
        return json.loads(output.read().decode("utf-8")).get("latest") or None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


# --- drift ----------------------------------------------------------------------------------


def data_drift(config: Config, version: str | None = None, batch: pd.DataFrame | None = None) -> dict[str, Any]:
    """Drift of the newest ingested batch (or ``batch``) from the training data of ``version``.

    Per model feature: PSI with its band, a KS or chi-squared test, missing shares and the
    noise floor; and the PSI of the model's risk scores, the reference's computed with the
    same model. See drift.py for the method.
    """
    deployed = deployment.load_deployed_model(config, version)
    kinds = deployed.metadata["column_kinds"]
    reference_file = deployed.path / deployment.REFERENCE_FILE
    reference = ingestion.read_dataset(reference_file, kinds)
    result: dict[str, Any] = {
        "reference": {"version": deployed.version, "file": display_path(config, reference_file), "rows": int(len(reference))},
        "batch": None,
        "bands": {"stable_below": drift.STABLE_BELOW, "significant_above": drift.SIGNIFICANT_ABOVE},
        "method": "PSI on reference deciles (categories as bins, missing as a bin, shares floored at 1e-4); "
        "KS test for numeric, chi-squared for categorical features",
        "features": [],
        "prediction_psi": None,
        "drifted_features": [],
        "warnings": [],
    }
    batch_file = config.output_folder / ingestion.LATEST_BATCH_FILE
    if batch is None and not batch_file.is_file():
        result["warnings"].append(f"no ingested batch yet ({display_path(config, batch_file)}): drift not measured")
        return result
    if batch is None:
        batch = ingestion.read_dataset(batch_file, kinds)
        origin = {"source": display_path(config, batch_file), **_batch_origin(config)}
    else:
        origin = {"source": "the batch given", "files": [], "ingested_at": None}
    result["batch"] = {**origin, "rows": int(len(batch)), "rows_in_reference": _rows_in(batch, reference, kinds)}
    result["features"] = _feature_drift(config, reference_file, batch_file, origin, reference, batch, deployed.metadata)
    reference_risk, _ = risk_and_predictions(deployed, reference)
    batch_risk, _ = risk_and_predictions(deployed, batch)
    result["prediction_psi"] = drift.compare_feature("predicted_risk", pd.Series(reference_risk), pd.Series(batch_risk), drift.NUMERIC)
    result["drifted_features"] = [row["feature"] for row in result["features"] if row["drifted"]]
    result["warnings"] = _drift_warnings(result)
    return result


def _feature_drift(
    config: Config, reference_file: Path, batch_file: Path, origin: dict[str, Any], reference: pd.DataFrame, batch: pd.DataFrame, metadata: dict[str, Any]
) -> list[dict[str, Any]]:
    """drift.compare_frames, on the Dask cluster's workers (reading both files there) when one is configured."""
    if not config["dask_scheduler_address"] or origin["source"] == "the batch given":
        return drift.compare_frames(reference, batch, metadata["features"])
    import compute

    with compute.open_runner(config) as runner:
        return drift.compare_files(runner, str(reference_file), str(batch_file), metadata["column_kinds"], metadata["features"])


def _batch_origin(config: Config) -> dict[str, Any]:
    """The files and time of the ingestion run that produced ``latest_batch.csv``."""
    runs = [e for e in ledger.read_record(config) if e["status"] == ledger.STATUS_INGESTED and e.get("rows_added")]
    if not runs:
        return {"files": [], "ingested_at": None}
    last = [e for e in runs if e["run_id"] == runs[-1]["run_id"]]
    return {"files": [e["name"] for e in last], "ingested_at": last[-1]["ingested_at"]}


def _rows_in(batch: pd.DataFrame, reference: pd.DataFrame, kinds: dict[str, str]) -> int:
    """How many batch rows are also reference rows (the version was trained on them)."""
    columns = [c for c in reference.columns if c in batch.columns]
    if not columns or batch.empty:
        return 0

    def hashes(frame: pd.DataFrame) -> np.ndarray:
        typed = {c: frame[c].astype("float64") if kinds.get(c) == ingestion.NUMERIC else frame[c].astype("object") for c in columns}
        return pd.util.hash_pandas_object(pd.DataFrame(typed), index=False).to_numpy()

    return int(np.isin(hashes(batch), hashes(reference)).sum())


def _drift_warnings(result: dict[str, Any]) -> list[str]:
    warnings = []
    version, batch = result["reference"]["version"], result["batch"]
    floors = [row["noise_floor"] for row in result["features"] + [result["prediction_psi"]] if row["noise_floor"] is not None]
    if batch["rows"] == 0:
        warnings.append("the batch is empty: drift not measured")
    elif floors and max(floors) >= drift.NOISE_FLOOR_WARNING:
        warnings.append(
            f"the batch ({batch['rows']} rows) is too small for the drift figures to mean much: "
            f"sampling alone gives PSI values up to {max(floors):.3f}"
        )
    if batch["rows_in_reference"]:
        warnings.append(
            f"{batch['rows_in_reference']} of the batch's {batch['rows']} rows are in {version}'s training data "
            f"(the batch was ingested before {version} was trained), so drift against it is understated"
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
    config: Config, version: str | None = None, measure: bool = False, refresh_packages: bool = False
) -> dict[str, Any]:
    """Every diagnostic of ``version`` (default: current) as one JSON-ready document."""
    version = resolve_version(config, version)  # resolved once: every part describes one version
    master = ingestion.load_master(config)
    document = {
        "version": version,
        "generated_at": _now(),
        "summary_statistics": dataframe_summary(config, master),
        "missing_data": missing_data(config, master),
        "execution_time": execution_time(config, version, measure=measure),
        "outdated_packages": outdated_packages_list(config, use_cache=not refresh_packages),
        "data_drift": data_drift(config, version),
    }
    document["warnings"] = _document_warnings(document)
    return json_ready(document)


def _document_warnings(document: dict[str, Any]) -> list[str]:
    warnings = list(document["data_drift"]["warnings"])
    for column, missing in document["missing_data"]["columns"].items():
        if missing["share"] is not None and missing["share"] >= MOSTLY_MISSING_SHARE:
            warnings.append(f"column {column} is {missing['share']:.0%} missing in the master dataset")
    timings = document["execution_time"]
    if timings["ingestion_seconds"] is None:
        warnings.append("no ingestion timing recorded yet")
    packages = document["outdated_packages"]
    for package in packages["packages"]:
        if package["status"] in ("not installed", "installed differs from pin"):
            warnings.append(f"package {package['name']}: {package['status']} (pinned {package['pinned']}, installed {package['installed']})")
    unknown = [p["name"] for p in packages["packages"] if p["latest"] == UNKNOWN]
    if unknown:
        why = "the package index was not reached in time" if packages["index_budget_seconds"] else "package_check_seconds is 0"
        warnings.append(f"latest version unknown for {len(unknown)} package(s): {why}")
    return warnings


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return number(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def save_diagnostics(
    config: Config, version: str | None = None, measure: bool = False, refresh_packages: bool = False
) -> Path:
    """Build the diagnostics of ``version`` (default: current) and write them beside its reports."""
    document = build_diagnostics(config, version, measure=measure, refresh_packages=refresh_packages)
    path = diagnostics_path(config, document["version"])
    atomic_write_json(path, document)
    logger.info("wrote %s (%d warning(s))", path, len(document["warnings"]))
    return path


def load_diagnostics(config: Config, version: str) -> dict[str, Any] | None:
    """The saved diagnostics of ``version``, or None where there are none yet."""
    return _read_json(diagnostics_path(config, version))


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--version", help="the deployed version to diagnose (default: the current one)")
    parser.add_argument("--measure", action="store_true", help="also time ingestion and training on copies of the data")
    parser.add_argument("--refresh-packages", action="store_true", help="ask the package index again, ignoring the cache")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = load_config(args.config)
        path = save_diagnostics(config, args.version, measure=args.measure, refresh_packages=args.refresh_packages)
    except (ConfigError, deployment.DeploymentError, scoring.ScoringError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    print(path.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
