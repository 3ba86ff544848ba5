"""risk.registry.deploy: immutable versions, verified loading, atomic switch, rollback."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from risk.core import logbook, tables
from risk.core.settings import Config
from risk.data import ingest, masterstore
from risk.model import scoring, training
from risk.registry import deploy
from risk.registry import versions as registry_versions
from tests.conftest import HEADER, write_config

PROJECT_DIR = Path(__file__).resolve().parents[2]


def retrain(config: Config) -> None:
    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)
    scoring.score_model(config)


def test_fullprocess_deployed_a_complete_verified_version(deployed_project: Config) -> None:
    loaded = registry_versions.load_deployed_model(deployed_project)

    assert loaded.version == "v1" == registry_versions.current_version(deployed_project)
    assert set(loaded.manifest["files"]) == {
        "trainedmodel.skops",
        "trainedmodel.json",
        "scores.json",
        "latestscore.txt",
        "ingestedfiles.txt",
        "ingestion_record.jsonl",
        "reference_data.csv",
    }
    assert loaded.scores == loaded.manifest["scores"]
    assert loaded.manifest["reason"] == "no deployed model yet"
    assert (loaded.path / "ingestedfiles.txt").read_text() == (
        deployed_project.output_folder / "ingestedfiles.txt"
    ).read_text()


def test_new_version_then_rollback_then_new_number(deployed_project: Config) -> None:
    assert deploy.deploy_model(deployed_project, reason="second") == "v2"
    assert registry_versions.current_version(deployed_project) == "v2"

    assert deploy.rollback(deployed_project) == "v1"
    assert registry_versions.current_version(deployed_project) == "v1"
    assert deploy.deploy_model(deployed_project, reason="third") == "v3"

    rows = registry_versions.list_versions(deployed_project)
    assert [(r["version"], r["current"]) for r in rows] == [("v1", False), ("v2", False), ("v3", True)]
    actions = [(h["action"], h["version"]) for h in logbook.read_history(deployed_project)]
    assert actions == [("deploy", "v1"), ("deploy", "v2"), ("rollback", "v1"), ("deploy", "v3")]


def test_the_deploy_log_names_the_configured_metric(deployed_project: Config, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(deployed_project.root, metric="roc_auc")
    retrain(config)
    with caplog.at_level(logging.INFO, logger=deploy.__name__):
        assert deploy.deploy_model(config, reason="ranked") == "v2"
    scores = json.loads((config.model_folder / "scores.json").read_text())
    assert f"deployed v2 (logistic_regression, roc_auc {scores['roc_auc']:.4f} on test data)" in caplog.text


def test_rollback_with_nothing_older_is_refused(deployed_project: Config) -> None:
    with pytest.raises(registry_versions.DeploymentError, match="no verified version older than v1"):
        deploy.rollback(deployed_project)
    assert registry_versions.current_version(deployed_project) == "v1"


def test_rollback_skips_a_corrupted_version(deployed_project: Config) -> None:
    deploy.deploy_model(deployed_project, reason="v2")
    deploy.deploy_model(deployed_project, reason="v3")
    (registry_versions.versions_folder(deployed_project) / "v2" / "trainedmodel.skops").write_bytes(b"broken")

    assert deploy.rollback(deployed_project) == "v1"


class _Tripwire:
    """Unpickling this writes a file: proof that a model file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("tamper", ["truncate", "swap"])
def test_tampered_model_is_refused_before_unpickling(deployed_project: Config, tmp_path: Path, tamper: str) -> None:
    model_file = registry_versions.version_path(deployed_project) / "trainedmodel.skops"
    marker = tmp_path / "marker"
    if tamper == "truncate":
        model_file.write_bytes(model_file.read_bytes()[:1000])
    else:
        model_file.write_bytes(pickle.dumps(_Tripwire(marker)))

    with pytest.raises(registry_versions.DeploymentError, match="fails verification"):
        registry_versions.load_deployed_model(deployed_project)
    assert not marker.exists()


def test_deploy_refuses_a_model_that_does_not_match_its_metadata(deployed_project: Config) -> None:
    (deployed_project.model_folder / "trainedmodel.skops").write_bytes(b"not the trained model")
    with pytest.raises(registry_versions.DeploymentError, match="checksum"):
        deploy.deploy_model(deployed_project)
    assert registry_versions.current_version(deployed_project) == "v1"


def test_deploy_refuses_scores_of_another_model(deployed_project: Config) -> None:
    model, metadata = training.train_model(deployed_project)
    training.save_model(deployed_project, model, metadata)  # not scored yet
    with pytest.raises(registry_versions.DeploymentError, match="score it again"):
        deploy.deploy_model(deployed_project)


DEPLOY_FOREVER = """
import sys
sys.path.insert(0, {project_dir!r})
import deployment, ingestion; from risk.core import settings; from risk.registry import deploy  # imported before "ready", so kills land in deploys
config = settings.load_config({config!r})
print("ready", flush=True)
while True:
    deploy.deploy_model(config, reason="stress")
"""


