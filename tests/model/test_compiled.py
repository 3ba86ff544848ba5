"""risk.model.compiled: the compiled scorers give scikit-learn's probabilities (to 1e-9) on the whole test set,
and a model that cannot be compiled is served by scikit-learn."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import FixedThresholdClassifier

from risk.data import sample as data_sample
from risk.model import batches, pipelines, scoring, treelite_predict
from risk.model import compiled as model_compiled
from tests.conftest import add_region

TOLERANCE = 1e-9
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
SMALLER = {  # the pipeline's own structure, with fewer trees to keep the test quick
    "logistic_regression": {},
    "hist_gradient_boosting": {"classifier__max_iter": 100},
    "random_forest": {"classifier__n_estimators": 60, "classifier__n_jobs": 1},
}
KINDS = {
    "logistic_regression": "numpy:logistic_regression",
    "hist_gradient_boosting": "treelite:hist_gradient_boosting",
    "random_forest": "treelite:random_forest",
    "blend": "blend(numpy:logistic_regression, treelite:hist_gradient_boosting, treelite:random_forest)",
}


@pytest.fixture(scope="module")
def sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, test rows) of the sample data, with a categorical column added."""
    files = data_sample.build_sample()
    train = pd.concat(
        [add_region(f, i) for i, (name, f) in enumerate(files.items()) if name.startswith("input/")], ignore_index=True
    )
    test = add_region(files["test/testdata.csv"], 99)
    return train, test


@pytest.fixture(scope="module")
def fit(sample) -> Callable[[str, dict[str, list[str]]], FixedThresholdClassifier]:
    """``fitted`` on the sample's training rows, each (kind, features) fitted once for the module:
    every test gets its own deep copy, free to break it."""
    train, _ = sample
    done: dict[tuple, FixedThresholdClassifier] = {}

    def fit_once(name: str, features: dict[str, list[str]]) -> FixedThresholdClassifier:
        key = (name, tuple(features["numeric"]), tuple(features["categorical"]))
        if key not in done:
            done[key] = fitted(name, features, train)
        return copy.deepcopy(done[key])

    return fit_once


def fitted(name: str, features: dict[str, list[str]], train: pd.DataFrame) -> FixedThresholdClassifier:
    """A candidate as training.py wraps it; "blend": the soft-voting blend of all three pipelines."""
    if name == "blend":
        estimator = pipelines.SoftVotingBlend([(member, pipeline(member, features)) for member in SMALLER])
    else:
        estimator = pipeline(name, features)
    model = FixedThresholdClassifier(estimator, threshold=0.3, response_method="predict_proba")
    return model.fit(scoring.feature_frame(train, features), train["exited"].to_numpy())


def pipeline(name: str, features: dict[str, list[str]]):
    return pipelines.build_pipeline(name, features, seed=7).set_params(**SMALLER[name])


def one_row_at_a_time(scorer: model_compiled.Scorer, batch: batches.Batch) -> np.ndarray:
    return np.concatenate([scorer.risk(batches.slice_batch(batch, i, i + 1)) for i in range(batch.rows)])


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("categorical", [[], ["region"]], ids=["numeric", "with-categories"])
def test_compiled_scorer_matches_sklearn_on_the_whole_test_set(sample, fit, name: str, categorical: list[str]) -> None:
    train, test = sample
    features = {"numeric": NUMERIC, "categorical": categorical}
    model = fit(name, features)
    schema = batches.Schema(tuple(NUMERIC), tuple(categorical), ("corporation",))
    scorer = model_compiled.build_scorer(model, schema, train)
    assert scorer.kind == KINDS[name]  # compiled, not the fallback

    batch = batches.batch_from_frame(test, schema, max_rows=0)
    expected = model.predict_proba(scoring.feature_frame(test, features))[:, 1]
    whole = scorer.risk(batch)  # 1,000 rows: the large-batch path
    singles = one_row_at_a_time(scorer, batch)  # the compiled single-row path
    small = np.concatenate([scorer.risk(batches.slice_batch(batch, i, i + 40)) for i in range(0, batch.rows, 40)])
    for risk in (whole, singles, small):
        assert np.max(np.abs(risk - expected)) <= TOLERANCE
        assert ((risk >= model.threshold).astype(int) == model.predict(scoring.feature_frame(test, features))).all()


