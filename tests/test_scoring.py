"""scoring.py: metrics on the test data, written as latestscore.txt and scores.json."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

import ingestion
import scoring
import training
from settings import Config


@pytest.fixture
def trained(project: Config) -> Config:
    ingestion.ingest_new_files(project)
    model, metadata = training.train_model(project)
    training.save_model(project, model, metadata)
    return project


def test_scores_match_scikit_learn_and_are_written(trained: Config) -> None:
    scores = scoring.score_model(trained)

    model, metadata = scoring.load_trained_model(trained)
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    X = scoring.feature_frame(test, metadata["features"])
    predicted, risk = model.predict(X), model.predict_proba(X)[:, 1]
    assert scores["f1"] == metrics.f1_score(test["exited"], predicted)
    assert scores["roc_auc"] == metrics.roc_auc_score(test["exited"], risk)
    assert scores["confusion"]["tp"] == int(((predicted == 1) & (test["exited"] == 1)).sum())
    assert sum(scores["confusion"].values()) == scores["rows"] == len(test)
    assert float((trained.model_folder / "latestscore.txt").read_text()) == scores["f1"]
    assert json.loads((trained.model_folder / "scores.json").read_text()) == scores
    assert scores["roc_auc"] > 0.75, "the sample data has a learnable signal"


def test_text_labels_map_to_the_positive_class() -> None:
    np.testing.assert_array_equal(scoring.binary_target(pd.Series(["good", "bad ", "bad"]), "bad"), [0, 1, 1])
    np.testing.assert_array_equal(scoring.binary_target(pd.Series([0, 1, 1]), 1), [0, 1, 1])
    np.testing.assert_array_equal(scoring.binary_target(pd.Series(["Yes", "No"]), "Yes"), [1, 0])


def test_single_class_leaves_auc_undefined_rather_than_failing() -> None:
    result = scoring.classification_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.3, 0.9]), np.array([0, 0, 0, 1]))
    assert result["roc_auc"] is None and result["f1"] == 0.0 and result["confusion"]["fp"] == 1


def test_test_data_without_target_or_feature_is_a_clear_error(trained: Config) -> None:
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    test.drop(columns=["exited"]).to_csv(trained.test_data_folder / "testdata.csv", index=False)
    with pytest.raises(scoring.ScoringError, match="target column 'exited'"):
        scoring.score_model(trained)
    test.drop(columns=["lastyear_activity"]).to_csv(trained.test_data_folder / "testdata.csv", index=False)
    with pytest.raises(scoring.ScoringError, match="lastyear_activity"):
        scoring.score_model(trained)
