"""risk.model.scoring: metrics on the test data, written as latestscore.txt and scores.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from threadpoolctl import threadpool_limits

from risk.core.settings import Config
from risk.data import ingest, masterstore
from risk.model import scoring, training
from tests.conftest import private_copy, rewrite_config, write, write_config


@pytest.fixture(scope="module")
def trained_template(project_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample project ingested and trained, once for the module."""
    config = private_copy(project_template, tmp_path_factory.mktemp("trained"))
    with threadpool_limits(limits=1):  # as the per-test single_threaded fixture, which starts after this one
        ingest.ingest_new_files(config)
        model, metadata = training.train_model(config)
        training.save_model(config, model, metadata)
    return config.root


@pytest.fixture
def trained(trained_template: Path, tmp_path: Path) -> Config:
    """A private copy of the trained project, safe to change."""
    return private_copy(trained_template, tmp_path)


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
    # A client of the training data with other values is another row: the id alone does not count.
    changed = copied.assign(lastmonth_activity=-12345)  # a value no training row has
    write_test_file(trained, pd.concat([test, changed.iloc[:100], copied.iloc[100:]], ignore_index=True))
    assert scoring.score_model(trained)["test_rows_in_training"] == baseline + 200


def test_a_test_score_far_above_the_cross_validated_one_is_a_warning(trained: Config) -> None:
    model, metadata = scoring.load_trained_model(trained)
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    X = scoring.feature_frame(test, metadata["features"])
    easy = test[model.predict(X) == test["exited"]]  # only the rows the model gets right
    write_test_file(trained, easy)

    scores = scoring.score_model(trained)

    assert scores["f1"] == 1.0
    assert any("standard errors above the cross-validated" in w for w in scores["warnings"])


def test_a_test_set_copied_from_the_training_data_scores_far_above_cross_validation(project: Config) -> None:
    # The operator copied the training data into the test folder; a model that fits its training rows
    # closely (boosted trees) then scores far above its cross-validated score, beyond both errors.
    config = rewrite_config(project, candidate_models=["hist_gradient_boosting"])
    ingest.ingest_new_files(config)
    training.save_model(config, *training.train_model(config))
    write_test_file(config, masterstore.load_master(config))

    scores = scoring.score_model(config)

    assert any("standard errors above the cross-validated" in w for w in scores["warnings"]), scores["warnings"]


def loan_book(rows: int, seed: int) -> pd.DataFrame:
    """A synthetic book: three skewed activity figures, one client in five leaving, a noisy logistic signal."""
    rng = np.random.default_rng(seed)
    month, year, employees = (
        rng.gamma(2.0, 50.0, rows).round(),
        rng.gamma(2.0, 400.0, rows).round(),
        rng.integers(1, 500, rows),
    )
    signal = -1.6 + 0.01 * (month - 100) - 0.001 * (year - 800) + 0.002 * (employees - 250) + rng.normal(0, 1.0, rows)
    return pd.DataFrame(
        {
            "corporation": [f"c{i}" for i in range(rows)],
            "lastmonth_activity": month,
            "lastyear_activity": year,
            "number_of_employees": employees,
            "exited": (rng.random(rows) < 1 / (1 + np.exp(-signal))).astype(int),
        }
    )


@pytest.mark.slow
def test_a_large_book_with_an_honest_random_test_split_is_no_warning(tmp_path) -> None:
    # 50,000 clients, the test rows a random 30% of them. The test f1 lands 0.012 above the
    # cross-validated one: 6 fold standard errors (0.002), but the test score's own error on
    # 15,000 rows is about 0.006, so the gap is well within the two combined.
    config = write_config(tmp_path / "book")
    book = loan_book(50_000, seed=6)
    test = book.sample(frac=0.3, random_state=6)
    write(config.input_folder / "book.csv", book.drop(test.index).to_csv(index=False))
    write(config.test_data_folder / "testdata.csv", test.to_csv(index=False))
    ingest.ingest_new_files(config)
    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)

    scores = scoring.score_model(config)

    folds = metadata["candidates"][metadata["model"]]["folds"]
    fold_error = np.std(folds, ddof=1) / np.sqrt(len(folds))
    assert scores["f1"] - np.mean(folds) > 3 * fold_error, "the case the fold error alone misjudges"
    assert 0.004 < scores["test_standard_error"] < 0.009
    assert not any("standard errors" in w for w in scores["warnings"]), scores["warnings"]