def test_more_categories_than_the_encoder_keeps_and_unseen_ones(sample, fit) -> None:
    train, test = sample
    features = {"numeric": NUMERIC, "categorical": ["region"]}
    model = fit("logistic_regression", features)
    encoder = model.estimator_.named_steps["preprocess"].named_transformers_["categorical"].named_steps["encode"]
    assert len(encoder.infrequent_categories_[0])  # 60 regions > max_categories=50
    schema = batches.Schema(tuple(NUMERIC), ("region",), ())
    scorer = model_compiled.build_scorer(model, schema, train)
    rare = list(encoder.infrequent_categories_[0][:3])
    frame = pd.DataFrame(
        {**{n: [1.0, np.nan, 3.0, 4.0, 5.0, 6.0] for n in NUMERIC}, "region": rare + ["never-seen", None, "region00"]}
    )
    batch = batches.batch_from_frame(frame, schema, max_rows=0)
    expected = model.predict_proba(scoring.feature_frame(frame, features))[:, 1]
    assert np.max(np.abs(scorer.risk(batch) - expected)) <= TOLERANCE
    assert model_compiled.unseen_categories(model_compiled.known_categories(model), batch, schema) == {"region": 1}


def test_a_model_it_cannot_compile_is_served_by_sklearn(sample) -> None:
    train, test = sample
    features = {"numeric": NUMERIC, "categorical": []}
    pipeline = pipelines.build_pipeline("logistic_regression", features, seed=7)
    pipeline.steps[-1] = ("classifier", DummyClassifier(strategy="prior"))
    model = FixedThresholdClassifier(pipeline, threshold=0.3, response_method="predict_proba")
    model.fit(scoring.feature_frame(train, features), train["exited"].to_numpy())
    schema = batches.Schema(tuple(NUMERIC), (), ())
    scorer = model_compiled.build_scorer(model, schema, train)
    assert scorer.kind == "scikit-learn"
    batch = batches.batch_from_frame(test, schema, max_rows=0)
    np.testing.assert_array_equal(scorer.risk(batch), model.predict_proba(scoring.feature_frame(test, features))[:, 1])


