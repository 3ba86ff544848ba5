"""Score a trained model on the labelled hold-out data in the test folder.

Writes the classic ``latestscore.txt`` (the F1 score on the positive class) and
``scores.json`` (F1, ROC AUC, precision, recall, accuracy, the confusion counts and, with a
``cost_matrix``, ``cost``: the expected cost per client) beside
the model, with ``warnings`` where the score may mislead: test rows that are also in the
training data (the same id, feature values and label, found by ingestion's row hash; counted in
``test_rows_in_training`` and ``test_rows_in_training_share``), a test score more than three
standard errors above the cross-validated one (the fold scores' error and the test score's own
sampling error combined: ``test_standard_error``), a test set holding one class.

With ``dask_scheduler_address`` set, a test set or batch of ``CLUSTER_MIN_ROWS`` rows or
more is scored in chunks on the cluster's workers (see compute.py).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from risk.core import artefacts
from risk.core.artefacts import METADATA_FILE, SCORE_FILE, SCORES_FILE
from risk.core.files import atomic_write_json, atomic_write_text
from risk.core.jsonfiles import read_json
from risk.core.settings import (
    LOWER_IS_BETTER,
    SCORE_METRICS,
    Config,
    metric_gain,
)
from risk.core.tables import TEXT, as_text, read_typed_csv, rows_also_in
from risk.data import masterstore
from risk.model import modelfiles

logger = logging.getLogger(__name__)

CLUSTER_MIN_ROWS = 200_000  # smaller sets score faster here than the round trip to a cluster costs
CLUSTER_CHUNK_ROWS = 50_000
FAR_ABOVE_STANDARD_ERRORS = 3
TEST_BOOTSTRAP_DRAWS = 2_000  # the bootstrap's own error is then about 1.6% of the standard error it estimates

# Metrics that judge hard 0/1 decisions rather than the ranking of risk scores.
THRESHOLD_METRICS = ("f1", "precision", "recall", "accuracy", "balanced_accuracy", "cost")


class ScoringError(ValueError):
    """The data cannot be scored; the message says which file or column is at fault."""


def binary_target(values: pd.Series, positive_label: Any) -> np.ndarray:
    """1 where the label is the configured positive ("at risk") label, else 0."""
    if pd.api.types.is_numeric_dtype(values) and isinstance(positive_label, (int, float)):
        return (values.to_numpy() == positive_label).astype(int)
    return (values.astype(str).str.strip() == str(positive_label)).to_numpy().astype(int)


def expected_cost(y_true: np.ndarray, predicted: np.ndarray, cost_matrix: dict[str, float]) -> float:
    """The average cost per client of these decisions: missed risky clients and false alarms, each at its price."""
    if len(y_true) == 0:
        return 0.0
    positive, flagged = np.asarray(y_true).astype(bool), np.asarray(predicted).astype(bool)
    missed = int((positive & ~flagged).sum())
    false_alarms = int((~positive & flagged).sum())
    return float((missed * cost_matrix["false_negative"] + false_alarms * cost_matrix["false_positive"]) / len(y_true))


def metric_value(
    name: str, y_true: np.ndarray, risk: np.ndarray, predicted: np.ndarray, cost_matrix: dict[str, float] | None = None
) -> float | None:
    """One metric; None where it is undefined (ROC AUC with a single class present, cost without a cost matrix)."""
    if name == "cost":
        return None if cost_matrix is None else expected_cost(y_true, predicted, cost_matrix)
    if name in ("roc_auc", "average_precision"):
        if len(np.unique(y_true)) < 2:
            return None
        scorer = metrics.roc_auc_score if name == "roc_auc" else metrics.average_precision_score
        return float(scorer(y_true, risk))
    functions = {
        "f1": lambda: metrics.f1_score(y_true, predicted, zero_division=0),
        "precision": lambda: metrics.precision_score(y_true, predicted, zero_division=0),
        "recall": lambda: metrics.recall_score(y_true, predicted, zero_division=0),
        "accuracy": lambda: metrics.accuracy_score(y_true, predicted),
        "balanced_accuracy": lambda: metrics.balanced_accuracy_score(y_true, predicted),
    }
    with warnings.catch_warnings():
        # A batch with one class makes balanced accuracy warn; the figure is still defined.
        warnings.simplefilter("ignore", UserWarning)
        return float(functions[name]())


def confusion_metric(
    name: str,
    tp: np.ndarray,
    fp: np.ndarray,
    fn: np.ndarray,
    tn: np.ndarray,
    cost_matrix: dict[str, float] | None = None,
) -> np.ndarray:
    """A threshold metric from confusion counts, element-wise over arrays of counts (0 where undefined, as
    scikit-learn's zero_division=0 gives); ``cost`` per client under ``cost_matrix``."""
    tp, fp, fn, tn = (np.asarray(count, dtype=float) for count in (tp, fp, fn, tn))
    rows = np.maximum(tp + fp + fn + tn, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
        if name == "f1":
            return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if name == "precision":
            return np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    if name == "recall":
        return recall
    if name == "accuracy":
        return (tp + tn) / rows
    if name == "balanced_accuracy":
        return (recall + specificity) / 2
    if name == "cost":
        costs = cost_matrix or {}
        return (fn * costs.get("false_negative", 0.0) + fp * costs.get("false_positive", 0.0)) / rows
    raise ValueError(f"{name!r} is not a threshold metric")


def standard_error_of_test_score(
    metric: str, scores: dict[str, Any], cost_matrix: dict[str, float] | None = None
) -> float | None:
    """The test score's own sampling error: how far it would move on another test set of this size drawn
    from the same clients. None where it cannot be estimated (no confusion counts, no score).

    Threshold metrics (f1, cost, ...) depend on the test rows only through the four confusion counts, so
    a bootstrap over the test rows is a multinomial draw of those counts: TEST_BOOTSTRAP_DRAWS draws with
    a fixed seed, the same answer as resampling rows, in about a millisecond whatever the number of rows.
    ROC AUC: Hanley & McNeil's (1982) standard error from the AUC and the two class counts. Average
    precision: the binomial approximation sqrt(AP (1 - AP) / positives) (Boyd et al., 2013).
    """
    confusion, score = scores.get("confusion"), scores.get(metric)
    if not confusion or score is None:
        return None
    positives = confusion["tp"] + confusion["fn"]
    negatives = confusion["tn"] + confusion["fp"]
    if metric == "roc_auc":
        return _hanley_mcneil(score, positives, negatives)
    if metric == "average_precision":
        return math.sqrt(score * (1 - score) / positives) if positives else None
    counts = np.array([confusion[cell] for cell in ("tp", "fp", "fn", "tn")])
    if counts.sum() == 0:
        return None
    draws = np.random.default_rng(0).multinomial(counts.sum(), counts / counts.sum(), size=TEST_BOOTSTRAP_DRAWS)
    return float(np.std(confusion_metric(metric, *draws.T, cost_matrix=cost_matrix), ddof=1))


def _hanley_mcneil(auc: float, positives: int, negatives: int) -> float | None:
    if not positives or not negatives:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    return math.sqrt(max(variance, 0.0) / (positives * negatives))


def delong_roc_auc(y_true: np.ndarray, risk: np.ndarray) -> tuple[float, float] | None:
    """ROC AUC and DeLong's (1988) closed-form standard error of it, or None with a single class.

    Each positive's placement (the share of negatives scored below it, ties counting half) and
    each negative's (the share of positives scored above it) average to the AUC; the variance of
    each set of placements over its class size, summed, is DeLong's variance. Midranks give every
    placement at once: one sort of the scores, whatever their ties.
    """
    from scipy.stats import rankdata

    y_true, risk = np.asarray(y_true).astype(bool), np.asarray(risk, dtype=float)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives < 2 or negatives < 2:
        return None
    ranks = rankdata(risk)
    positive_places = (ranks[y_true] - rankdata(risk[y_true])) / negatives
    negative_places = 1 - (ranks[~y_true] - rankdata(risk[~y_true])) / positives
    variance = positive_places.var(ddof=1) / positives + negative_places.var(ddof=1) / negatives
    return float(positive_places.mean()), math.sqrt(variance)


def classification_metrics(
    y_true: np.ndarray, risk: np.ndarray, predicted: np.ndarray, cost_matrix: dict[str, float] | None = None
) -> dict[str, Any]:
    """Every figure the system reports about a model on labelled data (``cost`` with a cost matrix)."""
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    result: dict[str, Any] = {name: metric_value(name, y_true, risk, predicted) for name in SCORE_METRICS}
    if cost_matrix is not None:
        result["cost"] = expected_cost(y_true, predicted, cost_matrix)
        result["cost_matrix"] = dict(cost_matrix)
    result.update(
        rows=int(len(y_true)),
        positives=int(y_true.sum()),
        confusion={"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    )
    return result


def feature_frame(frame: pd.DataFrame, features: dict[str, list[str]]) -> pd.DataFrame:
    """The model's input columns, typed as the model was trained: numbers as floats, categories as text."""
    missing = [c for c in features["numeric"] + features["categorical"] if c not in frame.columns]
    if missing:
        raise ScoringError(f"missing feature column(s) {missing}")
    columns = {}
    for column in features["numeric"]:
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.isna() & frame[column].notna()).any():
            raise ScoringError(f"column {column!r} must be numeric")
        columns[column] = values.astype("float64")
    for column in features["categorical"]:
        columns[column] = as_text(frame[column])
    return pd.DataFrame(columns, index=frame.index)


def score_frame(
    model: Any, frame: pd.DataFrame, metadata: dict[str, Any], config: Config, cluster_min_rows: int = CLUSTER_MIN_ROWS
) -> dict[str, Any]:
    """Metrics of ``model`` on a labelled frame (on the Dask cluster, when one is configured
    and the frame has ``cluster_min_rows`` rows or more)."""
    if config.target not in frame.columns:
        raise ScoringError(f"target column {config.target!r} is missing")
    features = feature_frame(frame, metadata["features"])
    y_true = binary_target(frame[config.target], config.positive_label)
    if config["dask_scheduler_address"] and len(features) >= cluster_min_rows:
        risk, predicted = _predict_on_cluster(model, features, config)
    else:
        risk, predicted = risk_and_decisions(model, features)
    return classification_metrics(y_true, risk, predicted, config["cost_matrix"])


def risk_and_decisions(model: Any, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``model.predict_proba(features)[:, 1]`` and ``model.predict(features)`` as 0/1.

    A model that flags a positive-class probability at or above a fixed threshold (training's
    FixedThresholdClassifier over 0/1 labels) decides from that probability here, with the
    comparison its own ``predict`` makes, instead of predicting every row a second time (the same
    decisions, tested); any other model predicts again."""
    risk = model.predict_proba(features)[:, 1]
    if _decides_on_probability(model):
        return risk, (risk >= model.threshold).astype(int)
    return risk, model.predict(features).astype(int)


def _decides_on_probability(model: Any) -> bool:
    from sklearn.model_selection import FixedThresholdClassifier

    return (
        isinstance(model, FixedThresholdClassifier)
        and model.response_method == "predict_proba"
        and model.pos_label is None
        and not isinstance(model.threshold, str)
        and np.array_equal(getattr(model, "classes_", None), [0, 1])
    )


def _predict_chunk(model: Any, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return risk_and_decisions(model, features)


def _predict_on_cluster(model: Any, features: pd.DataFrame, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Risk and decisions for every row, in chunks on the cluster's workers (the model sent once)."""
    from risk.model import compute

    with compute.open_runner(config) as runner:
        shared_model = runner.share(model)  # sent to the workers once; the model itself where work runs locally
        chunks = [
            (shared_model, features.iloc[start : start + CLUSTER_CHUNK_ROWS])
            for start in range(0, len(features), CLUSTER_CHUNK_ROWS)
        ]
        results = runner.map(_predict_chunk, chunks, name="score")
    return np.concatenate([risk for risk, _ in results]), np.concatenate([predicted for _, predicted in results])


def test_rows_in_training(config: Config, test: pd.DataFrame, metadata: dict[str, Any]) -> int:
    """How many test rows are also in the master: the same client id (where the test data has
    the id columns), feature values and label.

    Hashed with the one row hash (tables.row_hashes) over those columns, on both sides. The ids matter: on
    data with few integer features, different clients often share every feature value and
    label (28 of the sample's 1,000 test clients do), and they are not the same rows.
    """
    ids = [c for c in config["id_columns"] if c in test.columns and c in metadata["column_kinds"]]
    columns = ids + metadata["features"]["numeric"] + metadata["features"]["categorical"] + [config.target]
    master = masterstore.master_path(config)
    if not master.exists() or test.empty:
        return 0
    kinds = {c: metadata["column_kinds"].get(c, TEXT) for c in columns}
    # A row in the master has its id there too. Held-out clients (the usual case) are told apart on the
    # ids alone, read without the other columns (0.3 s of 700,000 loans instead of 0.9 s).
    if ids and not rows_also_in(test[ids], read_typed_csv(master, kinds, usecols=ids), kinds):
        return 0
    # Both sides read as ingestion reads them (text as text, numbers hashed as float64).
    training = read_typed_csv(master, kinds, usecols=columns)
    return rows_also_in(test[columns], training, kinds)


def score_warnings(scores: dict[str, Any], metadata: dict[str, Any], config: Config) -> list[str]:
    """Plain sentences about why this test score may not mean what it seems to."""
    warnings = []
    metric, rows = config["metric"], scores["rows"]
    if scores["test_rows_in_training"]:
        warnings.append(
            f"{scores['test_rows_in_training']} of the {rows} test rows ({scores['test_rows_in_training_share']:.1%}) are "
            "also in the training data (the same id, feature values and label): the test score is not a score on unseen data"
        )
    if scores["positives"] in (0, rows):
        label = "the positive class" if scores["positives"] else "the negative class"
        warnings.append(
            f"the test data holds one class only (all {rows} rows are {label}): {metric}, ROC AUC and any comparison "
            "with another model on it say nothing about how well this model tells the classes apart"
        )
    far_above = far_above_cross_validation(scores, metadata, config)
    if far_above:
        warnings.append(far_above)
    return warnings


def far_above_cross_validation(scores: dict[str, Any], metadata: dict[str, Any], config: Config) -> str | None:
    """A warning where the test score beats the cross-validated one by more than FAR_ABOVE_STANDARD_ERRORS
    standard errors of their difference, or None.

    The difference has two independent errors: the fold scores' mean (their spread over the folds) and
    the test score's own (test_standard_error). Against the first alone, a large honest test set, whose
    score is about as uncertain as a fold's, would warn about as often as not.
    """
    metric = config["metric"]
    candidate = metadata.get("candidates", {}).get(metadata.get("model"), {})
    folds, test_score = candidate.get("folds") or [], scores.get(metric)
    if len(folds) < 2 or test_score is None:
        return None
    cv_mean = float(np.mean(folds))
    cv_error = float(np.std(folds, ddof=1) / math.sqrt(len(folds)))
    test_error = scores.get("test_standard_error")
    if test_error is None:
        test_error = standard_error_of_test_score(metric, scores, config["cost_matrix"])
    combined = math.sqrt(cv_error**2 + (test_error or 0.0) ** 2)
    if metric_gain(metric, test_score, cv_mean) <= FAR_ABOVE_STANDARD_ERRORS * combined:
        return None
    direction = "below (better than)" if metric in LOWER_IS_BETTER else "above"
    test_part = "unknown" if test_error is None else f"{test_error:.4f}"
    return (
        f"the test {metric} {test_score:.4f} is more than {FAR_ABOVE_STANDARD_ERRORS} standard errors {direction} the "
        f"cross-validated {cv_mean:.4f} (standard error {combined:.4f}: {cv_error:.4f} over the folds and "
        f"{test_part} of the test score itself): the test data may overlap the training data or be easier than it"
    )


def load_test_data(config: Config) -> pd.DataFrame:
    """Every CSV in the test folder, in name order."""
    folder = config.require_folder("test_data_path")
    files = artefacts.csv_files(folder)
    if not files:
        raise ScoringError(f"test_data_path: no CSV file in {folder}")
    kinds = masterstore.column_kinds(config)
    return pd.concat([read_typed_csv(path, kinds) for path in files], ignore_index=True)


def load_trained_model(config: Config) -> tuple[Any, dict[str, Any]]:
    """The freshly trained model in the model folder and its metadata.

    Loaded as deployed models are (modelfiles.read_model: trusted types only), checked against the
    checksum its metadata records; deployed models go through risk.registry.versions.load_deployed_model.
    """
    folder = config.model_folder
    metadata = read_json(folder / METADATA_FILE)
    return modelfiles.read_model(modelfiles.model_path(folder), metadata.get("model_sha256")), metadata


def score_model(config: Config) -> dict[str, Any]:
    """Score the trained model on the test data and write the score files beside it."""
    model, metadata = load_trained_model(config)
    test = load_test_data(config)
    scores = score_frame(model, test, metadata, config)
    scores["model_trained_at"] = metadata["trained_at"]
    scores["metric"] = config["metric"]
    scores["test_rows_in_training"] = test_rows_in_training(config, test, metadata)
    scores["test_rows_in_training_share"] = scores["test_rows_in_training"] / scores["rows"] if scores["rows"] else 0.0
    scores["test_standard_error"] = standard_error_of_test_score(config["metric"], scores, config["cost_matrix"])
    scores["warnings"] = score_warnings(scores, metadata, config)
    for warning in scores["warnings"]:
        logger.warning("%s", warning)
    write_scores(config.model_folder, scores)
    return scores


def write_scores(folder: Path, scores: dict[str, Any]) -> None:
    atomic_write_json(folder / SCORES_FILE, scores)
    atomic_write_text(folder / SCORE_FILE, f"{scores['f1']}\n")
