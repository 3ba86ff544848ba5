"""/metrics' gauges of the run (risk/monitoring/runfacts.py), and the Grafana dashboard that plots them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from risk.api import service
from risk.core import artefacts
from risk.core.files import atomic_write_json
from risk.core.settings import Config
from risk.registry import versions

PROJECT_DIR = Path(__file__).resolve().parents[2]
DASHBOARD = PROJECT_DIR / "monitoring" / "grafana-dashboard.json"
FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


def metrics_text(config: Config, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("API_TOKEN", raising=False)
    response = service.create_app(config.path).test_client().get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def samples(text: str, name: str) -> dict[str, str]:
    """The samples of one metric: {label text: value}."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = match.group(2)
    return found


def diagnostics_with_psi(config: Config, rows: list[dict]) -> None:
    path = config.reports_folder / "v1" / artefacts.DIAGNOSTICS_FILE
    document = json.loads(path.read_text())
    document["data_drift"]["features"] = rows
    atomic_write_json(path, document)


def test_the_run_gauges_come_from_the_runs_files(deployed_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    text = metrics_text(deployed_project, monkeypatch)
    psi = samples(text, "riskapi_feature_psi")
    assert sorted(psi) == sorted(f'{{feature="{name}"}}' for name in FEATURES)
    assert all(float(value) >= 0 for value in psi.values())
    master = json.loads((deployed_project.output_folder / artefacts.MASTER_STATE_FILE).read_text())
    last = json.loads((deployed_project.output_folder / artefacts.LAST_RUN_FILE).read_text())
    assert float(samples(text, "riskapi_rows_ingested")[""]) == master["rows"] > 0
    assert float(samples(text, "riskapi_rows_ingested_last_run")[""]) == last["rows_added"] > 0
    trained = versions.load_deployed_model(deployed_project).metadata["trained_at"]
    hours = (datetime.now(UTC) - datetime.fromisoformat(trained)).total_seconds() / 3600
    assert abs(float(samples(text, "riskapi_hours_since_retrain")[""]) - hours) < 0.1


def test_psi_labels_only_name_the_models_configured_features(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = 'x"} 1\nriskapi_evil 1\n#'
    diagnostics_with_psi(
        deployed_project,
        [
            {"feature": "lastmonth_activity", "psi": 0.31},
            {"feature": "lastyear_activity", "psi": float("nan")},  # written as NaN by a damaged run: left out
            {"feature": hostile, "psi": 0.5},
            {"feature": "corporation", "psi": 0.9},  # an id column, not a feature
            {"feature": "number_of_employees", "psi": True},
            "not a row",
        ],
    )
    text = metrics_text(deployed_project, monkeypatch)
    assert samples(text, "riskapi_feature_psi") == {'{feature="lastmonth_activity"}': "0.31"}
    assert "riskapi_evil" not in text and "corporation" not in text


def test_the_gauges_say_unknown_when_the_files_are_missing_or_damaged(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    (deployed_project.output_folder / artefacts.LAST_RUN_FILE).write_text("{not json")
    (deployed_project.output_folder / artefacts.MASTER_STATE_FILE).unlink()
    (deployed_project.reports_folder / "v1" / artefacts.DIAGNOSTICS_FILE).unlink()
    text = metrics_text(deployed_project, monkeypatch)
    assert samples(text, "riskapi_rows_ingested_last_run") == {"": "NaN"}
    assert samples(text, "riskapi_rows_ingested") == {"": "NaN"}
    assert samples(text, "riskapi_feature_psi") == {}
    assert "# TYPE riskapi_feature_psi gauge" in text


def test_a_newer_training_resets_the_hours_and_a_rewritten_file_is_read_again(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    client = service.create_app(deployed_project.path).test_client()
    metadata_path = deployed_project.model_folder / artefacts.METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    for hours_ago in (30, 2):
        stamp = (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat(timespec="seconds")
        atomic_write_json(metadata_path, {**metadata, "trained_at": stamp})
        text = client.get("/metrics").get_data(as_text=True)
        assert abs(float(samples(text, "riskapi_hours_since_retrain")[""]) - hours_ago) < 0.05


# ----------------------------------------------------------------------------- the dashboard


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard's panels (rows' nested panels too) and variables."""
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels += panel.get("panels", [])
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", []) if "expr" in target]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            expressions.append(query if isinstance(query, str) else query.get("query", ""))
    return expressions


PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "avg", "max", "min", "le",
    "label_values", "topk", "bottomk", "count", "on", "ignoring", "group_left", "clamp_min", "time", "or", "and",
    "unless", "offset", "abs", "vector", "scalar",
}  # fmt: skip


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (words that are neither functions, keywords, labels nor
    durations); a histogram's ``_bucket``/``_sum``/``_count`` series named by its base name."""
    text = re.sub(r'"[^"]*"', "", expression)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\$\{?\w+\}?", "", text)  # dashboard variables
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {word for word in words if word not in PROMQL_WORDS}


def exposed_names(text: str) -> set[str]:
    """Every metric name /metrics declares (its TYPE lines) or gives a sample of."""
    names = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    exposed = set(re.findall(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", text, re.M))
    for name, kind in names:
        exposed.add(name)
        if kind == "histogram":
            exposed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter":
            exposed.add(f"{name}_total" if not name.endswith("_total") else name)
    return exposed


def test_the_dashboard_is_an_importable_grafana_model() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    (source,) = [entry for entry in dashboard["__inputs"] if entry["type"] == "datasource"]
    assert source["pluginId"] == "prometheus"
    datasource = "${" + source["name"] + "}"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in (datasource, "${datasource}"), panel["title"]
        assert panel["gridPos"]["w"] > 0 and panel["gridPos"]["h"] > 0
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_metric_the_dashboard_queries_is_one_metrics_exposes(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_text = metrics_text(deployed_project, monkeypatch)
    monkeypatch.delenv("API_TOKEN", raising=False)
    client = service.create_app(deployed_project.path).test_client()
    client.post("/prediction", json=[{"corporation": "c1", "lastmonth_activity": 3}])  # requests counted
    exposed = exposed_names(client.get("/metrics").get_data(as_text=True)) | exposed_names(client_text)
    queried = set().union(*(metric_names(e) for e in dashboard_queries(json.loads(DASHBOARD.read_text()))))
    assert queried, "the dashboard queries nothing"
    assert queried <= exposed, f"not on /metrics: {sorted(queried - exposed)}"
    wanted = {
        "riskapi_feature_psi",
        "riskapi_hours_since_retrain",
        "riskapi_rows_ingested",
        "riskapi_rows_ingested_last_run",
        "riskapi_requests_total",
        "riskapi_request_duration_seconds_bucket",
        "riskapi_outcome_realised_score",
        "riskapi_outcome_realised_roc_auc",
        "riskapi_calllist_hit_rate",
    }
    assert wanted <= queried, f"no panel for {sorted(wanted - queried)}"


def test_the_name_check_catches_a_metric_that_is_not_exposed() -> None:
    assert metric_names('sum by (endpoint) (rate(riskapi_requests_total{endpoint="/x"}[$__rate_interval]))') == {
        "riskapi_requests_total"
    }
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(riskapi_nope_bucket[5m])))") == {
        "riskapi_nope_bucket"
    }
