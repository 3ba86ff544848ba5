"""risk.model.selection.pick_best records why it chose the candidate it chose, in words the report prints."""

from __future__ import annotations

from risk.model import selection


def candidate(mean: float, error: float, auc: float, informative: bool = True) -> dict:
    return {"mean": mean, "standard_error": error, "oof_roc_auc": auc, "informative": informative}


def test_a_clear_winner_is_chosen_for_its_metric() -> None:
    _, how = selection.pick_best({"a": candidate(0.70, 0.01, 0.8), "b": candidate(0.60, 0.01, 0.9)})
    assert how["reason"] == "the best cross-validated f1; no other candidate within one standard error (0.0100)"


def test_a_tie_won_on_roc_auc_says_so() -> None:
    chosen, how = selection.pick_best(
        {"blend": candidate(0.620, 0.010, 0.75), "gradient_boosting": candidate(0.615, 0.010, 0.79)}
    )
    assert chosen == "gradient_boosting"
    assert how["reason"] == (
        "within one standard error (0.0100) of the best cross-validated f1 (blend), so chosen on the higher "
        "out-of-fold ROC AUC (0.7900 against 0.7500 for blend)"
    )


def test_a_full_tie_goes_to_the_simpler_model_and_says_so() -> None:
    chosen, how = selection.pick_best({"simple": candidate(0.6, 0.0, 0.7), "complex": candidate(0.6, 0.0, 0.7)})
    assert chosen == "simple" and "the simpler model" in how["reason"]


def test_candidates_left_out_as_uninformative_are_named() -> None:
    _, how = selection.pick_best(
        {"flag_happy": candidate(0.80, 0.01, 0.51, informative=False), "modest": candidate(0.60, 0.01, 0.70)}
    )
    assert "flag_happy not considered" in how["reason"]
