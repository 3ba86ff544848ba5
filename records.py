"""Where every artefact lives, and the records several steps read.

One home for the file names the steps share (a model version's files, the reports, the
master dataset, the logs) and for the records more than one step reads: the audit log, the
drift checkpoint and the deployment history. It sits below every step and imports nothing of
theirs, so diagnostics and reporting can read the audit log without importing the cron entry.

Stdlib only: ``fullprocess.py`` reads these on every cron tick before it knows whether there
is work, and that path must not import pandas or scikit-learn.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from fsutil import append_json_line, atomic_write_json, read_json_lines

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

    from settings import Config

# --- a model version's files (models/, production_deployment/versions/vN/) ----------------------
SKOPS_MODEL_FILE = "trainedmodel.skops"  # models saved since skops (modelfiles.py)
MODEL_FILE = "trainedmodel.pkl"  # pickled models of earlier versions, still loadable
METADATA_FILE = "trainedmodel.json"
SCORES_FILE = "scores.json"
SCORE_FILE = "latestscore.txt"
REFERENCE_FILE = "reference_data.csv"
MANIFEST_FILE = "manifest.json"
VERSIONS_FOLDER = "versions"
CURRENT_LINK = "current"
HISTORY_FILE = "history.jsonl"

# --- what diagnostics and reporting write per version (reporting writes model_report.json last) -
DIAGNOSTICS_FILE = "diagnostics.json"
CONFUSION_FILE = "confusionmatrix.png"
REPORT_PDF = "model_report.pdf"
REPORT_JSON = "model_report.json"
DIAGNOSTICS_FILES = (DIAGNOSTICS_FILE,)
REPORT_FILES = (CONFUSION_FILE, REPORT_PDF, REPORT_JSON)
PACKAGE_CACHE_FILE = "package_index_cache.json"

# --- ingestion (ingesteddata/) --------------------------------------------------------------------
MASTER_FILE = "finaldata.csv"
MASTER_STATE_FILE = "master_state.json"
HASHES_FILE = "row_hashes.u64"
DELTA_HASHES_FILE = "row_hashes.delta.u64"
LATEST_BATCH_FILE = "latest_batch.csv"
LAST_RUN_FILE = "last_ingestion.json"
RECORD_FILE = "ingestion_record.jsonl"
INGESTED_NAMES_FILE = "ingestedfiles.txt"
STAT_CACHE_FILE = ".source_stat_cache.json"
QUARANTINE_FOLDER = "quarantine"

# --- the cron run (logs/, output folder) --------------------------------------------------------
AUDIT_FILE = "audit.jsonl"
LOG_FILE = "fullprocess.log"
LOCK_FILE = "pipeline.lock"
CHECKPOINT_FILE = "drift_checkpoint.json"
API_RETURNS_FILE = "apireturns.txt"


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second: how every record states a time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def utc_stamp() -> str:
    """The current time in UTC for a file name: ``20261129T101500Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def csv_files(folder: Path) -> list[Path]:
    """The CSV files of a folder, sorted by name; hidden files (temporaries) are not data."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.csv") if not p.name.startswith("."))


# --- the audit log --------------------------------------------------------------------------------


def audit_path(config: Config) -> Path:
    return config.log_folder / AUDIT_FILE


def read_audit(config: Config) -> list[dict[str, Any]]:
    """Every audit record, oldest first."""
    return read_json_lines(audit_path(config))


def append_audit(config: Config, record: dict[str, Any]) -> None:
    append_json_line(audit_path(config), record)


# --- the drift checkpoint -------------------------------------------------------------------------


def read_checkpoint_state(config: Config) -> dict[str, Any]:
    try:
        state = json.loads((config.output_folder / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def read_checkpoint(config: Config) -> tuple[int, int]:
    """(judged, seen): the master's size at the last decision, and at the last run that
    looked at the rows after it (rows kept waiting for more are seen, not judged)."""
    checkpoint = read_checkpoint_state(config)
    judged, seen = (checkpoint.get(key) for key in ("master_bytes", "seen_bytes"))
    judged = judged if isinstance(judged, int) and judged > 0 else 0  # damaged: unknown, as if absent
    return judged, max(judged, seen if isinstance(seen, int) else 0)


def write_checkpoint(config: Config, judged: int, seen: int, **finished: str | None) -> None:
    """Record a decision; ``finished``: completed_version / newest_version, kept unless given."""
    state = read_checkpoint_state(config)
    state.update(master_bytes=judged, seen_bytes=seen)
    state.update(finished)
    atomic_write_json(config.output_folder / CHECKPOINT_FILE, state)


# --- the deployment history -----------------------------------------------------------------------


def history_path(config: Config) -> Path:
    return config.deployment_folder / HISTORY_FILE


def read_history(config: Config) -> list[dict[str, Any]]:
    """Every deployment, rollback and approval line, oldest first."""
    return read_json_lines(history_path(config))


# --- strict JSON ----------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON takes it: NaN and infinities as None, numpy scalars as Python
    ones, tuples as lists, keys as strings. The one sanitiser for every JSON the system writes."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar; duck-typed so that this module stays stdlib only
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
