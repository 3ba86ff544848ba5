"""risk/model/explain.py: the reasons, exact baseline Shapley values against the typical client."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.model_selection import FixedThresholdClassifier
from threadpoolctl import threadpool_limits

from risk.model import explain, pipelines
from tests.conftest import REAL_DATASETS

FEATURES = {"numeric": ["age", "balance", "score"], "categorical": ["sector", "plan"]}
NAMES = FEATURES["numeric"] + FEATURES["categorical"]
LOG_ODDS = ("logistic_regression", "hist_gradient_boosting")  # the kinds whose own attributions are in log-odds


def synthetic(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Few features, missing values in a numeric and a categorical one, a label that depends on all of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, rows).round(),
            "balance": rng.integers(0, 50, rows).astype(float),
            "score": rng.normal(size=rows),
            "sector": rng.choice(["retail", "services", "industry"], rows),
            "plan": rng.choice(["basic", "premium"], rows),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "score"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "sector"] = np.nan
    signal = (
        (frame.age - 40) / 10
        + (frame.balance > 20)
        + (frame.sector == "retail")
        + frame.score.fillna(2)
        + (frame.plan == "basic") * 0.5
    )
    y = (signal + rng.normal(size=rows) * 0.5 > 1).astype(int).to_numpy()
    return frame, y


def fitted_models(frame: pd.DataFrame, y: np.ndarray) -> dict[str, FixedThresholdClassifier]:
    """Each kind as training builds and saves it (behind a fixed threshold), and their blend."""
    fitted = {
        name: pipelines.build_pipeline(name, FEATURES, 0, rows=len(y)).fit(frame, y) for name in pipelines.SEARCH_SPACE
    }
    blend = pipelines.SoftVotingBlend(list(fitted.items()))
    blend.classes_ = np.array([0, 1])
    models = {}
    for name, estimator in [*fitted.items(), (pipelines.BLEND, blend)]:
        models[name] = FixedThresholdClassifier(estimator, threshold=0.3, response_method="predict_proba")
        models[name].estimator_ = estimator
    return models


@pytest.fixture(scope="module")
def trained() -> tuple[pd.DataFrame, dict[str, FixedThresholdClassifier], dict]:
    frame, y = synthetic()
    with threadpool_limits(limits=1):  # set up before the per-test single thread: OpenMP spinning made it 15x slower
        models = fitted_models(frame, y)
    return frame, models, explain.typical_client(frame, FEATURES)


def reference(typical: dict) -> pd.DataFrame:
    return pd.DataFrame({name: [np.nan if typical[name] is None else typical[name]] for name in NAMES})


def brute_force(model, kind: str, row: pd.DataFrame, typical: dict) -> np.ndarray:
    """Shapley values by enumerating every coalition of features: hybrid rows scored by predict_proba, in
    log-odds for the kinds that add up log-odds, then scaled to probability points as the module does."""
    base = reference(typical)
    coalitions = list(itertools.product([False, True], repeat=len(NAMES)))
    hybrids = pd.concat(
        [base.assign(**{name: row[name].to_numpy() for name, on in zip(NAMES, taken) if on}) for taken in coalitions],
        ignore_index=True,
    )
    risk = model.predict_proba(hybrids)[:, 1]
    value = dict(zip(coalitions, logit(risk) if kind in LOG_ODDS else risk))
    count = len(NAMES)
    phi = np.zeros(count)
    for j in range(count):
        for taken in coalitions:
            if not taken[j]:
                size = sum(taken)
                weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
                phi[j] += weight * (value[taken[:j] + (True,) + taken[j + 1 :]] - value[taken])
    if kind in LOG_ODDS:
        phi *= (risk[-1] - risk[0]) / phi.sum()  # the last coalition is the client, the first the typical client
    return phi


def test_typical_client_is_the_median_and_the_most_common_category() -> None:
    frame = pd.DataFrame(
        {
            "age": [1.0, 2.0, np.nan, 10.0],
            "balance": [np.nan] * 4,
            "score": [0.5, 0.5, 0.5, 0.5],
            "sector": ["b", "a", "b", np.nan],
            "plan": [np.nan, np.nan, np.nan, np.nan],
        }
    )
    typical = explain.typical_client(frame, FEATURES)
    assert typical == {"age": 2.0, "balance": None, "score": 0.5, "sector": "b", "plan": None}
    assert all(type(value) in (float, str, type(None)) for value in typical.values())  # JSON-safe


WALKS = {  # the trees' three walks: many rows at once, one row at a time, paths wider than a bit set
    "many": {},
    "one": {"SCALAR_ROWS": 100},
    "wide": {"MAX_SLOTS": 1},
}


@pytest.fixture(scope="module")
def brute_forced(trained):
    """``kind``'s brute-force Shapley values of the first rows, each kind computed once for the module: they
    do not depend on the walk, and a blend's are its members' (the enumeration took most of these tests' time)."""
    frame, models, typical = trained
    computed: dict[tuple[str, int], np.ndarray] = {}

    def values(kind: str, rows: int) -> np.ndarray:
        if (kind, rows) not in computed:
            computed[kind, rows] = np.array(
                [brute_force(models[kind], kind, frame.iloc[[i]], typical) for i in range(rows)]
            )
        return computed[kind, rows]

    return values


@pytest.mark.parametrize(
    ("kind", "walk"),
    [  # a logistic regression has no trees to walk
        (kind, walk)
        for kind in [*pipelines.SEARCH_SPACE, pipelines.BLEND]
        for walk in WALKS
        if kind != "logistic_regression" or walk == "many"
    ],
)
def test_contributions_are_the_exact_shapley_values(trained, brute_forced, kind: str, walk: str, monkeypatch) -> None:
    frame, models, typical = trained
    for name, value in WALKS[walk].items():
        monkeypatch.setattr(explain, name, value)
    rows = frame.iloc[:12]
    explainer = explain.Explainer(models[kind], FEATURES, typical)
    assert explainer.feature_names == NAMES
    got = explainer.contributions(rows)
    if kind == pipelines.BLEND:
        members = [name for name, _ in models[kind].estimator_.estimators]
        expected = np.mean([brute_forced(m, len(rows)) for m in members], axis=0)
    else:
        expected = brute_forced(kind, len(rows))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # Efficiency: the contributions add up to the client's risk less the typical client's.
    gap = models[kind].predict_proba(rows)[:, 1] - models[kind].predict_proba(reference(typical))[0, 1]
    np.testing.assert_allclose(got.sum(axis=1), gap, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", [*pipelines.SEARCH_SPACE, pipelines.BLEND])
def test_a_feature_at_its_typical_value_gets_zero_and_is_never_a_reason(trained, kind: str) -> None:
    frame, models, typical = trained
    explainer = explain.Explainer(models[kind], FEATURES, typical)
    rows = frame.iloc[:200].copy()
    rows["balance"] = typical["balance"]
    rows.loc[rows.index[::2], "sector"] = typical["sector"]
    contributions = explainer.contributions(rows)
    assert (contributions[:, NAMES.index("balance")] == 0).all()
    assert (contributions[::2, NAMES.index("sector")] == 0).all()
    reasons = explainer.reasons(rows, top=5)
    assert not any(reason.startswith("balance =") for row in reasons for reason in row)
    assert not any(reason.startswith("sector =") for row in reasons[::2] for reason in row)
    # The typical client itself has no reason at all.
    assert explainer.reasons(reference(typical)) == [[]]
    np.testing.assert_array_equal(explainer.contributions(reference(typical)), 0.0)


@pytest.mark.parametrize("kind", [*pipelines.SEARCH_SPACE, pipelines.BLEND])
def test_reasons_name_only_what_raises_the_risk_largest_first(trained, kind: str) -> None:
    frame, models, typical = trained
    explainer = explain.Explainer(models[kind], FEATURES, typical)
    rows = frame.iloc[:300]
    contributions = explainer.contributions(rows)
    reasons = explainer.reasons(rows)
    assert len(reasons) == len(rows)
    for row, listed in enumerate(reasons):
        raising = sorted((value, NAMES[j]) for j, value in enumerate(contributions[row]) if value > 0)[::-1]
        assert [reason.split(" = ")[0] for reason in listed] == [name for _, name in raising[:3]]
        assert all(": +" in reason and not reason.endswith("+0.00") for reason in listed)
    assert any(len(listed) < 3 for listed in reasons)  # some clients have fewer features raising their risk
    assert explainer.reasons(rows.iloc[:3], top=1) == [listed[:1] for listed in reasons[:3]]


def test_reason_text_names_the_value_the_typical_value_and_the_effect(trained) -> None:
    frame, models, typical = trained
    explainer = explain.Explainer(models["logistic_regression"], FEATURES, typical)
    client = reference(typical).assign(score=np.nan, sector="retail", age=typical["age"] + 20)
    reasons = explainer.reasons(client, top=5)[0]
    contributions = explainer.contributions(client)[0]
    for name, value in [("age", str(round(typical["age"] + 20))), ("sector", "retail"), ("score", "missing")]:
        effect = contributions[NAMES.index(name)]
        assert effect > 0
        shown = explain.format_value(typical[name])
        assert f"{name} = {value} (typical {shown}): {explain.format_effect(effect)}" in reasons


def test_a_value_close_to_the_typical_one_is_never_shown_as_the_typical_one(trained) -> None:
    # 4 significant digits made a balance of 1500.4 against a typical 1500 read "balance = 1500
    # (typical 1500): +0.05": a reason that says the client is typical. Both get their digits then.
    frame, models, typical = trained
    explainer = explain.Explainer(models["logistic_regression"], FEATURES, typical)
    client = reference(typical).assign(age=typical["age"] + 0.001)
    reasons = explainer.reasons(client, top=5)[0]
    (age,) = [reason for reason in reasons if reason.startswith("age = ")]
    value, typical_text = age.removeprefix("age = ").split(": ")[0].removesuffix(")").split(" (typical ")
    assert value != typical_text and float(value) == typical["age"] + 0.001 and float(typical_text) == typical["age"]


def test_numbers_and_effects_print_plainly() -> None:
    assert [explain.format_value(v) for v in (12.0, 12.000000001, 0.1 + 0.2, -0.0442954, 1234.56, None)] == [
        "12",
        "12",
        "0.3",
        "-0.0443",
        "1235",
        "missing",
    ]
    assert [explain.format_effect(v) for v in (0.08, 0.5, 0.0049, 0.000012345, -0.031)] == [
        "+0.08",
        "+0.50",
        "+0.0049",
        "+0.000012",
        "-0.03",
    ]


def test_many_rows_are_explained_in_chunks_as_one(trained, monkeypatch) -> None:
    frame, models, typical = trained
    frame = frame.iloc[:300]  # still three chunks of 128 rows, the last one short
    explainer = explain.Explainer(models[pipelines.BLEND], FEATURES, typical)
    whole = explainer.contributions(frame)
    monkeypatch.setattr(explain, "CHUNK_ROWS", 128)
    np.testing.assert_allclose(explainer.contributions(frame), whole, rtol=0, atol=1e-12)


def test_unknown_categories_and_missing_values_are_explained(trained) -> None:
    frame, models, typical = trained
    rows = frame.iloc[:5].assign(sector="never-seen", age=np.nan)
    for kind in models:
        explainer = explain.Explainer(models[kind], FEATURES, typical)
        gap = models[kind].predict_proba(rows)[:, 1] - models[kind].predict_proba(reference(typical))[0, 1]
        np.testing.assert_allclose(explainer.contributions(rows).sum(axis=1), gap, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- faithfulness on real data

FAITHFUL_SHARE = 0.9


def trained_by_the_project(shared_data, folder, dataset: str, kind: str):
    """``kind`` trained on the whole dataset by the project's own ingestion and training."""
    from risk.data import ingest
    from risk.model import training
    from tests.conftest import write_config

    config = write_config(folder, candidate_models=[kind], **REAL_DATASETS[dataset])
    config.input_folder.mkdir(parents=True)
    (config.input_folder / dataset).write_bytes((shared_data / dataset).read_bytes())
    ingest.ingest_new_files(config)
    model, metadata = training.train_model(config, workers=1)
    from risk.data import masterstore

    return model, metadata, masterstore.load_master(config)


def faithfulness(model, threshold: float, metadata: dict, clients: pd.DataFrame) -> tuple[int, int, int]:
    """Of the clients flagged at ``threshold``: how many there are, how many have a reason, and for how
    many setting the top reason's feature to its typical value lowers the risk."""
    from risk.model.scoring import feature_frame

    features, typical = metadata["features"], metadata["typical_client"]
    frame = feature_frame(clients, features)
    risk = model.predict_proba(frame)[:, 1]
    flagged = frame[risk >= threshold]
    before = risk[risk >= threshold]
    explainer = explain.Explainer(model, features, typical)
    contributions = explainer.contributions(flagged)
    top = contributions.argmax(axis=1)
    has_reason = contributions.max(axis=1) > 0
    lowered = 0
    for j, name in enumerate(explainer.feature_names):
        chosen = has_reason & (top == j)
        if chosen.any():
            changed = flagged[chosen].copy()
            changed[name] = np.nan if typical[name] is None else typical[name]
            lowered += int((model.predict_proba(changed)[:, 1] < before[chosen]).sum())
        # Reasons name only features that differ from the typical client.
        if chosen.any() and typical[name] is not None:
            assert not (flagged[chosen][name] == typical[name]).any()
    return len(flagged), int(has_reason.sum()), lowered


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(REAL_DATASETS))
def test_the_top_reason_set_to_its_typical_value_lowers_the_risk_on_real_data(shared_data, tmp_path, dataset) -> None:
    trained = {
        kind: trained_by_the_project(shared_data, tmp_path / kind, dataset, kind) for kind in pipelines.SEARCH_SPACE
    }
    clients = trained["logistic_regression"][2]
    blend = pipelines.SoftVotingBlend([(kind, model.estimator_) for kind, (model, _, _) in trained.items()])
    blend.classes_ = np.array([0, 1])
    # The blend is flagged at its members' mean threshold (training tunes its own only when it chooses it).
    blend_threshold = float(np.mean([model.threshold for model, _, _ in trained.values()]))
    runs = {kind: (model, model.threshold, metadata) for kind, (model, metadata, _) in trained.items()}
    runs[pipelines.BLEND] = (blend, blend_threshold, trained["logistic_regression"][1])
    results = {}
    for kind, (model, threshold, metadata) in runs.items():
        flagged, with_reason, lowered = faithfulness(model, threshold, metadata, clients)
        results[kind] = (flagged, with_reason, lowered)
        print(f"{dataset} {kind}: {lowered} of {flagged} flagged clients ({with_reason} with a reason)")
    for kind, (flagged, with_reason, lowered) in results.items():
        assert flagged >= 50, (kind, results)
        assert lowered >= FAITHFUL_SHARE * flagged, (kind, results)


def test_a_checked_batch_gets_the_reasons_its_frame_gets(trained) -> None:
    from risk.model import batches

    frame, models, typical = trained
    rows = frame.iloc[:300].copy()
    rows.loc[rows.index[:5], "sector"] = "never-seen"
    schema = batches.Schema(tuple(FEATURES["numeric"]), tuple(FEATURES["categorical"]), ())
    batch = batches.batch_from_frame(rows, schema, 0)
    for kind in models:
        explainer = explain.Explainer(models[kind], FEATURES, typical)
        assert explainer.batch_reasons(batch) == explainer.reasons(rows)


def test_scikit_learns_preprocessing_explains_as_the_compiled_one(trained, monkeypatch) -> None:
    frame, models, typical = trained
    compiled = explain.Explainer(models[pipelines.BLEND], FEATURES, typical)
    assert all(member.compiled is not None for member in compiled._members)
    monkeypatch.setattr(explain, "_compiled_preprocess", lambda *args: None)
    fallback = explain.Explainer(models[pipelines.BLEND], FEATURES, typical)
    np.testing.assert_allclose(fallback.contributions(frame), compiled.contributions(frame), rtol=0, atol=1e-12)


def test_a_feature_without_any_value_in_training_is_explained_as_nothing(trained) -> None:
    """The imputer drops it (scikit-learn warns on each call, scoring reports that): its contribution is 0."""
    import warnings

    frame, _, _ = trained
    empty = frame.assign(balance=np.nan)
    y = synthetic()[1]
    typical = explain.typical_client(empty, FEATURES)
    assert typical["balance"] is None
    for kind in pipelines.SEARCH_SPACE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = pipelines.build_pipeline(kind, FEATURES, 0, rows=len(y)).fit(empty, y)
            gap = model.predict_proba(empty.head(30))[:, 1] - model.predict_proba(reference(typical))[0, 1]
        contributions = explain.Explainer(model, FEATURES, typical).contributions(empty.head(30))  # no warning
        assert (contributions[:, NAMES.index("balance")] == 0).all()
        np.testing.assert_allclose(contributions.sum(axis=1), gap, rtol=0, atol=1e-12)
