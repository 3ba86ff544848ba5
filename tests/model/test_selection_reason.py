"""risk.model.selection.pick_best: the one-standard-error rule by declared complexity, and why it
chose what it chose, in words the report prints."""

from __future__ import annotations

import math

import pytest

from risk.model import pipelines, selection

LR, HGB, RF, BLEND = "logistic_regression", "hist_gradient_boosting", "random_forest", pipelines.BLEND


def candidate(folds: list[float], auc: float = 0.8, informative: bool = True) -> dict:
    """A judged candidate as score_candidate records it: its fold scores and their mean."""
    return {"mean": sum(folds) / len(folds), "folds": folds, "oof_roc_auc": auc, "informative": informative}


def shifted(folds: list[float], by: list[float]) -> list[float]:
    return [score + step for score, step in zip(folds, by)]


BASE = [0.60, 0.55, 0.65, 0.58, 0.62]  # hard and easy folds, shared by every candidate


def test_every_model_has_a_declared_complexity_and_the_blend_is_above_its_members() -> None:
    assert set(pipelines.COMPLEXITY) == {*pipelines.SEARCH_SPACE, BLEND}
    assert pipelines.COMPLEXITY[LR] < pipelines.COMPLEXITY[HGB] < pipelines.COMPLEXITY[RF]
    assert all(pipelines.COMPLEXITY[BLEND] > pipelines.COMPLEXITY[name] for name in pipelines.SEARCH_SPACE)


def test_a_complex_candidate_within_one_standard_error_loses_to_the_simpler_one() -> None:
    # The blend is 0.01 better on average, but the gap swings from fold to fold: SE of the gaps 0.0126.
    blend = shifted(BASE, [0.04, -0.02, 0.03, -0.01, 0.01])
    chosen, how = selection.pick_best({LR: candidate(BASE), BLEND: candidate(blend)})
    error = selection.standard_error([0.04, -0.02, 0.03, -0.01, 0.01])
    assert chosen == LR and how["best_on_metric"] == BLEND and how["within_one_standard_error"] == [LR, BLEND]
    assert how["standard_errors"][LR] == pytest.approx(error, abs=1e-6)
    assert how["reason"] == (
        f"soft_voting_blend had the best cross-validated f1 ({sum(blend) / 5:.4f}) but logistic_regression "
        f"({sum(BASE) / 5:.4f}) is within one standard error ({error:.4f}) of it and simpler, so logistic_regression "
        "was chosen"
    )


def test_a_complex_candidate_beyond_one_standard_error_wins_and_says_so() -> None:
    # The same mean gap of 0.01, but steady on every fold: the paired error is small, the blend wins.
    blend = shifted(BASE, [0.011, 0.009, 0.010, 0.012, 0.008])
    chosen, how = selection.pick_best(
        {LR: candidate(BASE), HGB: candidate(shifted(BASE, [0.005] * 5)), BLEND: candidate(blend)}
    )
    assert chosen == BLEND and how["within_one_standard_error"] == [BLEND]
    assert how["reason"].startswith(
        f"soft_voting_blend had the best cross-validated f1 ({sum(blend) / 5:.4f}) and beats every simpler candidate "
        "by more than one standard error: logistic_regression by 0.0100 (standard error 0.0007), "
        "hist_gradient_boosting by 0.0050"
    )


def test_the_paired_error_not_the_best_ones_own_spread_decides() -> None:
    """The folds differ by up to 0.10 in difficulty; a candidate better by 0.01 on every fold is
    still better: the best's own fold error (about 0.017) would have called it a tie."""
    forest = shifted(BASE, [0.01] * 5)
    chosen, how = selection.pick_best({HGB: candidate(BASE), RF: candidate(forest)})
    assert selection.standard_error(forest) > 0.01
    assert chosen == RF and how["standard_errors"] == {HGB: 0.0}


def test_the_simplest_within_one_standard_error_is_chosen_not_the_nearest() -> None:
    # Boosting is nearest the blend (0.001 behind), the regression further (0.015) but noisier: both within.
    candidates = {
        LR: candidate(shifted(BASE, [-0.005 + d for d in [0.06, -0.06, 0.04, -0.04, 0.0]])),
        HGB: candidate(shifted(BASE, [0.009 + d for d in [0.004, -0.004, 0.002, -0.002, 0.0]])),
        BLEND: candidate(shifted(BASE, [0.01] * 5)),
    }
    chosen, how = selection.pick_best(candidates)
    assert chosen == LR and set(how["within_one_standard_error"]) == {LR, HGB, BLEND}


def test_a_lower_is_better_metric_takes_the_lowest_as_best_and_measures_gaps_downwards() -> None:
    cheap = [0.40, 0.42, 0.38, 0.41, 0.39]
    near = shifted(cheap, [0.02, -0.01, 0.015, -0.005, 0.0])  # dearer by 0.004 on average, noisily
    chosen, how = selection.pick_best({LR: candidate(near), BLEND: candidate(cheap)}, "cost")
    assert how["best_on_metric"] == BLEND and chosen == LR and "lower is better" in how["rule"]
    far = shifted(cheap, [0.05] * 5)  # dearer by 0.05 on every fold
    chosen, how = selection.pick_best({LR: candidate(far), BLEND: candidate(cheap)}, "cost")
    assert chosen == BLEND and "beats every simpler candidate" in how["reason"]


def test_without_an_informative_candidate_the_rule_runs_over_all_of_them() -> None:
    blend = shifted(BASE, [0.04, -0.02, 0.03, -0.01, 0.01])
    candidates = {LR: candidate(BASE, 0.5, False), BLEND: candidate(blend, 0.5, False)}
    chosen, how = selection.pick_best(candidates)
    assert chosen == LR and how["pool"] == "all (none is informative)"


def test_uninformative_candidates_are_left_out_and_named() -> None:
    candidates = {LR: candidate([0.6] * 5, 0.7), RF: candidate([0.8] * 5, 0.51, informative=False)}
    chosen, how = selection.pick_best(candidates)
    assert chosen == LR and how["pool"] == "informative"
    assert how["reason"] == (
        "logistic_regression was the only candidate considered (cross-validated f1 0.6000); "
        "random_forest not considered (no better than chance or flagging everyone)"
    )


def test_a_lone_candidate_is_said_to_be_the_only_one() -> None:
    chosen, how = selection.pick_best({LR: candidate([0.6] * 5)})
    assert (
        chosen == LR
        and how["reason"] == "logistic_regression was the only candidate considered (cross-validated f1 0.6000)"
    )


def test_a_full_tie_goes_to_the_simpler_model() -> None:
    chosen, how = selection.pick_best({BLEND: candidate(BASE), HGB: candidate(BASE)})
    assert chosen == HGB and how["best_on_metric"] == HGB and "simplest" in how["reason"]


def test_an_undeclared_kind_counts_as_the_most_complex() -> None:
    assert selection.complexity("a_new_kind") > max(pipelines.COMPLEXITY.values())
    chosen, _ = selection.pick_best({"a_new_kind": candidate(BASE), BLEND: candidate(BASE)})
    assert chosen == BLEND
    assert not math.isnan(selection.paired_standard_error(candidate(BASE), candidate(BASE), "f1"))
