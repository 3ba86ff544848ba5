"""Judging the candidates out of fold and picking the one to keep.

The decision threshold is tuned on the out-of-fold risk scores (F1 on the positive class by
default; with metric ``cost``, the lowest expected cost per client under ``cost_matrix``),
because with a minority positive class the default 0.5 misses most of the clients at risk.
Lower is better for ``cost`` (settings.LOWER_IS_BETTER): every comparison goes through
settings.metric_gain.

Each candidate is judged against chance (out-of-fold ROC AUC above 0.5 by more than
sampling noise: one-sided 5% under the null, Hanley-McNeil standard error) and against the
trivial rule "flag everyone" (the configured metric on the same folds; the candidate must
beat it by more than the standard error of the paired fold differences). A candidate that
does not beat both is *uninformative* and is never chosen over an informative one. Then the
one-standard-error rule: the simplest candidate (pipelines.COMPLEXITY) whose mean is within one
standard error of the best mean is chosen, the error being that of the paired fold differences
between the two; a more complex one wins only by beating every simpler one by more than that.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from risk.core.settings import LOWER_IS_BETTER, ConfigError, metric_gain
from risk.model.pipelines import COMPLEXITY
from risk.model.scoring import THRESHOLD_METRICS, confusion_metric, metric_value

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
CHANCE_Z = 1.645  # one-sided 5%: an out-of-fold ROC AUC this many null standard errors above 0.5


def tune_threshold(metric: str, y: np.ndarray, risk: np.ndarray, cost_matrix: dict[str, float] | None = None) -> float:
    """The grid threshold that does best on ``metric`` (F1 for ranking metrics) on these rows; the lowest on ties.

    For ``cost`` that is the lowest expected cost per client under ``cost_matrix``."""
    tuning = metric if metric in THRESHOLD_METRICS else "f1"
    curve = threshold_curve(tuning, y, risk, cost_matrix)
    # Lower-is-better metrics are negated, so that argmax finds the best (and the lowest threshold on ties).
    goodness = -curve if tuning in LOWER_IS_BETTER else curve
    return float(THRESHOLD_GRID[int(np.argmax(np.round(goodness, 12)))])


def threshold_curve(
    metric: str, y: np.ndarray, risk: np.ndarray, cost_matrix: dict[str, float] | None = None
) -> np.ndarray:
    """``metric`` at every threshold of THRESHOLD_GRID on these rows (the report plots the cost one)."""
    if metric == "cost" and cost_matrix is None:
        raise ConfigError('metric "cost" needs cost_matrix')
    flagged = risk[None, :] >= THRESHOLD_GRID[:, None]
    positive = y.astype(bool)[None, :]
    tp = (flagged & positive).sum(axis=1).astype(float)
    fp = (flagged & ~positive).sum(axis=1).astype(float)
    fn = positive.sum() - tp
    tn = len(y) - tp - fp - fn
    return confusion_metric(metric, tp, fp, fn, tn, cost_matrix)


def score_candidate(
    metric: str,
    y: np.ndarray,
    risk: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    threshold: float | None = None,
    cost_matrix: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Fold scores at the out-of-fold tuned threshold, and the judgement against chance and
    against flagging everyone, for the out-of-fold ``risk`` over ``folds``."""
    rows = np.concatenate([test for _, test in folds])
    if threshold is None:
        threshold = tune_threshold(metric, y[rows], risk[rows], cost_matrix)
    scores, everyone = [], []
    for _, test in folds:
        fold_y, fold_risk = y[test], risk[test]
        scores.append(metric_value(metric, fold_y, fold_risk, (fold_risk >= threshold).astype(int), cost_matrix))
        everyone.append(metric_value(metric, fold_y, np.ones(len(test)), np.ones(len(test), dtype=int), cost_matrix))
    scores_array = np.array(scores, dtype=float)
    # Positive where the candidate does better than flagging everyone, whichever way the metric points.
    difference = metric_gain(metric, scores_array, np.array(everyone, dtype=float))
    auc = float(roc_auc_score(y[rows], risk[rows]))
    positives = int(y[rows].sum())
    negatives = len(rows) - positives
    chance_error = math.sqrt((positives + negatives + 1) / (12 * positives * negatives))
    beats_chance = auc > 0.5 + CHANCE_Z * chance_error
    beats_everyone = bool(difference.mean() > 0 and difference.mean() > standard_error(difference))
    return {
        "metric": metric,
        "mean": float(scores_array.mean()),
        "std": float(scores_array.std()),
        "standard_error": standard_error(scores_array),
        "folds": [round(float(s), 6) for s in scores],
        "threshold": float(threshold),
        "oof_roc_auc": auc,
        "chance_margin": round(CHANCE_Z * chance_error, 6),
        "flag_everyone_score": float(np.mean(everyone)),
        "flag_everyone_folds": [round(float(s), 6) for s in everyone],
        "beats_chance": bool(beats_chance),
        "beats_flag_everyone": beats_everyone,
        "informative": bool(beats_chance and beats_everyone),
        "flagged_share": float(np.mean(risk[rows] >= threshold)),
    }


