"""The prediction API and the Risk-O-Meter page, served by gunicorn through ``wsgi.py``.

``create_app(config_path=None)`` builds the Flask app for one config (default: the
``RISK_API_CONFIG`` environment variable, else the ``config.json`` beside this file). The app
never trains and never runs pip: it serves the current deployment. Every request that needs
the model reads the ``current`` link once; when it points at a new version, that version is
loaded, verified (SHA-256 of every file before unpickling), compiled and self-checked, and only
then swapped in with one reference assignment. If loading fails, the old verified model keeps
serving and ``/readyz`` says why. Every model-dependent answer names the version that gave it.

Endpoints (JSON unless said): ``POST /prediction``, ``GET /scoring``, ``GET /summarystats``,
``GET /diagnostics``, ``GET /model``, ``GET /calllist``, ``GET /calllist.csv`` (``calllist.py``),
``GET /monitoring`` (``monitoring.py``: the outcomes), ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus text) and ``GET /`` (the
Risk-O-Meter page). With ``API_TOKEN`` set, everything
but ``/healthz`` and the page's static shell needs ``Authorization: Bearer <token>``.
Repeated slashes in a path are merged (``//prediction`` is ``/prediction``); answers show
paths relative to the project folder, never the server's absolute paths.

Every request enters through ``gate.RequestGate`` (path normalisation, the token, the body limit,
the request metrics) and is answered by one of the Flask views below, except ``POST /prediction``
with a JSON body, which the gate hands to ``json_prediction`` (the same answer without Flask's
per-request machinery, most of a single-row request's cost beside the model); ``answers.py`` renders
every JSON answer and every error. ``risk.model.batches`` turns a request's rows into a checked
batch, ``datasets.py`` finds a data file a request names, ``risk.model.compiled`` scores the
batch and ``apimetrics.py`` keeps the Prometheus metrics. With ``log_predictions``, the rows of an
answer that carry the id columns go to the prediction log (``risk.monitoring.predlog``).

``python app.py [--config PATH] [--port N]`` runs Flask's development server on 127.0.0.1,
for trying things out; production is ``make serve`` (gunicorn, ``gunicorn.conf.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, abort, current_app, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from risk.api import calllist, datasets, monitoring
from risk.api.answers import INTERNAL_ERROR, encode_json, encode_string, error_response, json_response
from risk.api.apimetrics import ApiMetrics
from risk.api.gate import RequestGate, token_digest
from risk.core import artefacts
from risk.core.artefacts import DIAGNOSTICS_FILE
from risk.core.bands import band_thresholds, risk_bands
from risk.core.jsonfiles import JSON_READ_ERRORS, read_json
from risk.core.logs import install_log_handlers
from risk.core.settings import Config, load_config
from risk.data import book
from risk.model import batches, compiled
from risk.monitoring import predlog, runfacts
from risk.registry import calllists, versions

logger = logging.getLogger(__name__)

ENV_CONFIG = "RISK_API_CONFIG"
ENV_TOKEN = "API_TOKEN"
EXTENSION = "risk_api"
RETRY_FAILED_LOAD_SECONDS = 5.0
DIAGNOSTICS_HINT = "run `python diagnostics.py` (fullprocess.py runs it after each deployment)"
UNSUPPORTED_TYPE = "Content-Type must be application/json, text/csv or multipart/form-data"
JSON_TYPE = "application/json"
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
UPLOAD_TYPE = "multipart/form-data"
LINEAGE_KEYS = (
    "trained_at",
    "training_rows",
    "training_positives",
    "training_data_sha256",
    "training_files",
    "training_seconds",
    "package_versions",
    "python_version",
    "cv_folds",
    "random_seed",
)
# What /model tells of each version awaiting approval.
PENDING_KEYS = (
    "version",
    "deployed_at",
    "model",
    "metric",
    "metric_score",
    "f1",
    "roc_auc",
    "reason",
    "warnings",
    "uninformative",
    "champion_challenger",
)
# Names of a data file used by clients written for the classic course, besides "dataset".
DATASET_ALIASES = ("data_file", "filepath", "file_path")
QUERY_DATASET = "data_loc"
EXPLAIN = "explain"  # a JSON body's flag asking for each row's reasons
REASONS = 3  # reasons per row, as in the call list
OUT_OF_RANGE = "the rows could not be scored: a value is outside the range the model accepts"
UNINFORMATIVE_NOTE = (
    "no better than chance: this model cannot tell clients at risk from the others; do not act on its predictions alone"
)


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LoadedModel:
    """A verified deployed version with its compiled scorer: swapped in whole, never half-built."""

    deployed: versions.DeployedModel
    scorer: compiled.Scorer
    schema: batches.Schema
    known_categories: dict[str, frozenset[str]]
    loaded_at: str
    threshold: float
    bands: dict[str, Any]  # band_thresholds for this model and the config: the same for every request
    # The reasons' explainer (or why there is none), built by the first request that asks for reasons.
    explained: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    explaining: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def version(self) -> str:
        return self.deployed.version

    def explainer(self, config: Config) -> Any:
        """This version's explainer (risk.model.explain), built once; InputError (501) where it cannot be."""
        if "explainer" not in self.explained:
            with self.explaining:
                if "explainer" not in self.explained:
                    self.explained.update(build_explainer(config, self.deployed))
        if self.explained["explainer"] is None:
            raise batches.InputError(self.explained["reason"], status=501)
        return self.explained["explainer"]


