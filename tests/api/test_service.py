"""The API (risk.api.service) through Flask's test client: every endpoint, every refusal, the token, hot reload."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import FixedThresholdClassifier

from risk.api import service
from risk.core.artefacts import MASTER_FILE, METADATA_FILE, MODEL_FILE, SKOPS_MODEL_FILE
from risk.core.files import sha256_file
from risk.core.settings import Config
from risk.model import pipelines, scoring
from risk.registry import deploy, versions
from tests.conftest import deploy_categorical_project, rewrite_config, write_config, write_diagnostics

DIAGNOSTICS_KEYS = {
    "version",
    "generated_at",
    "summary_statistics",
    "missing_data",
    "execution_time",
    "outdated_packages",
    "data_drift",
    "warnings",
}
SECRET = "Zebra-Quokka-7731"  # a caller's value that must never come back in an error
GOOD = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}


@pytest.fixture
def client(deployed_project: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    return service.create_app(deployed_project.path).test_client()


@pytest.fixture(scope="module")
def categorical_project(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return deploy_categorical_project(tmp_path_factory.mktemp("categorical") / "project")


def expected_risk(config: Config, frame: pd.DataFrame) -> np.ndarray:
    deployed = versions.load_deployed_model(config)
    return deployed.model.predict_proba(scoring.feature_frame(frame, deployed.metadata["features"]))[:, 1]


def sample_frame(config: Config) -> pd.DataFrame:
    return pd.read_csv(config.test_data_folder / "testdata.csv", dtype={"corporation": str})


def records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == status and body["message"]
    for word in words:
        assert word in body["message"]
    text = response.get_data(as_text=True)
    assert SECRET not in text and "Traceback" not in text
    return body["message"]


# ----------------------------------------------------------------------------- endpoints


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["ready"] and body["up_to_date"]
    assert body["model_version"] == body["deployed_version"] == "v1"
    assert body["serving_path"] == "numpy:logistic_regression"


def test_scoring_is_the_deployed_versions_scores(client, deployed_project: Config) -> None:
    body = client.get("/scoring").get_json()
    deployed = versions.load_deployed_model(deployed_project)
    assert body["model_version"] == "v1"
    assert body["scores"] == deployed.scores
    assert body["scores"]["f1"] == pytest.approx(float((deployed.path / "latestscore.txt").read_text()))


def test_model_describes_version_parameters_metrics_and_lineage(client, deployed_project: Config) -> None:
    response = client.get("/model")
    body = response.get_json()
    deployed = versions.load_deployed_model(deployed_project)
    assert response.headers["X-Model-Version"] == body["model_version"] == "v1"
    assert body["model"] == "logistic_regression"
    assert body["threshold"] == deployed.model.threshold
    assert body["parameters"] == deployed.metadata["parameters"]
    assert body["scores"] == deployed.scores
    assert body["features"]["numeric"] == deployed.metadata["features"]["numeric"]
    assert body["lineage"]["previous_version"] is None
    assert body["lineage"]["training_data_sha256"] == deployed.metadata["training_data_sha256"]
    assert body["lineage"]["files"] == deployed.manifest["files"]


def test_diagnostics_answer_503_until_the_file_exists_then_serve_it(client, deployed_project: Config) -> None:
    shutil.rmtree(deployed_project.reports_folder, ignore_errors=True)  # fullprocess may have run diagnostics
    for path in ("/summarystats", "/diagnostics"):
        assert_error(client.get(path), 503, "python diagnostics.py")
    write_diagnostics(deployed_project, "v1")
    summary = client.get("/summarystats").get_json()
    assert summary["model_version"] == "v1"
    assert summary["summary_statistics"]["lastyear_activity"]["mean"] == 120.5
    document = client.get("/diagnostics").get_json()
    assert DIAGNOSTICS_KEYS <= set(document)
    assert document["model_version"] == "v1"


def test_diagnostics_are_cached_but_a_rewritten_file_is_seen(client, deployed_project: Config) -> None:
    path = write_diagnostics(deployed_project, "v1")
    assert client.get("/diagnostics").get_json()["warnings"] == []
    document = json.loads(path.read_text())
    document["warnings"] = ["drift in number_of_employees"]
    path.write_text(json.dumps(document, indent=4))  # another size, so another file state
    assert client.get("/diagnostics").get_json()["warnings"] == ["drift in number_of_employees"]
    path.write_text("{not json")
    assert_error(client.get("/diagnostics"), 503, "unreadable")


def test_the_page_is_served_with_its_assets(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b"Risk-O-Meter" in page.data
    for asset in ("/static/riskometer.js", "/static/riskometer.css"):
        response = client.get(asset)
        assert response.status_code == 200
        response.close()  # a static file is streamed from an open file until the response is closed


def test_metrics_count_requests_predictions_and_the_version(client, deployed_project: Config) -> None:
    client.post("/prediction", json={"dataset": "testdata.csv"})
    client.post("/prediction", json={"records": []})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'riskapi_requests_total{endpoint="/prediction",method="POST",status="200"} 1.0' in text
    assert 'riskapi_requests_total{endpoint="/prediction",method="POST",status="400"} 1.0' in text
    assert (
        'riskapi_request_duration_seconds_bucket{endpoint="/prediction",le="+Inf",method="POST",status="200"} 1.0'
        in text
    )
    assert 'riskapi_model_info{version="v1"} 1.0' in text
    threshold = versions.load_deployed_model(deployed_project).model.threshold
    positives = int((expected_risk(deployed_project, sample_frame(deployed_project)) >= threshold).sum())
    assert f'riskapi_predictions_total{{model_version="v1",prediction="1"}} {float(positives)}' in text
    assert f'riskapi_predictions_total{{model_version="v1",prediction="0"}} {float(1000 - positives)}' in text


# ----------------------------------------------------------------------------- predictions


def test_dataset_by_name_gives_sklearns_answers_for_every_row(client, deployed_project: Config) -> None:
    response = client.post("/prediction", json={"dataset": "testdata.csv"})
    body = response.get_json()
    frame = sample_frame(deployed_project)
    risk = expected_risk(deployed_project, frame)
    deployed = versions.load_deployed_model(deployed_project)
    assert body["model_version"] == "v1" and body["source"] == "dataset" and body["rows"] == len(frame) == 1000
    got = np.array([row["risk"] for row in body["predictions"]])
    np.testing.assert_allclose(got, risk, rtol=0, atol=1e-9)
    predicted = deployed.model.predict(scoring.feature_frame(frame, deployed.metadata["features"]))
    assert [row["prediction"] for row in body["predictions"]] == predicted.tolist()
    assert [row["corporation"] for row in body["predictions"]] == frame["corporation"].tolist()
    assert [row["row"] for row in body["predictions"]] == list(range(1000))
    assert body["missing_values"] == {
        name: int(frame[name].isna().sum()) for name in ("lastmonth_activity", "number_of_employees")
    }
    assert body["ignored_columns"] == ["exited"]  # the target, named
    assert sum(body["band_counts"].values()) == 1000


def test_ingested_data_can_be_named_too(client, deployed_project: Config) -> None:
    body = client.post("/prediction", json={"dataset": "finaldata.csv"}).get_json()
    assert body["rows"] == len(pd.read_csv(deployed_project.output_folder / "finaldata.csv")) > 1000


def test_records_bare_list_csv_and_upload_agree(client, deployed_project: Config) -> None:
    frame = sample_frame(deployed_project).head(25)
    csv_bytes = frame.to_csv(index=False).encode()
    answers = [
        client.post("/prediction", json={"records": records(frame)}),
        client.post("/prediction", json=records(frame)),
        client.post("/prediction", data=csv_bytes, content_type="text/csv"),
        client.post(
            "/prediction", data={"file": (io.BytesIO(csv_bytes), "clients.csv")}, content_type="multipart/form-data"
        ),
    ]
    bodies = [a.get_json() for a in answers]
    assert [b["source"] for b in bodies] == ["records", "records", "csv", "upload"]
    for body in bodies[1:]:
        assert body["predictions"] == bodies[0]["predictions"]
    np.testing.assert_allclose(
        [r["risk"] for r in bodies[0]["predictions"]], expected_risk(deployed_project, frame), atol=1e-9, rtol=0
    )


def test_json_predictions_skip_flask_yet_answer_as_its_view_does(client) -> None:
    """application/json goes by the gate's fast answer; a +json type by Flask's view: the same answers."""
    from flask import request_started

    row = {"corporation": "c1", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}
    bodies = [
        json.dumps({"records": [row]}),
        json.dumps([row, {**row, "corporation": "c2", "lastmonth_activity": None}]),
        json.dumps([{**row, "lastyear_activity": "many"}]),  # 400 naming the field
        "[{",  # not JSON
        json.dumps({"what": 1}),
        json.dumps({"records": [row, {**row, "number_of_employees": 400}], "explain": True}),
        json.dumps({"records": [row], "explain": "yes"}),  # 400 naming the flag
        json.dumps({"explain": True}),  # no rows
    ]
    started: list[object] = []
    statuses = []

    def count(sender: object, **extra: object) -> None:
        started.append(sender)

    with request_started.connected_to(count, client.application):
        for body in bodies:
            started.clear()
            fast = client.post("/prediction", data=body, content_type="application/json; charset=utf-8")
            assert started == [], "the fast answer should not start a Flask request"
            flask_answer = client.post("/prediction", data=body, content_type="application/problem+json")
            assert len(started) == 1
            assert fast.status_code == flask_answer.status_code, body
            assert fast.get_json() == flask_answer.get_json(), body
            assert fast.headers.get("X-Model-Version") == flask_answer.headers.get("X-Model-Version")
            assert fast.content_type == flask_answer.content_type == "application/json"
            statuses.append(fast.status_code)
    assert statuses == [200, 200, 400, 400, 400, 200, 400, 400]


def test_bands_follow_the_configured_thresholds(deployed_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    config = rewrite_config(deployed_project, risk_band_thresholds={"amber": 0.2, "red": 0.5})
    body = (
        service.create_app(config.path).test_client().post("/prediction", json={"dataset": "testdata.csv"}).get_json()
    )
    for row in body["predictions"]:
        assert row["band"] == ("red" if row["risk"] >= 0.5 else "amber" if row["risk"] >= 0.2 else "green")
    assert set(body["band_counts"]) == {"green", "amber", "red"} and all(body["band_counts"].values())


def test_missing_values_are_allowed_and_imputed(client) -> None:
    body = client.post(
        "/prediction", json=[{"lastmonth_activity": None, "lastyear_activity": None, "number_of_employees": None}]
    ).get_json()
    assert body["rows"] == 1 and 0 < body["predictions"][0]["risk"] < 1
    assert body["missing_values"] == {"lastmonth_activity": 1, "lastyear_activity": 1, "number_of_employees": 1}
    assert "corporation" not in body["predictions"][0]  # id columns only when given


def test_extra_fields_are_named_but_their_values_not_echoed(client) -> None:
    response = client.post("/prediction", json=[{**GOOD, "unused_field": 1, "other": SECRET}])
    assert response.get_json()["ignored_columns"] == ["other", "unused_field"]
    assert "ignored_columns_not_named" not in response.get_json()
    assert SECRET not in response.get_data(as_text=True)


def test_many_extra_fields_are_named_up_to_a_limit_and_the_rest_counted(client) -> None:
    extra = {f"extra_{index:03d}": 1 for index in range(25)}
    body = client.post("/prediction", json=[{**GOOD, **extra}]).get_json()
    assert body["ignored_columns"] == [f"extra_{index:03d}" for index in range(20)]
    assert body["ignored_columns_not_named"] == 5


@pytest.mark.parametrize("threshold, red", [(0.32, 0.66), (0.34, 0.67), (0.3, 0.65), (0.31, 0.655)])
def test_band_edges_are_rounded_for_people(tmp_path: Path, threshold: float, red: float) -> None:
    bands = service.band_thresholds(write_config(tmp_path / "project"), threshold)
    assert (bands["amber"], bands["red"]) == (threshold, red)
    assert repr(bands["red"]) == repr(red), "0.66, not 0.6599999999999999"


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "payload, words",
    [
        (
            {"records": [{k: v for k, v in GOOD.items() if k != "lastyear_activity"}]},
            ["missing field", "lastyear_activity"],
        ),
        (
            {"records": [{**GOOD, "lastmonth_activity": SECRET}]},
            ["records[0].lastmonth_activity", "a number", "a string"],
        ),
        ({"records": [{**GOOD, "number_of_employees": True}]}, ["records[0].number_of_employees", "a boolean"]),
        ({"records": [GOOD, {**GOOD, "lastyear_activity": [1]}]}, ["records[1].lastyear_activity", "an array"]),
        ({"records": [GOOD, {**GOOD, "corporation": {"x": SECRET}}]}, ["records[1].corporation", "id column"]),
        ({"records": [{**GOOD, "lastmonth_activity": 10**400}]}, ["records[0].lastmonth_activity", "too large"]),
        ({"records": []}, ["empty"]),
        ([], ["empty"]),
        ({"records": [SECRET]}, ["records[0] must be an object"]),
        ({"records": SECRET}, ["records must be an array"]),
        ({"records": [GOOD], "dataset": "testdata.csv"}, ["send"]),
        ({"rows": [GOOD]}, ["send"]),
        (SECRET, ["send"]),
    ],
)
def test_bad_json_rows_get_400_naming_the_field(client, payload, words) -> None:
    assert_error(client.post("/prediction", json=payload), 400, *words)


@pytest.mark.parametrize(
    "body, words",
    [
        ("lastmonth_activity,lastyear_activity\n1,2\n", ["missing column", "number_of_employees"]),
        (
            f"lastmonth_activity,lastyear_activity,number_of_employees\n1,2,{SECRET}\n",
            ["number_of_employees", "numeric", "data row 1"],
        ),
        ("lastmonth_activity,lastyear_activity,number_of_employees\n1,2,inf\n", ["number_of_employees", "finite"]),
        (
            "lastmonth_activity,lastyear_activity,number_of_employees\nTrue,2,3\nFalse,4,5\n",
            ["lastmonth_activity", "true/false"],
        ),
        ("lastmonth_activity,lastyear_activity,number_of_employees\n", ["empty"]),
        ("", ["empty"]),
        (
            "lastmonth_activity,lastyear_activity,number_of_employees\n1,2,3,4,5\n",
            ["not a readable CSV", "row 2 has 5 fields"],
        ),
        ("lastmonth_activity,lastyear_activity,number_of_employees\n1,2,3,\n", ["row 2 has 4 fields"]),
        ("lastmonth_activity,lastyear_activity,number_of_employees\n1,2,3\n1,2\n", ["row 3 has 2 fields"]),
        ("lastmonth_activity\n,,", ["row 2 has 3 fields"]),  # empty fields are fields: found by the fuzz test
        ('lastmonth_activity,lastyear_activity,number_of_employees\n1,2,"3\n', ["not a readable CSV"]),
        (
            "lastyear_activity,lastyear_activity,number_of_employees,lastmonth_activity\n1,2,3,4\n",
            ["repeats", "lastyear_activity"],
        ),
    ],
)
def test_bad_csv_gets_400_naming_the_column(client, body, words) -> None:
    assert_error(client.post("/prediction", data=body.encode(), content_type="text/csv"), 400, *words)


def test_non_utf8_csv_and_broken_json_are_refused(client) -> None:
    assert_error(
        client.post("/prediction", data="a,b\n\xff\xfe,1\n".encode("latin-1"), content_type="text/csv"), 400, "UTF-8"
    )
    assert_error(
        client.post("/prediction", data=b'{"records": [', content_type="application/json"), 400, "not valid JSON"
    )
    assert_error(
        client.post("/prediction", data=b"[" * 100_000, content_type="application/json"), 400, "not valid JSON"
    )


def test_upload_without_a_file_and_unknown_content_types(client) -> None:
    assert_error(client.post("/prediction", data={"note": "x"}, content_type="multipart/form-data"), 400, "file field")
    assert_error(
        client.post("/prediction", data=b"x=1", content_type="application/x-www-form-urlencoded"), 415, "Content-Type"
    )


def test_too_many_rows_and_oversized_bodies_get_413(deployed_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    config = rewrite_config(deployed_project, api_max_rows=10, api_max_body_bytes=4000)
    client = service.create_app(config.path).test_client()
    assert_error(client.post("/prediction", json=[GOOD] * 11), 413, "11 rows", "limit of 10", "api_max_rows")
    assert_error(client.post("/prediction", json={"dataset": "testdata.csv"}), 413, "limit of 10")
    assert client.post("/prediction", json=[GOOD] * 10).status_code == 200
    big = {"records": [{**GOOD, "note": "x" * 5000}]}
    assert_error(client.post("/prediction", json=big), 413, "4000 bytes", "api_max_body_bytes")
    upload = {"file": (io.BytesIO(b"a" * 5000), "big.csv")}
    assert_error(client.post("/prediction", data=upload, content_type="multipart/form-data"), 413, "api_max_body_bytes")


@pytest.mark.parametrize(
    "name",
    [
        "../config.json",
        "../../etc/passwd",
        "/etc/passwd",
        "testdata/../testdata.csv",
        "..",
        "config.json",
        "..\\config.json",
        "a\x00.csv",
        ".hidden.csv",
        "",
        7,
        None,
        ["testdata.csv"],
    ],
)
def test_dataset_paths_that_leave_the_data_folders_are_refused(client, name) -> None:
    assert_error(client.post("/prediction", json={"dataset": name}), 400, "dataset")


def test_a_symlink_out_of_the_data_folder_is_refused(client, deployed_project: Config, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    shutil.copy(deployed_project.test_data_folder / "testdata.csv", outside)
    os.symlink(outside, deployed_project.test_data_folder / "escape.csv")
    assert_error(client.post("/prediction", json={"dataset": "escape.csv"}), 400, "no such CSV", "testdata.csv")


def test_an_unknown_dataset_lists_what_there_is_without_echoing(client) -> None:
    message = assert_error(client.post("/prediction", json={"dataset": f"{SECRET}.csv"}), 400, "no such CSV file")
    assert "testdata.csv" in message and "finaldata.csv" in message


def test_unknown_routes_and_methods_answer_json(client) -> None:
    assert_error(client.get("/nowhere"), 404)
    response = client.get("/prediction")
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_an_unexpected_error_is_a_json_500_without_details(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    app = service.create_app(deployed_project.path)

    def broken() -> None:
        raise RuntimeError(f"internal detail {SECRET}")

    app.add_url_rule("/broken", view_func=broken)
    response = app.test_client().get("/broken")
    message = assert_error(response, 500)
    assert "internal detail" not in message


def test_no_deployment_means_503_not_500(project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    client = service.create_app(project.path).test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "nothing is deployed yet" in ready.get_json()["reason"]
    assert_error(client.post("/prediction", json=[GOOD]), 503, "fullprocess")
    assert_error(client.get("/scoring"), 503)


# ----------------------------------------------------------------------------- categories


def test_unseen_categories_are_accepted_and_counted_not_echoed(
    categorical_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    client = service.create_app(categorical_project.path).test_client()
    rows = [
        {**GOOD, "region": "region00"},
        {**GOOD, "region": SECRET},
        {**GOOD, "region": f"{SECRET}-2"},
        {**GOOD, "region": "region59"},  # rare in training: scored through the encoder's infrequent column
        {**GOOD, "region": None},
    ]
    response = client.post("/prediction", json=rows)
    body = response.get_json()
    assert response.status_code == 200
    assert body["unseen_categories"] == {"region": 2}
    assert body["missing_values"] == {"region": 1}
    assert SECRET not in response.get_data(as_text=True)
    frame = pd.DataFrame(rows)
    np.testing.assert_allclose(
        [r["risk"] for r in body["predictions"]], expected_risk(categorical_project, frame), atol=1e-9, rtol=0
    )
    ready = client.get("/readyz").get_json()
    assert ready["serving_path"].startswith("numpy:")


def test_a_number_for_a_category_is_a_wrong_type(categorical_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    client = service.create_app(categorical_project.path).test_client()
    assert_error(client.post("/prediction", json=[{**GOOD, "region": 7}]), 400, "records[0].region", "a string")
    assert_error(client.post("/prediction", json=[GOOD]), 400, "missing field", "region")


# ----------------------------------------------------------------------------- the token


def test_a_bearer_token_guards_everything_but_healthz(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "open-sesame")
    client = service.create_app(deployed_project.path).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200  # the page's shell; it asks for the token itself
    guarded = [
        ("get", p) for p in ("/readyz", "/model", "/scoring", "/summarystats", "/diagnostics", "/metrics", "/nowhere")
    ]
    refused = ["", "Bearer wrong", "Basic open-sesame", "Bearer open-sesame-and-more", "Bearer"]
    for method, path in guarded + [("post", "/prediction")]:
        for authorization in refused:
            headers = {"Authorization": authorization} if authorization else {}
            response = getattr(client, method)(path, headers=headers)
            assert_error(response, 401, "Bearer")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    good = {"Authorization": "Bearer open-sesame"}
    assert client.get("/model", headers=good).status_code == 200
    assert client.post("/prediction", json=[GOOD], headers=good).status_code == 200
    assert client.get("/metrics", headers=good).status_code == 200


def test_a_data_file_with_a_trailing_comma_on_every_data_row_is_read_as_written(
    client, deployed_project: Config
) -> None:
    """Data files are read by tables.read_typed_csv (index_col=False): a trailing comma must not make the
    first column the index and shift every other column one to the left."""
    source = deployed_project.test_data_folder / "testdata.csv"
    lines = source.read_text().splitlines()
    rows = "".join(line + ",\n" for line in lines[1:])  # the header without one: one field more on every row
    (deployed_project.test_data_folder / "trailing.csv").write_text(lines[0] + "\n" + rows)
    plain = client.post("/prediction", json={"dataset": "testdata.csv"}).get_json()["predictions"]
    trailing = client.post("/prediction", json={"dataset": "trailing.csv"})
    assert trailing.status_code == 200, trailing.get_data(as_text=True)
    assert trailing.get_json()["predictions"] == plain


def test_every_way_into_prediction_passes_the_one_token_check_and_is_counted_once(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON and CSV bodies, uploads and ?data_loc= are all answered by the one Flask view, behind the
    request gate: its one token check refuses them all before the body is read, and counts each once."""
    monkeypatch.setenv("API_TOKEN", "open-sesame")
    client = service.create_app(deployed_project.path).test_client()
    csv_bytes = (deployed_project.test_data_folder / "testdata.csv").read_bytes()
    requests = {
        "json": lambda headers: client.post("/prediction", json=[GOOD], headers=headers),
        "csv": lambda headers: client.post("/prediction", data=csv_bytes, content_type="text/csv", headers=headers),
        "upload": lambda headers: client.post(
            "/prediction", data={"file": (io.BytesIO(csv_bytes), "clients.csv")}, headers=headers
        ),
        "data_loc": lambda headers: client.post("/prediction?data_loc=testdata/testdata.csv", headers=headers),
    }
    for name, send in requests.items():
        response = send({})
        assert_error(response, 401, "Bearer")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert send({"Authorization": "Bearer open-sesame"}).status_code == 200, name
    text = client.get("/metrics", headers={"Authorization": "Bearer open-sesame"}).get_data(as_text=True)
    assert 'riskapi_requests_total{endpoint="/prediction",method="POST",status="401"} 4.0' in text
    assert 'riskapi_requests_total{endpoint="/prediction",method="POST",status="200"} 4.0' in text


