"""training.py: candidate pipelines, selection, metadata, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ingestion
import scoring
import training
from settings import Config
from tests.conftest import write_config


@pytest.fixture
def ingested(project: Config) -> Config:
    ingestion.ingest_new_files(project)
    return project


def test_features_exclude_target_ids_and_dropped_columns(ingested: Config) -> None:
    kinds = ingestion.column_kinds(ingested)
    assert training.feature_types(ingested, kinds) == {
        "numeric": ["lastmonth_activity", "lastyear_activity", "number_of_employees"],
        "categorical": [],
    }
    dropping = write_config(ingested.root, drop_columns=["lastyear_activity"], categorical_columns=["number_of_employees"])
    assert training.feature_types(dropping, kinds) == {
        "numeric": ["lastmonth_activity"],
        "categorical": ["number_of_employees"],
    }


def test_best_candidate_is_chosen_by_cv_and_saved_with_metadata(ingested: Config) -> None:
    config = write_config(ingested.root, candidate_models=["logistic_regression", "hist_gradient_boosting"])

    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)

    candidates = metadata["candidates"]
    assert set(candidates) == {"logistic_regression", "hist_gradient_boosting"}
    assert metadata["model"] == max(candidates, key=lambda name: candidates[name]["mean"])
    assert all(len(c["folds"]) == 3 for c in candidates.values())
    assert metadata["threshold"] == candidates[metadata["model"]]["threshold"]
    assert metadata["training_rows"] == 7500
    assert metadata["package_versions"]["scikit-learn"]
    assert [f["name"] for f in metadata["training_files"]] == sorted(p.name for p in config.input_folder.iterdir())
    saved = json.loads((config.model_folder / "trainedmodel.json").read_text())
    assert saved["model_sha256"] and saved["training_data_sha256"]
    loaded, _ = scoring.load_trained_model(config)
    X = scoring.feature_frame(ingestion.load_master(config).head(50), metadata["features"])
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_training_is_deterministic(ingested: Config) -> None:
    first_model, first = training.train_model(ingested)
    second_model, second = training.train_model(ingested)

    assert first["candidates"] == second["candidates"]
    X = scoring.feature_frame(ingestion.load_master(ingested), first["features"])
    np.testing.assert_array_equal(first_model.predict_proba(X), second_model.predict_proba(X))


def test_decision_threshold_flags_more_of_the_minority_class_than_half(ingested: Config) -> None:
    model, metadata = training.train_model(ingested)
    assert 0.05 <= metadata["threshold"] < 0.5
    X = scoring.feature_frame(ingestion.load_master(ingested), metadata["features"])
    np.testing.assert_array_equal(model.predict(X), (model.predict_proba(X)[:, 1] >= metadata["threshold"]).astype(int))


def test_a_single_class_is_a_clear_error(tmp_path) -> None:
    config = write_config(tmp_path)
    config.input_folder.mkdir()
    rows = "".join(f"c{i},{i},{i * 12},{i + 1},0\n" for i in range(30))
    (config.input_folder / "a.csv").write_text(
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n" + rows
    )
    ingestion.ingest_new_files(config)

    with pytest.raises(training.TrainingError, match="at least 3 rows of each class"):
        training.train_model(config)
