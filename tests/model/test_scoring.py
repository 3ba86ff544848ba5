"""risk.model.scoring: metrics on the test data, written as latestscore.txt and scores.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from risk.core.settings import Config
from risk.data import ingest, masterstore
from risk.model import scoring, training


@pytest.fixture
def trained(project: Config) -> Config:
    ingest.ingest_new_files(project)
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


def write_test_file(config: Config, frame: pd.DataFrame) -> None:
    frame.to_csv(config.test_data_folder / "testdata.csv", index=False)


def test_held_out_test_data_has_no_warnings(trained: Config) -> None:
    scores = scoring.score_model(trained)
    overlap = scores["test_rows_in_training"]
    assert scores["test_rows_in_training_share"] == overlap / scores["rows"]
    assert overlap == 0, "the sample's test clients are other clients (28 share every feature value and label)"
    assert not any("standard errors above" in w or "one class" in w for w in scores["warnings"])


def test_test_rows_found_in_the_training_data_are_counted_and_warned_about(trained: Config) -> None:
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    baseline = scoring.score_model(trained)["test_rows_in_training"]
    master = masterstore.load_master(trained)
    copied = master.sample(300, random_state=1)
    write_test_file(trained, pd.concat([test, copied], ignore_index=True))

    scores = scoring.score_model(trained)

    assert scores["test_rows_in_training"] == baseline + 300
    assert scores["test_rows_in_training_share"] == pytest.approx((baseline + 300) / (len(test) + 300))
    assert any(f"{baseline + 300} of the {len(test) + 300} test rows" in w for w in scores["warnings"])
    saved = json.loads((trained.model_folder / "scores.json").read_text())
    assert saved["test_rows_in_training"] == baseline + 300 and saved["warnings"] == scores["warnings"]
    # Without the id column the rows are matched on feature values and label alone.
    write_test_file(trained, copied.drop(columns=["corporation"]))
    assert scoring.score_model(trained)["test_rows_in_training"] == 300


def test_a_test_score_far_above_the_cross_validated_one_is_a_warning(trained: Config) -> None:
    model, metadata = scoring.load_trained_model(trained)
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    X = scoring.feature_frame(test, metadata["features"])
    easy = test[model.predict(X) == test["exited"]]  # only the rows the model gets right
    write_test_file(trained, easy)

    scores = scoring.score_model(trained)

    assert scores["f1"] == 1.0
    assert any("standard errors above the cross-validated" in w for w in scores["warnings"])


def test_a_test_set_of_one_class_is_a_warning(trained: Config) -> None:
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    write_test_file(trained, test[test["exited"] == 0])

    scores = scoring.score_model(trained)

    assert any("holds one class only" in w and "negative class" in w for w in scores["warnings"])