def build_explainer(config: Config, deployed: versions.DeployedModel) -> dict[str, Any]:
    """{"explainer": the version's explainer} or {"explainer": None, "reason": why it has none}."""
    from risk.model import explain
    from risk.registry.predictions import explainer_for

    started = time.perf_counter()
    try:
        explainer = explainer_for(config, deployed)
    except (explain.UnsupportedModel, OSError, KeyError, ValueError) as exc:
        logger.error("%s: no reasons: %s: %s", deployed.version, type(exc).__name__, exc)
        reason = project_relative(f"reasons are not available for {deployed.version}: {exc}", config)
        return {"explainer": None, "reason": reason}
    logger.info("%s: explainer built in %.2fs", deployed.version, time.perf_counter() - started)
    return {"explainer": explainer}


def load_model(config: Config, version: str) -> LoadedModel:
    """Load, verify and compile one deployed version (raises DeploymentError and friends)."""
    deployed = versions.load_deployed_model(config, version)
    schema = batches.Schema.from_metadata(deployed.metadata, config["id_columns"])
    check_frame = compiled.load_check_frame(
        deployed.path / artefacts.REFERENCE_FILE, deployed.metadata.get("column_kinds", {})
    )
    scorer = compiled.build_scorer(deployed.model, schema, check_frame)
    known = compiled.known_categories(deployed.model)
    threshold = float(getattr(deployed.model, "threshold", deployed.metadata["threshold"]))
    bands = band_thresholds(config, threshold)
    return LoadedModel(deployed, scorer, schema, known, artefacts.utc_now(), threshold, bands)


# What a corrupt or incompatible version can raise while loading; anything else is a bug.
LOAD_ERRORS = versions.LOAD_ERRORS
# Told (previous version, new version) after each load; (None, None) when one failed.
ModelChange = Callable[[str | None, str | None], None]


