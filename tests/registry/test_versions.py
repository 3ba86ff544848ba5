"""risk.registry.versions, the read side of the registry: version names, the current link,
manifests and their verification, loading, approval states from the history, listing,
inventory and the master offsets a deployment covers. Versions are laid out by hand in
tmp_path (or deployed by fullprocess where a real model must load)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from risk.core import artefacts
from risk.core.settings import Config
from risk.registry import versions
from tests.conftest import write_config

MODEL_BYTES = b"not a model: verification hashes files, it does not load them"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path / "project")


def make_version(config: Config, name: str, manifest_extra: dict | None = None, **contents: bytes) -> Path:
    """A version folder with its files and a manifest listing their SHA-256."""
    files = {
        artefacts.SKOPS_MODEL_FILE: MODEL_BYTES,
        artefacts.METADATA_FILE: json.dumps({"model": "logistic_regression"}).encode(),
        artefacts.SCORES_FILE: json.dumps({"f1": 0.5, "roc_auc": 0.75}).encode(),
    }
    files.update({key.replace("__", "."): value for key, value in contents.items()})
    folder = versions.versions_folder(config) / name
    folder.mkdir(parents=True)
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    manifest = {"files": {file_name: sha(data) for file_name, data in files.items()}, **(manifest_extra or {})}
    (folder / artefacts.MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def make_current(config: Config, name: str) -> None:
    link = config.deployment_folder / artefacts.CURRENT_LINK
    link.unlink(missing_ok=True)
    link.symlink_to(Path(artefacts.VERSIONS_FOLDER) / name)


def write_history(config: Config, *lines: dict) -> None:
    path = config.deployment_folder / artefacts.HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")


# --- names and the current link -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, number", [("v1", 1), ("v12", 12), ("v0", 0), ("V3", -1), ("v", -1), ("12", -1), ("v1a", -1), ("v-1", -1)]
)
def test_version_number(name: str, number: int) -> None:
    assert versions.version_number(name) == number


def test_version_names_are_complete_versions_in_numeric_order(config: Config) -> None:
    assert versions.version_names(config) == []  # no deployment folder yet
    for name in ("v10", "v2", "v1"):
        make_version(config, name)
    (versions.versions_folder(config) / "v3").mkdir()  # a deploy killed before its manifest
    (versions.versions_folder(config) / "v0").mkdir()
    (versions.versions_folder(config) / "v0" / artefacts.MANIFEST_FILE).write_text("{}")
    (versions.versions_folder(config) / ".v4.tmp").mkdir()
    assert versions.version_names(config) == ["v1", "v2", "v10"]


def test_current_version_is_read_from_the_link(config: Config) -> None:
    assert versions.current_version(config) is None
    make_version(config, "v1")
    make_version(config, "v2")
    make_current(config, "v2")
    assert versions.current_version(config) == versions.current_version_or_none(config) == "v2"
    assert versions.resolve_version(config) == "v2"
    assert versions.version_path(config) == versions.versions_folder(config) / "v2"
    assert versions.version_path(config, "v1") == versions.versions_folder(config) / "v1"


@pytest.mark.parametrize("kind", ["a directory", "a regular file"])
def test_a_current_that_is_no_link_is_a_broken_link_naming_what_it_is(config: Config, kind: str) -> None:
    make_version(config, "v1")
    current = config.deployment_folder / artefacts.CURRENT_LINK
    if kind == "a directory":
        current.mkdir()
    else:
        current.write_text("v1\n")
    with pytest.raises(versions.BrokenCurrentLink, match=kind):
        versions.current_version(config)
    assert versions.current_version_or_none(config) is None
    assert issubclass(versions.BrokenCurrentLink, versions.DeploymentError)


def test_version_path_refuses_what_is_not_a_deployed_version(config: Config) -> None:
    with pytest.raises(versions.DeploymentError, match="no model is deployed"):
        versions.version_path(config)
    make_version(config, "v1")
    (versions.versions_folder(config) / "v2").mkdir()  # no manifest
    for name in ("v2", "v9", "v0", "../v1", "latest"):
        with pytest.raises(versions.DeploymentError, match="does not exist"):
            versions.version_path(config, name)


def test_report_folder_is_per_version(config: Config) -> None:
    assert versions.report_folder(config, "v3") == config.reports_folder / "v3"


# --- manifests and verification -------------------------------------------------------------------


def test_a_complete_version_verifies_and_returns_its_manifest(config: Config) -> None:
    folder = make_version(config, "v1", {"metric": "f1"})
    manifest = versions.verify_version(folder)
    assert manifest["metric"] == "f1" and manifest["files"][artefacts.SKOPS_MODEL_FILE] == sha(MODEL_BYTES)


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "is not valid JSON"),
        ("\xff", "is not valid JSON"),
        ("[1, 2]", "is not a version manifest"),
        ('{"files": ["trainedmodel.skops"]}', "is not a version manifest"),
    ],
)
def test_a_damaged_manifest_is_a_deployment_error(config: Config, content: str, words: str) -> None:
    folder = make_version(config, "v1")
    (folder / artefacts.MANIFEST_FILE).write_bytes(content.encode("latin-1"))
    with pytest.raises(versions.DeploymentError, match=words):
        versions.verify_version(folder)


def test_a_changed_byte_fails_verification_naming_the_file(config: Config) -> None:
    folder = make_version(config, "v1")
    (folder / artefacts.SCORES_FILE).write_bytes(json.dumps({"f1": 0.99, "roc_auc": 0.75}).encode())
    with pytest.raises(versions.DeploymentError, match=f"{artefacts.SCORES_FILE} fails verification"):
        versions.verify_version(folder)


def test_a_listed_file_that_is_missing_fails_verification(config: Config) -> None:
    folder = make_version(config, "v1")
    (folder / artefacts.METADATA_FILE).unlink()
    with pytest.raises(versions.DeploymentError, match="listed in the manifest but missing"):
        versions.verify_version(folder)


def test_a_manifest_listing_no_model_file_fails_verification(config: Config) -> None:
    folder = make_version(config, "v1")
    manifest = json.loads((folder / artefacts.MANIFEST_FILE).read_text())
    del manifest["files"][artefacts.SKOPS_MODEL_FILE]
    (folder / artefacts.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(versions.DeploymentError, match=artefacts.SKOPS_MODEL_FILE):
        versions.verify_version(folder)


def test_an_older_pickled_version_verifies(config: Config) -> None:
    folder = make_version(config, "v1")
    (folder / artefacts.SKOPS_MODEL_FILE).rename(folder / artefacts.MODEL_FILE)
    manifest = json.loads((folder / artefacts.MANIFEST_FILE).read_text())
    manifest["files"][artefacts.MODEL_FILE] = manifest["files"].pop(artefacts.SKOPS_MODEL_FILE)
    (folder / artefacts.MANIFEST_FILE).write_text(json.dumps(manifest))
    assert versions.verify_version(folder)["files"][artefacts.MODEL_FILE] == sha(MODEL_BYTES)


# --- loading a real deployment --------------------------------------------------------------------


def test_load_deployed_model_gives_the_verified_current_version(deployed_project: Config) -> None:
    deployed = versions.load_deployed_model(deployed_project)
    assert deployed.version == "v1" and deployed.path == versions.versions_folder(deployed_project) / "v1"
    assert deployed.model_file == artefacts.SKOPS_MODEL_FILE
    assert deployed.model_sha256 == sha((deployed.path / artefacts.SKOPS_MODEL_FILE).read_bytes())
    assert deployed.metadata == json.loads((deployed.path / artefacts.METADATA_FILE).read_text())
    assert hasattr(deployed.model, "predict_proba")
    assert "v1" in repr(deployed)


def test_load_deployed_model_refuses_a_tampered_model_file(deployed_project: Config) -> None:
    model_file = versions.versions_folder(deployed_project) / "v1" / artefacts.SKOPS_MODEL_FILE
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(versions.DeploymentError, match="fails verification"):
        versions.load_deployed_model(deployed_project)


# --- approval states ------------------------------------------------------------------------------


def test_approval_states_follow_the_history_and_the_last_event_wins(config: Config) -> None:
    for name in ("v1", "v2", "v3", "v4"):
        make_version(config, name)
    write_history(
        config,
        {"action": "deploy", "version": "v1", "at": "t1"},
        {"action": "deploy", "version": "v2", "at": "t2", "pending_approval": True},
        {"action": "approve", "version": "v2", "at": "t3", "by": "ana", "note": "checked"},
        {"action": "deploy", "version": "v3", "at": "t4", "pending_approval": True},
        {"action": "reject", "version": "v3", "at": "t5", "by": "bo", "note": "worse"},
        {"action": "deploy", "version": "v4", "at": "t6", "pending_approval": True},
    )
    states = versions.approval_states(config)
    assert states["v1"] == {"state": "deployed", "at": "t1"}
    assert states["v2"] == {"state": "approved", "at": "t3", "by": "ana", "note": "checked"}
    assert states["v3"]["state"] == "rejected" and states["v3"]["by"] == "bo"
    assert states["v4"]["state"] == "pending"
    assert versions.pending_versions(config) == ["v4"]


def test_a_version_whose_history_line_was_never_written_is_read_from_its_manifest(config: Config) -> None:
    make_version(config, "v1")
    make_version(config, "v2", {"pending_approval": True})
    write_history(config, {"action": "deploy", "version": "v1", "at": "t1"})
    states = versions.approval_states(config)
    assert states["v2"] == {"state": "pending", "at": None}
    assert versions.pending_versions(config) == ["v2"]


def test_superseded_by_names_the_pending_versions_a_deployment_replaced(config: Config) -> None:
    for name in ("v1", "v2", "v3"):
        make_version(config, name)
    write_history(
        config,
        {"action": "deploy", "version": "v1", "pending_approval": True},
        {"action": "deploy", "version": "v2", "pending_approval": True},
        {"action": "supersede", "version": "v1", "superseded_by": "v3"},
        {"action": "supersede", "version": "v2", "superseded_by": "v3"},
        {"action": "deploy", "version": "v3", "pending_approval": True},
    )
    assert versions.superseded_by(config, "v3") == ["v1", "v2"]
    assert versions.superseded_by(config, "v2") == []
    assert versions.pending_versions(config) == ["v3"]
    assert versions.approval_states(config)["v1"]["state"] == "superseded"


# --- warnings -------------------------------------------------------------------------------------


def test_version_warnings_join_training_and_scoring_without_repeats() -> None:
    found = versions.version_warnings({"warnings": ["a", "b"]}, {"warnings": ["b", "c"]})
    assert found == ["a", "b", "c"]
    assert versions.version_warnings({}, {"warnings": None}) == []


def test_an_uninformative_model_is_said_to_be_no_better_than_chance_once() -> None:
    added = versions.version_warnings({"uninformative": True, "warnings": ["w"]}, {})
    assert len(added) == 2 and "no better than chance" in added[0] and added[1] == "w"
    said = versions.version_warnings({"uninformative": True, "warnings": ["It is no better than chance."]}, {})
    assert said == ["It is no better than chance."]


# --- listing and inventory ------------------------------------------------------------------------


def test_list_versions_shows_scores_and_marks_the_current_one(config: Config) -> None:
    make_version(config, "v1", {"deployed_at": "2026-12-01", "model": "m1", "scores": {"f1": 0.4}, "warnings": []})
    make_version(
        config,
        "v2",
        {"deployed_at": "2026-12-02", "model": "m2", "metric": "f1", "scores": {"f1": 0.6, "roc_auc": 0.8}},
        trainedmodel__json=json.dumps({"warnings": ["from the metadata"]}).encode(),
    )
    make_current(config, "v2")
    rows = {row["version"]: row for row in versions.list_versions(config)}
    assert list(rows) == ["v1", "v2"]
    assert rows["v2"]["current"] is True and rows["v1"]["current"] is False
    assert (rows["v2"]["f1"], rows["v2"]["roc_auc"], rows["v2"]["metric_score"]) == (0.6, 0.8, 0.6)
    assert rows["v2"]["model_format"] == "skops"
    assert rows["v2"]["warnings"] == ["from the metadata"]  # an older manifest without warnings
    assert rows["v1"]["warnings"] == [] and rows["v1"]["deployed_at"] == "2026-12-01"


def test_list_versions_keeps_a_version_with_a_damaged_manifest_and_says_so(config: Config) -> None:
    make_version(config, "v1")
    folder = make_version(config, "v2")
    (folder / artefacts.MANIFEST_FILE).write_text("[]")
    rows = versions.list_versions(config)
    assert [row["version"] for row in rows] == ["v1", "v2"]
    assert rows[1]["warnings"][0].startswith("fails verification") and rows[1]["model"] == "?"


def test_inventory_statuses_and_verify_false_skips_hashing(config: Config) -> None:
    for name in ("v1", "v2", "v3"):
        make_version(config, name)
    write_history(
        config,
        {"action": "deploy", "version": "v1", "at": "t1"},
        {"action": "deploy", "version": "v2", "at": "t2", "previous_version": "v1"},
        {"action": "rollback", "version": "v1", "at": "t3", "previous_version": "v2"},
        {"action": "deploy", "version": "v3", "at": "t4", "previous_version": "v1", "pending_approval": True},
    )
    make_current(config, "v1")
    rows = {row["version"]: row for row in versions.inventory(config)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "v1": "current",
        "v2": "rolled back",
        "v3": "pending",
    }
    assert rows["v2"]["became_current_at"] == "t2" and rows["v2"]["left_current_at"] == "t3"
    assert rows["v1"]["left_current_at"] is None
    current_model = versions.versions_folder(config) / "v1" / artefacts.SKOPS_MODEL_FILE
    current_model.write_bytes(b"tampered")
    damaged = {row["version"]: row for row in versions.inventory(config)}["v1"]
    assert damaged["status"] == "current, failed verification" and "fails verification" in damaged["problem"]
    unverified = {row["version"]: row for row in versions.inventory(config, verify=False)}["v1"]
    assert unverified["status"] == "current" and unverified["problem"] is None


def test_current_since_is_the_last_history_line_of_the_current_version(config: Config) -> None:
    for name in ("v1", "v2"):
        make_version(config, name)
    assert versions.current_since(config) is None
    write_history(
        config,
        {"action": "deploy", "version": "v1", "at": "t1"},
        {"action": "deploy", "version": "v2", "at": "t2"},
        {"action": "activate", "version": "v1", "at": "t3"},
    )
    make_current(config, "v1")
    assert versions.current_since(config) == {"action": "activate", "version": "v1", "at": "t3"}


# --- the master rows a deployment covers ----------------------------------------------------------


def test_covered_master_bytes_is_the_newest_readable_versions_size(config: Config) -> None:
    assert versions.covered_master_bytes(config) == 0
    make_version(config, "v1", {"master_bytes": 1000})
    make_version(config, "v2", {"master_bytes": 2500})
    assert versions.covered_master_bytes(config) == 2500
    make_version(config, "v3")  # an older deployment that recorded no size: look further back
    assert versions.covered_master_bytes(config) == 2500
    (versions.versions_folder(config) / "v2" / artefacts.MANIFEST_FILE).write_text("{not json")
    assert versions.covered_master_bytes(config) == 1000


def test_versions_deployed_before_a_rebuild_cover_nothing(config: Config) -> None:
    make_version(config, "v1", {"master_bytes": 1000})
    make_version(config, "v2", {"master_bytes": 2500})
    checkpoint = config.output_folder / artefacts.CHECKPOINT_FILE
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(json.dumps({"rebuilt_after_version": "v2", "master_bytes": 300}))
    assert versions.covered_master_bytes(config) == 0
    assert versions.judged_offset(config) == 300
    make_version(config, "v3", {"master_bytes": 900})
    assert versions.covered_master_bytes(config) == 900 == versions.judged_offset(config)


def test_judged_offset_is_the_later_of_the_checkpoint_and_the_covered_size(config: Config) -> None:
    make_version(config, "v1", {"master_bytes": 1000})
    checkpoint = config.output_folder / artefacts.CHECKPOINT_FILE
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(json.dumps({"master_bytes": 400}))
    assert versions.judged_offset(config) == 1000
    checkpoint.write_text(json.dumps({"master_bytes": 4000}))
    assert versions.judged_offset(config) == 4000
    checkpoint.write_text(json.dumps({"master_bytes": "damaged"}))
    assert versions.judged_offset(config) == 1000
