"""Hostile requests against the API under a real gunicorn on a free loopback port: a wide CSV
header, a chunked body over the limit, slow bodies, random methods and paths for /metrics, server
paths in answers, and ``//prediction``."""

from __future__ import annotations

import concurrent.futures
import json
import random
import re
import shutil
import socket
import string
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

import localserver
from risk.core.settings import Config, load_config
from tests.conftest import rewrite_config

pytestmark = pytest.mark.slow

FEATURES = ("lastmonth_activity", "lastyear_activity", "number_of_employees")
RECORD = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}
SMALL_LIMIT = 1000  # api_max_body_bytes of the second server, as in the tester's reproduction
ANSWER_SECONDS = 10  # generous bound on an answer that must not wait for the attackers (they hold on for minutes)


def copy_project(template: Path, folder: Path, **overrides) -> Config:
    shutil.copytree(template, folder, symlinks=True)
    config = load_config(folder / "config.json")
    return rewrite_config(config, **overrides) if overrides else config


@pytest.fixture(scope="module")
def server(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory):
    config = copy_project(deployed_template, tmp_path_factory.mktemp("hardened") / "project")
    with localserver.gunicorn_server(
        config.path, workers=2, env={"API_TOKEN": ""}, log_path=config.root / "gunicorn.log"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def small_server(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory):
    """Bodies limited to 1000 bytes, and 3 seconds for a client to send its whole request."""
    config = copy_project(
        deployed_template, tmp_path_factory.mktemp("small") / "project", api_max_body_bytes=SMALL_LIMIT
    )
    env = {"API_TOKEN": "", "RISK_API_READ_TIMEOUT": "3"}
    with localserver.gunicorn_server(config.path, workers=2, env=env, log_path=config.root / "gunicorn.log") as url:
        yield url


def csv_body(rows: int) -> bytes:
    lines = [",".join(("corporation",) + FEATURES)] + [f"c{i:04d},{i % 7},{100 + i},{10 + i % 50}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def raw_connection(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection or goes quiet for the timeout."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


# ----------------------------------------------------------------------------- a wide header


def test_a_wide_csv_header_is_refused_at_once_and_healthz_keeps_answering(server: str) -> None:
    """100,000 columns (0.9 MB) took over 3 minutes of a thread each; 4 at once stopped /healthz."""
    header = ",".join(FEATURES + tuple(f"c{i:05d}" for i in range(100_000)))
    body = (header + "\n" + ",".join(["1"] * (100_000 + len(FEATURES))) + "\n").encode()
    headers = {"Content-Type": "text/csv"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        wide = [
            pool.submit(requests.post, server + "/prediction", data=body, headers=headers, timeout=120)
            for _ in range(4)
        ]
        health = requests.get(server + "/healthz", timeout=ANSWER_SECONDS)
        answers = [future.result() for future in wide]
    assert health.status_code == 200
    for answer in answers:
        assert answer.status_code == 413
        assert "100003 columns" in answer.json()["message"] and "api_max_columns" in answer.json()["message"]
    # Repeated names within the limit are still found (by counting once, not once per name).
    repeated = ",".join(FEATURES + tuple(f"c{i % 900:04d}" for i in range(1900))) + "\n" + ",".join(["1"] * 1903) + "\n"
    answer = requests.post(server + "/prediction", data=repeated.encode(), headers=headers, timeout=60)
    assert answer.status_code == 400 and "repeats 900 column name(s)" in answer.json()["message"]


# ----------------------------------------------------------------------------- chunked bodies


def test_a_chunked_body_over_the_limit_is_refused_never_scored_in_part(small_server: str) -> None:
    body = csv_body(200)
    assert len(body) > 3 * SMALL_LIMIT
    pieces = [body[i : i + 500] for i in range(0, len(body), 500)]
    for path in ("/prediction", "//prediction"):
        answer = requests.post(small_server + path, data=iter(pieces), headers={"Content-Type": "text/csv"}, timeout=30)
        assert answer.request.headers.get("Transfer-Encoding") == "chunked"
        assert answer.status_code == 413, answer.text
        assert f"limit of {SMALL_LIMIT} bytes" in answer.json()["message"]
    # The same refusal with a declared length, and a chunked body within the limit is scored whole.
    assert (
        requests.post(
            small_server + "/prediction", data=body, headers={"Content-Type": "text/csv"}, timeout=30
        ).status_code
        == 413
    )
    small = csv_body(10)
    answer = requests.post(
        small_server + "/prediction",
        data=iter([small[:40], small[40:]]),
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["rows"] == 10


def test_a_chunked_upload_over_the_limit_is_refused_too(small_server: str) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\nContent-Type: text/csv\r\n\r\n'
    body += csv_body(200) + b"\r\n--b--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    answer = requests.post(
        small_server + "/prediction", data=iter([body[:700], body[700:]]), headers=headers, timeout=30
    )
    assert answer.status_code == 413


@pytest.mark.parametrize(
    "framing", [b"zz\r\n[]\r\n0\r\n\r\n", b"2\r\n[]XX0\r\n\r\n"], ids=["bad size", "no terminator"]
)
@pytest.mark.parametrize("content_type", ["application/json", "text/csv", "multipart/form-data; boundary=b"])
def test_a_chunked_body_with_broken_framing_is_a_400_not_a_500(server: str, framing: bytes, content_type: str) -> None:
    """gunicorn's parser raises on a chunk size that is not hexadecimal: the gate reading the body
    turned that into 500 Internal Server Error; it is the client's error."""
    with raw_connection(server) as sock:
        sock.sendall(
            b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: "
            + content_type.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + framing
        )
        answer = read_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert json.loads(body)["message"] == "the request body cannot be read: its chunked transfer encoding is broken"
    assert requests.get(server + "/healthz", timeout=ANSWER_SECONDS).status_code == 200


# ----------------------------------------------------------------------------- pipelining


def test_pipelined_requests_in_one_write_are_all_answered(server: str) -> None:
    """A second request sent before the first was answered waited, unanswered, until keep-alive
    (5 s) closed the connection. Here a POST whose body the app reads, a GET, and a last GET
    asking to close go in one write; all three answers must come before the read deadline."""
    body = json.dumps([RECORD]).encode()
    post = (
        b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with raw_connection(server) as sock:
        sock.settimeout(ANSWER_SECONDS)
        sock.sendall(post + get + last)
        answer = read_answer(sock)  # until the server closes after the last, or the deadline
    assert answer.count(b"HTTP/1.1 200 OK") == 3, answer[:600]
    assert answer.index(b'"rows"') < answer.rindex(b"HTTP/1.1 200 OK")  # answered in order


# ----------------------------------------------------------------------------- slow bodies


def test_slow_bodies_do_not_stop_other_clients(server: str) -> None:
    """8 clients announce 100,000 bytes and send one: other clients are still answered at once."""
    slow = []
    try:
        for _ in range(8):
            sock = raw_connection(server)
            sock.sendall(
                b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\nl"
            )
            slow.append(sock)
        time.sleep(0.5)  # let the server take them all in before the others come
        for _ in range(4):
            assert requests.get(server + "/healthz", timeout=ANSWER_SECONDS).status_code == 200
            answer = requests.post(server + "/prediction", json=[RECORD], timeout=ANSWER_SECONDS)
            assert answer.status_code == 200 and answer.json()["rows"] == 1
    finally:
        for sock in slow:
            sock.close()


def test_a_body_sent_in_slow_pieces_is_still_answered(server: str) -> None:
    body = json.dumps([RECORD] * 3).encode()
    with raw_connection(server) as sock:
        sock.sendall(b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n")
        sock.sendall(f"Content-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, len(body), 40):
            time.sleep(0.1)
            sock.sendall(body[start : start + 40])
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200") and b'"rows":3' in answer


def test_a_client_waiting_for_100_continue_gets_it_once(server: str) -> None:
    body = json.dumps([RECORD]).encode()
    with raw_connection(server) as sock:
        sock.sendall(
            b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200") and b"100 Continue" not in answer


def test_a_request_not_finished_within_the_read_timeout_gets_408(small_server: str) -> None:
    with raw_connection(small_server) as sock:
        sock.sendall(b"POST /prediction HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 500\r\n\r\nl")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408")


def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(small_server: str) -> None:
    with raw_connection(small_server) as sock:
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408")


def test_kept_alive_connections_answer_request_after_request(small_server: str) -> None:
    with requests.Session() as session:
        versions = {
            session.post(small_server + "/prediction", json=[RECORD], timeout=10).json()["model_version"]
            for _ in range(20)
        }
    assert versions == {"v1"}


# ----------------------------------------------------------------------------- metrics labels


def test_metrics_labels_stay_a_fixed_set_whatever_methods_and_paths_come(server: str) -> None:
    rng = random.Random(17)
    with requests.Session() as session:
        for _ in range(300):
            method = "".join(rng.choice(string.ascii_uppercase) for _ in range(8))
            path = "/" + "".join(rng.choice(string.ascii_lowercase) for _ in range(12))
            session.request(method, server + rng.choice([path, "/prediction", "/model"]), timeout=10)
    text = requests.get(server + "/metrics", timeout=10).text
    labels = re.findall(r'^riskapi_requests_total\{endpoint="([^"]*)",method="([^"]*)",status="(\d+)"\}', text, re.M)
    assert labels
    endpoints = {
        "/",
        "/healthz",
        "/readyz",
        "/model",
        "/scoring",
        "/summarystats",
        "/diagnostics",
        "/metrics",
        "/prediction",
    }
    assert {endpoint for endpoint, _, _ in labels} <= endpoints | {"/static/<path:filename>", "other"}
    assert {method for _, method, _ in labels} <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert ("other", "other") in {(endpoint, method) for endpoint, method, _ in labels}
    assert len(labels) < 40


# ----------------------------------------------------------------------------- //prediction


def test_repeated_slashes_are_the_same_resource(server: str) -> None:
    """Chosen: merged, not redirected (a redirect would make clients send a POST body twice)."""
    single = requests.post(server + "/prediction", json=[RECORD], timeout=10)
    double = requests.post(server + "//prediction", json=[RECORD], timeout=10)
    assert double.status_code == single.status_code == 200
    assert double.json()["predictions"] == single.json()["predictions"]
    assert requests.get(server + "//model", timeout=10).json()["model_version"] == "v1"
    text = requests.get(server + "/metrics", timeout=10).text
    assert 'endpoint="//prediction"' not in text