class ModelHolder:
    """The model being served, replaced when the ``current`` link moves to another version."""

    def __init__(self, config: Config, on_change: ModelChange | None = None):
        self.config = config
        self.on_change = on_change
        # versions.current_version() resolves the folder on every call (~50 µs); resolved once
        # here, each request costs one readlink of the same link.
        self._link = config.deployment_folder / artefacts.CURRENT_LINK
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
            if self._current is None or self._current.version != version:
                self._replace(version)
        finally:
            self._lock.release()

    def _replace(self, version: str) -> None:
        """Load ``version`` and swap it in; if it cannot be loaded, keep serving the current one."""
        started = time.perf_counter()
        try:
            loaded = load_model(self.config, version)
        except LOAD_ERRORS as exc:
            self._failed[version] = time.monotonic()
            self.last_error = project_relative(f"{version} could not be loaded: {exc}", self.config)
            kept = self._current.version if self._current else "no model"
            logger.error("keeping %s: %s could not be loaded: %s", kept, version, exc)
            if self.on_change:
                self.on_change(None, None)
            return
        previous, self._current = self._current, loaded  # the swap: one reference assignment
        self._failed.pop(version, None)
        self.last_error = None
        seconds = time.perf_counter() - started
        model_name = loaded.deployed.metadata.get("model")
        logger.info("serving %s (%s, %s path) after %.2fs", version, model_name, loaded.scorer.kind, seconds)
        if self.on_change:
            self.on_change(previous.version if previous else None, version)


def project_relative(text: str, config: Config) -> str:
    """``text`` with the server's absolute paths shown relative to the project folder.

    A configured folder outside the project is shown by its config key, so that no answer
    tells a caller where the server keeps its files.
    """
    root = config.root.resolve()
    names = {str(config.root): ".", str(root): "."}
    for key in (
        "prod_deployment_path",
        "reports_folder_path",
        "test_data_path",
        "output_folder_path",
        "output_model_path",
    ):
        folder = config.folder(key)
        if root not in folder.parents and folder != root:
            names[str(folder)] = f"<{key}>"
    # A model that does not load names the library module it failed in, by its file (pickle's
    # "Can't get attribute 'X' on <module 'sklearn...' from '/.../site-packages/...'>").
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        for path in (prefix, os.path.realpath(prefix)):
            if len(path) > 1:
                names.setdefault(path, "<python>")
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
            document = read_json(path)
        except JSON_READ_ERRORS:
            raise DiagnosticsUnavailable(
                f"the diagnostics file of model {version} is unreadable: {DIAGNOSTICS_HINT}"
            ) from None
        if not isinstance(document, dict):
            raise DiagnosticsUnavailable(
                f"the diagnostics file of model {version} is not a JSON object: {DIAGNOSTICS_HINT}"
            )
        self._documents[version] = (key, document)
        return document


# ----------------------------------------------------------------------------- the app


@dataclass
class ServingState:
    config: Config
    holder: ModelHolder
    diagnostics: DiagnosticsCache
    metrics: ApiMetrics
    token_digest: bytes | None
    call_lists: calllist.CallListCache
    outcomes: monitoring.OutcomesCache
    run_facts: runfacts.RunFacts


def create_app(config_path: str | Path | None = None) -> Flask:
    """The Flask app serving the deployment of the config at ``config_path``."""
    if not logging.getLogger().handlers:
        install_log_handlers()
    config = load_config(config_path or os.environ.get(ENV_CONFIG) or None)
    app = Flask(__name__)
    metrics = ApiMetrics()
    token = os.environ.get(ENV_TOKEN, "")
    state = ServingState(
        config=config,
        holder=ModelHolder(config, on_change=metrics.model_changed),
        diagnostics=DiagnosticsCache(config.reports_folder),
        metrics=metrics,
        token_digest=token_digest(token) if token else None,
        call_lists=calllist.CallListCache(config, lambda text: call_list_relative(text, config)),
        outcomes=monitoring.OutcomesCache(config),
        run_facts=runfacts.RunFacts(config),
    )
    metrics.watch_run(lambda: run_figures(state))
    app.extensions[EXTENSION] = state
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    for rule, view, methods in ROUTES:
        app.add_url_rule(rule, view_func=view, methods=methods)
    # Flask's documented way to add middleware: the token, body limit and metrics of every request
    fast_answers = {("prediction", "POST"): lambda environ: json_prediction(state, environ)}
    app.wsgi_app = RequestGate(
        app.wsgi_app, app.url_map, state.token_digest, config["api_max_body_bytes"], metrics, fast_answers
    )
    if state.holder.get() is None:  # the log says what the 503 answers say (a version awaiting approval too)
        logger.warning("%s; predictions answer 503 until then", no_model_message(state.holder))
    logger.info("risk API for %s: token %s", config.path, "required" if token else "not required")
    return app


