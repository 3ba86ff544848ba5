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
does not beat both is *uninformative* and is never chosen over an informative one. Ties on
the configured metric (within the standard error of the best candidate's fold scores) go
to the higher out-of-fold ROC AUC, then to the simpler model (the order of SEARCH_SPACE).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from risk.core.settings import LOWER_IS_BETTER, ConfigError, metric_gain
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
    """The chosen candidate's name and how it was chosen.

    Informative candidates only, when there are any; the best mean metric, with every
    candidate within one standard error of it counted as a tie, broken by out-of-fold ROC AUC
    and then by the order of the candidates (simplest first).
    """
    order = list(candidates)
    informative = [name for name in order if candidates[name]["informative"]]
    pool = informative or order
    # metric_gain against 0: the mean itself, or minus it for a cost (lower is better).
    best = max(pool, key=lambda name: (metric_gain(metric, candidates[name]["mean"], 0.0), -order.index(name)))
    tied = [
        name
        for name in pool
        if metric_gain(metric, candidates[name]["mean"], candidates[best]["mean"])
        >= -candidates[best]["standard_error"]
    ]
    chosen = max(tied, key=lambda name: (round(candidates[name]["oof_roc_auc"], 12), -order.index(name)))
    return chosen, {
        "rule": "informative candidates first; best mean metric"
        + (" (lowest: lower is better)" if metric in LOWER_IS_BETTER else "")
        + ", ties within one standard error broken by out-of-fold ROC AUC",
        "pool": "informative" if informative else "all (none is informative)",
        "best_on_metric": best,
        "tied": tied,
        "reason": choice_reason(candidates, metric, chosen, best, tied, bool(informative)),
    }


def choice_reason(
    candidates: dict[str, dict[str, Any]], metric: str, chosen: str, best: str, tied: list[str], informative: bool
) -> str:
    """Why ``chosen`` was kept, in the words the report prints beside the candidate table."""
    error = candidates[best]["standard_error"]
    skipped = [name for name in candidates if not candidates[name]["informative"]] if informative else []
    not_informative = (
        f"; {', '.join(skipped)} not considered (no better than chance or flagging everyone)" if skipped else ""
    )
    if len(tied) == 1:
        return f"the best cross-validated {metric}; no other candidate within one standard error ({error:.4f}){not_informative}"
    aucs = {name: round(candidates[name]["oof_roc_auc"], 12) for name in tied}
    auc_tied = sum(auc == aucs[chosen] for auc in aucs.values()) > 1
    if auc_tied:
        why = "the highest out-of-fold ROC AUC, shared with another tied candidate, and then the simpler model"
    elif chosen == best:
        why = f"the highest out-of-fold ROC AUC ({candidates[chosen]['oof_roc_auc']:.4f})"
    else:
        why = (
            f"the higher out-of-fold ROC AUC ({candidates[chosen]['oof_roc_auc']:.4f} against "
            f"{candidates[best]['oof_roc_auc']:.4f} for {best})"
        )
    if chosen == best:
        return (
            f"the best cross-validated {metric}; {', '.join(tied)} within one standard error ({error:.4f}) of it, so "
            f"chosen on {why}{not_informative}"
        )
    return (
        f"within one standard error ({error:.4f}) of the best cross-validated {metric} ({best}), so chosen on "
        f"{why}{not_informative}"
    )
