"""End to end under a real gunicorn on a free loopback port: apicalls.py, the token, metrics
across workers, and a deployment picked up while serving."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

import apicalls
import localserver
from risk.api import client
from risk.core.settings import Config, load_config
from risk.registry import deploy
from tests.conftest import write_diagnostics

pytestmark = pytest.mark.slow

PROJECT_DIR = Path(__file__).resolve().parents[2]
TOKEN = "gunicorn-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORD = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}
WORKERS = 2


@pytest.fixture(scope="module")
def served_project(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """One private deployed project for the module: its tests run in order against one server."""
    folder = tmp_path_factory.mktemp("served") / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    return load_config(folder / "config.json")


@pytest.fixture(scope="module")
def server(served_project: Config):
    log = served_project.root / "gunicorn.log"
    with localserver.gunicorn_server(
        served_project.path, workers=WORKERS, env={"API_TOKEN": TOKEN}, log_path=log
    ) as url:
        yield url


def requests_by_worker(url: str) -> dict[str, float]:
    """riskapi_worker_requests by worker pid, as /metrics shows it."""
    text = requests.get(url + "/metrics", headers=AUTH, timeout=10).text
    return {
        pid: float(value) for pid, value in re.findall(r'^riskapi_worker_requests\{pid="(\d+)"\} (\S+)$', text, re.M)
    }


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_apicalls_against_gunicorn_fails_without_diagnostics_then_passes(
    server: str, served_project: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    shutil.rmtree(served_project.reports_folder, ignore_errors=True)
    output = tmp_path / "apireturns.txt"
    assert apicalls.main(["--config", str(served_project.path), "--url", server, "--output", str(output)]) == 1
    text = output.read_text()
    assert "## GET /summarystats -> 503" in text and "python diagnostics.py" in text

    write_diagnostics(served_project, "v1")
    assert apicalls.main(["--config", str(served_project.path), "--url", server, "--output", str(output)]) == 0
    text = output.read_text()
    for path in (
        "/healthz",
        "/readyz",
        "/model",
        "/scoring",
        "/summarystats",
        "/diagnostics",
        "/prediction",
        "/metrics",
        "/",
    ):
        assert f" {path} -> 200" in text
    assert text.count("## POST /prediction -> 200") == 3  # the named dataset, JSON records, a CSV body
    assert '"model_version": "v1"' in text
    # Of the 1,000-row answers only a few rows are kept (the file was 311 KB).
    assert text.count('"predictions_not_shown": 995') == 2
    assert text.count('"prediction":') <= 3 * client.PREDICTION_ROWS
    assert len(text.encode()) < 40_000


def test_apicalls_runs_as_a_script_and_fails_without_the_token(
    server: str, served_project: Config, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    command = [sys.executable, str(PROJECT_DIR / "apicalls.py"), "--config", str(served_project.path), "--url", server]
    command += ["--output", str(tmp_path / "out.txt")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "## GET /healthz -> 200" in (tmp_path / "out.txt").read_text()
    assert "## GET /model -> 401" in (tmp_path / "out.txt").read_text()


def test_the_token_is_enforced_by_every_worker(server: str) -> None:
    assert requests.get(server + "/healthz", timeout=10).status_code == 200
    for _ in range(2 * WORKERS):
        response = requests.post(server + "/prediction", json=[RECORD], timeout=10)
        assert response.status_code == 401 and response.json()["message"]
    assert requests.post(server + "/prediction", json=[RECORD], headers=AUTH, timeout=10).status_code == 200


def test_a_chunked_body_is_answered_like_one_of_known_length(server: str) -> None:
    """A chunked body is read whole by the request gate and given its length: the same answer as with Content-Length."""
    body = json.dumps([RECORD]).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    fixed = requests.post(server + "/prediction", data=body, headers=headers, timeout=10)
    chunked = requests.post(server + "/prediction", data=iter([body[:10], body[10:]]), headers=headers, timeout=10)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert chunked.status_code == fixed.status_code == 200
    assert chunked.json()["predictions"] == fixed.json()["predictions"]
    bad = requests.post(
        server + "/prediction", data=iter([b'{"records": [{"lastmonth_activity": "x"}]}']), headers=headers, timeout=10
    )
    assert bad.status_code == 400 and "lastmonth_activity" in bad.json()["message"]


def test_metrics_add_up_across_workers(server: str) -> None:
    before = metric(
        requests.get(server + "/metrics", headers=AUTH, timeout=10).text,
        "riskapi_requests_total",
        endpoint="/prediction",
        status="200",
    )
    with requests.Session() as session:  # new connections too, so that both workers answer some
        for _ in range(20):
            requests.post(server + "/prediction", json=[RECORD], headers=AUTH, timeout=10)
            session.post(server + "/prediction", json=[RECORD, RECORD], headers=AUTH, timeout=10)
    text = requests.get(server + "/metrics", headers=AUTH, timeout=10).text
    assert metric(text, "riskapi_requests_total", endpoint="/prediction", status="200") - before == 40
    assert metric(text, "riskapi_request_duration_seconds_count", endpoint="/prediction", status="200") - before == 40
    assert metric(text, "riskapi_predictions_total", model_version="v1") >= 60
    assert metric(text, "riskapi_model_info", version="v1") == 1


def test_keep_alive_clients_are_spread_over_the_workers_even_if_they_connected_while_one_was_away(server: str) -> None:
    """Eight keep-alive clients connect while one worker is stopped (as if booting or recycled); once it
    is back, each worker answers a share of their requests, by the workers' own per-pid counts."""
    pids = list(requests_by_worker(server))
    assert len(pids) == WORKERS
    clients, requests_each = 8, 40
    sessions = [requests.Session() for _ in range(clients)]
    away = int(pids[0])
    os.kill(away, signal.SIGSTOP)
    try:
        for session in sessions:  # each connects now: only the other worker can answer
            assert session.post(server + "/prediction", json=[RECORD], headers=AUTH, timeout=30).status_code == 200
    finally:
        os.kill(away, signal.SIGCONT)
    before = requests_by_worker(server)
    failures: list[int] = []

    def client(session: requests.Session) -> None:
        for _ in range(requests_each):
            status = session.post(server + "/prediction", json=[RECORD], headers=AUTH, timeout=30).status_code
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=client, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session in sessions:
        session.close()
    after = requests_by_worker(server)
    served = {pid: after[pid] - before.get(pid, 0) for pid in pids}
    assert not failures
    assert sum(served.values()) >= clients * requests_each  # /metrics calls count too
    for pid in pids:  # an even share would be 1/2; the one that was away gets at least a quarter of it
        assert served[pid] >= clients * requests_each / (4 * WORKERS), served


