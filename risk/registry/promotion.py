"""Champion and challenger: the deployed model and a retrained one, scored on the same test rows.

The difference between them is given with a paired bootstrap confidence interval: the same
resampled rows score both models, so the interval reflects the models' difference, not the
luck of the sample. Resamples are drawn as multinomial row weights, so every metric is a few
matrix products (numpy, vectorised) instead of a thousand calls into scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from risk.core.jsonfiles import json_ready
from risk.core.settings import Config, metric_gain

RESAMPLES = 1000
CONFIDENCE = 0.95
BATCH = 100  # resamples weighed at once: bounds the weight matrix at BATCH x rows
RANK_METRICS = ("roc_auc", "average_precision")


def weighted_metric(
    metric: str,
    y: np.ndarray,
    risk: np.ndarray,
    predicted: np.ndarray,
    weights: np.ndarray,
    cost_matrix: dict[str, float] | None = None,
) -> np.ndarray:
    """``metric`` for each row of ``weights`` (resamples x rows: how often each row is drawn).

    With weights of ones it equals scikit-learn's figure; NaN where the metric is undefined
    (ROC AUC without both classes).
    """
    weights = np.atleast_2d(weights).astype(float)
    if metric in RANK_METRICS:
        return _weighted_rank_metric(metric, y, risk, weights)
    positive, flagged = y == 1, predicted == 1
    tp = weights @ (positive & flagged)
    fp = weights @ (~positive & flagged)
    fn = weights @ (positive & ~flagged)
    tn = weights @ (~positive & ~flagged)
    total = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
        if metric == "f1":
            return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if metric == "precision":
            return precision
        if metric == "recall":
            return recall
        if metric == "accuracy":
            return (tp + tn) / total
        if metric == "balanced_accuracy":
            # scikit-learn averages the recall of the classes present
            present = (tp + fn > 0).astype(float) + (tn + fp > 0).astype(float)
            return np.where(present > 0, (recall + specificity) / np.maximum(present, 1), np.nan)
        if metric == "cost":
            if not cost_matrix:
                raise ValueError("metric 'cost' needs a cost_matrix with false_negative and false_positive costs")
            return (cost_matrix["false_negative"] * fn + cost_matrix["false_positive"] * fp) / total
    raise ValueError(f"no bootstrap for metric {metric!r}")


def _weighted_rank_metric(metric: str, y: np.ndarray, risk: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count half) or average precision (ties grouped, as scikit-learn) per weight row."""
    order = np.argsort(-risk, kind="mergesort")  # highest risk first
    sorted_risk, sorted_y = risk[order], y[order]
    starts = np.flatnonzero(np.r_[True, sorted_risk[1:] != sorted_risk[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * (sorted_y == 1), starts, axis=1)  # weight of positives per distinct score
    neg = np.add.reduceat(w * (sorted_y == 0), starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "roc_auc":
            # each positive beats the negatives scored lower (later in this order), ties half
            neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)
            auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
            return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos * precision).sum(axis=1) / total_pos
        return np.where((total_pos > 0) & (total_neg > 0), ap, np.nan)


def paired_bootstrap(
    metric: str,
    y: np.ndarray,
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = 0,
    cost_matrix: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Both models' scores, the challenger's gain (positive: better) and its bootstrap interval.

    ``champion`` and ``challenger``: (risk, 0/1 prediction) for the same rows ``y``.
    """
    y = np.asarray(y).astype(int)
    ones = np.ones((1, len(y)))
    champion_score = float(weighted_metric(metric, y, *champion, ones, cost_matrix)[0])
    challenger_score = float(weighted_metric(metric, y, *challenger, ones, cost_matrix)[0])
    rng = np.random.default_rng(seed)
    gains = []
    for start in range(0, resamples, BATCH):
        count = min(BATCH, resamples - start)
        weights = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=count) if len(y) else np.zeros((count, 0))
        gains.append(
            metric_gain(
                metric,
                weighted_metric(metric, y, *challenger, weights, cost_matrix),
                weighted_metric(metric, y, *champion, weights, cost_matrix),
            )
        )
    gain = np.concatenate(gains) if gains else np.array([])
    defined = gain[~np.isnan(gain)]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail]) if len(defined) else (np.nan, np.nan)
    point = metric_gain(metric, challenger_score, champion_score)
    return json_ready(
        {  # an undefined score, gain or bound (NaN) as None
            "metric": metric,
            "champion_score": champion_score,
            "challenger_score": challenger_score,
            "gain": point,
            "interval": [low, high],
            "confidence": CONFIDENCE,
            "resamples": int(resamples),
            "resamples_defined": int(len(defined)),
            "seed": int(seed),
        }
    )


def compare(
    config: Config, champion: Any, challenger_model: Any, challenger_metadata: dict[str, Any], champion_version: str
) -> dict[str, Any]:
    """Champion (a DeployedModel) and challenger scored on the configured test data, on the
    configured metric and ROC AUC, with the gate's inputs (margin) recorded beside them."""
    from risk.model import scoring
    from risk.registry.predictions import risk_and_predictions

    test = scoring.load_test_data(config)
    y = scoring.binary_target(test[config.target], config.positive_label)
    champion_rows = risk_and_predictions(champion, test)
    features = scoring.feature_frame(test, challenger_metadata["features"])
    challenger_rows = (challenger_model.predict_proba(features)[:, 1], challenger_model.predict(features).astype(int))
    seed = int(config["random_seed"])
    cost_matrix = config.values.get("cost_matrix")
    metric = config["metric"]
    result = {
        "champion": champion_version,
        "challenger": f"retrained {challenger_metadata.get('model')} (trained {challenger_metadata.get('trained_at')})",
        "test_rows": int(len(y)),
        "margin": float(config["promotion_margin"]),
        metric: paired_bootstrap(metric, y, champion_rows, challenger_rows, seed=seed, cost_matrix=cost_matrix),
    }
    if metric != "roc_auc":
        result["roc_auc"] = paired_bootstrap("roc_auc", y, champion_rows, challenger_rows, seed=seed)
    result["metric"] = metric
    return result


def describe(comparison: dict[str, Any]) -> str:
    """One line: champion, challenger, both scores, the gain with its interval, and the decision."""
    metric = comparison["metric"]
    parts = [f"champion {comparison['champion']} vs challenger"]
    for name in dict.fromkeys([metric, "roc_auc"]):
        found = comparison.get(name)
        if not found:
            continue
        low, high = found["interval"]
        interval = f"{low:+.4f} to {high:+.4f}" if low is not None and high is not None else "undefined"
        parts.append(
            f"{name} {_fmt(found['champion_score'])} vs {_fmt(found['challenger_score'])}, "
            f"gain {_fmt(found['gain'], signed=True)} ({found['confidence']:.0%} CI {interval})"
        )
    text = "; ".join([parts[0] + ": " + parts[1]] + parts[2:]) if len(parts) > 1 else parts[0]
    if comparison.get("decision"):
        text += f"; margin {comparison['margin']:+g}; decision: {comparison['decision']}"
    return text


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
