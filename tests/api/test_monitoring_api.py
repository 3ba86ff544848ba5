"""GET /monitoring and the outcome gauges of /metrics, through Flask's test client."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from risk.api import service
from risk.core.settings import Config
from risk.monitoring import outcomes
from tests.conftest import write_call_list, write_config

TOKEN = "monitoring-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDS = [f"k{n:02d}" for n in range(40)]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path / "project")


def client(config: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    return service.create_app(config.path).test_client()


def gauge(text: str, name: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return line.split()[1]


def test_monitoring_answers_the_figures_and_the_gauges_follow_them(config: Config, monkeypatch) -> None:
    api = client(config, monkeypatch)
    assert api.get("/monitoring").status_code == 401, "the token is needed"
    empty = api.get("/monitoring", headers=AUTH).get_json()
    assert empty["backtests"] == [] and empty["last_list"] is None and len(empty["notes"]) == 2
    scrape = api.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert gauge(scrape, "riskapi_calllist_hit_rate") == "NaN", "unknown is not 0"

    write_call_list(config, IDS, [n / 40 for n in range(40)], stamp="20261207T090000Z", budget=10)
    rows = pd.DataFrame({"corporation": IDS, "exited": [int(n >= 30) for n in range(40)]})
    outcomes.record_backtests(config, [(rows, {"name": "b.csv", "ingested_at": "2026-12-07T10:00:00+00:00"})])
    outcomes.record_realised(
        config,
        {
            "version": "v1",
            "metric": "f1",
            "score": 0.61,
            "roc_auc": 0.83,
            "rows": 40,
            "positives": 10,
            "at": "2026-12-07T10:00:01+00:00",
        },
    )

    body = api.get("/monitoring", headers=AUTH).get_json()
    assert body["metric"] == "f1" and body["notes"] == []
    assert body["last_realised"]["roc_auc"] == 0.83 and body["last_realised"]["version"] == "v1"
    assert body["last_list"]["precision_at_budget"] == 1.0 and body["last_list"]["rows_matched"] == 40
    assert body["backtests"][0]["batch"]["file"] == "b.csv"
    scrape = api.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert float(gauge(scrape, "riskapi_outcome_realised_score")) == 0.61
    assert float(gauge(scrape, "riskapi_outcome_realised_roc_auc")) == 0.83
    assert float(gauge(scrape, "riskapi_calllist_hit_rate")) == 1.0


def test_outcome_records_that_cannot_be_read_answer_503_without_the_servers_paths(config: Config, monkeypatch) -> None:
    outcomes.backtest_path(config).mkdir(parents=True)  # a folder where the file should be
    api = client(config, monkeypatch)
    response = api.get("/monitoring", headers=AUTH)
    assert response.status_code == 503, response.get_data(as_text=True)
    message = response.get_json()["message"]
    assert "outcome records cannot be read" in message and str(config.root) not in message
    assert api.get("/metrics", headers=AUTH).status_code == 200, "a scrape still answers"


@pytest.mark.parametrize(
    ("realised_line", "backtest_line"),
    [
        ('{"version": "v1", "score": [1], "roc_auc": {"a": 1}, "at": "x"}', '{"lists": 5}'),
        ('{"version": "v1", "score": "high", "at": 7}', '{"lists": ["not a list entry", 3]}'),
        ("[1, 2]", '{"lists": [{"precision_at_budget": "1.0"}]}'),
    ],
)
def test_outcome_records_of_the_wrong_shape_are_no_500_and_their_gauges_are_unknown(
    config: Config, monkeypatch, realised_line: str, backtest_line: str
) -> None:
    """A line that is JSON but not the record (edited by hand, written by something else) leaves the
    gauges NaN (unknown) and /monitoring answering, never a 500."""
    realised = outcomes.realised_path(config, "v1")
    realised.parent.mkdir(parents=True)
    realised.write_text(realised_line + "\n")
    outcomes.backtest_path(config).write_text(backtest_line + "\n")
    api = client(config, monkeypatch)
    scrape = api.get("/metrics", headers=AUTH)
    assert scrape.status_code == 200, scrape.get_data(as_text=True)
    text = scrape.get_data(as_text=True)
    for name in ("riskapi_outcome_realised_score", "riskapi_outcome_realised_roc_auc", "riskapi_calllist_hit_rate"):
        assert gauge(text, name) == "NaN", name
    response = api.get("/monitoring", headers=AUTH)
    assert response.status_code in (200, 503), response.get_data(as_text=True)
