"""The prediction API and the Risk-O-Meter page, served by gunicorn through ``wsgi.py``.

``create_app(config_path=None)`` builds the Flask app for one config (default: the
``RISK_API_CONFIG`` environment variable, else the ``config.json`` beside this file). The app
never trains and never runs pip: it serves the current deployment. Every request that needs
the model reads the ``current`` link once; when it points at a new version, that version is
loaded, verified (SHA-256 of every file before unpickling), compiled and self-checked, and only
then swapped in with one reference assignment. If loading fails, the old verified model keeps
serving and ``/readyz`` says why. Every model-dependent answer names the version that gave it.

Endpoints (JSON unless said): ``POST /prediction``, ``GET /scoring``, ``GET /summarystats``,
``GET /diagnostics``, ``GET /model``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
(Prometheus text) and ``GET /`` (the Risk-O-Meter page). With ``API_TOKEN`` set, everything
but ``/healthz`` and the page's static shell needs ``Authorization: Bearer <token>``.
Repeated slashes in a path are merged (``//prediction`` is ``/prediction``); answers show
paths relative to the project folder, never the server's absolute paths.

``python app.py [--config PATH] [--port N]`` runs Flask's development server on 127.0.0.1,
for trying things out; production is ``make serve`` (gunicorn, ``gunicorn.conf.py``).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import pickle
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from flask import Flask, Response, abort, current_app, g, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

import deployment
import fastpath
import serving
import records
from bufferingworker import CLOSE_CONNECTION_KEY
from fsutil import configure_logging
from settings import Config, ConfigError, load_config, script_parser
from records import DIAGNOSTICS_FILE

logger = logging.getLogger(__name__)

ENV_CONFIG = "RISK_API_CONFIG"
ENV_TOKEN = "API_TOKEN"
EXTENSION = "risk_api"
PUBLIC_ENDPOINTS = frozenset({"healthz", "index", "static"})  # the page's shell holds no data
RETRY_FAILED_LOAD_SECONDS = 5.0
DIAGNOSTICS_HINT = "run `python diagnostics.py` (fullprocess.py runs it after each deployment)"
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
UNSUPPORTED_TYPE = "Content-Type must be application/json, text/csv or multipart/form-data"
TOKEN_REQUIRED = "a valid 'Authorization: Bearer <token>' header is required"
INTERNAL_ERROR = "internal error; the server log has the details"
LINEAGE_KEYS = (
    "trained_at", "training_rows", "training_positives", "training_data_sha256", "training_files",
    "training_seconds", "package_versions", "python_version", "cv_folds", "random_seed",
)
# Metric labels come from fixed sets, so that no caller can grow /metrics: other methods and
# unmatched paths are counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_LABEL = "other"
REPEATED_SLASHES = re.compile(r"/{2,}")
# Names of a data file used by clients written for the classic course, besides "dataset".
DATASET_ALIASES = ("data_file", "filepath", "file_path")
QUERY_DATASET = "data_loc"
BODY_READ_SIZE = 64 * 1024
DRAIN_BYTES = 1024 * 1024  # of a refused body still arriving, read so the client sees the 413, not a reset
DRAIN_SECONDS = 0.5
UNINFORMATIVE_NOTE = "no better than chance: this model cannot tell clients at risk from the others; do not act on its predictions alone"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LoadedModel:
    """A verified deployed version with its compiled scorer: swapped in whole, never half-built."""

    deployed: deployment.DeployedModel
    scorer: fastpath.Scorer
    schema: serving.Schema
    known_categories: dict[str, frozenset[str]]
    loaded_at: str

    @property
    def version(self) -> str:
        return self.deployed.version

    @property
    def threshold(self) -> float:
        return float(getattr(self.deployed.model, "threshold", self.deployed.metadata["threshold"]))


def load_model(config: Config, version: str) -> LoadedModel:
    """Load, verify and compile one deployed version (raises DeploymentError and friends)."""
    deployed = deployment.load_deployed_model(config, version)
    schema = serving.Schema.from_metadata(deployed.metadata, config["id_columns"])
    check_frame = fastpath.load_check_frame(deployed.path / records.REFERENCE_FILE, deployed.metadata.get("column_kinds", {}))
    scorer = fastpath.build_scorer(deployed.model, schema, check_frame)
    known = fastpath.known_categories(deployed.model)
    return LoadedModel(deployed, scorer, schema, known, datetime.now(timezone.utc).isoformat(timespec="seconds"))


# What a corrupt or incompatible version can raise while loading; anything else is a bug.
LOAD_ERRORS = deployment.LOAD_ERRORS


class ModelHolder:
    """The model being served, replaced when the ``current`` link moves to another version."""

    def __init__(self, config: Config, on_change: Any = None):
        self.config = config
        self.on_change = on_change
        # deployment.current_version() resolves the folder on every call (~50 µs); resolved once
        # here, each request costs one readlink of the same link.
        self._link = config.deployment_folder / records.CURRENT_LINK
        self.last_error: str | None = None
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self._failed: dict[str, float] = {}

    def deployed_version(self) -> str | None:
        try:
            return os.path.basename(os.readlink(self._link))
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.last_error = project_relative(f"cannot read the current deployment link: {exc}", self.config)
            return None

    def get(self) -> LoadedModel | None:
        """The model to answer with: the deployed version once it is loaded, else the previous one."""
        current = self._current
        version = self.deployed_version()
        if version is not None and (current is None or current.version != version):
            self._load(version)
        return self._current

    def _load(self, version: str) -> None:
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_LOAD_SECONDS:
            return
        # With a model to serve, never wait: one thread loads while the others answer with the old one.
        if not self._lock.acquire(blocking=self._current is None):
            return
        try:
            if self._current is not None and self._current.version == version:
                return
            started = time.perf_counter()
            try:
                loaded = load_model(self.config, version)
            except LOAD_ERRORS as exc:
                self._failed[version] = time.monotonic()
                self.last_error = project_relative(f"{version} could not be loaded: {exc}", self.config)
                logger.error("keeping %s: %s could not be loaded: %s", self._current.version if self._current else "no model", version, exc)
                if self.on_change:
                    self.on_change(None, None)
                return
            previous, self._current = self._current, loaded  # the swap: one reference assignment
            self._failed.pop(version, None)
            self.last_error = None
            model_name = loaded.deployed.metadata.get("model")
            logger.info("serving %s (%s, %s path) after %.2fs", version, model_name, loaded.scorer.kind, time.perf_counter() - started)
            if self.on_change:
                self.on_change(previous.version if previous else None, version)
        finally:
            self._lock.release()


def project_relative(text: str, config: Config) -> str:
    """``text`` with the server's absolute paths shown relative to the project folder.

    A configured folder outside the project is shown by its config key, so that no answer
    tells a caller where the server keeps its files.
    """
    root = config.root.resolve()
    names = {str(config.root): ".", str(root): "."}
    for key in ("prod_deployment_path", "reports_folder_path", "test_data_path", "output_folder_path", "output_model_path"):
        folder = config.folder(key)
        if root not in folder.parents and folder != root:
            names[str(folder)] = f"<{key}>"
    for absolute in sorted(names, key=len, reverse=True):  # the longest first: a folder before the root
        # the path and a separator, or the path alone; never a longer name that merely starts the same
        name = names[absolute]
        text = re.sub(re.escape(absolute + os.sep), "" if name == "." else name + os.sep, text)
        text = re.sub(re.escape(absolute) + r"(?![\w.-])", name, text)
    return text


# ----------------------------------------------------------------------------- diagnostics


class DiagnosticsUnavailable(LookupError):
    """No readable diagnostics document for a version; the message says what to run."""


class DiagnosticsCache:
    """``<reports>/<version>/diagnostics.json``, parsed once per version and file state."""

    def __init__(self, reports_folder: Path):
        self.reports_folder = reports_folder
        self._documents: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    def get(self, version: str) -> dict[str, Any]:
        path = self.reports_folder / version / DIAGNOSTICS_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise DiagnosticsUnavailable(f"no diagnostics for model {version} yet: {DIAGNOSTICS_HINT}") from None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._documents.get(version)
        if cached and cached[0] == key:
            return cached[1]
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise DiagnosticsUnavailable(f"the diagnostics file of model {version} is unreadable: {DIAGNOSTICS_HINT}") from None
        if not isinstance(document, dict):
            raise DiagnosticsUnavailable(f"the diagnostics file of model {version} is not a JSON object: {DIAGNOSTICS_HINT}")
        self._documents[version] = (key, document)
        return document


# ----------------------------------------------------------------------------- metrics


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
            "riskapi_request_duration_seconds", "Time to answer a request", labels, buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.predictions = Counter(
            "riskapi_predictions_total", "Rows scored, by predicted class", ["model_version", "prediction"], registry=self.registry
        )
        self.model_info = Gauge(  # livemax: a worker that died no longer counts
            "riskapi_model_info", "1 for the model version a worker serves", ["version"], multiprocess_mode="livemax", registry=self.registry
        )
        self.model_loads = Counter("riskapi_model_loads_total", "Attempts to load a deployed version", ["outcome"], registry=self.registry)
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled children, looked up once

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() costs ~10 µs a call; a handful of label sets ever exist
            labels = (endpoint, method, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def count_predictions(self, version: str, predicted: np.ndarray) -> None:
        positives = int(predicted.sum())
        for label, count in (("1", positives), ("0", len(predicted) - positives)):
            if count:
                key = ("predictions", version, label)
                child = self._children.get(key) or self._children.setdefault(key, self.predictions.labels(version, label))
                child.inc(count)

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


# ----------------------------------------------------------------------------- the app


@dataclass
class ServingState:
    config: Config
    holder: ModelHolder
    diagnostics: DiagnosticsCache
    metrics: ApiMetrics
    token_digest: bytes | None


def create_app(config_path: str | Path | None = None) -> Flask:
    """The Flask app serving the deployment of the config at ``config_path``."""
    if not logging.getLogger().handlers:
        configure_logging()
    config = load_config(config_path or os.environ.get(ENV_CONFIG) or None)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config["api_max_body_bytes"] or None  # 0: no limit
    metrics = ApiMetrics()
    token = os.environ.get(ENV_TOKEN, "")
    state = ServingState(
        config=config,
        holder=ModelHolder(config, on_change=metrics.model_changed),
        diagnostics=DiagnosticsCache(config.reports_folder),
        metrics=metrics,
        token_digest=_digest(token) if token else None,
    )
    app.extensions[EXTENSION] = state
    app.before_request(_start_timer)
    app.before_request(_check_token)
    app.after_request(_record_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    for rule, view, methods in ROUTES:
        app.add_url_rule(rule, view_func=view, methods=methods)
    app.wsgi_app = PredictionFastLane(app.wsgi_app, state)  # Flask's documented way to add middleware
    if state.holder.get() is None:
        logger.warning("no model to serve yet (%s); predictions answer 503 until one is deployed", state.holder.last_error or "nothing deployed")
    logger.info("risk API for %s: token %s", config.path, "required" if token else "not required")
    return app


def _state() -> ServingState:
    return current_app.extensions[EXTENSION]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _start_timer() -> None:
    g.started = time.perf_counter()


def _check_token() -> None:
    if request.endpoint not in PUBLIC_ENDPOINTS and not token_ok(_state(), request.headers.get("Authorization", "")):
        abort(401, TOKEN_REQUIRED)


def token_ok(state: ServingState, authorization: str) -> bool:
    """True without API_TOKEN; else the header must be ``Bearer <token>`` (digests compared in constant time)."""
    if state.token_digest is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(_digest(given.strip()), state.token_digest)


def _record_request(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule is not None else OTHER_LABEL
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    _state().metrics.observe(endpoint, metric_method(request.method), response.status_code, elapsed)
    return response


def metric_method(method: str) -> str:
    """The method as a metric label: one of a fixed set, else "other"."""
    return method if method in KNOWN_METHODS else OTHER_LABEL


def json_response(payload: Any, status: int = 200, version: str | None = None) -> Response:
    response = current_app.response_class(encode_json(payload), status=status, mimetype="application/json")
    if version:
        response.headers["X-Model-Version"] = version
    return response


def encode_json(payload: Any) -> bytes:
    """Compact JSON; NaN or infinity (from a document on disk) become null rather than invalid JSON."""
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode("utf-8")


def error_payload(status: int, message: str) -> dict[str, Any]:
    return {"error": HTTP_STATUS_CODES.get(status, "Error"), "status": status, "message": message}


def body_limit_message(limit: int | None) -> str:
    return f"the request body exceeds the limit of {limit} bytes (api_max_body_bytes)"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _http_error(exc: HTTPException) -> Response:
    message = exc.description
    if isinstance(exc, RequestEntityTooLarge) and message == RequestEntityTooLarge.description:
        message = body_limit_message(current_app.config["MAX_CONTENT_LENGTH"])
    response = json_response({"error": exc.name, "status": exc.code, "message": message}, exc.code or 500)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if exc.code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="risk-api"'
    return response


def _internal_error(exc: Exception) -> Response:
    # The details go to the log, never to the caller.
    logger.exception("unhandled error answering %s %s", request.method, request.path)
    return json_response(error_payload(500, INTERNAL_ERROR), 500)


def _model() -> LoadedModel:
    loaded = _state().holder.get()
    if loaded is None:
        abort(503, no_model_message(_state().holder))
    return loaded


def no_model_message(holder: ModelHolder) -> str:
    waiting = _awaiting_approval(holder.config)
    if waiting and holder.last_error is None:
        return (f"no model is served yet: {', '.join(waiting)} awaits approval "
                f"(python deployment.py --approve {waiting[-1]} --by NAME); nothing is served until a person approves a version")
    return f"no verified model is loaded ({holder.last_error or 'nothing is deployed yet: run `python fullprocess.py`'})"


def _awaiting_approval(config: Config) -> list[str]:
    """Versions deployed pending approval (the history and manifests; read when asked)."""
    try:
        return deployment.pending_versions(config)
    except (OSError, ValueError) as exc:
        logger.warning("cannot tell which versions await approval: %s", exc)
        return []


def pending_summary(config: Config) -> list[dict[str, Any]]:
    """What /model says of each version awaiting approval: its scores and the comparison with the champion."""
    rows = []
    for row in inventory_rows(config, verify=False):
        if row["status"] == "pending":
            rows.append({key: row.get(key) for key in ("version", "deployed_at", "model", "metric", "metric_score", "f1", "roc_auc",
                                                        "reason", "warnings", "uninformative", "champion_challenger")})
    return rows


def inventory_rows(config: Config, verify: bool = True) -> list[dict[str, Any]]:
    """deployment.inventory, with the server's paths taken out of its sentences."""
    return json.loads(project_relative(json.dumps(deployment.inventory(config, verify=verify), default=str), config))


