"""GET /calllist and /calllist.csv through Flask's test client: the newest list as the run wrote it,
?top= checked, no list, a damaged list, the token; and apicalls.py with and without a list (gunicorn)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import apicalls
import fullprocess
import localserver
from risk.api import service
from risk.core.settings import Config
from risk.data import sample
from risk.registry import calllists, versions
from tests.conftest import UNINFORMATIVE_WARNING, rewrite_config, write_call_list, write_config, write_diagnostics

TOKEN = "call-list-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDS = [f"c{i:03d}" for i in range(250)] + ["007", "NA"]  # ids stay text
RISKS = [((i * 37) % 251) / 251 for i in range(len(IDS))]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path / "project")


def app_client(config: Config, monkeypatch: pytest.MonkeyPatch, token: str = TOKEN):
    monkeypatch.setenv("API_TOKEN", token)
    return service.create_app(config.path).test_client()


def assert_error(response, status: int, *words: str, config: Config | None = None) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == status
    for word in words:
        assert word in body["message"], body["message"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    if config is not None:
        assert str(config.root) not in text and str(config.root.resolve()) not in text
    return body["message"]


# ----------------------------------------------------------------------------- the answer


def test_the_list_answers_its_facts_and_the_first_budget_clients(config: Config, monkeypatch) -> None:
    written = write_call_list(config, IDS, RISKS, budget=40, warnings=[UNINFORMATIVE_WARNING])
    response = app_client(config, monkeypatch).get("/calllist", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "v1"
    body = response.get_json()
    assert body["model_version"] == "v1" and body["scored_at"] == "2026-12-07T09:00:00+00:00"
    assert body["contact_budget"] == 40 and body["top"] == 40 and body["shown"] == 40
    assert body["rows"] == len(IDS)
    assert body["flagged"] == int(written["flagged"].sum())
    assert body["flagged_beyond_budget"] == int(written["flagged"].iloc[40:].sum())
    assert 0 < body["expected_positives_reached"] < 1
    assert body["warnings"] == [UNINFORMATIVE_WARNING]
    assert "logistic regression" in body["method"]
    assert body["id_columns"] == ["corporation"] and body["previous"] is None
    assert body["current_version"] is None  # nothing deployed in this project: the answer says so
    clients = body["clients"]
    assert [c["rank"] for c in clients] == list(range(1, 41))
    assert [c["corporation"] for c in clients] == written["corporation"].tolist()[:40]
    assert [c["risk"] for c in clients] == sorted((c["risk"] for c in clients), reverse=True)
    first = clients[0]
    assert set(first) == {"corporation", "rank", "risk", "band", "flagged", "reasons", "change", "previous_rank"}
    # blanks dropped: rank r has r % 4 reasons
    assert [len(c["reasons"]) for c in clients[:8]] == [1, 2, 3, 0, 1, 2, 3, 0]
    assert clients[2]["reasons"][0].startswith("lastmonth_activity = 3 (low for this book)")
    assert {c["change"] for c in clients} == {"new"} and {c["previous_rank"] for c in clients} == {None}


def test_top_chooses_how_many_and_ids_stay_text(config: Config, monkeypatch) -> None:
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    assert len(client.get("/calllist?top=3", headers=AUTH).get_json()["clients"]) == 3
    everyone = client.get("/calllist?top=10000", headers=AUTH).get_json()
    assert everyone["top"] == 10000 and everyone["shown"] == len(IDS) == len(everyone["clients"])
    assert {"007", "NA"} <= {c["corporation"] for c in everyone["clients"]}


def test_the_change_since_the_previous_list(config: Config, monkeypatch) -> None:
    write_call_list(config, ["a", "b", "c"], [0.9, 0.5, 0.1])
    client = app_client(config, monkeypatch)
    assert [c["change"] for c in client.get("/calllist", headers=AUTH).get_json()["clients"]] == ["new"] * 3
    write_call_list(config, ["a", "b", "c", "d"], [0.2, 0.6, 0.1, 0.95], version="v2", stamp="20261207T100000Z")
    body = client.get("/calllist", headers=AUTH).get_json()  # the new list, without a restart
    assert body["model_version"] == "v2" and body["previous"] == "20261207T090000Z_v1.csv"
    changes = {c["corporation"]: (c["rank"], c["previous_rank"], c["change"]) for c in body["clients"]}
    assert changes == {"d": (1, None, "new"), "b": (2, 2, "same"), "a": (3, 1, "down"), "c": (4, 3, "down")}


def test_the_list_is_read_once_per_change_not_per_request(config: Config, monkeypatch, caplog) -> None:
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    with caplog.at_level(logging.INFO, logger="risk.api.calllist"):
        for _ in range(5):
            assert client.get("/calllist?top=2", headers=AUTH).status_code == 200
            assert client.get("/calllist.csv", headers=AUTH, buffered=True).status_code == 200
        assert len([r for r in caplog.records if "call list of v1 read" in r.getMessage()]) == 1
        write_call_list(config, IDS, RISKS[::-1], version="v2", stamp="20261207T100000Z")
        for _ in range(3):
            assert client.get("/calllist?top=2", headers=AUTH).headers["X-Model-Version"] == "v2"
    reads = [r.getMessage() for r in caplog.records if " read: " in r.getMessage()]
    assert len(reads) == 2 and "v2" in reads[1]


def test_the_csv_is_the_file_the_answer_describes(config: Config, monkeypatch) -> None:
    write_call_list(config, IDS, RISKS)
    response = app_client(config, monkeypatch).get("/calllist.csv", headers=AUTH, buffered=True)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == "attachment; filename=calllist_20261207T090000Z_v1.csv"
    assert response.headers["X-Model-Version"] == "v1"
    assert response.data == (calllists.call_list_folder(config) / "20261207T090000Z_v1.csv").read_bytes()
    assert response.data == calllists.latest_csv_path(config).read_bytes()


def test_the_routes_are_counted_in_metrics(config: Config, monkeypatch) -> None:
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    client.get("/calllist", headers=AUTH)
    client.get("/calllist.csv", headers=AUTH, buffered=True)
    client.get("/calllist?top=0", headers=AUTH)
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'riskapi_requests_total{endpoint="/calllist",method="GET",status="200"} 1.0' in text
    assert 'riskapi_requests_total{endpoint="/calllist.csv",method="GET",status="200"} 1.0' in text
    assert 'riskapi_requests_total{endpoint="/calllist",method="GET",status="400"} 1.0' in text


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "query, words",
    [
        ("top=0", ["from 1 to 10000", "not 0"]),
        ("top=-1", ["whole number", "'-1'"]),
        ("top=abc", ["whole number", "'abc'"]),
        (f"top={10**12}", ["from 1 to 10000", "1000000000000"]),
        ("top=10001", ["from 1 to 10000", "not 10001"]),
        ("top=" + "9" * 5000, ["whole number"]),
        ("top=1.5", ["whole number"]),
        ("top=", ["whole number"]),
        ("top=%205", ["whole number"]),
        ("top=%EF%BC%95", ["whole number"]),  # a full-width 5 is a digit to str.isdigit, not to us
        ("top=1&top=2", ["once"]),
    ],
)
def test_a_bad_top_is_a_400_naming_it(config: Config, monkeypatch, query: str, words: list[str]) -> None:
    write_call_list(config, IDS, RISKS)
    message = assert_error(app_client(config, monkeypatch).get(f"/calllist?{query}", headers=AUTH), 400, "top", *words)
    assert len(message) < 200


def test_both_routes_need_the_token(config: Config, monkeypatch) -> None:
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    for path in ("/calllist", "/calllist.csv", "/calllist?top=5"):
        assert_error(client.get(path), 401, "Bearer")
        assert_error(client.get(path, headers={"Authorization": "Bearer wrong"}), 401)


def test_no_list_is_a_404_saying_how_to_get_one(config: Config, monkeypatch) -> None:
    client = app_client(config, monkeypatch)
    for path in ("/calllist", "/calllist.csv"):
        assert_error(client.get(path, headers=AUTH), 404, "no call list yet", "client_book", "fullprocess.py")
    assert_error(client.get("/calllist?top=abc", headers=AUTH), 404, "no call list yet")  # nothing to page yet
    booked = rewrite_config(config, client_book="book.csv")
    message = assert_error(app_client(booked, monkeypatch).get("/calllist", headers=AUTH), 404, "client_book is set")
    assert "next run" in message


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.0])
def test_a_truncated_list_is_a_503_with_the_reason_and_no_server_path(config: Config, monkeypatch, keep) -> None:
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    truncate(calllists.call_list_folder(config) / "20261207T090000Z_v1.csv", keep)
    for path in ("/calllist", "/calllist.csv"):
        message = assert_error(client.get(path, headers=AUTH, buffered=True), 503, "cannot be read", config=config)
        assert "20261207T090000Z_v1.csv" in message


def test_a_list_damaged_after_it_was_served_is_a_503_then_mended_by_the_next_list(config: Config, monkeypatch) -> None:
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    assert client.get("/calllist", headers=AUTH).status_code == 200
    calllists.latest_json_path(config).write_text("{not json")
    assert_error(client.get("/calllist", headers=AUTH), 503, "latest.json", config=config)
    assert_error(client.get("/calllist", headers=AUTH), 503, "latest.json", config=config)  # remembered, same words
    calllists.latest_json_path(config).unlink()
    write_call_list(config, IDS, RISKS, version="v2", stamp="20261207T100000Z")
    assert client.get("/calllist", headers=AUTH).get_json()["model_version"] == "v2"


def test_a_damaged_list_file_put_back_is_served_again(config: Config, monkeypatch) -> None:
    # The remembered failure was keyed on latest.json and latest.csv, not on the stamped file read: a
    # stamped list mended by hand (restored from a copy) stayed a 503 until the next run's list.
    write_call_list(config, IDS, RISKS)
    client = app_client(config, monkeypatch)
    stamped = calllists.call_list_folder(config) / "20261207T090000Z_v1.csv"
    whole = stamped.read_bytes()
    truncate(stamped, 0.5)
    assert_error(client.get("/calllist", headers=AUTH), 503, "20261207T090000Z_v1.csv", config=config)
    stamped.write_bytes(whole)
    response = client.get("/calllist?top=3", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["rows"] == len(IDS)


def test_a_list_folder_outside_the_project_is_named_by_its_key(tmp_path: Path, monkeypatch) -> None:
    outside = tmp_path / "elsewhere" / "lists"
    config = write_config(tmp_path / "project", call_list_path=str(outside))
    write_call_list(config, IDS, RISKS)
    truncate(outside / "20261207T090000Z_v1.csv", 0.5)
    message = assert_error(app_client(config, monkeypatch).get("/calllist", headers=AUTH), 503, config=config)
    assert "<call_list_path>" in message and str(outside) not in message


def test_a_list_scored_by_another_version_than_the_one_served_says_so(deployed_project: Config, monkeypatch) -> None:
    write_call_list(deployed_project, IDS, RISKS, version="v0")
    body = app_client(deployed_project, monkeypatch).get("/calllist", headers=AUTH).get_json()
    assert body["model_version"] == "v0" and body["current_version"] == "v1"


# ----------------------------------------------------------------------------- apicalls.py


@pytest.mark.slow
def test_apicalls_with_and_without_a_list(deployed_project: Config, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    write_diagnostics(deployed_project, "v1")
    output = tmp_path / "apireturns.txt"
    argv = ["--config", str(deployed_project.path), "--output", str(output)]
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": TOKEN}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        assert apicalls.main([*argv, "--url", url]) == 0  # no client book: a 404 that is not a failure
        printed = capsys.readouterr().out
        assert "/calllist and /calllist.csv answered 404, not a failure: no call list yet: set client_book" in printed
        text = output.read_text()
        assert "## GET /calllist -> 404 (not a failure: there is none yet)" in text

        write_call_list(deployed_project, IDS, RISKS)
        assert apicalls.main([*argv, "--url", url]) == 0
        assert "404" not in capsys.readouterr().out
        text = output.read_text()
        assert "## GET /calllist -> 200" in text and "## GET /calllist.csv -> 200" in text
        assert '"clients_not_shown": 95' in text  # the first 5 of the budget's 100 kept
        assert text.count('"rank":') == 5
        assert "rank,corporation,risk,band,flagged" in text and f"... {len(IDS) + 1 - 6} more lines" in text
        assert len(text.encode()) < 45_000

        shutil.rmtree(calllists.call_list_folder(deployed_project))
        calllists.call_list_folder(deployed_project).mkdir()
        calllists.latest_json_path(deployed_project).write_text("{damaged")
        assert apicalls.main([*argv, "--url", url]) == 1  # a damaged list is a failure: 503
        assert "## GET /calllist -> 503" in output.read_text()


# ----------------------------------------------------------------------------- a list the run wrote


@pytest.mark.slow
def test_the_list_fullprocess_writes_from_the_sample_book_is_answered_whole(
    deployed_project: Config, monkeypatch
) -> None:
    config = rewrite_config(deployed_project, client_book=sample.SAMPLE_BOOK)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    info, frame = calllists.latest_call_list(config)
    client = app_client(config, monkeypatch)
    body = client.get("/calllist", headers=AUTH).get_json()
    assert body["model_version"] == info["version"] == body["current_version"] == "v1"
    assert body["top"] == body["shown"] == config["contact_budget"] == 100
    assert body["rows"] == len(frame) == sample.CLIENTS
    assert body["warnings"] == info["warnings"] and body["method"] == info["method"]
    head = frame.head(100)
    assert [c["corporation"] for c in body["clients"]] == head["corporation"].tolist()
    assert [c["risk"] for c in body["clients"]] == head["risk"].tolist()
    kinds = versions.load_deployed_model(config).metadata["features"]
    features = set(kinds["numeric"]) | set(kinds["categorical"])
    in_file = head[list(calllists.REASON_COLUMNS)].to_numpy().tolist()
    assert [c["reasons"] for c in body["clients"]] == [[r for r in row if r] for row in in_file]
    reasons = [reason for c in body["clients"] for reason in c["reasons"]]
    if info["method"]:  # a list written with reasons: each starts with a feature's name
        assert reasons and all(reason.split(" ", 1)[0] in features for reason in reasons), reasons[:5]
    assert all(c["change"] == "new" and c["previous_rank"] is None for c in body["clients"])
    csv = client.get("/calllist.csv", headers=AUTH, buffered=True)
    assert csv.status_code == 200 and csv.data == calllists.latest_csv_path(config).read_bytes()


@pytest.mark.parametrize("book", ["elsewhere/clients.csv", "elsewhere"])
def test_a_book_outside_the_project_is_named_by_its_key(tmp_path: Path, monkeypatch, book: str) -> None:
    # The book's checks name the lines they set aside by the book's path: a book outside the project
    # put the server's absolute path into every /calllist answer.
    outside = tmp_path / book
    config = write_config(tmp_path / "project", client_book=str(outside))
    write_call_list(config, IDS, RISKS)
    checks = {
        "set_aside": [{"reason": "no id", "rows": 1, "first": [f"{tmp_path / 'elsewhere' / 'clients.csv'} line 3"]}]
    }
    latest = calllists.latest_json_path(config)
    latest.write_text(json.dumps({**json.loads(latest.read_text()), "book_checks": checks}))
    text = app_client(config, monkeypatch).get("/calllist?top=1", headers=AUTH).get_data(as_text=True)
    assert str(tmp_path) not in text
    assert "<client_book>" in text


def test_a_list_folder_that_is_a_file_is_no_list_not_an_error(tmp_path: Path, monkeypatch) -> None:
    config = write_config(tmp_path / "project", call_list_path="lists")
    (config.root / "lists").write_text("not a folder")
    assert_error(app_client(config, monkeypatch).get("/calllist", headers=AUTH), 404, "no call list yet")


def test_paths_in_the_lists_facts_are_shown_relative(config: Config, monkeypatch) -> None:
    warning = f"3 rows of {config.root / 'clientbook' / 'clients.csv'} were set aside"
    write_call_list(config, IDS, RISKS, warnings=[warning])
    response = app_client(config, monkeypatch).get("/calllist", headers=AUTH)
    assert response.get_json()["warnings"] == ["3 rows of clientbook/clients.csv were set aside"]
    assert str(config.root) not in response.get_data(as_text=True)
