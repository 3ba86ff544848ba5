"""The request gate (risk.api.gate) at the WSGI level, in front of a real Flask app from
risk.api.service.create_app: repeated slashes merged into one path, the token checked before
anything else, the body-size limit on POST /prediction (declared or chunked), and request
metrics under a fixed set of labels."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from risk.api import gate, service
from risk.core.settings import Config
from tests.conftest import rewrite_config, write_config

TOKEN = "gate-token-5150"
RECORD = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes):
        self.status = int(status.split(" ", 1)[0])
        self.headers = dict(headers)
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class WatchedStream(io.BytesIO):
    """A request body that counts the bytes the server took from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "application/json",
    authorization: str | None = None,
    chunked: bool = False,
) -> tuple[Answer, WatchedStream, dict]:
    """One request through the app's WSGI callable (the gate first), as a WSGI server makes it:
    a chunked body arrives without CONTENT_LENGTH, de-chunked by the server."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    environ = EnvironBuilder(method=method, path="/", headers=headers, content_type=content_type).get_environ()
    environ["PATH_INFO"] = path  # set here: EnvironBuilder would read "//x" as a host name
    stream = WatchedStream(body)
    environ["wsgi.input"] = stream
    if chunked:
        environ.pop("CONTENT_LENGTH", None)
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(len(body))
    started: list = []
    result = app(environ, lambda status, response_headers, exc_info=None: started.append((status, response_headers)))
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return Answer(started[-1][0], started[-1][1], data), stream, environ


def request_counts(app: Any) -> dict[tuple[str, str, str], float]:
    """{(endpoint, method, status): count} from the app's /metrics."""
    answer, _, _ = call(app, "GET", "/metrics", authorization=f"Bearer {TOKEN}")
    assert answer.status == 200
    found = re.findall(
        r'^riskapi_requests_total\{endpoint="([^"]*)",method="([^"]*)",status="(\d+)"\} (\S+)$',
        answer.body.decode(),
        re.M,
    )
    return {(endpoint, method, status): float(count) for endpoint, method, status, count in found}


@pytest.fixture
def empty_project(tmp_path: Path) -> Config:
    """A project with nothing deployed: predictions answer 503 once past the gate."""
    return write_config(tmp_path / "project", api_max_body_bytes=200)


