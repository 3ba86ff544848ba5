"""The API's JSON answers: the body encoding, the one shape of an error, and the one way each is rendered.

Both the request gate (its refusals before routing: 401, 413 and a broken chunked body) and the
Flask app (every other answer, errors included) build their answers here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from flask import Response
from werkzeug.http import HTTP_STATUS_CODES

from risk.core.jsonfiles import json_ready

JSON_MIMETYPE = "application/json"
INTERNAL_ERROR = "internal error; the server log has the details"


# Made once: json.dumps with any option builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_json(payload: Any) -> bytes:
    """Compact JSON; NaN or infinity (from a document on disk) become null rather than invalid JSON."""
    try:
        text = _ENCODER.encode(payload)
    except ValueError:
        text = _ENCODER.encode(json_ready(payload))
    return (text + "\n").encode("utf-8")


def error_payload(status: int, message: str) -> dict[str, Any]:
    """The one shape of every error answer: ``{"error": name, "status": code, "message": ...}``."""
    return {"error": HTTP_STATUS_CODES.get(status, "Error"), "status": status, "message": message}


def encode_string(text: str) -> str:
    """A string as ``encode_json`` writes it (ASCII, json's escapes), quotes included."""
    return encode_basestring_ascii(text)


def json_response(payload: Any, status: int = 200, version: str | None = None) -> Response:
    """A JSON answer (``payload``, or bytes already encoded so); ``version``, the model version
    that gave it, goes in ``X-Model-Version``."""
    data = payload if isinstance(payload, bytes) else encode_json(payload)
    response = Response(data, status=status, mimetype=JSON_MIMETYPE)
    if version:
        response.headers["X-Model-Version"] = version
    return response


def error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """Every error answer of the API, whoever refuses the request; ``headers`` such as ``Allow``
    or ``WWW-Authenticate`` are added (a content type among them is not: the answer is JSON)."""
    response = json_response(error_payload(status, message), status)
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
