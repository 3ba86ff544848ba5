"""Every request's way into the API: one path per resource, the token, the body limit, JSON error
answers and the request metrics, each in one place whichever code answers the request.

``RequestGate`` is WSGI middleware in front of the Flask app:

- Repeated slashes are merged (``//prediction`` is ``/prediction``) before anything else looks
  at the path, so that every check and every metric label sees the one path.
- The path is matched against the app's own URL map once, for the token check and the metric
  label: with a token configured, everything but the public endpoints needs it, unknown paths
  included, and is refused before a byte of the body is read.
- A ``POST /prediction`` body is refused with 413 when it exceeds the limit, whether its length
  is declared or it comes chunked; a chunked body is read here, up to the limit, and handed on
  with its length, so that no body is ever scored in part.
- A ``POST /prediction`` with a JSON or CSV body is then answered here by the app's own answer
  function, without Flask's request and response machinery, which costs about 200 µs of a
  single-row request's 600 µs (measured) and so bounds the requests per second. Uploads and
  ``?data_loc=`` go on to Flask, as does every other request.
- Every request, whoever answers it, is counted and timed once, here.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map

from risk.api.apimetrics import OTHER_LABEL, ApiMetrics, metric_method
from risk.api.worker import CLOSE_CONNECTION_KEY
from risk.core.jsonfiles import json_ready

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = frozenset({"healthz", "index", "static"})  # the page's shell holds no data
PREDICTION_ENDPOINT = "prediction"
TOKEN_REQUIRED = "a valid 'Authorization: Bearer <token>' header is required"
INTERNAL_ERROR = "internal error; the server log has the details"
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
REPEATED_SLASHES = re.compile(r"/{2,}")
BODY_READ_SIZE = 64 * 1024
DRAIN_BYTES = 1024 * 1024  # of a refused body still arriving, read so the client sees the 413, not a reset
DRAIN_SECONDS = 0.5

UNREADABLE_BODY = "the request body cannot be read: its chunked transfer encoding is broken"

# (status, JSON payload, model version or None): what the gate sends back
Answer = tuple[int, dict[str, Any], str | None]
# The app's answer to a JSON or CSV prediction body: (mimetype, a function reading the body) -> Answer
PredictionAnswer = Callable[[str, Callable[[], bytes]], Answer]


# ----------------------------------------------------------------------------- answers


class UnreadableBody(ValueError):
    """A body of undeclared length whose framing the server could not parse: the client's error (400)."""


def error_payload(status: int, message: str) -> dict[str, Any]:
    """The one shape of every error answer: ``{"error": name, "status": code, "message": ...}``."""
    return {"error": HTTP_STATUS_CODES.get(status, "Error"), "status": status, "message": message}


def encode_json(payload: Any) -> bytes:
    """Compact JSON; NaN or infinity (from a document on disk) become null rather than invalid JSON."""
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(json_ready(payload), separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode("utf-8")


def body_limit_message(limit: int | None) -> str:
    return f"the request body exceeds the limit of {limit} bytes (api_max_body_bytes)"


def is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


# ----------------------------------------------------------------------------- the token


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_ok(digest: bytes | None, authorization: str) -> bool:
    """True without a token; else the header must be ``Bearer <token>`` (digests compared in constant time)."""
    if digest is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(given.strip()), digest)


# ----------------------------------------------------------------------------- the gate


