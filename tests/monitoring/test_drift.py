"""risk.monitoring.drift: the bins PSI is computed on, its smoothing and noise floor, the notes a
comparison carries when a test cannot run, and comparisons read from real CSV files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from risk.core.tables import CATEGORICAL, NUMERIC, TEXT, read_typed_csv
from risk.model import compute
from risk.monitoring import drift

# --- PSI from counts ------------------------------------------------------------------------------


def test_psi_of_disjoint_histograms_is_large_but_finite_by_the_epsilon_floor() -> None:
    psi = drift.psi_from_counts(np.array([10, 0]), np.array([0, 10]))
    eps = drift.EPSILON
    assert psi == pytest.approx(2 * (1 - eps) * math.log(1 / eps), rel=1e-12)


def test_psi_is_the_same_whichever_sample_is_the_reference() -> None:
    reference, batch = np.array([30, 50, 20, 0]), np.array([10, 40, 45, 5])
    assert drift.psi_from_counts(reference, batch) == pytest.approx(drift.psi_from_counts(batch, reference))


def test_psi_depends_on_shares_not_sample_sizes() -> None:
    assert drift.psi_from_counts(np.array([1, 3]), np.array([3, 1])) == pytest.approx(
        drift.psi_from_counts(np.array([100, 300]), np.array([30, 10]))
    )


@pytest.mark.parametrize("reference, batch", [([0, 0], [1, 2]), ([1, 2], [0, 0])])
def test_psi_of_an_empty_sample_is_undefined(reference: list[int], batch: list[int]) -> None:
    assert drift.psi_from_counts(np.array(reference), np.array(batch)) is None
    assert drift.psi_band(None) is None


# --- bins -----------------------------------------------------------------------------------------


def test_numeric_bins_are_the_references_deciles_each_closed_on_the_right() -> None:
    reference = pd.Series(np.arange(101, dtype=float))  # deciles 10, 20, ..., 90 exactly
    batch = pd.Series([10.0, 10.5, 90.0, 90.1, np.nan, -1000.0])
    labels, reference_counts, batch_counts = drift.numeric_histograms(reference, batch)
    assert labels == ["<= 10", *[f"({low}, {low + 10}]" for low in range(10, 90, 10)], "> 90", drift.MISSING_BIN]
    assert reference_counts.tolist() == [11] + [10] * 8 + [10, 0]
    # 10 and -1000 close the first bin, 10.5 opens the second, 90 closes the ninth, 90.1 is above
    assert batch_counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1]


def test_a_constant_reference_gives_two_bins_around_its_value() -> None:
    labels, reference_counts, batch_counts = drift.numeric_histograms(pd.Series([5.0] * 20), pd.Series([5.0, 6.0]))
    assert labels == ["<= 5", "> 5", drift.MISSING_BIN]
    assert reference_counts.tolist() == [20, 0, 0] and batch_counts.tolist() == [1, 1, 0]


def test_a_reference_with_no_present_value_has_one_bin_for_any_value() -> None:
    labels, reference_counts, batch_counts = drift.numeric_histograms(
        pd.Series([np.nan, np.nan]), pd.Series([1.0, np.nan, 3.0])
    )
    assert labels == ["(any value)", drift.MISSING_BIN]
    assert reference_counts.tolist() == [0, 2] and batch_counts.tolist() == [2, 1]


def test_numbers_written_as_text_are_binned_as_numbers() -> None:
    _, as_numbers, _ = drift.numeric_histograms(pd.Series(np.arange(101.0)), pd.Series([1.0]))
    _, as_text, _ = drift.numeric_histograms(pd.Series([str(v) for v in range(101)]), pd.Series(["1"]))
    assert as_text.tolist() == as_numbers.tolist()


def test_categorical_bins_list_reference_levels_by_frequency_then_new_levels_then_missing() -> None:
    reference = pd.Series(["b", "a", "b", None, 7])
    batch = pd.Series(["7", "c", "a", None, None])
    labels, reference_counts, batch_counts = drift.categorical_histograms(reference, batch)
    assert labels == ["b", "a", "7", "c", drift.MISSING_BIN]  # 7 and "7" are one level
    assert reference_counts.tolist() == [2, 1, 1, 0, 1]
    assert batch_counts.tolist() == [0, 1, 1, 1, 2]


# --- the noise floor ------------------------------------------------------------------------------


def test_noise_floor_is_occupied_bins_less_one_times_the_inverse_sizes() -> None:
    assert drift.noise_floor(np.array([50, 50, 0, 0]), np.array([10, 0, 0, 0])) == pytest.approx(1 / 100 + 1 / 10)
    assert drift.noise_floor(np.array([50, 50, 0]), np.array([0, 0, 10])) == pytest.approx(2 * (1 / 100 + 1 / 10))
    assert drift.noise_floor(np.array([0, 0]), np.array([1, 1])) is None


# --- one feature's comparison ---------------------------------------------------------------------


def test_an_empty_batch_gives_no_psi_and_says_why() -> None:
    row = drift.compare_feature("x", pd.Series(np.arange(50.0)), pd.Series([], dtype=float), NUMERIC)
    assert row["psi"] is None and row["band"] is None and row["drifted"] is False
    assert row["batch_rows"] == 0 and row["batch_missing_share"] is None
    assert any("PSI undefined" in note for note in row["notes"])
    assert any("KS test not run" in note for note in row["notes"])


def test_a_batch_of_missing_values_only_cannot_be_ks_tested_but_is_flagged_by_its_missing_share() -> None:
    row = drift.compare_feature("x", pd.Series(np.arange(200.0)), pd.Series([np.nan] * 200), NUMERIC)
    assert row["p_value"] is None and any("KS test not run" in note for note in row["notes"])
    assert row["missing_p_value"] < drift.P_VALUE_ALPHA
    assert row["batch_missing_share"] == 1.0 and row["band"] == "significant" and row["drifted"] is True


def test_a_single_level_in_both_samples_cannot_be_chi_squared_tested() -> None:
    row = drift.compare_feature("level", pd.Series(["a"] * 30), pd.Series(["a"] * 10), CATEGORICAL)
    assert row["test"] == "chi-squared" and row["p_value"] is None
    assert any("chi-squared test not run" in note for note in row["notes"])
    assert row["psi"] == pytest.approx(0.0) and row["drifted"] is False


def test_a_large_psi_on_a_tiny_sample_is_not_flagged_when_the_test_finds_no_difference() -> None:
    """PSI alone would call it drift; five rows are too few, and the notes say so."""
    reference = pd.Series(np.arange(20.0))
    batch = pd.Series([3.0, 8.0, 12.0, 15.0, 19.0])
    row = drift.compare_feature("x", reference, batch, NUMERIC)
    assert row["psi"] >= drift.STABLE_BELOW, row
    assert row["p_value"] >= drift.P_VALUE_ALPHA
    assert row["drifted"] is False
    assert row["noise_floor"] >= drift.NOISE_FLOOR_WARNING
    assert any(note.startswith("sample too small") for note in row["notes"])


def test_a_clear_shift_on_large_samples_is_flagged_with_shares_per_bin() -> None:
    rng = np.random.default_rng(3)
    reference, batch = pd.Series(rng.normal(0, 1, 5000)), pd.Series(rng.normal(1, 1, 5000))
    row = drift.compare_feature("x", reference, batch, NUMERIC)
    assert row["drifted"] is True and row["band"] == "significant" and row["p_value"] < 1e-6
    assert row["notes"] == []
    assert sum(b["reference_share"] for b in row["bins"]) == pytest.approx(1.0)
    assert sum(b["batch_share"] for b in row["bins"]) == pytest.approx(1.0)


def test_compare_frames_gives_numeric_features_first_in_the_models_order() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"], "c": [3.0, 2.0, 1.0]})
    rows = drift.compare_frames(frame, frame, {"categorical": ["b"], "numeric": ["c", "a"]})
    assert [(r["feature"], r["kind"]) for r in rows] == [("c", NUMERIC), ("a", NUMERIC), ("b", CATEGORICAL)]


# --- from files -----------------------------------------------------------------------------------


def test_compare_files_reads_each_feature_as_ingestion_does_and_matches_compare_frames(tmp_path: Path) -> None:
    """Text stays text: codes "007" and "7" are two levels, as ingestion keeps them."""
    kinds = {"corporation": TEXT, "code": TEXT, "amount": NUMERIC}
    rng = np.random.default_rng(5)
    for name, codes, centre in (("reference.csv", ["007", "7", "12"], 10.0), ("batch.csv", ["007", "12"], 14.0)):
        pd.DataFrame(
            {
                "corporation": [f"c{i}" for i in range(300)],
                "code": rng.choice(codes, 300),
                "amount": rng.normal(centre, 2.0, 300).round(2),
            }
        ).to_csv(tmp_path / name, index=False)
    features = {"numeric": ["amount"], "categorical": ["code"]}
    with compute.local_runner(parallel=False) as runner:
        rows = drift.compare_files(
            runner, str(tmp_path / "reference.csv"), str(tmp_path / "batch.csv"), kinds, features
        )
    expected = drift.compare_frames(
        read_typed_csv(tmp_path / "reference.csv", kinds), read_typed_csv(tmp_path / "batch.csv", kinds), features
    )
    assert rows == expected
    assert {b["bin"] for b in rows[1]["bins"]} == {"007", "7", "12", drift.MISSING_BIN}
    assert rows[0]["drifted"] is True and rows[1]["drifted"] is True