# ----------------------------------------------------------------------------- views


def index() -> str:
    state = _state()
    config = state.config
    loaded = state.holder.get()
    return render_template(
        "index.html",
        bands=band_thresholds(config, loaded.threshold if loaded else None),
        max_rows=config["api_max_rows"],
        max_bytes=config["api_max_body_bytes"],
        token_required=_state().token_digest is not None,
    )


def healthz() -> Response:
    return json_response({"status": "ok"})


def readyz() -> Response:
    holder = _state().holder
    loaded = holder.get()
    deployed = holder.deployed_version()
    body = {
        "ready": loaded is not None,
        "model_version": loaded.version if loaded else None,
        "deployed_version": deployed,
        "up_to_date": loaded is not None and loaded.version == deployed,
        "serving_path": loaded.scorer.kind if loaded else None,
        "loaded_at": loaded.loaded_at if loaded else None,
        "last_error": holder.last_error,
    }
    return json_response(body, 200 if loaded else 503, loaded.version if loaded else None)


def model_view() -> Response:
    if request.args.get("all") not in (None, "", "0", "false"):
        return model_inventory_view()
    loaded = _model()
    metadata, manifest = loaded.deployed.metadata, loaded.deployed.manifest
    body = {
        "model_version": loaded.version,
        "model": metadata.get("model"),
        "threshold": loaded.threshold,
        "metric": metadata.get("metric"),
        "positive_label": metadata.get("positive_label"),
        "parameters": metadata.get("parameters"),
        "features": loaded.schema.describe(),
        "scores": loaded.deployed.scores,
        "candidates": metadata.get("candidates"),
        "lineage": {
            "deployed_at": manifest.get("deployed_at"),
            "reason": manifest.get("reason"),
            "previous_version": manifest.get("previous_version"),
            "files": manifest.get("files"),
            **{key: metadata.get(key) for key in LINEAGE_KEYS},
        },
        "serving": {"path": loaded.scorer.kind, "loaded_at": loaded.loaded_at},
        **model_honesty(loaded),
        "bands": band_thresholds(_state().config, loaded.threshold),
        "pending_approval": pending_summary(_state().config),
    }
    return json_response(body, version=loaded.version)


