"""What the runs wrote, as the figures Prometheus watches: each feature's last PSI, the hours since
the last retrain, the rows ingested by the last run and in all.

Read from the small files the run already writes (``last_ingestion.json`` and ``master_state.json``
in the ingested-data folder, the newest training's ``trainedmodel.json``, and the served version's
``diagnostics.json``), each parsed again only when its size or modification time changed, so that
a scrape every few seconds costs a few stats. The API's ``/metrics`` shows them
(``risk/api/apimetrics.py``). Stdlib only.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from risk.core import artefacts
from risk.core.jsonfiles import JSON_READ_ERRORS, read_json
from risk.core.settings import Config

logger = logging.getLogger(__name__)


class JsonFiles:
    """JSON files parsed once per state (size and modification time); None for one absent or damaged."""

    def __init__(self) -> None:
        self._documents: dict[Path, tuple[tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> Any:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._documents.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            document = read_json(path)
        except JSON_READ_ERRORS as exc:
            logger.warning("%s cannot be read for /metrics: %s", path, exc)
            document = None
        with self._lock:
            self._documents[path] = (key, document)
        return document


def feature_psi(diagnostics: Any, features: dict[str, list[str]]) -> dict[str, float]:
    """Each configured feature's PSI in a diagnostics document (its ``data_drift``), by feature name.

    Only the model's own features are named: a label value never comes from the data, so a
    damaged or hostile document cannot grow /metrics.
    """
    configured = set(features.get("numeric", [])) | set(features.get("categorical", []))
    drift = diagnostics.get("data_drift") if isinstance(diagnostics, dict) else None
    rows = drift.get("features") if isinstance(drift, dict) else None
    if not isinstance(rows, list):
        return {}
    found = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        name, psi = row.get("feature"), row.get("psi")
        if name in configured and finite_number(psi):
            found[name] = float(psi)
    return found


def finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RunFacts:
    """The run's figures for /metrics, from its files (cached by their state)."""

    def __init__(self, config: Config, files: JsonFiles | None = None):
        self.config = config
        self.files = files or JsonFiles()

    def hours_since_retrain(self, served_metadata: dict[str, Any] | None, now: datetime | None = None) -> float | None:
        """Hours since the newest training finished (``trainedmodel.json`` of the training output, else the
        served version's); None when neither says."""
        trained = self.files.get(self.config.model_folder / artefacts.METADATA_FILE)
        stamp = trained.get("trained_at") if isinstance(trained, dict) else None
        if stamp is None and served_metadata:
            stamp = served_metadata.get("trained_at")
        when = _parsed_time(stamp)
        if when is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - when).total_seconds() / 3600)

    def rows_ingested(self) -> dict[str, int | None]:
        """``last_run``: rows the last ingestion that did work added; ``total``: rows in the master."""
        last = self.files.get(self.config.output_folder / artefacts.LAST_RUN_FILE)
        master = self.files.get(self.config.output_folder / artefacts.MASTER_STATE_FILE)
        return {
            "last_run": _count(last.get("rows_added") if isinstance(last, dict) else None),
            "total": _count(master.get("rows") if isinstance(master, dict) else None),
        }


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _parsed_time(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