@pytest.fixture
def open_app(empty_project: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    return service.create_app(empty_project.path)


@pytest.fixture
def guarded_app(empty_project: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    return service.create_app(empty_project.path)


# --- one path per resource ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["//healthz", "///healthz", "//healthz//"])
def test_repeated_slashes_reach_the_same_resource_without_a_redirect(open_app, path: str) -> None:
    single, _, _ = call(open_app, "GET", "/healthz" + ("/" if path.endswith("//") else ""))
    merged, _, environ = call(open_app, "GET", path)
    assert merged.status == single.status
    assert merged.body == single.body
    assert "//" not in environ["PATH_INFO"]


def test_a_prediction_through_repeated_slashes_passes_the_same_checks(guarded_app) -> None:
    body = json.dumps([RECORD]).encode()
    assert call(guarded_app, "POST", "//prediction", body)[0].status == 401
    merged, _, _ = call(guarded_app, "POST", "//prediction", body, authorization=f"Bearer {TOKEN}")
    single, _, _ = call(guarded_app, "POST", "/prediction", body, authorization=f"Bearer {TOKEN}")
    assert merged.status == single.status == 503 and merged.json() == single.json()


# --- the token ------------------------------------------------------------------------------------


def test_without_a_token_configured_nothing_asks_for_one(open_app) -> None:
    assert call(open_app, "GET", "/model")[0].status == 503  # nothing deployed, but no 401
    assert call(open_app, "GET", "/metrics")[0].status == 200


@pytest.mark.parametrize("path", ["/healthz", "/", "/static/riskometer.css"])
def test_public_paths_need_no_token(guarded_app, path: str) -> None:
    assert call(guarded_app, "GET", path)[0].status == 200


@pytest.mark.parametrize(
    "method, path", [("GET", "/model"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/nowhere"), ("PUT", "/model")]
)
def test_everything_else_is_refused_without_the_token_unknown_paths_included(guarded_app, method, path) -> None:
    answer, _, _ = call(guarded_app, method, path)
    assert answer.status == 401
    assert answer.json() == {"error": "Unauthorized", "status": 401, "message": gate.TOKEN_REQUIRED}
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer ", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN]
)
def test_a_wrong_or_malformed_authorization_is_refused(guarded_app, authorization: str) -> None:
    assert call(guarded_app, "GET", "/model", authorization=authorization)[0].status == 401


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "])
def test_the_token_opens_every_path_and_unknown_ones_then_answer_404(guarded_app, authorization: str) -> None:
    assert call(guarded_app, "GET", "/model", authorization=authorization)[0].status == 503
    assert call(guarded_app, "GET", "/nowhere", authorization=authorization)[0].status == 404


def test_a_refused_request_is_refused_before_its_body_is_read(guarded_app) -> None:
    answer, stream, _ = call(guarded_app, "POST", "/prediction", b"x" * 10_000)  # over the limit too
    assert answer.status == 401
    assert stream.taken == 0


# --- the body limit -------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_unread_naming_the_limit(open_app) -> None:
    answer, stream, _ = call(open_app, "POST", "/prediction", b" " * 201)
    assert answer.status == 413
    assert "200 bytes" in answer.json()["message"] and "api_max_body_bytes" in answer.json()["message"]
    assert stream.taken == 0


def test_a_body_at_the_limit_is_let_through(open_app) -> None:
    body = json.dumps([RECORD]).encode().ljust(200)
    assert call(open_app, "POST", "/prediction", body)[0].status == 503  # past the gate: nothing deployed


@pytest.mark.parametrize("size", [201, 100_000])
def test_a_chunked_body_over_the_limit_is_refused(open_app, size: int) -> None:
    answer, _, _ = call(open_app, "POST", "/prediction", b"[" + b" " * (size - 1), chunked=True)
    assert answer.status == 413 and "api_max_body_bytes" in answer.json()["message"]


def test_a_chunked_body_within_the_limit_is_scored_whole(deployed_project: Config, monkeypatch) -> None:
    """The gate reads a chunked body and hands it on with its length: the same answer as declared."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    config = rewrite_config(deployed_project, api_max_body_bytes=400)
    app = service.create_app(config.path)
    body = json.dumps([RECORD, {**RECORD, "lastmonth_activity": 900}]).encode()
    assert 200 < len(body) <= 400
    chunked, _, environ = call(app, "POST", "/prediction", body, chunked=True)
    declared, _, _ = call(app, "POST", "/prediction", body)
    assert chunked.status == declared.status == 200, chunked.body
    assert chunked.json()["predictions"] == declared.json()["predictions"]
    assert len(chunked.json()["predictions"]) == 2
    assert environ["CONTENT_LENGTH"] == str(len(body)) and "HTTP_TRANSFER_ENCODING" not in environ


def test_a_limit_of_zero_means_no_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    app = service.create_app(write_config(tmp_path / "project", api_max_body_bytes=0).path)
    body = json.dumps([RECORD] * 2000).encode()
    assert call(app, "POST", "/prediction", body)[0].status == 503
    assert call(app, "POST", "/prediction", body, chunked=True)[0].status == 503


def test_the_limit_is_for_predictions_only(open_app) -> None:
    assert call(open_app, "POST", "/model", b" " * 10_000)[0].status == 405
    assert call(open_app, "GET", "/healthz", b" " * 10_000)[0].status == 200


# --- metrics labels -------------------------------------------------------------------------------


def test_every_request_is_counted_once_under_its_rule(guarded_app) -> None:
    bearer = f"Bearer {TOKEN}"
    call(guarded_app, "GET", "/healthz")
    call(guarded_app, "GET", "//healthz")
    call(guarded_app, "GET", "/model")  # 401
    call(guarded_app, "GET", "/model", authorization=bearer)  # 503
    call(guarded_app, "POST", "/prediction", b" " * 500, authorization=bearer)  # 413
    call(guarded_app, "GET", "/static/riskometer.js")
    counts = request_counts(guarded_app)
    assert counts == {
        ("/healthz", "GET", "200"): 2.0,
        ("/model", "GET", "401"): 1.0,
        ("/model", "GET", "503"): 1.0,
        ("/prediction", "POST", "413"): 1.0,
        ("/static/<path:filename>", "GET", "200"): 1.0,
    }


def test_unknown_paths_and_methods_are_counted_as_other(open_app) -> None:
    for number in range(20):
        call(open_app, "GET", f"/probe-{number}")
        call(open_app, f"BREW{number}", "/healthz")
    call(open_app, "GET", "/prediction")  # a known path, a method it does not take
    counts = request_counts(open_app)
    assert counts == {
        ("other", "GET", "404"): 20.0,
        ("other", "other", "405"): 20.0,
        ("other", "GET", "405"): 1.0,
    }


class BreakingStream(io.BytesIO):
    """A chunked body whose server-side reader fails with an error type of its own."""

    def read(self, size: int | None = -1) -> bytes:
        raise RuntimeError("the server's chunk parser gave up")


def test_a_body_the_server_cannot_read_is_a_counted_400_whatever_the_server_raised(open_app) -> None:
    environ = EnvironBuilder(method="POST", path="/prediction", content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input"] = BreakingStream()
    started: list = []
    body = b"".join(open_app(environ, lambda status, headers, exc_info=None: started.append(status)))

    assert started == ["400 BAD REQUEST"] and "chunked transfer encoding is broken" in json.loads(body)["message"]
    assert request_counts(open_app) == {("/prediction", "POST", "400"): 1.0}


def test_a_fault_of_the_gate_itself_is_a_json_500_that_is_counted(open_app) -> None:
    """A server that hands over no body stream at all: the gate fails, the caller still gets JSON."""
    environ = EnvironBuilder(method="POST", path="/prediction", content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    del environ["wsgi.input"]
    started: list = []
    body = b"".join(open_app(environ, lambda status, headers, exc_info=None: started.append(status)))

    assert (
        started[-1].startswith("500")
        and json.loads(body)["message"] == "internal error; the server log has the details"
    )
    assert request_counts(open_app) == {("/prediction", "POST", "500"): 1.0}