def model_inventory_view() -> Response:
    """``/model?all=1``: every version with its status, dates, scores and approver (deployment.py --inventory)."""
    state = _state()
    loaded = state.holder.get()
    body = {
        "serving": loaded.version if loaded else None,
        "current": state.holder.deployed_version(),
        "awaiting_approval": _awaiting_approval(state.config),
        "versions": inventory_rows(state.config),
    }
    return json_response(body, version=loaded.version if loaded else None)


def model_honesty(loaded: LoadedModel) -> dict[str, Any]:
    """What the training and scoring of this version warned about (absent in older versions)."""
    metadata, scores = loaded.deployed.metadata, loaded.deployed.scores or {}
    uninformative = bool(metadata.get("uninformative", False))
    warnings = [str(w) for w in list(metadata.get("warnings") or []) + list(scores.get("warnings") or [])]
    return {
        "uninformative": uninformative,
        "verdict": UNINFORMATIVE_NOTE if uninformative else None,
        "warnings": list(dict.fromkeys(warnings)),  # the same sentence from both files once
    }


def scoring_view() -> Response:
    loaded = _model()  # scores.json of the version, read once when it was loaded
    body = {"model_version": loaded.version, "metric": loaded.deployed.metadata.get("metric"), "scores": loaded.deployed.scores}
    return json_response(body, version=loaded.version)


