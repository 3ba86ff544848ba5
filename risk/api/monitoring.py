"""``GET /monitoring``: the outcomes' figures (risk/monitoring/outcomes.py) as JSON, and the gauges
``/metrics`` shows from them.

The files are read again only when one of them changed (its size or modification time), so a
Prometheus scrape every few seconds costs a few stats.
"""

from __future__ import annotations

import threading
from typing import Any

from risk.core.settings import Config
from risk.monitoring import outcomes, runfacts


class OutcomesCache:
    """``outcomes.summary(config)``, read again when the outcome files change."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._cached: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def _signature(self) -> tuple[Any, ...]:
        folder = outcomes.outcomes_folder(self.config)
        paths = [outcomes.backtest_path(self.config), *sorted((folder / outcomes.REALISED_FOLDER).glob("*.jsonl"))]
        signature = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(signature)

    def get(self) -> dict[str, Any]:
        signature = self._signature()
        with self._lock:
            if self._cached is not None and self._cached[0] == signature:
                return self._cached[1]
        figures = outcomes.summary(self.config)
        with self._lock:
            self._cached = (signature, figures)
        return figures


def answer(figures: dict[str, Any], metric: str) -> dict[str, Any]:
    """The JSON of ``GET /monitoring``: the last figures first, then every batch."""
    return {
        "metric": metric,
        "last_realised": figures["last_realised"],
        "last_list": figures["last_list"],
        "notes": figures["notes"],
        "realised": figures["realised"],
        "backtests": figures["backtests"],
    }


def gauge_values(figures: dict[str, Any]) -> dict[str, float | None]:
    """The last batch's realised score and ROC AUC, and the last back-tested list's hit rate (None: unknown)."""
    realised, listed = figures["last_realised"] or {}, figures["last_list"] or {}
    values = {
        "score": realised.get("score"),
        "roc_auc": realised.get("roc_auc"),
        "hit_rate": listed.get("precision_at_budget"),
    }
    # A hand-edited line may hold anything there: what is not a number is unknown (NaN), not a 500.
    return {key: value if runfacts.finite_number(value) else None for key, value in values.items()}
