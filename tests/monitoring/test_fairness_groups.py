"""risk.monitoring.fairness: a group too small to judge is reported but not judged, rows without a value
stay apart from any real value, and the section says what "selected" means and which way harms a group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from risk.core.settings import ConfigError
from risk.model import pipelines, scoring
from risk.monitoring import fairness
from tests.conftest import write_config


def one_row_minority() -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """199 rows of "major", 40 of them flagged; one row of "tiny", flagged (its selection rate is 1)."""
    groups = pd.Series(["major"] * 199 + ["tiny"])
    y = np.array([1] * 50 + [0] * 149 + [1])
    predicted = np.array([1] * 40 + [0] * 159 + [1])
    return groups, y, predicted.astype(float), predicted


def test_a_one_row_group_is_reported_but_does_not_flag_the_majority() -> None:
    groups, y, risk, predicted = one_row_minority()
    unguarded = fairness.measure_groups(groups, y, risk, predicted)
    assert unguarded["four_fifths"]["groups_below"] == ["major"], "the one row would flag 199"
    measured = fairness.measure_groups(groups, y, risk, predicted, min_rows=30)
    assert measured["groups"]["tiny"]["rows"] == 1 and measured["groups"]["tiny"]["judged"] is False
    assert "fewer than 30" in measured["groups"]["tiny"]["judged_note"]
    assert measured["groups_not_judged"] == ["tiny"]
    assert measured["four_fifths"]["flagged"] is False
    assert "fewer than two groups large enough to judge" in measured["four_fifths"]["statement"]


def test_a_literal_missing_value_is_not_merged_with_rows_without_a_value() -> None:
    values = pd.Series(["missing", "a", None, "missing", np.nan])
    groups, how = fairness.group_labels(values)
    assert groups.tolist() == ["missing", "a", fairness.MISSING, "missing", fairness.MISSING]
    assert fairness.MISSING in how
    clash = pd.Series([fairness.MISSING, "b", None])
    groups, _ = fairness.group_labels(clash)
    assert groups.tolist()[:2] == [fairness.MISSING, "b"] and groups.iloc[2] not in (fairness.MISSING, "b")
    assert fairness.missing_label(clash, groups) == groups.iloc[2]


def test_where_being_flagged_is_adverse_the_group_flagged_more_often_is_the_one_marked() -> None:
    groups = pd.Series(["a"] * 100 + ["b"] * 100)
    y = np.zeros(200, dtype=int)
    predicted = np.array([1] * 10 + [0] * 90 + [1] * 60 + [0] * 40)  # a: 10% flagged, b: 60%
    favourable = fairness.measure_groups(groups, y, predicted.astype(float), predicted)
    assert favourable["four_fifths"]["groups_below"] == ["a"]
    adverse = fairness.measure_groups(groups, y, predicted.astype(float), predicted, adverse=True)
    assert adverse["four_fifths"]["groups_below"] == ["b"] and adverse["four_fifths"]["basis"] == "share not flagged"
    assert "left unflagged" in adverse["four_fifths"]["statement"]


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("fairness_min_group_rows", 0, "fairness_min_group_rows must be a positive integer"),
        ("fairness_min_group_rows", "30", "fairness_min_group_rows must be a positive integer"),
        ("fairness_min_group_rows", True, "fairness_min_group_rows must be a positive integer"),
        ("flagged_outcome", "bad", "flagged_outcome must be"),
    ],
)
def test_the_fairness_keys_are_validated(tmp_path: Path, key: str, value, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        write_config(tmp_path, **{key: value})


def test_assess_uses_the_configured_minimum_and_says_what_selected_means(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"income": rng.normal(0, 1, 200), "region": ["north"] * 199 + ["south"]})
    y = (frame["income"] > 0.5).astype(int).to_numpy()
    features = {"numeric": ["income"], "categorical": []}
    X = scoring.feature_frame(frame, features)
    model = pipelines.build_pipeline("logistic_regression", features, 0).fit(X, y)
    risk, predicted = model.predict_proba(X)[:, 1], model.predict(X)
    config = write_config(tmp_path, target="y", id_columns=[], protected_attributes=["region"])
    assert config["fairness_min_group_rows"] == 30 and config["flagged_outcome"] is None
    section = fairness.assess(config, model, {"features": features}, frame, y, risk, predicted)
    assert section["attributes"]["region"]["groups_not_judged"] == ["south"]
    assert section["selected_means"].startswith('"Selected" means flagged as at risk by the model (predicted y = 1)')
    assert "not configured (flagged_outcome)" in section["direction"]
    adverse = write_config(
        tmp_path, target="y", id_columns=[], protected_attributes=["region"], flagged_outcome="adverse"
    )
    section = fairness.assess(adverse, model, {"features": features}, frame, y, risk, predicted)
    assert "a group flagged more often is the one disadvantaged" in section["direction"]
    line = fairness.summary_lines(section)[0]
    assert "south reported but not judged (fewer than 30 test rows)" in line


def test_numeric_groups_are_listed_in_the_order_of_their_values() -> None:
    groups = pd.Series(["108.75 to 5724", "1 to 18", "18 to 46", "46 to 108.75", fairness.MISSING, "b", "a"])
    y = np.array([1, 0, 1, 0, 1, 0, 1])
    measured = fairness.measure_groups(groups, y, y.astype(float), y)
    assert list(measured["groups"]) == [
        "1 to 18",
        "18 to 46",
        "46 to 108.75",
        "108.75 to 5724",
        "a",
        "b",
        fairness.MISSING,
    ]