def _diagnostics(loaded: LoadedModel) -> dict[str, Any]:
    try:
        return _state().diagnostics.get(loaded.version)
    except DiagnosticsUnavailable as exc:
        abort(503, str(exc))


def summarystats() -> Response:
    loaded = _model()
    document = _diagnostics(loaded)
    body = {"model_version": loaded.version, "generated_at": document.get("generated_at"), "summary_statistics": document.get("summary_statistics")}
    return json_response(body, version=loaded.version)


def diagnostics_view() -> Response:
    loaded = _model()
    return json_response({**_diagnostics(loaded), "model_version": loaded.version}, version=loaded.version)


def metrics_view() -> Response:
    data, content_type = _state().metrics.exposition()
    return Response(data, mimetype=None, content_type=content_type)


def prediction() -> Response:
    """POST /prediction through Flask: uploads, chunked bodies and whatever the fast lane passes on."""
    state = _state()
    loaded = _model()
    mimetype = request.mimetype
    try:
        if QUERY_DATASET in request.args:
            batch, source = query_batch(state.config, loaded, request.args.get(QUERY_DATASET), request.get_data()), "dataset"
        elif mimetype == "multipart/form-data":
            batch, source = _upload_batch(state.config, loaded), "upload"
        elif is_json(mimetype) or mimetype in CSV_TYPES:
            batch, source = body_batch(state.config, loaded, mimetype, request.get_data())
        else:
            abort(415, UNSUPPORTED_TYPE)
        body = prediction_body(state, loaded, batch, source)
    except serving.InputError as exc:
        abort(exc.status, str(exc))
    return json_response(body, version=loaded.version)