def _state() -> ServingState:
    return current_app.extensions[EXTENSION]


def _http_error(exc: HTTPException) -> Response:
    """Every HTTP error Flask meets (an ``abort`` of ours, a 404, a 405 ...), as JSON."""
    return error_response(exc.code or 500, exc.description or "", exc.get_headers())


def _internal_error(exc: Exception) -> Response:
    """The one handler of unexpected errors: the details go to the log, never to the caller."""
    logger.exception("unhandled error answering %s %s", request.method, request.path)
    return error_response(500, INTERNAL_ERROR)


def _model() -> LoadedModel:
    """The model to answer with; without one, the one 503 answer that says why."""
    holder = _state().holder
    loaded = holder.get()
    if loaded is None:
        abort(503, no_model_message(holder))
    return loaded


def no_model_message(holder: ModelHolder) -> str:
    waiting = _awaiting_approval(holder.config)
    if waiting and holder.last_error is None:
        return (
            f"no model is served yet: {', '.join(waiting)} awaits approval "
            f"(python deployment.py --approve {waiting[-1]} --by NAME); nothing is served until a person approves a version"
        )
    return (
        f"no verified model is loaded ({holder.last_error or 'nothing is deployed yet: run `python fullprocess.py`'})"
    )


def _awaiting_approval(config: Config) -> list[str]:
    """Versions deployed pending approval (the history and manifests; read when asked)."""
    try:
        return versions.pending_versions(config)
    except (OSError, ValueError) as exc:
        logger.warning("cannot tell which versions await approval: %s", exc)
        return []


def pending_summary(config: Config) -> list[dict[str, Any]]:
    """What /model says of each version awaiting approval: its scores and the comparison with the champion."""
    return [
        {key: row.get(key) for key in PENDING_KEYS}
        for row in inventory_rows(config, verify=False)
        if row["status"] == "pending"
    ]


def inventory_rows(config: Config, verify: bool = True) -> list[dict[str, Any]]:
    """versions.inventory, with the server's paths taken out of its sentences."""
    return json.loads(project_relative(json.dumps(versions.inventory(config, verify=verify), default=str), config))


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
    if loaded is None:
        body["reason"] = no_model_message(holder)  # the same words as every model endpoint's 503
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
        "bands": loaded.bands,
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
    body = {
        "model_version": loaded.version,
        "metric": loaded.deployed.metadata.get("metric"),
        "scores": loaded.deployed.scores,
    }
    return json_response(body, version=loaded.version)


def _diagnostics(loaded: LoadedModel) -> dict[str, Any]:
    try:
        return _state().diagnostics.get(loaded.version)
    except DiagnosticsUnavailable as exc:
        abort(503, str(exc))


def summarystats() -> Response:
    loaded = _model()
    document = _diagnostics(loaded)
    body = {
        "model_version": loaded.version,
        "generated_at": document.get("generated_at"),
        "summary_statistics": document.get("summary_statistics"),
    }
    return json_response(body, version=loaded.version)


def diagnostics_view() -> Response:
    loaded = _model()
    return json_response({**_diagnostics(loaded), "model_version": loaded.version}, version=loaded.version)


def metrics_view() -> Response:
    state = _state()
    try:
        state.metrics.set_outcomes(monitoring.gauge_values(state.outcomes.get()))
    except (OSError, ValueError) as exc:  # the gauges keep their last values; the scrape still answers
        logger.warning("the outcome gauges were not refreshed: %s", exc)
    data, content_type = state.metrics.exposition()
    return Response(data, mimetype=None, content_type=content_type)


