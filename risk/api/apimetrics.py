"""The API's Prometheus metrics: requests, latency, predictions and model loads, by fixed labels."""

from __future__ import annotations

from typing import Any

# Metric labels come from fixed sets, so that no caller can grow /metrics: other methods and
# unmatched paths are counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_LABEL = "other"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def metric_method(method: str) -> str:
    """The method as a metric label: one of a fixed set, else "other"."""
    return method if method in KNOWN_METHODS else OTHER_LABEL


class ApiMetrics:
    """Prometheus metrics in a registry of this app's own (so tests can build many apps).

    Under gunicorn, ``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
    imports prometheus_client; the values then live in files shared by all workers, and
    ``/metrics`` adds them up across workers.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.multiprocess = values.ValueClass is not values.MutexValue
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["endpoint", "method", "status"]
        self.requests = Counter("riskapi_requests_total", "HTTP requests answered", labels, registry=self.registry)
        self.latency = Histogram(
            "riskapi_request_duration_seconds",
            "Time to answer a request",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "riskapi_predictions_total",
            "Rows scored, by predicted class",
            ["model_version", "prediction"],
            registry=self.registry,
        )
        self.model_info = Gauge(  # livemax: a worker that died no longer counts
            "riskapi_model_info",
            "1 for the model version a worker serves",
            ["version"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        # liveall: one value per live worker process (a "pid" label under gunicorn), so that how the
        # connections are spread over the workers can be seen; a dead worker's value goes with it.
        self.worker_requests = Gauge(
            "riskapi_worker_requests",
            "Requests answered by this worker process since it started",
            multiprocess_mode="liveall",
            registry=self.registry,
        )
        self.model_loads = Counter(
            "riskapi_model_loads_total", "Attempts to load a deployed version", ["outcome"], registry=self.registry
        )
        self.prediction_log_failures = Counter(
            "riskapi_prediction_log_failures_total",
            "Answers whose rows could not be written to the prediction log (log_predictions)",
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled children, looked up once
        self._outcome_gauges(Gauge)

    def _outcome_gauges(self, gauge: Any) -> None:
        """The outcomes' gauges (risk/monitoring/outcomes.py), set from the files at each scrape: NaN
        until known. mostrecent: every worker reads the same files, the latest reading wins."""
        self.outcome_gauges = {
            key: gauge(name, text, multiprocess_mode="mostrecent", registry=self.registry)
            for key, name, text in (
                (
                    "score",
                    "riskapi_outcome_realised_score",
                    "The configured metric of the deployed version on the last labelled batch it judged",
                ),
                (
                    "roc_auc",
                    "riskapi_outcome_realised_roc_auc",
                    "ROC AUC of the deployed version on the last labelled batch it judged",
                ),
                (
                    "hit_rate",
                    "riskapi_calllist_hit_rate",
                    "Share of the last back-tested call list's contacted clients who left",
                ),
            )
        }
        self.set_outcomes({})

    def set_outcomes(self, values: dict[str, float | None]) -> None:
        for key, gauge in self.outcome_gauges.items():
            value = values.get(key)
            gauge.set(float("nan") if value is None else value)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() costs ~10 µs a call; a handful of label sets ever exist
            labels = (endpoint, method, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)
        self.worker_requests.inc()

    def count_predictions(self, version: str, positives: int, negatives: int) -> None:
        for label, count in (("1", positives), ("0", negatives)):
            if count:
                key = ("predictions", version, label)
                child = self._children.get(key) or self._children.setdefault(
                    key, self.predictions.labels(version, label)
                )
                child.inc(count)

    def count_log_failure(self) -> None:
        self.prediction_log_failures.inc()

    def model_changed(self, previous: str | None, version: str | None) -> None:
        if version is None:
            self.model_loads.labels("failed").inc()
            return
        self.model_loads.labels("ok").inc()
        if previous:
            self.model_info.labels(previous).set(0)
        self.model_info.labels(version).set(1)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
