"""Diagnose the deployed model and its data: summaries, missing values, timings, packages, drift.

``python diagnostics.py [--config PATH] [--version vN] [--measure]`` prints one JSON document
and saves it as ``<reports>/<version>/diagnostics.json``, beside the reports of the version it
describes. The API serves that file; it never computes it. Top-level keys: ``version``,
``generated_at``, ``summary_statistics``, ``missing_data``, ``execution_time``,
``outdated_packages``, ``data_drift`` and ``warnings``.

Data drift compares the newest ingested batch (``<output>/latest_batch.csv``) with the
training data of the version that was current when the batch arrived (the reference sample
stored in that version at deployment time, ``reference_data.csv``): a version's own
training data already holds the batch that made it. Before any version (the batch is the
first training data) the test data is compared with the training data instead. See
``drift.py`` for the method.
"""
from __future__ import annotations

import base64
import configparser
import functools
import gzip
import html.parser
import json
import logging
import math
import os
import queue
import re
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import deployment
import drift
import ingestion
import ledger
import scoring
import records
from fsutil import atomic_write_json, configure_logging, read_json_lines
from settings import Config, ConfigError, PATH_KEYS, PROJECT_DIR, load_config, script_parser
from training import installed_version
from tables import rows_also_in
from records import DIAGNOSTICS_FILE, PACKAGE_CACHE_FILE

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = PROJECT_DIR / "requirements.txt"
UNKNOWN = "unknown"
MAX_LEVELS = 20  # level counts listed per categorical column; the rest are summed
MOSTLY_MISSING_SHARE = 0.5
RECENT_RUNS = 10
DEFAULT_INDEX_URL = "https://pypi.org/simple"
# JSON (PEP 691) where the index offers it, the HTML of PEP 503 otherwise, as pip asks.
SIMPLE_API_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"
SDIST_EXTENSIONS = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")
MAX_LOOKUPS_AT_ONCE = 32


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
    with single_threaded(), drift.captured_warnings() as caught:
        risk, predicted = deployed.model.predict_proba(features)[:, 1], deployed.model.predict(features).astype(int)
    for message in caught:  # once each, in the log, not a line per call on stderr
        logger.warning("%s predicting %d rows: %s", deployed.version, len(frame), message)
    return risk, predicted


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
    last_ingestion = _read_json(config.output_folder / records.LAST_RUN_FILE) or {}
    trained = json.loads((deployment.version_path(config, version) / records.METADATA_FILE).read_text(encoding="utf-8"))
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
    runs = [{**r, "in_progress": False} for r in records.read_audit(config) if "ingestion_seconds" in r or r.get("version_deployed")]
    if run_record and run_record.get("version_deployed") == version and not _deploying_runs(runs, version):
        runs.append({**run_record, "in_progress": True})
    deploying = _deploying_runs(runs, version)
    shown = runs[-RECENT_RUNS:]
    if deploying and deploying[-1] not in shown:
        shown = [deploying[-1]] + shown[1:]
    rows = [{**{key: run.get(key) for key in RUN_KEYS}, "in_progress": run["in_progress"],
             "deployed_this_version": run.get("version_deployed") == version} for run in shown]
    if not deploying:
        rows.append(_manifest_run(config, version))
        rows.sort(key=lambda row: str(row["started_at"] or ""))
    return rows


