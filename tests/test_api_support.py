"""Helpers shared by the API, page and compiled-model tests (this module holds no tests itself)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

import deployment
import fullprocess
import sampledata
from fsutil import atomic_write_json
from settings import Config, load_config
from tests.conftest import write_config

REGIONS = [f"region{i:02d}" for i in range(60)]  # more than the encoder's max_categories (50)
UNINFORMATIVE_WARNING = "No candidate model is better than chance: every one is no better than chance at telling the classes apart."
SCORES_WARNING = "4 of 5 test rows (80%) also appear in the training data."


@pytest.fixture
def single_threaded():
    """One OpenMP/BLAS thread, as in the gunicorn workers: on a busy 2-core machine, spinning
    OpenMP threads make scikit-learn's tree predictions tens of times slower."""
    with threadpool_limits(limits=1):
        yield


def write_diagnostics(config: Config, version: str) -> Path:
    """A diagnostics document of the agreed shape, as diagnostics.py writes it."""
    path = config.reports_folder / version / "diagnostics.json"
    atomic_write_json(
        path,
        {
            "version": version,
            "generated_at": "2026-11-28T00:00:00+00:00",
            "summary_statistics": {"lastyear_activity": {"count": 9000, "mean": 120.5, "median": 80.0}},
            "missing_data": {"lastmonth_activity": {"missing": 270, "share": 0.03}},
            "execution_time": {"ingestion_seconds": 0.2, "training_seconds": 3.1},
            "outdated_packages": {"packages": []},
            "data_drift": {"drifted": False},
            "warnings": [],
        },
    )
    return path


def rewrite_config(config: Config, **overrides) -> Config:
    """The same project with some config keys changed."""
    values = json.loads(config.path.read_text(encoding="utf-8"))
    values.update(overrides)
    config.path.write_text(json.dumps(values, indent=2), encoding="utf-8")
    return load_config(config.path)


def add_region(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A skewed categorical column (some regions rare, some values missing) that matters a little."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(REGIONS) + 1)
    region = rng.choice(REGIONS, size=len(frame), p=weights / weights.sum()).astype(object)
    region[rng.random(len(frame)) < 0.05] = None
    frame = frame.copy()
    frame.insert(1, "region", region)
    return frame


def deploy_categorical_project(folder: Path) -> Config:
    """A project whose data has a categorical feature, deployed by fullprocess."""
    config = write_config(folder)
    for seed, (relative, frame) in enumerate(sampledata.build_sample().items()):
        path = sampledata.destination(config, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(add_region(frame, seed).to_csv(index=False, float_format="%.0f"), encoding="utf-8")
    assert fullprocess.main(["--config", str(config.path)]) == 0
    return config


def deploy_uninformative_version(config: Config) -> str:
    """Deploy the trained model again, its metadata and scores written as training and scoring
    write them for a model no better than chance (real files: the deployment verifies them)."""
    metadata_path = config.model_folder / "trainedmodel.json"
    metadata = json.loads(metadata_path.read_text())
    metadata.update(uninformative=True, warnings=[UNINFORMATIVE_WARNING])
    metadata_path.write_text(json.dumps(metadata, indent=2))
    scores_path = config.model_folder / "scores.json"
    scores = json.loads(scores_path.read_text())
    scores.update(warnings=[SCORES_WARNING], test_rows_in_training=4, test_rows_in_training_share=0.8)
    scores_path.write_text(json.dumps(scores, indent=2))
    return deployment.deploy_model(config, reason="an uninformative retrain")