def run_figures(state: ServingState) -> dict[str, Any]:
    """The run's figures /metrics shows (apimetrics.RunGauges), from the files the runs wrote."""
    loaded = state.holder.get()
    metadata = loaded.deployed.metadata if loaded is not None else None
    rows = state.run_facts.rows_ingested()
    figures: dict[str, Any] = {
        "hours_since_retrain": state.run_facts.hours_since_retrain(metadata),
        "rows_ingested_last_run": rows["last_run"],
        "rows_ingested_total": rows["total"],
    }
    if loaded is not None:
        try:
            document = state.diagnostics.get(loaded.version)
        except DiagnosticsUnavailable:
            document = None
        figures["feature_psi"] = runfacts.feature_psi(document, loaded.deployed.metadata["features"])
    return figures


def monitoring_view() -> Response:
    """GET /monitoring: realised figures per labelled batch and the back-test of the call lists."""
    state = _state()
    try:
        figures = state.outcomes.get()
    except (OSError, ValueError) as exc:
        abort(503, project_relative(f"the outcome records cannot be read: {exc}", state.config))
    return json_response(monitoring.answer(figures, state.config["metric"]))


def _call_list() -> calllist.CallListSnapshot:
    """The newest call list; 404 saying how to get one, or 503 saying why it cannot be read."""
    state = _state()
    try:
        return state.call_lists.get()
    except calllist.CallListMissing as exc:
        abort(404, str(exc))
    except calllist.CallListUnavailable as exc:  # its message already without the server's paths
        abort(503, str(exc))


def call_list_relative(text: str, config: Config) -> str:
    """``project_relative``, with a call-list folder or a client book outside the project shown by its key
    (the book's checks name the lines they set aside by its path)."""
    inside = str(config.root.resolve()) + os.sep
    folder = str(calllists.call_list_folder(config))
    if not folder.startswith(inside):
        text = text.replace(folder, "<call_list_path>")
    if config["client_book"] is not None and not book.is_database_book(config):
        book_path = str(book.book_path(config))
        if not book_path.startswith(inside):
            text = text.replace(book_path, "<client_book>")
    return project_relative(text, config)


def calllist_view() -> Response:
    """GET /calllist?top=N: the newest list's facts and its first N clients (default: the budget)."""
    state = _state()
    snapshot = _call_list()
    budget = snapshot.info.get("contact_budget")
    default = budget if isinstance(budget, int) else state.config["contact_budget"]
    try:
        top = calllist.parse_top(request.args.getlist(calllist.TOP_PARAMETER), default, state.call_lists.max_rows)
    except calllist.BadTop as exc:
        abort(400, str(exc))
    return json_response(calllist.answer(snapshot, top, state.holder.deployed_version()), version=snapshot.version)


def calllist_csv_view() -> Response:
    """GET /calllist.csv: the newest list's file as the run wrote it, as a download."""
    snapshot = _call_list()  # a damaged list is a 503 here too, never half a file
    try:
        handle = open(snapshot.csv_path, "rb")  # noqa: SIM115 (send_file closes it)
    except OSError as exc:  # removed since it was read: the next request reads the new state
        abort(503, call_list_relative(f"the call list cannot be read: {exc}", _state().config))
    response = send_file(
        handle, mimetype="text/csv", as_attachment=True, download_name=calllist.download_name(snapshot), max_age=0
    )
    response.headers["X-Model-Version"] = snapshot.version
    return response


def prediction() -> Response:
    """POST /prediction: JSON records or a named data file, a CSV body, a CSV upload, or ``?data_loc=``."""
    state = _state()
    loaded = _model()
    try:
        batch, source, explain = request_batch(state.config, loaded)
        body, rows = prediction_body(state, loaded, batch, source, explain)
    except batches.InputError as exc:
        abort(exc.status, str(exc))
    return prediction_response(body, rows, loaded.version)