def test_a_version_that_cannot_be_compiled_is_served_by_scikit_learn(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose compiling raises (here an attribute Treelite reads and predict_proba does not, as after a
    scikit-learn upgrade that renames one) is served by its own predict_proba: never a load failure and a 503."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    metadata_path = deployed_project.model_folder / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    frame = pd.read_csv(deployed_project.output_folder / MASTER_FILE, dtype={"corporation": str})
    pipeline = pipelines.build_pipeline("hist_gradient_boosting", metadata["features"], seed=7).set_params(
        classifier__max_iter=20
    )
    model = FixedThresholdClassifier(pipeline, threshold=0.5, response_method="predict_proba")
    model.fit(scoring.feature_frame(frame, metadata["features"]), frame["exited"].to_numpy())
    del model.estimator_.named_steps["classifier"].n_features_in_
    # Saved as a pickle, as versions were before skops: skops' tree check would refuse a tree whose
    # feature count is gone, so the version that reaches the compiler is an old pickled one.
    (deployed_project.model_folder / SKOPS_MODEL_FILE).unlink()
    model_path = deployed_project.model_folder / MODEL_FILE
    model_path.write_bytes(pickle.dumps(model))
    metadata.update(model="hist_gradient_boosting", model_sha256=sha256_file(model_path))
    metadata_path.write_text(json.dumps(metadata))
    assert deploy.deploy_model(deployed_project, reason="an uncompilable model") == "v2"

    client = service.create_app(deployed_project.path).test_client()  # a fresh worker: no older model to keep serving
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["model_version"] == "v2"
    assert ready.get_json()["serving_path"] == "scikit-learn"
    test = sample_frame(deployed_project)
    body = client.post("/prediction", json=records(test)).get_json()
    np.testing.assert_allclose(
        [r["risk"] for r in body["predictions"]], expected_risk(deployed_project, test), atol=1e-12, rtol=0
    )


# ----------------------------------------------------------------------------- hot reload


def test_a_new_deployment_is_served_on_the_next_request(client, deployed_project: Config) -> None:
    assert client.post("/prediction", json=[GOOD]).get_json()["model_version"] == "v1"
    assert deploy.deploy_model(deployed_project, reason="test redeploy") == "v2"
    response = client.post("/prediction", json=[GOOD])
    assert response.get_json()["model_version"] == "v2" == response.headers["X-Model-Version"]
    assert client.get("/scoring").get_json()["model_version"] == "v2"
    assert client.get("/model").get_json()["lineage"]["previous_version"] == "v1"
    deploy.rollback(deployed_project)
    assert client.post("/prediction", json=[GOOD]).get_json()["model_version"] == "v1"


def test_a_version_that_fails_verification_is_not_served(client, deployed_project: Config) -> None:
    assert deploy.deploy_model(deployed_project, reason="to be corrupted") == "v2"
    with open(versions.versions_folder(deployed_project) / "v2" / "trainedmodel.skops", "ab") as handle:
        handle.write(b"tampered")
    response = client.post("/prediction", json=[GOOD])
    assert response.status_code == 200 and response.get_json()["model_version"] == "v1"
    ready = client.get("/readyz")
    body = ready.get_json()
    assert ready.status_code == 200 and body["ready"]
    assert body["model_version"] == "v1" and body["deployed_version"] == "v2" and body["up_to_date"] is False
    assert "fails verification" in body["last_error"]
    assert 'riskapi_model_loads_total{outcome="failed"} 1.0' in client.get("/metrics").get_data(as_text=True)


# ----------------------------------------------------------------------------- reasons ("explain": true)


def test_explain_adds_each_rows_reasons_as_the_versions_explainer_gives_them(client, deployed_project: Config) -> None:
    from risk.model import explain
    from risk.registry.predictions import explainer_for

    frame = sample_frame(deployed_project).head(40)
    plain = client.post("/prediction", json={"records": records(frame)}).get_json()
    explained = client.post("/prediction", json={"records": records(frame), "explain": True}).get_json()
    assert "reasons" not in plain["predictions"][0] and "reasons_method" not in plain
    assert explained["reasons_method"] == explain.METHOD
    without_reasons = [{k: v for k, v in row.items() if k != "reasons"} for row in explained["predictions"]]
    assert without_reasons == plain["predictions"]
    deployed = versions.load_deployed_model(deployed_project)
    features = scoring.feature_frame(frame, deployed.metadata["features"])
    expected = explainer_for(deployed_project, deployed).reasons(features)
    assert [row["reasons"] for row in explained["predictions"]] == expected
    assert any(row["reasons"] for row in explained["predictions"])
    for row in explained["predictions"]:
        assert len(row["reasons"]) <= 3 and all(": +" in reason for reason in row["reasons"])
    # false is a plain request; the data-file forms take the flag too
    assert client.post("/prediction", json={"records": records(frame), "explain": False}).get_json() == plain
    from_file = client.post("/prediction", json={"dataset": "testdata.csv", "explain": True}).get_json()
    assert from_file["source"] == "dataset" and all("reasons" in row for row in from_file["predictions"])


@pytest.mark.parametrize("value", ["yes", 1, None, [True], {"a": 1}])
def test_explain_must_be_a_json_boolean(client, value) -> None:
    answer = client.post("/prediction", json={"records": [GOOD], "explain": value})
    assert_error(answer, 400, '"explain" must be true or false')


@pytest.mark.parametrize("query", ["?explain=true", "?explain=1", "?data_loc=testdata/testdata.csv&explain=true"])
def test_explain_in_the_query_is_a_400_saying_where_it_goes(client, query: str) -> None:
    # A CSV sent with ?explain=true was answered without reasons and without a word about it.
    csv_body = ",".join(GOOD) + "\n" + ",".join(str(value) for value in GOOD.values()) + "\n"
    answer = client.post(f"/prediction{query}", data=csv_body, content_type="text/csv")
    assert_error(answer, 400, '"explain": true', "JSON body")


def test_the_explainer_is_built_once_and_only_when_reasons_are_asked_for(client) -> None:
    state = client.application.extensions[service.EXTENSION]
    for _ in range(3):
        assert client.post("/prediction", json=[GOOD]).status_code == 200
    loaded = state.holder.get()
    assert loaded.explained == {}  # plain requests never build it
    client.post("/prediction", json={"records": [GOOD], "explain": True})
    built = loaded.explained["explainer"]
    assert built is not None
    client.post("/prediction", json={"records": [GOOD], "explain": True})
    assert loaded.explained["explainer"] is built


def test_a_model_without_an_explainer_answers_501_and_still_predicts(client, deployed_project: Config) -> None:
    state = client.application.extensions[service.EXTENSION]
    loaded = state.holder.get()
    loaded.deployed.metadata.pop("typical_client")  # an older version, and its master is gone
    (deployed_project.output_folder / MASTER_FILE).unlink()
    message = assert_error(client.post("/prediction", json={"records": [GOOD], "explain": True}), 501, "reasons")
    assert str(deployed_project.output_folder) not in message
    assert client.post("/prediction", json=[GOOD]).status_code == 200