def is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


def body_batch(config: Config, loaded: LoadedModel, mimetype: str, data: bytes) -> tuple[serving.Batch, str]:
    """The rows of a JSON body (records, a bare list, or a named data file) or of a CSV body."""
    max_rows = config["api_max_rows"]
    if mimetype in CSV_TYPES:
        frame = serving.read_csv_bytes(data, loaded.schema, config["api_max_columns"])
        return serving.batch_from_frame(frame, loaded.schema, max_rows), "csv"
    payload = _json_body(data)
    if isinstance(payload, list):
        return serving.batch_from_records(payload, loaded.schema, max_rows), "records"
    if isinstance(payload, dict) and set(payload) == {"records"}:
        return serving.batch_from_records(payload["records"], loaded.schema, max_rows), "records"
    if isinstance(payload, dict) and set(payload) == {"dataset"}:
        frame = dataset_frame(config, payload["dataset"], loaded.deployed.metadata, max_rows)
        return serving.batch_from_frame(frame, loaded.schema, max_rows), "dataset"
    if isinstance(payload, dict) and len(payload) == 1 and next(iter(payload)) in DATASET_ALIASES:
        (field, path), = payload.items()
        frame = project_path_frame(config, field, path, loaded.deployed.metadata, max_rows)
        return serving.batch_from_frame(frame, loaded.schema, max_rows), "dataset"
    raise serving.InputError(
        'send {"records": [...]}, a bare array of records, or {"dataset": "<file>.csv"} '
        '(also accepted: {"data_file" | "filepath" | "file_path": "testdata/<file>.csv"} or ?data_loc=testdata/<file>.csv)'
    )