@pytest.mark.parametrize("name", ["hist_gradient_boosting", "random_forest"])
def test_the_trees_send_missing_values_where_sklearn_does(name: str) -> None:
    """NaN features reach the trees (never after the pipeline's imputer, but a tree may see them)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(size=3000) > 0.5).astype(int)
    classifier = pipelines.build_pipeline(name, {"numeric": NUMERIC, "categorical": []}, seed=1).named_steps[
        "classifier"
    ]
    classifier.set_params(**{k.split("__", 1)[1]: v for k, v in SMALLER[name].items()}).fit(X, y)
    compiled = model_compiled._tree_ensemble(classifier, float32_features=name == "random_forest")
    expected = classifier.predict_proba(X)[:, 1]
    for small in (True, False):
        assert np.max(np.abs(compiled(X, small) - expected)) <= TOLERANCE


@pytest.mark.parametrize("name", ["hist_gradient_boosting", "blend"])
def test_a_model_treelite_cannot_import_is_served_by_sklearn_with_a_warning(sample, fit, name: str, caplog) -> None:
    """An attribute scikit-learn's predict_proba does not need but the import reads is gone (as after an
    upgrade that renames it): Treelite raises AttributeError, and scikit-learn serves instead of a load failure."""
    train, test = sample
    features = {"numeric": NUMERIC, "categorical": ["region"]}
    model = fit(name, features)
    members = [p for _, p in model.estimator_.estimators] if name == "blend" else [model.estimator_]
    gradient_boosting = next(
        p.named_steps["classifier"] for p in members if "Gradient" in type(p.named_steps["classifier"]).__name__
    )
    del gradient_boosting.n_features_in_
    expected = model.predict_proba(scoring.feature_frame(test, features))[:, 1]  # scikit-learn still scores it
    schema = batches.Schema(tuple(NUMERIC), ("region",), ())
    with caplog.at_level(logging.WARNING, logger=model_compiled.__name__):
        scorer = model_compiled.build_scorer(model, schema, train)
    assert scorer.kind == "scikit-learn"
    assert any("could not be compiled" in r.getMessage() and "AttributeError" in r.getMessage() for r in caplog.records)
    batch = batches.batch_from_frame(test, schema, max_rows=0)
    np.testing.assert_array_equal(scorer.risk(batch), expected)


@pytest.mark.parametrize("rows", [1, model_compiled.SMALL_BATCH_ROWS + 1])
def test_a_value_beyond_float32_is_refused_by_the_compiled_forest_as_by_sklearn(sample, fit, rows: int) -> None:
    """scikit-learn's forest refuses a feature too large for float32 (the API answers 400); the compiled
    small-batch path made it infinite and answered with a probability, so one row got 200 and the
    same row among 129 got 400."""
    train, _ = sample
    features = {"numeric": NUMERIC, "categorical": []}
    model = fit("random_forest", features)
    schema = batches.Schema(tuple(NUMERIC), (), ())
    scorer = model_compiled.build_scorer(model, schema, train)
    assert scorer.kind == KINDS["random_forest"]
    frame = pd.DataFrame({name: [1e300 if name == "lastyear_activity" else 5.0] * rows for name in NUMERIC})
    with pytest.raises(ValueError, match="too large"), np.errstate(over="ignore"):  # its cast to float32 warns first
        model.predict_proba(scoring.feature_frame(frame, features))
    with pytest.raises(ValueError, match="too large"):
        scorer.risk(batches.batch_from_frame(frame, schema, max_rows=0))


def test_a_value_scaled_past_float64_is_refused_by_the_compiled_logistic_regression_as_by_sklearn() -> None:
    """A share (standard deviation well below 1) sent as 1.7e308 scales to infinity: scikit-learn refuses it,
    the compiled logistic regression answered a probability of 1."""
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({name: rng.random(400) for name in NUMERIC})
    y = (frame[NUMERIC[0]] + rng.normal(0, 0.2, 400) > 0.5).astype(int).to_numpy()
    features = {"numeric": NUMERIC, "categorical": []}
    model = FixedThresholdClassifier(
        pipeline("logistic_regression", features), threshold=0.5, response_method="predict_proba"
    ).fit(frame, y)
    schema = batches.Schema(tuple(NUMERIC), (), ())
    scorer = model_compiled.build_scorer(model, schema, frame)
    assert scorer.kind == KINDS["logistic_regression"]
    row = pd.DataFrame({name: [1.7e308 if name == NUMERIC[0] else 0.5] for name in NUMERIC})
    with pytest.raises(ValueError, match="infinity"), np.errstate(over="ignore"):
        model.predict_proba(row)
    with pytest.raises(ValueError, match="infinity"), np.errstate(over="ignore"):
        scorer.risk(batches.batch_from_frame(row, schema, max_rows=0))


def awkward_rows(test: pd.DataFrame) -> pd.DataFrame:
    """Test rows with a missing number in each numeric column in turn, missing and unseen regions."""
    frame = test.head(12).copy()
    for position, name in enumerate(NUMERIC):
        frame.loc[frame.index[position::4], name] = np.nan
    frame.loc[frame.index[::3], "region"] = None
    frame.loc[frame.index[1::5], "region"] = "never-seen"
    frame.loc[frame.index[-1], NUMERIC] = np.nan  # every number missing at once
    return frame


@pytest.mark.parametrize("name", list(KINDS))
def test_single_rows_and_small_batches_with_missing_values_and_unseen_categories_are_exact(
    sample, fit, name: str
) -> None:
    train, test = sample
    features = {"numeric": NUMERIC, "categorical": ["region"]}
    model = fit(name, features)
    schema = batches.Schema(tuple(NUMERIC), ("region",), ())
    scorer = model_compiled.build_scorer(model, schema, train)
    assert scorer.kind == KINDS[name]
    frame = awkward_rows(test)
    batch = batches.batch_from_frame(frame, schema, max_rows=0)
    assert batch.missing_values(schema) and model_compiled.unseen_categories(
        model_compiled.known_categories(model), batch, schema
    )
    expected = model.predict_proba(scoring.feature_frame(frame, features))[:, 1]
    for size in (1, 2, 5, batch.rows):
        risk = np.concatenate(
            [scorer.risk(batches.slice_batch(batch, i, i + size)) for i in range(0, batch.rows, size)]
        )
        assert np.max(np.abs(risk - expected)) <= TOLERANCE, size


def test_a_blend_whose_members_were_fitted_on_different_rows_keeps_each_ones_preprocessing(sample) -> None:
    """Members fitted on the same rows share one compiled preprocessing; members fitted apart must not."""
    train, test = sample
    features = {"numeric": NUMERIC, "categorical": ["region"]}
    X, y = scoring.feature_frame(train, features), train["exited"].to_numpy()
    halves = [slice(None, len(train) // 2), slice(len(train) // 2, None)]
    members = [(member, pipeline(member, features).fit(X[rows], y[rows])) for member, rows in zip(SMALLER, halves * 2)]
    blend = pipelines.SoftVotingBlend(members)
    blend.classes_ = np.array([0, 1])
    model = FixedThresholdClassifier(blend, threshold=0.3, response_method="predict_proba")
    model.estimator_ = blend
    schema = batches.Schema(tuple(NUMERIC), ("region",), ())
    scorer = model_compiled.build_scorer(model, schema, train)
    assert scorer.kind == KINDS["blend"]
    assert len(scorer._preprocessors) == 2  # the first and third members were fitted on the same half
    frame = awkward_rows(test)
    batch = batches.batch_from_frame(frame, schema, max_rows=0)
    expected = model.predict_proba(scoring.feature_frame(frame, features))[:, 1]
    assert np.max(np.abs(one_row_at_a_time(scorer, batch) - expected)) <= TOLERANCE


def test_gtil_refuses_rows_of_the_wrong_width_before_reading_them() -> None:
    """The C call reads rows x features doubles through a raw pointer: a narrower matrix must never reach it."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 2, 300)
    classifier = RandomForestClassifier(n_estimators=5, random_state=1).fit(X, y)
    predictor = treelite_predict.TreelitePredictor(classifier)
    np.testing.assert_allclose(predictor.positive(X[:3]), classifier.predict_proba(X[:3])[:, 1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="rows of 4 features"):
        predictor.positive(X[:3, :3])


SHARED_DATASETS = {  # file: (target, positive label, identifier columns)
    "bank_churn_modelling.csv": ("Exited", 1, ["RowNumber", "CustomerId", "Surname"]),
    "german_credit_kaggle.csv": ("Risk", "bad", ["Unnamed: 0"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("file", list(SHARED_DATASETS))
def test_every_kind_is_exact_one_row_at_a_time_on_the_shared_datasets(shared_data, file: str) -> None:
    """Real categories (German credit's written NA among them), each kind as training builds it."""
    target, positive, ids = SHARED_DATASETS[file]
    frame = pd.read_csv(shared_data / file).drop(columns=ids)
    columns = [c for c in frame.columns if c != target]
    features = {
        "numeric": [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])],
        "categorical": [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])],
    }
    train, test = frame.iloc[: len(frame) * 7 // 10], frame.iloc[len(frame) * 7 // 10 :].head(150).copy()
    test.iloc[::7, test.columns.get_loc(features["numeric"][0])] = np.nan
    test.iloc[1::7, test.columns.get_loc(features["categorical"][0])] = "never-seen"
    test.iloc[2::7, test.columns.get_loc(features["categorical"][-1])] = np.nan
    X, y = scoring.feature_frame(train, features), scoring.binary_target(train[target], positive)
    fitted_pipelines = [
        (name, pipelines.build_pipeline(name, features, 0, rows=len(y)).fit(X, y)) for name in pipelines.SEARCH_SPACE
    ]
    blend = pipelines.SoftVotingBlend(fitted_pipelines)
    blend.classes_ = np.array([0, 1])
    schema = batches.Schema(tuple(features["numeric"]), tuple(features["categorical"]), ())
    batch = batches.batch_from_frame(test, schema, max_rows=0)
    for name, estimator in [*fitted_pipelines, ("blend", blend)]:
        model = FixedThresholdClassifier(estimator, threshold=0.3, response_method="predict_proba")
        model.estimator_ = estimator
        scorer = model_compiled.build_scorer(model, schema, X)
        assert scorer.kind == KINDS[name]
        expected = model.predict_proba(scoring.feature_frame(test, features))[:, 1]
        assert np.max(np.abs(one_row_at_a_time(scorer, batch) - expected)) <= TOLERANCE, name
        assert np.max(np.abs(scorer.risk(batch) - expected)) <= TOLERANCE, name
