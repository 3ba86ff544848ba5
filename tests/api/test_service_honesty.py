"""What the API (risk.api.service) tells is true and gives nothing away, through Flask's test
client on real deployed projects: bands that agree with the decision, the training's verdict
and warnings on /model and the page, the classic course's ways of naming a data file, and paths
shown relative to the project."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from risk.api import service
from risk.core import artefacts
from risk.core.settings import Config
from risk.registry import deploy, versions
from tests.conftest import SCORES_WARNING, UNINFORMATIVE_WARNING, deploy_uninformative_version, rewrite_config

SECRET = "Zebra-Quokka-7731"


@pytest.fixture
def client(deployed_project: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    return service.create_app(deployed_project.path).test_client()


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    message = response.get_json()["message"]
    for word in words:
        assert word in message
    assert SECRET not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)
    return message


# ----------------------------------------------------------------------------- bands


def test_derived_bands_start_amber_at_the_models_threshold(client, deployed_project: Config) -> None:
    body = client.post("/prediction", json={"dataset": "testdata.csv"}).get_json()
    threshold = body["threshold"]
    assert body["bands"] == {
        "amber": threshold,
        "red": pytest.approx(threshold + (1 - threshold) / 2),
        "source": "threshold",
    }
    for row in body["predictions"]:
        assert (row["band"] != "green") == (row["prediction"] == 1)
    assert all(body["band_counts"].values())
    assert client.get("/model").get_json()["bands"]["source"] == "threshold"


def test_configured_bands_never_contradict_the_decision(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported case: amber from above the threshold left rows "likely to leave" in green."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    threshold = versions.load_deployed_model(deployed_project).model.threshold
    config = rewrite_config(
        deployed_project, risk_band_thresholds={"amber": min(1.0, threshold + 0.15), "red": min(1.0, threshold + 0.3)}
    )
    body = (
        service.create_app(config.path).test_client().post("/prediction", json={"dataset": "testdata.csv"}).get_json()
    )
    flagged_below_amber = [r for r in body["predictions"] if r["prediction"] == 1 and r["risk"] < threshold + 0.15]
    assert flagged_below_amber, "the data must hold the contradicting rows this test is about"
    assert all(row["band"] == "amber" for row in flagged_below_amber)
    assert not [r for r in body["predictions"] if r["prediction"] == 1 and r["band"] == "green"]
    assert body["bands"]["source"] == "configured"
    # And the other way round: thresholds far below the decision never paint a row "likely to stay" red.
    config = rewrite_config(deployed_project, risk_band_thresholds={"amber": 0.0, "red": 0.0})
    body = (
        service.create_app(config.path).test_client().post("/prediction", json={"dataset": "testdata.csv"}).get_json()
    )
    assert {r["band"] for r in body["predictions"] if r["prediction"] == 0} == {"amber"}


LEGEND_PARTS = ("legend-no-model", "legend-thresholds", "band-source-configured", "band-source-derived")


def legend_parts_shown(page: str) -> set[str]:
    """The legend's parts the served page does not hide (the page's script switches them as /model answers)."""
    shown = set()
    for part in LEGEND_PARTS:
        tag = re.search(rf'<span\s+id="{part}"([^>]*)>', page)
        assert tag, f"{part} is missing from the page"
        if "hidden" not in tag.group(1):
            shown.add(part)
    return shown


def test_the_page_legend_says_where_the_bands_come_from(
    client, deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    threshold = versions.load_deployed_model(deployed_project).model.threshold
    page = client.get("/").get_data(as_text=True)
    assert legend_parts_shown(page) == {"legend-thresholds", "band-source-derived"}
    assert f"{threshold * 100:.1f}</span>%" in page
    config = rewrite_config(deployed_project, risk_band_thresholds={"amber": 0.4, "red": 0.7})
    page = service.create_app(config.path).test_client().get("/").get_data(as_text=True)
    assert legend_parts_shown(page) == {"legend-thresholds", "band-source-configured"} and "70.0</span>%" in page


def test_the_page_renders_without_a_model(project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    page = service.create_app(project.path).test_client().get("/")
    assert page.status_code == 200 and "once a model is deployed" in page.get_data(as_text=True)
    assert legend_parts_shown(page.get_data(as_text=True)) == {"legend-no-model", "band-source-derived"}


# ----------------------------------------------------------------------------- the training's verdict


def test_model_says_no_better_than_chance_with_the_warnings(client, deployed_project: Config) -> None:
    before = client.get("/model").get_json()
    assert before["uninformative"] is False and before["verdict"] is None  # v1's metadata may predate the flag
    assert deploy_uninformative_version(deployed_project) == "v2"
    body = client.get("/model").get_json()
    assert body["model_version"] == "v2" and body["uninformative"] is True
    assert "no better than chance" in body["verdict"]
    assert body["warnings"] == [UNINFORMATIVE_WARNING, SCORES_WARNING]
    page = client.get("/").get_data(as_text=True)
    assert 'id="model-verdict"' in page and 'id="model-warnings"' in page


# ----------------------------------------------------------------------------- the classic course's clients


@pytest.mark.parametrize("field", ["data_file", "filepath", "file_path"])
def test_course_aliases_answer_as_dataset(client, field: str) -> None:
    expected = client.post("/prediction", json={"dataset": "testdata.csv"}).get_json()
    body = client.post("/prediction", json={field: "testdata/testdata.csv"}).get_json()
    assert body["rows"] == 1000 and body["predictions"] == expected["predictions"]
    assert client.post("/prediction", json={field: "ingesteddata/finaldata.csv"}).get_json()["rows"] > 1000
    assert (
        client.post("/prediction", json={field: "./testdata/testdata.csv"}).get_json()["predictions"]
        == expected["predictions"]
    )


def test_data_loc_in_the_query_answers_as_dataset(client) -> None:
    expected = client.post("/prediction", json={"dataset": "testdata.csv"}).get_json()
    response = client.post(
        "/prediction?data_loc=testdata/testdata.csv"
    )  # no body at all, as the course's clients send it
    assert response.status_code == 200 and response.get_json()["predictions"] == expected["predictions"]
    assert_error(client.post("/prediction?data_loc=testdata/testdata.csv", json=[{"x": 1}]), 400, "not both")


TRAVERSALS = [
    "../config.json",
    "../../etc/passwd",
    "/etc/passwd",
    "testdata/../config.json",
    "testdata/../../x.csv",
    "..",
    "config.json",
    "models/trainedmodel.csv",
    "testdata\\..\\config.json",
    "testdata/a\x00.csv",
    "testdata/.hidden.csv",
    ".git/x.csv",
    "",
    "production_deployment/versions/v1/reference_data.csv",
    f"testdata/{SECRET}.csv",
]


@pytest.mark.parametrize("path", TRAVERSALS)
@pytest.mark.parametrize("field", ["data_file", "filepath", "file_path", "data_loc"])
def test_traversals_through_every_alias_are_refused(client, deployed_project: Config, field: str, path: str) -> None:
    if field == "data_loc":
        response = client.post("/prediction", query_string={"data_loc": path})
    else:
        response = client.post("/prediction", json={field: path})
    message = assert_error(response, 400, field)
    assert str(deployed_project.root) not in message


@pytest.mark.parametrize("field", ["data_file", "filepath", "file_path"])
def test_aliases_take_only_a_path(client, field: str) -> None:
    for value in (7, None, ["testdata/testdata.csv"], {"path": "testdata/testdata.csv"}):
        assert_error(client.post("/prediction", json={field: value}), 400, field)


def test_a_symlink_out_of_the_data_folders_is_refused_through_an_alias(
    client, deployed_project: Config, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.csv"
    shutil.copy(deployed_project.test_data_folder / "testdata.csv", outside)
    os.symlink(outside, deployed_project.test_data_folder / "escape.csv")
    os.symlink(deployed_project.root, deployed_project.test_data_folder / "up")
    assert_error(client.post("/prediction", json={"filepath": "testdata/escape.csv"}), 400, "no such CSV")
    assert_error(client.post("/prediction", json={"filepath": "testdata/up/testdata/testdata.csv"}), 400, "no such CSV")


# ----------------------------------------------------------------------------- no server paths


def no_absolute_paths(text: str, config: Config) -> None:
    assert str(config.root) not in text and str(config.root.resolve()) not in text
    assert not re.search(r"(?<![\w.])/(tmp|home|work|root|srv|var)/", text), text


def test_readyz_and_503s_show_paths_relative_to_the_project(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    link = deployed_project.deployment_folder / artefacts.CURRENT_LINK
    link.unlink()
    link.symlink_to(Path("versions") / "v9")  # a version that does not exist
    client = service.create_app(deployed_project.path).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    last_error = ready.get_json()["last_error"]
    assert "production_deployment/versions" in last_error
    no_absolute_paths(ready.get_data(as_text=True), deployed_project)
    for response in (
        client.post("/prediction", json={"dataset": "testdata.csv"}),
        client.get("/model"),
        client.get("/scoring"),
    ):
        message = assert_error(response, 503, "production_deployment/versions")
        no_absolute_paths(message, deployed_project)


def test_a_version_failing_verification_is_named_without_server_paths(client, deployed_project: Config) -> None:
    assert deploy.deploy_model(deployed_project, reason="to be corrupted") == "v2"
    manifest = versions.versions_folder(deployed_project) / "v2" / "manifest.json"
    manifest.write_text("[]")
    client.post("/prediction", json={"dataset": "testdata.csv"})
    body = client.get("/readyz").get_json()
    assert body["model_version"] == "v1" and "v2" in body["last_error"]
    no_absolute_paths(json.dumps(body), deployed_project)


def test_a_model_file_that_does_not_load_is_named_without_the_python_installation_paths(
    deployed_project: Config, monkeypatch
) -> None:
    """An older pickled version naming a class a library upgrade removed: pickle's message names the
    library module by its file (site-packages), which /readyz and every 503 repeated."""
    import hashlib
    import sys

    monkeypatch.delenv("API_TOKEN", raising=False)
    folder = versions.versions_folder(deployed_project) / "v1"
    data = b"\x80\x04csklearn.utils\nNoSuchThing\n)\x81."  # the pickle of an instance of sklearn.utils.NoSuchThing
    (folder / artefacts.SKOPS_MODEL_FILE).unlink()
    (folder / artefacts.MODEL_FILE).write_bytes(data)
    manifest = json.loads((folder / artefacts.MANIFEST_FILE).read_text())
    del manifest["files"][artefacts.SKOPS_MODEL_FILE]
    manifest["files"][artefacts.MODEL_FILE] = hashlib.sha256(data).hexdigest()
    (folder / artefacts.MANIFEST_FILE).write_text(json.dumps(manifest))
    client = service.create_app(deployed_project.path).test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503 and "NoSuchThing" in ready.get_json()["last_error"]
    assert "<python>/lib/" in ready.get_json()["last_error"]
    for text in (ready.get_data(as_text=True), assert_error(client.get("/model"), 503, "NoSuchThing")):
        no_absolute_paths(text, deployed_project)
        assert (
            sys.prefix not in text
            and os.path.realpath(sys.prefix) not in text
            and os.path.realpath(sys.base_prefix) not in text
        )


def test_deployment_folder_outside_the_project_is_named_by_its_key(
    deployed_project: Config, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    elsewhere = tmp_path / "elsewhere" / "deploy"
    elsewhere.parent.mkdir()
    shutil.move(str(deployed_project.deployment_folder), elsewhere)
    config = rewrite_config(deployed_project, prod_deployment_path=str(elsewhere))
    link = elsewhere / artefacts.CURRENT_LINK
    link.unlink()
    link.symlink_to(Path("versions") / "v9")
    ready = service.create_app(config.path).test_client().get("/readyz")
    assert "<prod_deployment_path>/versions" in ready.get_json()["last_error"]
    assert str(elsewhere) not in ready.get_data(as_text=True)


def test_project_relative_leaves_lookalike_paths_alone(deployed_project: Config) -> None:
    root = str(deployed_project.root)
    text = service.project_relative(f"{root}/models/x.pkl; {root}-other/y; {root}", deployed_project)
    assert text == f"models/x.pkl; {root}-other/y; ."
    np.testing.assert_equal(service.project_relative("nothing to change", deployed_project), "nothing to change")


# ----------------------------------------------------------------------------- the new config keys


def test_band_and_column_settings_are_validated(tmp_path: Path) -> None:
    from risk.core.settings import ConfigError, load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"risk_band_thresholds": None, "api_max_columns": 50}))
    config = load_config(path)
    assert config["risk_band_thresholds"] is None and config["api_max_columns"] == 50
    for bad in (
        {"api_max_columns": -1},
        {"api_max_columns": "many"},
        {"api_max_columns": True},
        {"risk_band_thresholds": 0.3},
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_config(path)


def test_the_readme_says_which_endpoints_need_the_token(
    deployed_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's endpoint table and the code agree (it once said /readyz was open)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (`[^|]*`) \| (yes|no) \|", readme, re.M)
    assert len(rows) >= 7
    monkeypatch.setenv("API_TOKEN", "readme-token")
    client = service.create_app(deployed_project.path).test_client()
    for endpoints, needed in rows:
        for method, path in re.findall(r"`(GET|POST) (/[a-z]*)`", endpoints):
            status = client.open(path, method=method, json=[{}] if method == "POST" else None).status_code
            assert (status == 401) == (needed == "yes"), (method, path, status)


# ----------------------------------------------------------------------------- start-up


def test_the_start_up_log_says_what_the_503_says_while_v1_awaits_approval(
    project: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from risk.data import ingest
    from risk.model import scoring, training

    ingest.ingest_new_files(project)
    training.save_model(project, *training.train_model(project))
    scoring.score_model(project)
    assert deploy.deploy_model(project, pending=True) == "v1"
    monkeypatch.delenv("API_TOKEN", raising=False)

    with caplog.at_level("WARNING", logger=service.__name__):
        client = service.create_app(project.path).test_client()

    answered = assert_error(client.post("/prediction", json={"dataset": "testdata.csv"}), 503, "v1 awaits approval")
    [logged] = [r.getMessage() for r in caplog.records if "503" in r.getMessage()]
    assert answered in logged and "nothing deployed" not in logged, logged
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["reason"] == answered, "/readyz says why, in the same words"