@pytest.mark.slow
def test_deploys_killed_at_random_instants_leave_a_verified_current_version(deployed_project: Config) -> None:
    rng = random.Random(7)
    script = DEPLOY_FOREVER.format(project_dir=str(PROJECT_DIR), config=str(deployed_project.path))
    for _ in range(12):
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.5))
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

        loaded = registry_versions.load_deployed_model(deployed_project)
        assert loaded.version == registry_versions.current_version(deployed_project)
        for version in registry_versions.version_names(deployed_project):
            registry_versions.verify_version(registry_versions.versions_folder(deployed_project) / version)
    versions = registry_versions.version_names(deployed_project)
    assert len(versions) > 3, "the deploys ran long enough to be killed mid-way"
    # The next deploy clears what the killed ones left half-built.
    deploy.deploy_model(deployed_project, reason="after the storm")
    leftovers = [
        p.name for p in registry_versions.versions_folder(deployed_project).iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


def test_a_manifest_that_does_not_list_the_model_is_refused(deployed_project: Config) -> None:
    import json

    path = registry_versions.version_path(deployed_project)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]["trainedmodel.skops"]
    (path / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(registry_versions.DeploymentError, match="does not list"):
        registry_versions.load_deployed_model(deployed_project)


def test_any_verified_version_can_be_made_current_again(deployed_project: Config) -> None:
    deploy.deploy_model(deployed_project, reason="second")
    deploy.deploy_model(deployed_project, reason="third")

    assert deploy.activate(deployed_project, "v1") == "v1"
    assert registry_versions.current_version(deployed_project) == "v1"
    assert deploy.activate(deployed_project, "v3") == "v3"

    assert [(h["action"], h["version"], h["previous_version"]) for h in logbook.read_history(deployed_project)][
        -2:
    ] == [
        ("activate", "v1", "v3"),
        ("activate", "v3", "v1"),
    ]
    assert registry_versions.current_since(deployed_project)["action"] == "activate"
    (registry_versions.versions_folder(deployed_project) / "v2" / "trainedmodel.skops").write_bytes(b"broken")
    with pytest.raises(registry_versions.DeploymentError, match="v2 cannot be activated: .*fails verification"):
        deploy.activate(deployed_project, "v2")
    with pytest.raises(registry_versions.DeploymentError, match="there is no version 'v9'"):
        deploy.activate(deployed_project, "v9")
    assert registry_versions.current_version(deployed_project) == "v3"


@pytest.mark.parametrize("breakage", ["directory", "regular file"])
def test_rollback_replaces_a_broken_current_link(deployed_project: Config, breakage: str) -> None:
    deploy.deploy_model(deployed_project, reason="second")
    link = deployed_project.deployment_folder / "current"
    link.unlink()
    link.mkdir() if breakage == "directory" else link.write_text("v2")
    with pytest.raises(registry_versions.BrokenCurrentLink, match=f"is a {breakage}, not a link to a version"):
        registry_versions.current_version(deployed_project)

    assert deploy.rollback(deployed_project) == "v2"

    assert registry_versions.current_version(deployed_project) == "v2"
    assert logbook.read_history(deployed_project)[-1]["reason"] == "rollback from a broken current link"


def test_a_manifest_that_is_not_an_object_fails_verification_cleanly(deployed_project: Config) -> None:
    deploy.deploy_model(deployed_project, reason="second")
    (registry_versions.versions_folder(deployed_project) / "v1" / "manifest.json").write_text("[]")

    with pytest.raises(registry_versions.DeploymentError, match="is not a version manifest"):
        registry_versions.load_deployed_model(deployed_project, "v1")
    with pytest.raises(registry_versions.DeploymentError, match="no verified version older than v2"):
        deploy.rollback(deployed_project)
    rows = registry_versions.list_versions(deployed_project)
    assert "fails verification" in rows[0]["warnings"][0] and rows[1]["current"]


def test_a_deploy_killed_between_its_version_and_the_switch_is_completed_not_repeated(deployed_project: Config) -> None:
    version = deploy.deploy_model(deployed_project, reason="killed before the switch")
    # What a kill between the version's rename and the switch leaves: v2 complete, current v1, no history line.
    deploy._switch_current(deployed_project, "v1")
    history = deployed_project.deployment_folder / "history.jsonl"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))

    assert deploy.complete_interrupted_deploy(deployed_project) == version == "v2"

    assert registry_versions.current_version(deployed_project) == "v2"
    assert logbook.read_history(deployed_project)[-1]["note"].startswith("completed by a later run")
    assert deploy.complete_interrupted_deploy(deployed_project) is None
    deploy.rollback(deployed_project)
    assert deploy.complete_interrupted_deploy(deployed_project) is None, "a rollback is not an interrupted deploy"
    assert registry_versions.current_version(deployed_project) == "v1"


def test_the_reference_sample_keeps_a_row_holding_a_carriage_return_whole(deployed_project: Config) -> None:
    # to_csv leaves a text value holding a bare carriage return unquoted, where pandas ends a row:
    # drift would have compared the batch with a reference holding a split row.
    (deployed_project.input_folder / "late.csv").write_bytes(
        HEADER.encode() + b'"carriage\rreturn",1,2.5,3,0\nplain,4,5.5,6,1\n'
    )
    ingest.ingest_new_files(deployed_project)
    assert deploy.deploy_model(deployed_project, reason="second") == "v2"

    loaded = registry_versions.load_deployed_model(deployed_project)
    kinds = masterstore.column_kinds(deployed_project)
    reference = tables.read_typed_csv(loaded.path / "reference_data.csv", kinds)
    rows, seed = deployed_project["reference_sample_rows"], deployed_project["random_seed"]
    expected = masterstore.sample_master(deployed_project, rows, seed).reset_index(drop=True)
    assert "carriage\rreturn" in set(expected["corporation"])
    pd.testing.assert_frame_equal(reference, expected)