def test_the_test_scores_standard_error_is_a_bootstrap_over_the_test_rows() -> None:
    # The multinomial draw of the confusion counts stands for resampling the rows: compare with the real
    # thing. The closed forms for the ranking metrics err on the side of a larger error (fewer warnings).
    costs = {"false_negative": 5, "false_positive": 1}
    rng = np.random.default_rng(3)
    y = (rng.random(2_000) < 0.25).astype(int)
    risk = np.clip(0.25 + 0.4 * (y - 0.25) + rng.normal(0, 0.2, len(y)), 0, 1)
    predicted = (risk >= 0.4).astype(int)
    scores = scoring.classification_metrics(y, risk, predicted, costs)
    resampled = [rng.integers(0, len(y), len(y)) for _ in range(200)]
    for metric in (
        "f1",
        "precision",
        "recall",
        "accuracy",
        "balanced_accuracy",
        "cost",
        "roc_auc",
        "average_precision",
    ):
        by_rows = np.std([scoring.metric_value(metric, y[i], risk[i], predicted[i], costs) for i in resampled], ddof=1)
        estimate = scoring.standard_error_of_test_score(metric, scores, costs)
        if metric in ("roc_auc", "average_precision"):
            assert by_rows * 0.9 < estimate < by_rows * 1.4, metric
        else:
            assert estimate == pytest.approx(by_rows, rel=0.15), metric


def test_a_test_set_of_one_class_is_a_warning(trained: Config) -> None:
    test = pd.read_csv(trained.test_data_folder / "testdata.csv")
    write_test_file(trained, test[test["exited"] == 0])

    scores = scoring.score_model(trained)

    assert any("holds one class only" in w and "negative class" in w for w in scores["warnings"])


def test_decisions_from_the_risk_are_the_models_own_predictions() -> None:
    """A fixed-threshold model's decisions come from its probabilities, not a second prediction:
    the same 0/1 as its predict, a risk exactly at the threshold flagged; other models predict again."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.integers(0, 3, 400).astype(float)})
    y = (X["a"] + rng.normal(size=400) > 0.5).astype(int)
    plain = LogisticRegression().fit(X, y)
    at = float(np.sort(plain.predict_proba(X)[:, 1])[200])  # a risk some row has exactly
    for labels in (y, y.astype(float)):
        model = FixedThresholdClassifier(plain, threshold=at, response_method="predict_proba").fit(X, labels)
        risk, decided = scoring.risk_and_decisions(model, X)
        assert np.array_equal(risk, model.predict_proba(X)[:, 1])
        assert np.array_equal(decided, model.predict(X).astype(int)) and decided.sum() == 200
        assert scoring._decides_on_probability(model)
    assert not scoring._decides_on_probability(plain)
    assert np.array_equal(scoring.risk_and_decisions(plain, X)[1], plain.predict(X))


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["a", None, "b", np.nan], dtype=object),
        pd.Series(["a", None, "b"], dtype=object).astype("category"),
        pd.Series(["a", None, "b"], dtype="string"),
        pd.Series(["a", 1, None, 2.5, np.nan, pd.NA, True], dtype=object),
        pd.Series([1, 2, None]).astype("category"),
        pd.Series([np.nan, None], dtype=object),
        pd.Series([1.0, np.nan]),
        pd.Series([], dtype=object),
    ],
)
def test_categorical_features_are_the_text_the_value_by_value_conversion_gives(values: pd.Series) -> None:
    """Text columns skip the value-by-value conversion; the result is what it gives, types included."""
    expected = (
        values.astype("object")
        .where(values.notna(), np.nan)
        .map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
    )
    found = scoring.feature_frame(pd.DataFrame({"c": values}), {"numeric": [], "categorical": ["c"]})["c"]
    assert found.dtype == expected.dtype
    assert [type(v) for v in found] == [type(v) for v in expected]
    pd.testing.assert_series_equal(found, expected, check_names=False)
