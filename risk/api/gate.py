"""Every request's way into the API: what must run before routing, for every request alike.

``RequestGate`` is WSGI middleware in front of the Flask app, which answers every request that
the gate lets through (``service.py``):

- Repeated slashes are merged (``//prediction`` is ``/prediction``) before anything else looks
  at the path, so that every check and every metric label sees the one path.
- The path is matched against the app's own URL map once, for the token check and the metric
  label: with a token configured, everything but the public endpoints needs it, unknown paths
  included, and is refused before a byte of the body is read.
- A ``POST /prediction`` body is refused with 413 when it exceeds the limit, whether its length
  is declared or it comes chunked; a chunked body is read here, up to the limit, and handed on
  with its length, so that no body is ever scored in part.
- Every request, whoever answers it, is counted and timed once, here.
- An endpoint may have a fast answer (``fast_answers``, given by the app): a function of the
  environ that answers the common case without Flask's request machinery, or returns None to
  leave the request to Flask. Single-row ``POST /prediction`` is most of the traffic, and Flask's
  per-request work (context, routing again, signals, the response hooks) is a large part of its cost.

Its refusals are rendered by ``answers.error_response``, as the app's own errors are.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from risk.api.answers import INTERNAL_ERROR, error_response
from risk.api.apimetrics import OTHER_LABEL, ApiMetrics, metric_method
from risk.api.worker import CLOSE_CONNECTION_KEY

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = frozenset({"healthz", "index", "static"})  # the page's shell holds no data
PREDICTION_ENDPOINT = "prediction"
TOKEN_REQUIRED = "a valid 'Authorization: Bearer <token>' header is required"
TOKEN_CHALLENGE = ("WWW-Authenticate", 'Bearer realm="risk-api"')
REPEATED_SLASHES = re.compile(r"/{2,}")
BODY_READ_SIZE = 64 * 1024
DRAIN_BYTES = 1024 * 1024  # of a refused body still arriving, read so the client sees the 413, not a reset
DRAIN_SECONDS = 0.5

UNREADABLE_BODY = "the request body cannot be read: its chunked transfer encoding is broken"

# A refusal of the gate: (status, message, extra headers)
Refusal = tuple[int, str, tuple[tuple[str, str], ...]]
# (endpoint, method) -> a function of the environ giving the answer (a WSGI app), or None: Flask answers
FastAnswer = Callable[[dict[str, Any]], Any]


class UnreadableBody(ValueError):
    """A body of undeclared length whose framing the server could not parse: the client's error (400)."""


def body_limit_message(limit: int | None) -> str:
    return f"the request body exceeds the limit of {limit} bytes (api_max_body_bytes)"


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
    """WSGI middleware: path, token, body limit and metrics for every request; Flask answers the rest."""

    def __init__(
        self,
        wsgi_app: Any,
        url_map: Map,
        digest: bytes | None,
        max_body_bytes: int,
        metrics: ApiMetrics,
        fast_answers: dict[tuple[str, str], FastAnswer] | None = None,
    ):
        self.wsgi_app = wsgi_app
        self.fast_answers = fast_answers or {}
        self.routes = url_map.bind("localhost")  # only paths and methods are matched: the host is not
        self._fixed_routes: dict[tuple[str, str], tuple[str, str]] = {}  # matches of rules without variables
        self.digest = digest
        self.max_body_bytes = max_body_bytes  # 0: no limit
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = path = REPEATED_SLASHES.sub("/", path)
        method = environ.get("REQUEST_METHOD", "")
        rule, endpoint = self._route(path, method)
        answer = None
        try:
            refusal = self._refusal(environ, endpoint, method)
            fast = self.fast_answers.get((endpoint, method)) if refusal is None else None  # type: ignore[arg-type]
            if fast is not None:
                answer = fast(environ)
        except Exception:  # a fault of the gate or of a fast answer: answered (and counted) as Flask's handler would
            logger.exception("unhandled error answering %s %s", method, path)
            refusal = 500, INTERNAL_ERROR, ()
        if answer is None:
            answer = self.wsgi_app if refusal is None else error_response(*refusal)
        statuses: list[str] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        body = answer(environ, recording_start_response)
        status = int(statuses[-1].split(" ", 1)[0])
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

    def _refusal(self, environ: dict[str, Any], endpoint: str | None, method: str) -> Refusal | None:
        """401 without the token, 413 over the body limit, 400 for broken chunks; None: Flask answers."""
        if endpoint not in PUBLIC_ENDPOINTS and not token_ok(self.digest, environ.get("HTTP_AUTHORIZATION", "")):
            return 401, TOKEN_REQUIRED, (TOKEN_CHALLENGE,)  # before reading a byte of the body
        if endpoint != PREDICTION_ENDPOINT or method != "POST":
            return None
        try:
            within = self._body_within_limit(environ)
        except UnreadableBody as exc:
            environ[CLOSE_CONNECTION_KEY] = True  # the framing is lost: the connection cannot carry another request
            return 400, str(exc), ()
        if not within:
            environ[CLOSE_CONNECTION_KEY] = True  # the rest of its body is not read: never keep the connection
            return 413, body_limit_message(self.max_body_bytes), ()
        return None

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
        # Whatever the server's parser raises for broken framing (gunicorn's InvalidChunkSize, say).
        except Exception as exc:
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
    except Exception as exc:  # the client went away or broke the framing (the server's own errors): nothing to keep
        logger.debug("stopped draining a refused body: %s", exc)