class RequestGate:
    """WSGI middleware: path, token, body limit and metrics for every request; JSON and CSV
    predictions answered by ``answer_prediction`` without Flask."""

    def __init__(
        self,
        wsgi_app: Any,
        url_map: Map,
        digest: bytes | None,
        max_body_bytes: int,
        metrics: ApiMetrics,
        answer_prediction: PredictionAnswer,
    ):
        self.wsgi_app = wsgi_app
        self.routes = url_map.bind("localhost")  # only paths and methods are matched: the host is not
        self._fixed_routes: dict[tuple[str, str], tuple[str, str]] = {}  # matches of rules without variables
        self.digest = digest
        self.max_body_bytes = max_body_bytes  # 0: no limit
        self.metrics = metrics
        self.answer_prediction = answer_prediction

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = path = REPEATED_SLASHES.sub("/", path)
        method = environ.get("REQUEST_METHOD", "")
        rule, endpoint = self._route(path, method)
        try:
            answer = self._answer_here(environ, endpoint, method)
        except Exception:  # as Flask's handler: the details go to the log, never to the caller
            logger.exception("unhandled error answering %s %s", method, path)
            answer = 500, error_payload(500, INTERNAL_ERROR), None
        if answer is None:
            statuses: list[str] = []

            def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
                statuses.append(status)
                return start_response(status, headers, exc_info)

            body = self.wsgi_app(environ, recording_start_response)
            status = int(statuses[-1].split(" ", 1)[0])
        else:
            status, payload, version = answer
            body = [self._respond(start_response, status, payload, version)]
        self.metrics.observe(rule or OTHER_LABEL, metric_method(method), status, time.perf_counter() - started)
        return body

    def _route(self, path: str, method: str) -> tuple[str | None, str | None]:
        """(rule, endpoint) as Flask will route the request; (None, None) for a 404, 405 or redirect."""
        known = self._fixed_routes.get((path, method))
        if known is not None:
            return known
        try:
            rule, _ = self.routes.match(path, method, return_rule=True)
        except HTTPException:
            return None, None
        if not rule.arguments:  # a fixed path: the cache holds at most one entry per rule and method
            self._fixed_routes[(path, method)] = (rule.rule, rule.endpoint)
        return rule.rule, rule.endpoint

    def _answer_here(self, environ: dict[str, Any], endpoint: str | None, method: str) -> Answer | None:
        """401, 413 or a JSON/CSV prediction answered by the gate; None: Flask answers."""
        if endpoint not in PUBLIC_ENDPOINTS and not token_ok(self.digest, environ.get("HTTP_AUTHORIZATION", "")):
            return 401, error_payload(401, TOKEN_REQUIRED), None  # before reading a byte of the body
        if endpoint != PREDICTION_ENDPOINT or method != "POST":
            return None
        try:
            within = self._body_within_limit(environ)
        except UnreadableBody as exc:
            environ[CLOSE_CONNECTION_KEY] = True  # the framing is lost: the connection cannot carry another request
            return 400, error_payload(400, str(exc)), None
        if not within:
            environ[CLOSE_CONNECTION_KEY] = True  # the rest of its body is not read: never keep the connection
            return 413, error_payload(413, body_limit_message(self.max_body_bytes)), None
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if environ.get("QUERY_STRING") or not (is_json(mimetype) or mimetype in CSV_TYPES):
            return None
        length = int(environ["CONTENT_LENGTH"])
        return self.answer_prediction(mimetype, lambda: environ["wsgi.input"].read(length) if length else b"")

    def _body_within_limit(self, environ: dict[str, Any]) -> bool:
        """False for a body over the limit; a chunked body is read here and given a length."""
        limit = self.max_body_bytes
        length = environ.get("CONTENT_LENGTH", "")
        if length.isdigit():
            return not (limit and int(length) > limit)
        data = read_body_within(environ, limit)
        if data is None:
            return False
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return True

    @staticmethod
    def _respond(start_response: Any, status: int, payload: dict[str, Any], version: str | None) -> bytes:
        body = encode_json(payload)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if version:
            headers.append(("X-Model-Version", version))
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="risk-api"'))
        start_response(f"{status} {HTTP_STATUS_CODES[status]}", headers)
        return body


def read_body_within(environ: dict[str, Any], limit: int) -> bytes | None:
    """A body of undeclared length (chunked), read whole; None once it passes ``limit`` bytes (0: none).

    What follows a refused body is read and dropped for a moment, up to a bound, so that the
    client, still sending, gets the 413 rather than a reset connection.
    """
    stream = environ["wsgi.input"]
    chunks, total = [], 0
    while True:
        try:
            chunk = stream.read(BODY_READ_SIZE)
        except Exception as exc:  # the server's parser refused the chunked framing (gunicorn's InvalidChunkSize, say)
            logger.info("refused a body whose chunked framing is broken: %s: %s", type(exc).__name__, exc)
            raise UnreadableBody(UNREADABLE_BODY) from None
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