def query_batch(config: Config, loaded: LoadedModel, path: str | None, data: bytes) -> serving.Batch:
    """The rows of the data file named by ``?data_loc=`` (the classic course's clients call it so)."""
    if data.strip():
        raise serving.InputError(f"name the data file either with ?{QUERY_DATASET}= or in the body, not both")
    max_rows = config["api_max_rows"]
    frame = project_path_frame(config, QUERY_DATASET, path, loaded.deployed.metadata, max_rows)
    return serving.batch_from_frame(frame, loaded.schema, max_rows)


def _upload_batch(config: Config, loaded: LoadedModel) -> serving.Batch:
    upload = request.files.get("file") or next(iter(request.files.values()), None)
    if upload is None:
        raise serving.InputError("upload the CSV as a file field named 'file'")
    frame = serving.read_csv_bytes(upload.read(), loaded.schema, config["api_max_columns"])
    return serving.batch_from_frame(frame, loaded.schema, config["api_max_rows"])


def prediction_body(state: ServingState, loaded: LoadedModel, batch: serving.Batch, source: str) -> dict[str, Any]:
    """Per row the 0/1 prediction, the risk and its band, with the ids given; and what was noticed."""
    risk = _risk(loaded, batch)
    predicted = (risk >= loaded.threshold).astype(np.int64)
    state.metrics.count_predictions(loaded.version, predicted)
    thresholds = band_thresholds(state.config, loaded.threshold)
    bands = risk_bands(risk, predicted, thresholds)
    return {
        "model_version": loaded.version,
        "model": loaded.deployed.metadata.get("model"),
        "threshold": loaded.threshold,
        "positive_label": state.config.positive_label,
        "source": source,
        "rows": batch.rows,
        "band_counts": {band: bands.count(band) for band in ("green", "amber", "red")},
        "bands": thresholds,
        "unseen_categories": fastpath.unseen_categories(loaded.known_categories, batch, loaded.schema),
        "missing_values": batch.missing_values(loaded.schema),
        "ignored_columns": batch.ignored_columns,
        "predictions": _prediction_rows(batch, predicted, risk, bands),
    }


def _risk(loaded: LoadedModel, batch: serving.Batch) -> np.ndarray:
    try:
        risk = loaded.scorer.risk(batch)
    except ValueError:  # scikit-learn's own input checks (say, a value beyond float32 for trees)
        raise serving.InputError("the rows could not be scored: a value is outside the range the model accepts") from None
    if not np.all(np.isfinite(risk)):
        raise serving.InputError("the rows could not be scored: a value is outside the range the model accepts")
    return risk


def band_thresholds(config: Config, threshold: float | None) -> dict[str, Any]:
    """Where amber and red start, and where those numbers come from.

    Unless configured (``risk_band_thresholds``), amber starts at the model's decision threshold,
    so green means exactly "predicted to stay", and red halfway from there to certainty.
    """
    configured = config["risk_band_thresholds"]
    if configured is not None:
        return {"amber": float(configured["amber"]), "red": float(configured["red"]), "source": "configured"}
    if threshold is None:
        return {"amber": None, "red": None, "source": "threshold"}
    return {"amber": float(threshold), "red": float(threshold + (1.0 - threshold) / 2), "source": "threshold"}


def risk_bands(risk: np.ndarray, predicted: np.ndarray, thresholds: dict[str, Any]) -> list[str]:
    """green below ``amber``, amber below ``red``, red from ``red`` up; never against the decision.

    A row predicted at risk is at least amber and one predicted to stay at most amber, whatever
    the configured thresholds say: the colour must not contradict the prediction beside it.
    """
    amber, red = thresholds["amber"], thresholds["red"]
    bands = []
    for r, p in zip(risk.tolist(), predicted.tolist()):
        band = "red" if r >= red else "amber" if r >= amber else "green"
        if p and band == "green":
            band = "amber"
        elif not p and band == "red":
            band = "amber"
        bands.append(band)
    return bands


def _prediction_rows(batch: serving.Batch, predicted: np.ndarray, risk: np.ndarray, bands: list[str]) -> list[dict[str, Any]]:
    ids = list(batch.ids.items())
    rows = []
    for index, (p, r, b) in enumerate(zip(predicted.tolist(), risk.tolist(), bands)):
        row: dict[str, Any] = {"row": index}
        for name, values in ids:
            row[name] = values[index]
        row["prediction"], row["risk"], row["band"] = p, r, b
        rows.append(row)
    return rows