def json_prediction(state: ServingState, environ: dict[str, Any]) -> Response | None:
    """``POST /prediction`` with a JSON body and no query string, answered as ``prediction`` answers
    it but without Flask's request machinery (the request gate calls it); None leaves the request
    to Flask: another content type, ``?data_loc=``, or no model loaded (whose 503 Flask words).

    The gate has already checked the token and the body's size, and given the body a declared length.
    """
    if environ.get("QUERY_STRING") or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != JSON_TYPE:
        return None
    loaded = state.holder.get()
    if loaded is None:
        return None
    length = environ.get("CONTENT_LENGTH")
    data = environ["wsgi.input"].read(int(length)) if length else b""
    try:
        batch, source, explain = body_batch(state.config, loaded, JSON_TYPE, data)
        body, rows = prediction_body(state, loaded, batch, source, explain)
    except batches.InputError as exc:
        return error_response(exc.status, str(exc))
    return prediction_response(body, rows, loaded.version)


def request_batch(config: Config, loaded: LoadedModel) -> tuple[batches.Batch, str, bool]:
    """The rows this request sends or names, where they came from ("records", "csv", ...), and
    whether it asks for reasons (a JSON body's ``"explain": true``)."""
    if request.query_string and EXPLAIN in request.args:  # else a CSV's ?explain=true got no reasons, silently
        raise batches.InputError(
            f'reasons are asked for by "{EXPLAIN}": true in a JSON body beside "records" or "dataset", not in the query'
        )
    if request.query_string and QUERY_DATASET in request.args:
        return query_batch(config, loaded, request.args.get(QUERY_DATASET), request.get_data()), "dataset", False
    mimetype = request.mimetype
    if mimetype == UPLOAD_TYPE:
        return _upload_batch(config, loaded), "upload", False
    if is_json(mimetype) or mimetype in CSV_TYPES:
        return body_batch(config, loaded, mimetype, _body())
    abort(415, UNSUPPORTED_TYPE)


def _body() -> bytes:
    """The body of a JSON or CSV prediction, read straight from the WSGI input.

    The request gate has checked its size and given it a declared length (a chunked body is read
    there), so werkzeug's guarded stream has nothing left to guard; skipping it saves about 10 µs
    of a single-row request (measured in-process: 52 µs against 64 µs with ``get_data``).
    """
    length = request.content_length
    return request.input_stream.read(length) if length else b""


def is_json(mimetype: str) -> bool:
    return mimetype == JSON_TYPE or mimetype.endswith("+json")


def body_batch(config: Config, loaded: LoadedModel, mimetype: str, data: bytes) -> tuple[batches.Batch, str, bool]:
    """The rows of a JSON body (records, a bare list, or a named data file) or of a CSV body, and
    whether the body asks for reasons (``"explain": true`` beside ``records`` or a data file)."""
    max_rows = config["api_max_rows"]
    if mimetype in CSV_TYPES:
        frame = batches.read_csv_bytes(data, loaded.schema, config["api_max_columns"])
        return batches.batch_from_frame(frame, loaded.schema, max_rows), "csv", False
    payload = _json_body(data)
    explain = False
    if isinstance(payload, dict) and EXPLAIN in payload:
        payload = dict(payload)
        explain = payload.pop(EXPLAIN)
        if not isinstance(explain, bool):
            raise batches.InputError(f'"{EXPLAIN}" must be true or false, not {_json_kind(explain)}')
    batch, source = _json_batch(config, loaded, payload, max_rows)
    return batch, source, explain


