"""Champion and challenger: the deployed model and a retrained one, scored on the same test rows.

The difference between them is given with a paired bootstrap confidence interval: the same
resampled rows score both models, so the interval reflects the models' difference, not the
luck of the sample. Resamples are drawn as multinomial row weights, so every metric is a few
matrix products (numpy, vectorised) instead of a thousand calls into scikit-learn.

This module is the one home of metrics over weighted or resampled rows: each metric depends
only on the weight in a few cells (class x prediction; for ROC AUC and average precision,
distinct score x class), so the scores are sorted once and each resample costs a count per
cell, linear in the rows for rank metrics and constant for the others (``bootstrap_metric``,
which the model card's intervals use).
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
COUNT_BATCH_CELLS = 2_000_000  # resamples x cells counted at once (bootstrap_metric)


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
    from scipy.sparse import csr_matrix  # only where weights are given (the deployment gate)

    weights = np.atleast_2d(weights).astype(float)
    cells, size = metric_cells(metric, y, risk, predicted)
    # The weight in each cell: the weights times each row's one-hot cell (a sparse rows x cells matrix).
    cell_of_row = csr_matrix((np.ones(len(cells)), (np.arange(len(cells)), cells)), shape=(len(cells), size))
    return metric_of_counts(metric, np.asarray(weights @ cell_of_row), cost_matrix)


def metric_cells(metric: str, y: np.ndarray, risk: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's cell for ``metric``, and the number of cells: the metric of any weighting (or
    resample) of the rows depends only on the weight in each cell (metric_of_counts).

    Threshold metrics and cost: class x prediction (4 cells). Rank metrics: the row's distinct
    score, highest first (ties share one), x class. Computing the cells sorts the scores once;
    counting a resample's draws per cell is then linear in the rows."""
    y = np.asarray(y).astype(np.intp)
    if metric in RANK_METRICS:
        distinct, rank = np.unique(-np.asarray(risk, dtype=float), return_inverse=True)
        return rank.reshape(-1) * 2 + y, 2 * len(distinct)
    return y * 2 + np.asarray(predicted).astype(np.intp), 4


def metric_of_counts(metric: str, counts: np.ndarray, cost_matrix: dict[str, float] | None = None) -> np.ndarray:
    """``metric`` for each row of ``counts`` (resamples x metric_cells' cells: the weight drawn in each)."""
    counts = np.atleast_2d(counts).astype(float)
    if metric in RANK_METRICS:
        return _rank_metric(metric, counts[:, 1::2], counts[:, 0::2])
    tn, fp, fn, tp = counts[:, 0], counts[:, 1], counts[:, 2], counts[:, 3]
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


def _rank_metric(metric: str, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count half) or average precision (ties grouped, as scikit-learn) from the
    weight of positives and negatives at each distinct score, highest score first."""
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


def bootstrap_metric(
    metric: str,
    y: np.ndarray,
    risk: np.ndarray,
    predicted: np.ndarray,
    generator: np.random.Generator,
    resamples: int,
    cost_matrix: dict[str, float] | None = None,
) -> np.ndarray:
    """``metric`` on each of ``resamples`` resamples of the rows, drawn with replacement by ``generator``.

    The rows are put in their cells once (one sort for rank metrics). A threshold metric or cost
    has four cells, and a resample's counts in them are multinomial (the rows, the cells' shares):
    drawn at once, whatever the number of rows. A rank metric has a cell per distinct score and
    class: each resample draws its rows (``generator.integers(0, rows, rows)``, in order) and
    counts them per cell, linear in the rows."""
    rows = len(y)
    cells, size = metric_cells(metric, y, risk, predicted)
    if metric not in RANK_METRICS:
        share = np.bincount(cells, minlength=size) / max(rows, 1)
        return metric_of_counts(metric, generator.multinomial(rows, share, size=resamples), cost_matrix)
    batch = max(1, min(resamples, COUNT_BATCH_CELLS // size))  # bounds the counts at ~16 MB
    values = []
    for start in range(0, resamples, batch):
        counts = [
            np.bincount(cells[generator.integers(0, rows, rows)], minlength=size)
            for _ in range(min(batch, resamples - start))
        ]
        values.append(metric_of_counts(metric, np.stack(counts), cost_matrix))
    return np.concatenate(values) if values else np.array([])


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
    challenger_rows = scoring.risk_and_decisions(challenger_model, features)
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