def _json_body(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        raise serving.InputError("the body is not valid JSON") from None


def dataset_frame(config: Config, name: Any, metadata: dict[str, Any], max_rows: int) -> pd.DataFrame:
    """A CSV named by file name inside the test data or ingested data folder; any other path is refused."""
    folders = [config.test_data_folder, config.output_folder]
    if not isinstance(name, str) or not _plain_csv_name(name):
        raise serving.InputError(
            "dataset must be the name of a .csv file in the test data or ingested data folder (a plain file name: no folders, no '..')"
        )
    for folder in folders:
        root = folder.resolve()
        path = (root / name).resolve()  # follows symlinks, so a link out of the folder is refused below
        if path.parent == root and path.is_file():
            return _read_dataset(path, metadata, max_rows)
    available = sorted({p.name for folder in folders if folder.is_dir() for p in folder.glob("*.csv") if not p.name.startswith(".")})
    raise serving.InputError(f"dataset: no such CSV file in the test data or ingested data folder; available: {available}")


def project_path_frame(config: Config, field: str, path: Any, metadata: dict[str, Any], max_rows: int) -> pd.DataFrame:
    """A CSV named by its path relative to the project folder (``testdata/testdata.csv``), with the
    same containment as ``dataset``: only a file directly inside the test data or ingested data
    folder, after symlinks are resolved; a bare file name is looked up as ``dataset`` does."""
    if not isinstance(path, str) or not _relative_csv_path(path):
        raise serving.InputError(
            f"{field} must be the path of a .csv file in the test data or ingested data folder, relative to the "
            "project folder (for example 'testdata/testdata.csv'; no absolute paths, no '..')"
        )
    parts = PurePosixPath(path).parts
    if len(parts) == 1:
        return dataset_frame(config, parts[0], metadata, max_rows)
    root = config.root.resolve()
    folders = [config.test_data_folder, config.output_folder]
    # The folder as written must be a data folder as configured (no detour through a link), and
    # the file, its links followed, must still lie directly inside it.
    named_folder = os.path.normpath(root / PurePosixPath(*parts[:-1]))
    for key, folder in (("test_data_path", config.test_data_folder), ("output_folder_path", config.output_folder)):
        if named_folder == os.path.normpath(root / config[key]):
            resolved = (root / PurePosixPath(*parts)).resolve()
            if resolved.parent == folder and resolved.is_file():
                return _read_dataset(resolved, metadata, max_rows)
    available = sorted(
        os.path.relpath(p, root) for folder in folders if folder.is_dir() for p in folder.glob("*.csv") if not p.name.startswith(".")
    )
    raise serving.InputError(f"{field}: no such CSV file in the test data or ingested data folder; available: {available}")


def _relative_csv_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not path.startswith("/")
        and "\\" not in path
        and "\x00" not in path
        and all(part != ".." and not part.startswith(".") for part in parts)
        and PurePosixPath(path).suffix.lower() == ".csv"
        and len(path) <= 1024
    )


def _plain_csv_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (
        len(path.parts) == 1
        and not name.startswith(".")
        and "\\" not in name
        and "\x00" not in name
        and path.suffix.lower() == ".csv"
        and len(name) <= 255
    )


def _read_dataset(path: Path, metadata: dict[str, Any], max_rows: int) -> pd.DataFrame:
    kinds = metadata.get("column_kinds", {})
    text_columns = {column: str for column, kind in kinds.items() if kind != "numeric"}
    try:
        frame = pd.read_csv(path, dtype=text_columns, encoding="utf-8-sig", nrows=max_rows + 1 if max_rows else None)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError):
        raise serving.InputError("dataset: the file is not a readable CSV") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


