"""/prediction with ``log_predictions``: what is logged (ids, risk, flagged, version), by every way in,
never without the ids, never when off, never failing the request; whole lines from a real gunicorn."""

from __future__ import annotations

import io
import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
import requests

import localserver
from risk.api import service
from risk.core.settings import Config, load_config
from risk.monitoring import predlog
from tests.conftest import rewrite_config, write

ROW = {"corporation": "c1", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}


@pytest.fixture
def logging_project(deployed_project: Config) -> Config:
    return rewrite_config(deployed_project, log_predictions=True)


def client_of(config: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    return service.create_app(config.path).test_client()


def logged(config: Config) -> list[dict]:
    return [json.loads(line) for _, path in predlog.day_files(config) for line in path.read_bytes().splitlines()]


def test_answers_with_ids_are_logged_as_answered(logging_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(logging_project, monkeypatch)
    rows = [ROW, {**ROW, "corporation": "c2", "lastmonth_activity": 900}]
    answer = client.post("/prediction", json={"records": rows}).get_json()
    lines = logged(logging_project)
    assert [line["ids"] for line in lines] == [{"corporation": "c1"}, {"corporation": "c2"}]
    assert [line["risk"] for line in lines] == [row["risk"] for row in answer["predictions"]]
    assert [line["flagged"] for line in lines] == [row["prediction"] == 1 for row in answer["predictions"]]
    assert {line["version"] for line in lines} == {"v1"}
    assert all(line["time"].endswith("Z") and len(line["time"]) == 20 for line in lines)
    assert "lastmonth_activity" not in json.dumps(lines)  # no feature values


def test_every_way_into_prediction_logs_the_same_rows(logging_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(logging_project, monkeypatch)
    frame = pd.read_csv(logging_project.test_data_folder / "testdata.csv", dtype={"corporation": str}).head(5)
    csv_bytes = frame.to_csv(index=False).encode()
    upload = {"file": (io.BytesIO(csv_bytes), "clients.csv")}
    answers = [
        client.post("/prediction", json=json.loads(frame.to_json(orient="records"))),  # the gate's fast path
        client.post("/prediction", data=frame.to_json(orient="records"), content_type="application/problem+json"),
        client.post("/prediction", data=csv_bytes, content_type="text/csv"),
        client.post("/prediction", data=upload, content_type="multipart/form-data"),
    ]
    assert [a.status_code for a in answers] == [200] * 4
    lines = logged(logging_project)
    assert len(lines) == 4 * 5
    expected = [(c, r["risk"]) for c, r in zip(frame["corporation"], answers[0].get_json()["predictions"])]
    for start in range(0, 20, 5):
        assert [(line["ids"]["corporation"], line["risk"]) for line in lines[start : start + 5]] == expected


def test_rows_without_every_id_are_not_logged(logging_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(logging_project, monkeypatch)
    without = {k: v for k, v in ROW.items() if k != "corporation"}
    assert client.post("/prediction", json=[without]).status_code == 200
    assert (
        client.post("/prediction", json=[{**ROW, "corporation": None}, {**ROW, "corporation": " "}]).status_code == 200
    )
    assert not (logging_project.log_folder / "predictions").exists()
    assert client.post("/prediction", json=[{**ROW, "corporation": None}, ROW]).status_code == 200
    assert [line["ids"] for line in logged(logging_project)] == [{"corporation": "c1"}]


def test_logging_off_writes_nothing(deployed_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(deployed_project, monkeypatch)
    assert client.post("/prediction", json=[ROW]).status_code == 200
    assert client.post("/prediction", json={"dataset": "testdata.csv"}).status_code == 200
    assert not (deployed_project.log_folder / "predictions").exists()


def test_a_log_that_cannot_be_written_never_fails_the_answer(
    logging_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(logging_project.log_folder / "predictions", "a file where the folder should be")
    client = client_of(logging_project, monkeypatch)
    for _ in range(2):
        assert client.post("/prediction", json=[ROW]).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert "riskapi_prediction_log_failures_total 2.0" in text


@pytest.mark.slow
def test_concurrent_gunicorn_workers_append_only_whole_lines(
    deployed_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    config = rewrite_config(load_config(folder / "config.json"), log_predictions=True)
    monkeypatch.delenv("API_TOKEN", raising=False)
    sizes = [1, 3, 250, 1, 40, 700]  # 700 rows: about 70 KB in one write
    threads, requests_each = 6, 12
    failures: list[str] = []

    def post_many(url: str, thread: int) -> None:
        with requests.Session() as session:
            for index in range(requests_each):
                size = sizes[(thread + index) % len(sizes)]
                rows = [{**ROW, "corporation": f"t{thread}r{index}n{n}"} for n in range(size)]
                response = session.post(url + "/prediction", json=rows, timeout=60)
                if response.status_code != 200:
                    failures.append(response.text)

    with localserver.gunicorn_server(config.path, workers=2, log_path=folder / "gunicorn.log") as url:
        workers = [threading.Thread(target=post_many, args=(url, t)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
    assert failures == []
    data = b"".join(path.read_bytes() for _, path in predlog.day_files(config))
    assert data.endswith(b"\n")
    lines = [json.loads(line) for line in data.splitlines()]  # every line parses: none cut, none interleaved
    expected = sum(sizes[(t + i) % len(sizes)] for t in range(threads) for i in range(requests_each))
    assert len(lines) == len({line["ids"]["corporation"] for line in lines}) == expected