def _json_kind(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return batches.JSON_TYPES.get(type(value), "an unsupported value")


def _json_batch(config: Config, loaded: LoadedModel, payload: Any, max_rows: int) -> tuple[batches.Batch, str]:
    """The rows of a JSON body without its ``explain`` flag, and where they came from."""
    if isinstance(payload, list):
        return batches.batch_from_records(payload, loaded.schema, max_rows), "records"
    if isinstance(payload, dict) and set(payload) == {"records"}:
        return batches.batch_from_records(payload["records"], loaded.schema, max_rows), "records"
    if isinstance(payload, dict) and set(payload) == {"dataset"}:
        frame = datasets.dataset_frame(config, payload["dataset"], loaded.deployed.metadata, max_rows)
        return batches.batch_from_frame(frame, loaded.schema, max_rows), "dataset"
    if isinstance(payload, dict) and len(payload) == 1 and next(iter(payload)) in DATASET_ALIASES:
        ((name, path),) = payload.items()
        frame = datasets.project_path_frame(config, name, path, loaded.deployed.metadata, max_rows)
        return batches.batch_from_frame(frame, loaded.schema, max_rows), "dataset"
    raise batches.InputError(
        'send {"records": [...]}, a bare array of records, or {"dataset": "<file>.csv"} '
        '(also accepted: {"data_file" | "filepath" | "file_path": "testdata/<file>.csv"} or ?data_loc=testdata/<file>.csv)'
    )


def query_batch(config: Config, loaded: LoadedModel, path: str | None, data: bytes) -> batches.Batch:
    """The rows of the data file named by ``?data_loc=`` (the classic course's clients call it so)."""
    if data.strip():
        raise batches.InputError(f"name the data file either with ?{QUERY_DATASET}= or in the body, not both")
    max_rows = config["api_max_rows"]
    frame = datasets.project_path_frame(config, QUERY_DATASET, path, loaded.deployed.metadata, max_rows)
    return batches.batch_from_frame(frame, loaded.schema, max_rows)


def _upload_batch(config: Config, loaded: LoadedModel) -> batches.Batch:
    upload = request.files.get("file") or next(iter(request.files.values()), None)
    if upload is None:
        raise batches.InputError("upload the CSV as a file field named 'file'")
    frame = batches.read_csv_bytes(upload.read(), loaded.schema, config["api_max_columns"])
    return batches.batch_from_frame(frame, loaded.schema, config["api_max_rows"])


def prediction_body(
    state: ServingState, loaded: LoadedModel, batch: batches.Batch, source: str, explain: bool = False
) -> tuple[dict[str, Any], str]:
    """What was noticed, and per row (as JSON text, the answer's last field, ``predictions``) the
    0/1 prediction, the risk and its band, with the ids given; with ``explain``, its reasons too."""
    # Python lists from here: a single-row request is most requests, and numpy's per-call cost
    # (microseconds each) would outweigh its speed on a handful of values.
    risk = _risk(loaded, batch).tolist()
    threshold = loaded.threshold
    predicted = [1 if r >= threshold else 0 for r in risk]
    positives = sum(predicted)
    state.metrics.count_predictions(loaded.version, positives, len(predicted) - positives)
    if state.config["log_predictions"] and batch.ids:
        log_predictions(state, loaded.version, batch, risk, predicted)
    thresholds = loaded.bands
    bands = risk_bands(risk, predicted, thresholds)
    reasons = _reasons(state.config, loaded, batch) if explain else None
    body = {
        "model_version": loaded.version,
        "model": loaded.deployed.metadata.get("model"),
        "threshold": threshold,
        "positive_label": state.config.positive_label,
        "source": source,
        "rows": batch.rows,
        "band_counts": {band: bands.count(band) for band in ("green", "amber", "red")},
        "bands": thresholds,
        "unseen_categories": compiled.unseen_categories(loaded.known_categories, batch, loaded.schema),
        "missing_values": batch.missing_values(loaded.schema),
        **ignored_columns(batch),
    }
    if reasons is not None:
        body["reasons_method"] = reasons_method()
    return body, prediction_rows_json(batch, predicted, risk, bands, reasons)


def log_predictions(
    state: ServingState, version: str, batch: batches.Batch, risk: list[float], predicted: list[int]
) -> None:
    """The answer's rows that carry every id column, into the prediction log (``log_predictions``);
    a failure is counted on /metrics and logged, never the request's."""
    wanted, written = predlog.append_answer(state.config, version, batch.ids, risk, predicted)
    if written != wanted:
        state.metrics.count_log_failure()


def _reasons(config: Config, loaded: LoadedModel, batch: batches.Batch) -> list[list[str]]:
    """Per row, the features that raise its risk most, in words (risk.model.explain)."""
    explainer = loaded.explainer(config)
    try:
        return explainer.batch_reasons(batch, top=REASONS)
    except ValueError:  # scikit-learn's own input checks, as in _risk
        raise batches.InputError(OUT_OF_RANGE) from None


def reasons_method() -> str:
    from risk.model.explain import METHOD

    return METHOD


IGNORED_NAMES_SHOWN = 20  # a request may send thousands of keys: name this many, count the rest


def ignored_columns(batch: batches.Batch) -> dict[str, Any]:
    """The columns given that the model does not use, by name (the first IGNORED_NAMES_SHOWN, then a count)."""
    names = [name if len(name) <= 100 else name[:99] + "…" for name in batch.ignored_columns]
    answer: dict[str, Any] = {"ignored_columns": names[:IGNORED_NAMES_SHOWN]}
    if len(names) > IGNORED_NAMES_SHOWN:
        answer["ignored_columns_not_named"] = len(names) - IGNORED_NAMES_SHOWN
    return answer


def _risk(loaded: LoadedModel, batch: batches.Batch) -> np.ndarray:
    try:
        risk = loaded.scorer.risk(batch)
    except ValueError:  # scikit-learn's own input checks (say, a value beyond float32 for trees)
        raise batches.InputError(OUT_OF_RANGE) from None
    if not np.isfinite(risk).all():
        raise batches.InputError(OUT_OF_RANGE)
    return risk


def prediction_rows_json(
    batch: batches.Batch,
    predicted: list[int],
    risk: list[float],
    bands: list[str],
    reasons: list[list[str]] | None = None,
) -> str:
    """The rows ``[{"row": i, <ids>, "prediction": p, "risk": r, "band": b}, ...]`` as compact JSON text
    (with ``reasons``, each row's ``"reasons": [...]`` after its band).

    Written row by row rather than through dicts and json's encoder: a third of a 10,000-row
    answer's time went there. The same text as ``answers.encode_json`` of those dicts: strings by
    json's own escaping, risks (finite floats, checked in ``_risk``) by ``repr`` as json writes them.
    """
    given = [""] * len(predicted)  # per row, its ids as '"name":value,'
    for name, values in batch.ids.items():
        key = encode_string(name)
        given = [f"{g}{key}:{_json_value(v)}," for g, v in zip(given, values)]
    if reasons is None:
        rows = [
            f'{{"row":{index},{g}"prediction":{p},"risk":{r!r},"band":"{b}"}}'
            for index, (g, p, r, b) in enumerate(zip(given, predicted, risk, bands))
        ]
    else:
        rows = [
            f'{{"row":{index},{g}"prediction":{p},"risk":{r!r},"band":"{b}",'
            f'"reasons":[{",".join(encode_string(reason) for reason in listed)}]}}'
            for index, (g, p, r, b, listed) in enumerate(zip(given, predicted, risk, bands, reasons))
        ]
    return "[" + ",".join(rows) + "]"


def _json_value(value: Any) -> str:
    """An id as json writes it (ids are text, numbers or null; a non-finite number is null already)."""
    if isinstance(value, str):
        return encode_string(value)
    if type(value) in (int, float):
        return repr(value)  # json writes int.__repr__ and float.__repr__
    return encode_json(value).decode("ascii")[:-1]  # null, true, false, or anything unforeseen


def prediction_response(body: dict[str, Any], rows_json: str, version: str) -> Response:
    """``body`` with ``predictions`` (JSON text) as its last field, as ``json_response`` answers it."""
    head = encode_json(body)  # "{...}\n"
    data = b"".join((head[:-2], b',"predictions":', rows_json.encode("ascii"), b"}\n"))
    return json_response(data, version=version)


def _json_body(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        raise batches.InputError("the body is not valid JSON") from None


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
    ("/calllist", calllist_view, ["GET"]),
    ("/calllist.csv", calllist_csv_view, ["GET"]),
    ("/monitoring", monitoring_view, ["GET"]),
)