class PredictionFastLane:
    """WSGI middleware in front of Flask: one path per resource, body limits whatever the framing,
    and the fast lane for ``POST /prediction`` with a JSON or CSV body.

    - Repeated slashes are merged (``//prediction`` is ``/prediction``) before anything else
      looks at the path, so that every limit and every metric label sees the one path.
    - A ``POST /prediction`` body is refused with 413 when it exceeds ``api_max_body_bytes``,
      whether its length is declared or it comes chunked; a chunked body is read here, up to the
      limit, and handed on with its length, so that no body is ever scored in part.
    - A JSON or CSV body is then answered here with the same checks and functions as the Flask
      view, without Flask's request and response machinery, which costs about 200 µs of a
      single-row request's 600 µs on this machine (measured) and so bounds the requests per
      second. Uploads and ``?data_loc=`` go to Flask.
    """

    def __init__(self, wsgi_app: Any, state: ServingState):
        self.wsgi_app = wsgi_app
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = path = REPEATED_SLASHES.sub("/", path)
        if path != "/prediction" or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        try:
            answer = self._before_body(environ)
            if answer is None:
                if environ.get("QUERY_STRING") or not (is_json(mimetype) or mimetype in CSV_TYPES):
                    return self.wsgi_app(environ, start_response)
                answer = self._answer(environ, mimetype, int(environ["CONTENT_LENGTH"]))
        except Exception:  # as Flask's handler: the details go to the log, never to the caller
            logger.exception("unhandled error answering POST /prediction")
            answer = 500, error_payload(500, INTERNAL_ERROR), None
        status, payload, version = answer
        body = encode_json(payload)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if version:
            headers.append(("X-Model-Version", version))
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="risk-api"'))
        start_response(f"{status} {HTTP_STATUS_CODES[status]}", headers)
        self.state.metrics.observe("/prediction", "POST", status, time.perf_counter() - started)
        return [body]

    def _before_body(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any], None] | None:
        """401 or 413 before the body is scored; a chunked body is read here and given a length."""
        state = self.state
        if not token_ok(state, environ.get("HTTP_AUTHORIZATION", "")):
            return 401, error_payload(401, TOKEN_REQUIRED), None  # before reading a byte of the body
        limit = state.config["api_max_body_bytes"]
        length = environ.get("CONTENT_LENGTH", "")
        if length.isdigit():
            if limit and int(length) > limit:
                environ[CLOSE_CONNECTION_KEY] = True  # its body is not read: never keep the connection
                return 413, error_payload(413, body_limit_message(limit)), None
            return None
        data = read_body_within(environ, limit)
        if data is None:
            environ[CLOSE_CONNECTION_KEY] = True
            return 413, error_payload(413, body_limit_message(limit)), None
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None

    def _answer(self, environ: dict[str, Any], mimetype: str, length: int) -> tuple[int, dict[str, Any], str | None]:
        state = self.state
        loaded = state.holder.get()
        if loaded is None:
            return 503, error_payload(503, no_model_message(state.holder)), None
        data = environ["wsgi.input"].read(length) if length else b""
        try:
            batch, source = body_batch(state.config, loaded, mimetype, data)
            return 200, prediction_body(state, loaded, batch, source), loaded.version
        except serving.InputError as exc:
            return exc.status, error_payload(exc.status, str(exc)), None


def read_body_within(environ: dict[str, Any], limit: int) -> bytes | None:
    """A body of undeclared length (chunked), read whole; None once it passes ``limit`` bytes (0: none).

    What follows a refused body is read and dropped for a moment, up to a bound, so that the
    client, still sending, gets the 413 rather than a reset connection.
    """
    stream = environ["wsgi.input"]
    chunks, total = [], 0
    while True:
        chunk = stream.read(BODY_READ_SIZE)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if limit and total > limit:
            _drain(environ, stream)
            return None
        chunks.append(chunk)


def _drain(environ: dict[str, Any], stream: Any) -> None:
    sock = environ.get("gunicorn.socket")
    try:
        if sock is not None:
            sock.settimeout(DRAIN_SECONDS)  # a client that stops sending does not hold the thread
        drained = 0
        while drained < DRAIN_BYTES:
            chunk = stream.read(BODY_READ_SIZE)
            if not chunk:
                return
            drained += len(chunk)
    except (OSError, ValueError, RuntimeError):  # the client went away or broke the framing: nothing to keep
        return
    except Exception as exc:  # gunicorn's own parse errors (say, bad chunk framing) are not ours to report
        logger.debug("stopped draining a refused body: %s", exc)


ROUTES = (
    ("/", index, ["GET"]),
    ("/healthz", healthz, ["GET"]),
    ("/readyz", readyz, ["GET"]),
    ("/model", model_view, ["GET"]),
    ("/scoring", scoring_view, ["GET"]),
    ("/summarystats", summarystats, ["GET"]),
    ("/diagnostics", diagnostics_view, ["GET"]),
    ("/metrics", metrics_view, ["GET"]),
    ("/prediction", prediction, ["POST"]),
)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("Run the risk API on Flask's development server (production: make serve).")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        app = create_app(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 1
    app.run(host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
