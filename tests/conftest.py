"""Shared fixtures: a project laid out in tmp_path with its own config and sample data.

Tests run the real scripts on real files; nothing of the project's own is mocked.
Training is kept quick by a config with one fast candidate and three folds.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import threading
from pathlib import Path

import pytest

import fullprocess
import sampledata
from settings import Config, load_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_DIR.parent / "shared" / "data"

# package_check_seconds 0: the diagnostics fullprocess runs after deploying do not ask the package index.
FAST_SETTINGS = {"candidate_models": ["logistic_regression"], "cv_folds": 3, "package_check_seconds": 0}
# settle_seconds 0: files the tests write are complete at once, so ingestion need not watch them.
FAST_SETTINGS["settle_seconds"] = 0


def add_shifted_month(config: Config, holdout: bool = False) -> None:
    """Drop the sample's shifted month into the input folder, as `make demo-drift` does; with
    ``holdout``, its labelled hold-out into the test folder too."""
    for batch in sorted((config.root / sampledata.SAMPLE_BATCH_FOLDER).glob("*.csv")):
        shutil.copy(batch, config.input_folder / batch.name)
    if holdout:
        for path in sorted((config.root / sampledata.SAMPLE_HOLDOUT_FOLDER).glob("*.csv")):
            shutil.copy(path, config.test_data_folder / path.name)


@contextlib.contextmanager
def growing(path: Path):
    """Append a row to ``path`` every 50 ms while the block runs, as scp writing in place does."""
    stop = threading.Event()

    def append_slowly() -> None:
        for number in range(10_000):
            if stop.wait(0.05):
                return
            with path.open("a") as handle:
                handle.write(f"g{number},1,2,3,{number % 2}\n")

    writer = threading.Thread(target=append_slowly, daemon=True)
    writer.start()
    try:
        yield path
    finally:
        stop.set()
        writer.join()


def write_config(folder: Path, **overrides) -> Config:
    """Write a config.json into ``folder`` (fast training by default) and load it."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "input_folder_path": "sourcedata",
        "output_folder_path": "ingesteddata",
        "test_data_path": "testdata",
        "output_model_path": "models",
        "prod_deployment_path": "production_deployment",
        "target": "exited",
        "positive_label": 1,
        "id_columns": ["corporation"],
        **FAST_SETTINGS,
        **overrides,
    }
    (folder / "config.json").write_text(json.dumps(values, indent=2), encoding="utf-8")
    return load_config(folder / "config.json")


@pytest.fixture
def project(tmp_path: Path) -> Config:
    """A fresh project folder with the sample data written and nothing ingested yet."""
    config = write_config(tmp_path / "project")
    sampledata.write_sample_data(config)
    return config


@pytest.fixture(scope="session")
def deployed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project on which fullprocess has run once: ingested, trained, deployed as v1."""
    folder = tmp_path_factory.mktemp("deployed") / "project"
    config = write_config(folder)
    sampledata.write_sample_data(config)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    return folder


@pytest.fixture
def deployed_project(deployed_template: Path, tmp_path: Path) -> Config:
    """A private copy of the deployed project, safe to change."""
    folder = tmp_path / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    return load_config(folder / "config.json")


@pytest.fixture
def shared_data() -> Path:
    """The team's real public datasets; skipped where ../shared/data is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the real-dataset tests need the team's shared data")
    return SHARED_DATA