def _deploying_runs(runs: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    return [run for run in runs if run.get("version_deployed") == version]


def _manifest_run(config: Config, version: str) -> dict[str, Any]:
    """A row for a deployment the audit log does not hold, from the version's manifest."""
    manifest = deployment.read_manifest(deployment.version_path(config, version))
    return {
        **dict.fromkeys(RUN_KEYS), "started_at": manifest.get("deployed_at"), "version_deployed": version,
        "decision": "deployed (no audit line: by hand, or the run is still under way)",
        "in_progress": False, "deployed_this_version": True,
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

    The latest versions come from the package indexes pip is configured with (so pip's own
    configuration decides which are asked), every package asked at once, at most
    ``package_check_seconds`` in all; a package not answered in time is ``"unknown"``. Answers are kept ``package_cache_hours`` in
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
    """The newest release of each package on pip's configured indexes; None where unanswered.

    Every package is looked up on every index at once (one round trip, not one pip process
    per package), with the rules of ``pip index versions``: final releases only, not yanked,
    a wheel this interpreter can install or a source archive, ``Requires-Python`` met. Lookups
    still running when ``budget_seconds`` are up are abandoned (daemon threads): a cron run
    never waits longer on an unreachable or slow index.
    """
    answers: dict[str, str | None] = {name: None for name in names}
    if budget_seconds <= 0 or not names:
        return answers
    deadline = time.monotonic() + budget_seconds
    sources, context = pip_index_sources(), _ssl_context()
    tasks: queue.Queue = queue.Queue()
    for name in names:
        for source in sources:
            tasks.put((name, source))
    done: queue.Queue = queue.Queue()
    for _ in range(min(MAX_LOOKUPS_AT_ONCE, tasks.qsize())):
        threading.Thread(target=_lookup_worker, args=(tasks, done, deadline, context), daemon=True).start()
    found: dict[str, list[Any]] = {name: [] for name in names}
    answered: set[str] = set()
    for _ in range(len(names) * len(sources)):
        try:
            name, versions = done.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if versions is not None:
            answered.add(name)
            found[name].extend(versions)
    for name in answered:
        answers[name] = str(max(found[name])) if found[name] else None
    return answers


def pip_index_sources(environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``(kind, location)`` of every index and find-links location pip is configured with.

    pip's own rules: its configuration files in order (global, user, site, then
    ``PIP_CONFIG_FILE``; ``os.devnull`` there disables them all), the ``[index]`` section over
    ``[global]``, and ``PIP_*`` environment variables over both.
    """
    environ = os.environ if environ is None else environ
    values = _pip_config_values(environ)

    def option(name: str) -> str | None:
        from_environment = environ.get("PIP_" + name.upper().replace("-", "_"))
        return from_environment if from_environment is not None else values.get(f"index.{name}", values.get(f"global.{name}"))

    sources = [("find-links", location) for location in (option("find-links") or "").split()]
    if (option("no-index") or "").strip().lower() in ("1", "y", "yes", "t", "true", "on"):
        return sources
    indexes = [option("index-url") or DEFAULT_INDEX_URL, *(option("extra-index-url") or "").split()]
    return [("index", url) for url in indexes] + sources


def _pip_config_values(environ: dict[str, str]) -> dict[str, str]:
    config_file = environ.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return {}
    home = Path(environ.get("HOME") or Path.home())
    files = [Path(d) / "pip" / "pip.conf" for d in environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (config_file and Path(config_file).exists()):  # pip skips the user's files then
        files += [home / ".pip" / "pip.conf", Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    if config_file:
        files.append(Path(config_file))
    values: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # pip would stop on a broken file; the check just does without it
        for section in parser.sections():
            for key, value in parser.items(section):
                values[f"{section}.{key.lower().replace('_', '-')}"] = value
    return values


def _lookup_worker(tasks: queue.Queue, done: queue.Queue, deadline: float, context: ssl.SSLContext) -> None:
    while True:
        try:
            name, (kind, location) = tasks.get_nowait()
        except queue.Empty:
            return
        try:
            files = _index_files(kind, location, name, max(0.1, deadline - time.monotonic()), context)
            versions = _release_versions(files, name)
        except Exception as exc:  # any failure of one index leaves that answer unknown, never the run
            logger.debug("package index %s for %s: %s", location, name, exc)
            versions = None
        done.put((name, versions))


def _index_files(
    kind: str, location: str, name: str, timeout: float, context: ssl.SSLContext
) -> list[tuple[str, str | None, bool]]:
    """``(file name, requires-python, yanked)`` of the files offered for ``name``; [] if it is not there."""
    if kind == "find-links" and "://" not in location:
        folder = Path(location).expanduser()
        return [(p.name, None, False) for p in folder.iterdir()] if folder.is_dir() else []
    url = location if kind == "find-links" else f"{location.rstrip('/')}/{_canonical_name(name)}/"
    answer = _fetch(url, timeout, context)
    if answer is None:
        return []
    content_type, body = answer
    if "json" in content_type:
        return [(f["filename"], f.get("requires-python"), f.get("yanked") not in (None, False)) for f in json.loads(body)["files"]]
    links = _Links()
    links.feed(body.decode("utf-8", errors="replace"))
    return links.files


def _fetch(url: str, timeout: float, context: ssl.SSLContext) -> tuple[str, bytes] | None:
    """(content type, body) of ``url``; None where it does not exist (404, or no such file)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        path = path / "index.html" if path.is_dir() else path
        return ("text/html", path.read_bytes()) if path.is_file() else None
    headers = {"Accept": SIMPLE_API_ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "risk-assessment-diagnostics"}
    if parts.username:  # credentials in the index URL, as pip allows
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return response.headers.get("Content-Type", ""), body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _ssl_context() -> ssl.SSLContext:
    """pip's ``cert`` setting (a CA bundle) where one is configured; the system's otherwise."""
    cert = os.environ.get("PIP_CERT") or _pip_config_values(os.environ).get("global.cert")
    try:
        return ssl.create_default_context(cafile=cert if cert and Path(cert).is_file() else None)
    except (ssl.SSLError, OSError) as exc:  # an unreadable bundle: the system's, and say so
        logger.warning("pip's cert %s cannot be used (%s): the system's CA certificates are used instead", cert, exc)
        return ssl.create_default_context()


class _Links(html.parser.HTMLParser):
    """The file links of a PEP 503 simple-index page or a find-links page."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[tuple[str, str | None, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            filename = urllib.parse.unquote(urllib.parse.urlsplit(attributes["href"]).path.rsplit("/", 1)[-1])
            self.files.append((filename, attributes.get("data-requires-python"), "data-yanked" in attributes))


def _canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release_versions(files: list[tuple[str, str | None, bool]], name: str) -> list[Any]:
    """The versions ``pip index versions`` would list: final, not yanked, installable here."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    python = ".".join(map(str, sys.version_info[:3]))
    versions = []
    for filename, requires_python, yanked in files:
        version = None if yanked else _file_version(filename, _canonical_name(name))
        if version is None or version.is_prerelease:
            continue
        try:
            if requires_python and not SpecifierSet(requires_python).contains(python, prereleases=True):
                continue
        except InvalidSpecifier:
            pass  # pip ignores a malformed Requires-Python too
        versions.append(version)
    return versions


def _file_version(filename: str, canonical: str) -> Any:
    """The version of a wheel this interpreter supports, or of a source archive; None otherwise."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    if filename.endswith(".whl"):
        try:
            project, version, _, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion):
            return None
        return version if project == canonical and tags & _supported_tags() else None
    extension = next((e for e in SDIST_EXTENSIONS if filename.lower().endswith(e)), None)
    if extension is None:
        return None
    project, _, version_text = filename[: -len(extension)].rpartition("-")
    if _canonical_name(project) != canonical:
        return None
    try:
        return Version(version_text)
    except InvalidVersion:
        return None


@functools.lru_cache(maxsize=1)
def _supported_tags() -> frozenset:
    from packaging.tags import sys_tags

    return frozenset(sys_tags())


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
    deployed = deployment.load_deployed_model(config, version)
    batch_file = config.output_folder / records.LATEST_BATCH_FILE
    if batch is not None:
        origin = {"source": "the batch given", "files": [], "ingested_at": None}
        return _compare_with_training(config, deployed, batch, origin, GIVEN_BATCH)
    if not batch_file.is_file():
        result = _drift_skeleton(config, deployed, NEWEST_BATCH)
        result["warnings"].append(f"no ingested batch yet ({display_path(config, batch_file)}): drift not measured")
        return result
    arrival = _batch_origin(config)
    origin = {"source": display_path(config, batch_file), "files": arrival["files"], "ingested_at": arrival["ingested_at"]}
    if arrival["run_id"] is None:  # the ingestion record does not say when it came: compare as before
        frame = ingestion.read_dataset(batch_file, deployed.metadata["column_kinds"])
        return _compare_with_training(config, deployed, frame, {**origin, "current_on_arrival": None}, NEWEST_BATCH)
    on_arrival = version_current_on_arrival(config, arrival["run_id"], arrival["ingested_at"])
    if on_arrival is None:
        test = scoring.load_test_data(config)
        files = sorted(p.name for p in config.test_data_folder.glob("*.csv") if not p.name.startswith("."))
        test_origin = {"source": display_path(config, config.test_data_folder), "files": files, "ingested_at": None,
                       "current_on_arrival": None, "newest_batch": origin}
        return _compare_with_training(config, deployed, test, test_origin, TEST_DATA)
    try:
        serving = deployed if on_arrival == deployed.version else deployment.load_deployed_model(config, on_arrival)
    except (deployment.DeploymentError, OSError, ValueError) as exc:
        result = _drift_skeleton(config, deployed, NEWEST_BATCH)
        result["warnings"].append(f"drift not measured: {on_arrival}, current when the newest batch arrived, cannot be loaded ({exc})")
        return result
    frame = ingestion.read_dataset(batch_file, serving.metadata["column_kinds"])
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
    for event in records.read_history(config):
        version = event.get("version")
        if not version:
            continue
        if version not in record_holds_run:
            entries = read_json_lines(deployment.versions_folder(config) / version / records.RECORD_FILE)
            record_holds_run[version] = any(entry.get("run_id") == run_id for entry in entries)
        if record_holds_run[version]:
            break
        if event.get("action") != "deploy" and ingested_at is not None and str(event.get("at", "")) > ingested_at:
            break
        if event.get("pending_approval") or event.get("action") in ("reject", "supersede"):
            continue  # a version awaiting approval, rejected or superseded was not current
        current = version
    return current


def _drift_skeleton(config: Config, reference_model: deployment.DeployedModel, comparison: str) -> dict[str, Any]:
    reference_file = reference_model.path / records.REFERENCE_FILE
    return {
        "comparison": comparison,
        "title": _drift_title(comparison, reference_model.version),
        "reference": {"version": reference_model.version, "file": display_path(config, reference_file), "rows": None},
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
    config: Config, reference_model: deployment.DeployedModel, batch: pd.DataFrame, origin: dict[str, Any], comparison: str
) -> dict[str, Any]:
    """Every drift figure of ``batch`` against the reference sample of ``reference_model``'s training data."""
    result = _drift_skeleton(config, reference_model, comparison)
    kinds = reference_model.metadata["column_kinds"]
    reference = ingestion.read_dataset(reference_model.path / records.REFERENCE_FILE, kinds)
    result["reference"]["rows"] = int(len(reference))
    result["batch"] = {**origin, "rows": int(len(batch)), "rows_in_reference": rows_also_in(batch, reference, kinds)}
    # Only the newest batch is one file the cluster's workers can read for themselves.
    batch_file = config.output_folder / records.LATEST_BATCH_FILE if comparison == NEWEST_BATCH else None
    reference_file = reference_model.path / records.REFERENCE_FILE
    result["features"] = _feature_drift(config, reference_file, batch_file, reference, batch, reference_model.metadata)
    reference_risk, _ = risk_and_predictions(reference_model, reference)
    batch_risk, _ = risk_and_predictions(reference_model, batch)
    result["prediction_psi"] = drift.compare_feature("predicted_risk", pd.Series(reference_risk), pd.Series(batch_risk), drift.NUMERIC)
    result["drifted_features"] = [row["feature"] for row in result["features"] if row["drifted"]]
    result["warnings"] = _drift_warnings(result)
    return result


def _feature_drift(
    config: Config, reference_file: Path, batch_file: Path | None, reference: pd.DataFrame, batch: pd.DataFrame, metadata: dict[str, Any]
) -> list[dict[str, Any]]:
    """drift.compare_frames, on the Dask cluster's workers (reading both files there) when one
    is configured and the batch is a file they can read."""
    if not config["dask_scheduler_address"] or batch_file is None:
        return drift.compare_frames(reference, batch, metadata["features"])
    import compute

    with compute.open_runner(config) as runner:
        return drift.compare_files(runner, str(reference_file), str(batch_file), metadata["column_kinds"], metadata["features"])


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
    floors = [row["noise_floor"] for row in result["features"] + [result["prediction_psi"]] if row["noise_floor"] is not None]
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
    config: Config, version: str | None = None, measure: bool = False, refresh_packages: bool = False,
    run_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every diagnostic of ``version`` (default: current) as one JSON-ready document.

    ``run_record``: the record of the fullprocess run that deployed ``version``, when it is the
    caller (its audit line is written only when it ends).
    """
    version = resolve_version(config, version)  # resolved once: every part describes one version
    master = ingestion.load_master(config)
    document = {
        "version": version,
        "generated_at": _now(),
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
    import fairness

    if not config["protected_attributes"]:
        return {"attributes": {}, "note": "no protected_attributes configured: nothing measured"}
    deployed = deployment.load_deployed_model(config, version)
    test = scoring.load_test_data(config)
    y = scoring.binary_target(test[config.target], config.positive_label)
    risk, predicted = risk_and_predictions(deployed, test)
    with single_threaded():
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
    config: Config, version: str | None = None, measure: bool = False, refresh_packages: bool = False,
    run_record: dict[str, Any] | None = None,
) -> Path:
    """Build the diagnostics of ``version`` (default: current) and write them beside its reports."""
    document = build_diagnostics(config, version, measure=measure, refresh_packages=refresh_packages, run_record=run_record)
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