def standard_error(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def pick_best(candidates: dict[str, dict[str, Any]], metric: str = "f1") -> tuple[str, dict[str, Any]]:
    """The chosen candidate's name and how it was chosen: the one-standard-error rule.

    Informative candidates only, when there are any. Of those, the best mean metric marks the
    bar; the simplest candidate (pipelines.COMPLEXITY) whose mean is within one standard error of
    the best is chosen. The standard error is that of the paired fold differences between the
    best and the candidate: every candidate is scored on the same folds, so a fold that is hard
    for one is hard for the other, and the paired error counts only what differs between them
    (the best's own fold error would count the folds' shared difficulty as noise too). Between
    equally complex candidates within it: the better mean, then the higher out-of-fold ROC AUC,
    then the order of the candidates.
    """
    order = list(candidates)
    informative = [name for name in order if candidates[name]["informative"]]
    pool = informative or order
    best = max(pool, key=lambda name: (_goodness(candidates[name], metric), -complexity(name), -order.index(name)))
    errors = {name: paired_standard_error(candidates[best], candidates[name], metric) for name in pool if name != best}
    within = [name for name in pool if name == best or round(_gap(candidates, best, name, metric), 12) <= errors[name]]
    chosen = min(
        within,
        key=lambda name: (
            complexity(name),
            -_goodness(candidates[name], metric),
            -round(candidates[name]["oof_roc_auc"], 12),
            order.index(name),
        ),
    )
    return chosen, {
        "rule": "informative candidates first; the simplest candidate whose mean "
        + metric
        + (" (lower is better)" if metric in LOWER_IS_BETTER else "")
        + " is within one standard error of the best (the standard error of their paired fold differences)",
        "pool": "informative" if informative else "all (none is informative)",
        "best_on_metric": best,
        "complexity": {name: complexity(name) for name in order},
        "standard_errors": {name: round(error, 6) for name, error in errors.items()},
        "within_one_standard_error": within,
        "reason": choice_reason(candidates, metric, chosen, best, errors, bool(informative)),
    }


def complexity(name: str) -> int:
    """The declared complexity of a candidate kind; one not declared counts as the most complex (never preferred)."""
    return COMPLEXITY.get(name, max(COMPLEXITY.values()) + 1)


def paired_standard_error(best: dict[str, Any], other: dict[str, Any], metric: str) -> float:
    """The standard error of the per-fold differences between two candidates scored on the same folds."""
    differences = metric_gain(metric, np.array(best["folds"], dtype=float), np.array(other["folds"], dtype=float))
    return round(standard_error(differences), 12)


def _goodness(candidate: dict[str, Any], metric: str) -> float:
    # metric_gain against 0: the mean itself, or minus it for a cost (lower is better).
    return round(metric_gain(metric, candidate["mean"], 0.0), 12)


def _gap(candidates: dict[str, dict[str, Any]], best: str, name: str, metric: str) -> float:
    """How much better ``best``'s mean is than ``name``'s (never negative)."""
    return metric_gain(metric, candidates[best]["mean"], candidates[name]["mean"])


def choice_reason(
    candidates: dict[str, dict[str, Any]],
    metric: str,
    chosen: str,
    best: str,
    errors: dict[str, float],
    informative: bool,
) -> str:
    """Why ``chosen`` was kept, in the words the report prints beside the candidate table."""
    skipped = [name for name in candidates if not candidates[name]["informative"]] if informative else []
    not_informative = (
        f"; {', '.join(skipped)} not considered (no better than chance or flagging everyone)" if skipped else ""
    )
    top = f"{best} had the best cross-validated {metric} ({candidates[best]['mean']:.4f})"
    if chosen != best:
        return (
            f"{top} but {chosen} ({candidates[chosen]['mean']:.4f}) is within one standard error "
            f"({errors[chosen]:.4f}) of it and simpler, so {chosen} was chosen{not_informative}"
        )
    simpler = [name for name in errors if complexity(name) < complexity(best)]
    if simpler:
        margins = ", ".join(
            f"{name} by {_gap(candidates, best, name, metric):.4f} (standard error {errors[name]:.4f})"
            for name in simpler
        )
        return f"{top} and beats every simpler candidate by more than one standard error: {margins}{not_informative}"
    if not errors:
        return f"{best} was the only candidate considered (cross-validated {metric} {candidates[best]['mean']:.4f}){not_informative}"
    return f"{top} and is the simplest candidate considered{not_informative}"