def test_a_deployment_while_serving_is_picked_up_by_every_worker(server: str, served_project: Config) -> None:
    answer = requests.post(server + "/prediction", json=[RECORD], headers=AUTH, timeout=10).json()
    assert answer["model_version"] == "v1"
    assert deploy.deploy_model(served_project, reason="deployed while serving") == "v2"
    # Each worker reads the link on every request, so no answer after the deploy is from v1.
    for _ in range(10 * WORKERS):
        with requests.Session() as session:
            response = session.post(server + "/prediction", json=[RECORD], headers=AUTH, timeout=30)
        assert response.status_code == 200
        assert response.json()["model_version"] == "v2" == response.headers["X-Model-Version"]
    assert requests.get(server + "/readyz", headers=AUTH, timeout=10).json()["model_version"] == "v2"
    text = requests.get(server + "/metrics", headers=AUTH, timeout=10).text
    assert metric(text, "riskapi_model_info", version="v2") == 1


@pytest.mark.parametrize(
    "given, used",
    [
        (None, "risk.api.worker.BufferingThreadWorker"),
        ("bufferingworker.BufferingThreadWorker", "risk.api.worker.BufferingThreadWorker"),  # its name before the move
        ("gthread", "gthread"),
    ],
)
def test_the_worker_class_setting_selects_our_worker_under_its_old_name_too(
    given: str | None, used: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if given is None:
        monkeypatch.delenv("RISK_API_WORKER_CLASS", raising=False)
    else:
        monkeypatch.setenv("RISK_API_WORKER_CLASS", given)
    conf = PROJECT_DIR / "gunicorn.conf.py"
    settings: dict = {"__file__": str(conf)}
    exec(compile(conf.read_text(encoding="utf-8"), str(conf), "exec"), settings)
    assert settings["worker_class"] == used
