"""Where every artefact lives: the file names the steps share, and how a record states a time.

One home for the names of a model version's files, the reports, the master dataset and the
logs. Stdlib only: ``fullprocess.py`` reads these on every cron tick, and that path must not
import pandas or scikit-learn.
"""

from __future__ import annotations

import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    pass

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
SETUP_CHECK_FILE = "setup_check.json"  # the config digest the set-up check last passed with (preflight)
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
