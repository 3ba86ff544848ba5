"""Fit candidate scikit-learn pipelines on the master dataset, pick the best, save it.

Every candidate is one ``Pipeline``: median imputation (with missing-value indicators) and
scaling for numeric features, imputation and one-hot encoding (``handle_unknown="ignore"``)
for categorical ones, then the classifier. Each model has a small fixed set of
hyper-parameter settings (``SEARCH_SPACE``): every setting is scored on the first two
cross-validation folds, the best of each model goes on to the remaining folds (successive
halving), and the soft-voting blend of those models (their averaged probabilities) is a
candidate of its own, judged on the same folds. The decision threshold is tuned on the
out-of-fold risk scores (F1 on the positive class by default; with metric ``cost``, the
lowest expected cost per client under ``cost_matrix``), because with a minority positive
class the default 0.5 misses most of the clients at risk. Lower is better for ``cost``
(settings.LOWER_IS_BETTER): every comparison goes through settings.metric_gain.

Each candidate is judged against chance (out-of-fold ROC AUC above 0.5 by more than
sampling noise: one-sided 5% under the null, Hanley-McNeil standard error) and against the
trivial rule "flag everyone" (the configured metric on the same folds; the candidate must
beat it by more than the standard error of the paired fold differences). A candidate that
does not beat both is *uninformative* and is never chosen over an informative one. Ties on
the configured metric (within the standard error of the best candidate's fold scores) go
to the higher out-of-fold ROC AUC, then to the simpler model (the order of SEARCH_SPACE).

The preprocessing has no seed, so every candidate of a fold gets the same encoding
(``encode_fold``). Fits run single-threaded, side by side: in worker processes when the data
is large enough (this process encodes each fold once and the workers memory-map it, one
copy for all of them; see ``FoldFiles``), or on the Dask cluster at
``dask_scheduler_address``, whose workers read the master from the shared file system and
encode their folds themselves (see compute.py). The result does not depend on where they ran.

Saves ``trainedmodel.skops`` (see modelfiles.py) and ``trainedmodel.json`` (parameters, the fold scores, time and
judgement of every candidate and setting, features and their types, data hash, package
versions, time taken, warnings).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import FixedThresholdClassifier, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from risk.core.artefacts import METADATA_FILE, MODEL_FILE, SKOPS_MODEL_FILE, utc_now
from risk.core.environment import installed_version
from risk.core.files import atomic_path, atomic_write_json, before_change, process_is_alive, sha256_file
from risk.core.jsonfiles import json_ready
from risk.core.settings import LOWER_IS_BETTER, Config, ConfigError, metric_gain
from risk.core.tables import NUMERIC, TEXT, read_typed_csv
from risk.data import ledger, masterstore
from risk.model import compute, modelfiles
from risk.model.scoring import THRESHOLD_METRICS, binary_target, feature_frame, metric_value

logger = logging.getLogger(__name__)

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
REPORTED_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "threadpoolctl", "dask", "distributed")
BLEND = "soft_voting_blend"
SCRATCH_PREFIX = "risk-training-"  # + "<pid>-": a run's folder in the temp folder for the workers' snapshot

# A handful of settings per model; the first of each is the one kept when they tie.
SEARCH_SPACE: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": 1.0}, {"C": 0.1}],
    "hist_gradient_boosting": [
        {"learning_rate": 0.1, "max_leaf_nodes": 15, "l2_regularization": 1.0},
        {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 40},
    ],
    "random_forest": [
        {"min_samples_leaf": 2, "max_features": "sqrt"},
        {"min_samples_leaf": 8, "max_features": "sqrt"},
    ],
}
SCREEN_FOLDS = 2  # every setting is scored on this many folds before the losers are dropped
FOREST_TREES = 100
FOREST_ROWS_PER_TREE = 2000  # each tree sees at most this many rows: a forest costs about what boosting does
EARLY_STOPPING_MIN_ROWS = 2000  # below this a 10% validation split is too small to stop on
VALIDATION_FRACTION = (
    0.1  # boosting's early-stopping rows: its own default, set from here so that _validation_last draws the same share
)
PARALLEL_MIN_ROWS = 10_000  # below this, starting worker processes costs more than it saves
CHANCE_Z = 1.645  # one-sided 5%: an out-of-fold ROC AUC this many null standard errors above 0.5
# Relative cost of one fit, for starting the longest first (measured on 21,000 rows, single-threaded).
FIT_COST = {"logistic_regression": 0.2, "hist_gradient_boosting": 1.0, "random_forest": 1.2}


class TrainingError(ValueError):
    """The data cannot be trained on; the message says why."""


def feature_types(config: Config, kinds: dict[str, str]) -> dict[str, list[str]]:
    """Numeric and categorical feature columns: every column but target, ids and drops."""
    excluded = {config.target, *config.excluded_columns}
    if config["exclude_protected_from_features"]:
        excluded.update(config["protected_attributes"])  # the fairness checks still read them from the test data
    forced = set(config["categorical_columns"] or [])
    features = [c for c in kinds if c not in excluded]
    if not features:
        raise TrainingError("no feature columns left after removing target, id_columns and drop_columns")
    return {
        "numeric": [c for c in features if kinds[c] == NUMERIC and c not in forced],
        "categorical": [c for c in features if kinds[c] == TEXT or c in forced],
    }


def build_preprocess(features: dict[str, list[str]]) -> ColumnTransformer:
    """Median imputation (with missing-value indicators) and scaling for numeric features,
    imputation and one-hot encoding for categorical ones."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="ignore", max_categories=50, sparse_output=False)),
        ]
    )
    transformers = []
    if features["numeric"]:
        transformers.append(("numeric", numeric, features["numeric"]))
    if features["categorical"]:
        transformers.append(("categorical", categorical, features["categorical"]))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def build_pipeline(
    name: str, features: dict[str, list[str]], seed: int, params: dict[str, Any] | None = None, rows: int = 0
) -> Pipeline:
    """The preprocessing and classifier ``name`` with ``params`` (default: its first setting),
    sized for ``rows`` training rows."""
    if name not in SEARCH_SPACE:
        raise ConfigError(f"candidate_models: unknown model {name!r}")
    classifier = _classifier(name, seed, SEARCH_SPACE[name][0] if params is None else params, rows)
    return Pipeline([("preprocess", build_preprocess(features)), ("classifier", classifier)])


def _classifier(name: str, seed: int, params: dict[str, Any], rows: int) -> Any:
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, **params)
    if name == "hist_gradient_boosting":
        # Early stopping on a 10% validation split: as many trees as help, no more.
        stop = rows >= EARLY_STOPPING_MIN_ROWS
        return HistGradientBoostingClassifier(
            max_iter=300,
            early_stopping=stop,
            validation_fraction=VALIDATION_FRACTION,
            n_iter_no_change=10,
            random_state=seed,
            **params,
        )
    if name == "random_forest":
        # Fewer trees on capped row samples: the forest's cross-validation took 35.8 s of 45.9 s.
        share = min(1.0, FOREST_ROWS_PER_TREE / rows) if rows else 1.0
        return RandomForestClassifier(
            n_estimators=FOREST_TREES, max_samples=share if share < 1.0 else None, n_jobs=1, random_state=seed, **params
        )
    raise ConfigError(f"candidate_models: unknown model {name!r}")


class SoftVotingBlend(ClassifierMixin, BaseEstimator):
    """The average of fitted pipelines' probabilities (soft voting)."""

    def __init__(self, estimators: list[tuple[str, Pipeline]]):
        self.estimators = estimators

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SoftVotingBlend:
        for _, estimator in self.estimators:
            estimator.fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean([estimator.predict_proba(X) for _, estimator in self.estimators], axis=0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


# --- where the fits find their data -------------------------------------------------------------


@dataclass(frozen=True)
class EncodedFold:
    """One fold's training rows through the fitted preprocessing, ready for any classifier.

    The rows are ordered with the early-stopping validation rows last (``validation`` of
    them; 0 when the fold is too small to stop on or holds a single row of a class), so
    that gradient boosting takes both parts as views of one matrix instead of copying it."""

    preprocess: ColumnTransformer  # fitted on the fold's training rows
    encoded: np.ndarray
    labels: np.ndarray
    validation: int
    held_out: np.ndarray | None  # the fold's test rows, encoded; None for the refit on all rows


def encode_fold(
    X: pd.DataFrame, y: np.ndarray, features: dict[str, list[str]], fold: int | None, seed: int, splits: int
) -> EncodedFold:
    """Fit the preprocessing on ``fold``'s training rows (all rows when None) and encode them.

    Every candidate of a fold gets the same encoding (the preprocessing has no seed), so it is
    computed once per fold where worker processes share it; the result is the same either way."""
    if fold is None:
        rows, test_rows = np.arange(len(y)), None
    else:
        rows, test_rows = _fold_indices(y, splits, seed)[fold]
    rows, validation = _validation_last(rows, y, seed)
    preprocess = build_preprocess(features)
    encoded = _fit_transform_lean(preprocess, X.iloc[rows], y[rows])
    held_out = None if test_rows is None else preprocess.transform(X.iloc[test_rows])
    return EncodedFold(preprocess, encoded, y[rows], validation, held_out)


def _validation_last(rows: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """``rows`` reordered so that gradient boosting's early-stopping validation rows come last,
    and their count (0 where the fold is too small to stop on, and the order is kept).

    The split is the one ``HistGradientBoostingClassifier(random_state=seed)`` makes itself
    (scikit-learn 1.7: stratified, ``validation_fraction`` of the rows, from the first number
    its seed draws), so its models are the ones it fitted when it split the rows itself; a
    test holds this to scikit-learn's own split. Where a class has a single row the split
    cannot be stratified: the order is kept, and boosting does not stop early (_fit_classifier)."""
    if len(rows) < EARLY_STOPPING_MIN_ROWS or np.bincount(y[rows], minlength=2).min() < 2:
        return rows, 0
    split_seed = np.random.RandomState(seed).randint(np.iinfo(np.uint32).max, dtype="u8")
    fit_part, validation = train_test_split(
        np.arange(len(rows)), test_size=VALIDATION_FRACTION, stratify=y[rows], random_state=split_seed
    )
    return np.concatenate([rows[fit_part], rows[validation]]), len(validation)


def _fit_transform_lean(preprocess: ColumnTransformer, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """``preprocess.fit_transform(X, y)``, with median imputation computed column by column.

    ``SimpleImputer(strategy="median")`` takes ``np.ma.median`` of the whole block at once,
    about 4x the block's memory on top of it; per column the statistics are equal (tested),
    and the fitted imputer says "median" again afterwards, so the model is the same object."""
    for step in _steps(preprocess):
        if isinstance(step, SimpleImputer) and step.strategy == "median":
            step.set_params(strategy=_median_or_nan)
    try:
        return preprocess.fit_transform(X, y)
    finally:  # the column transformer's fitted clones too
        for step in _steps(preprocess):
            if isinstance(step, SimpleImputer) and step.strategy is _median_or_nan:
                step.set_params(strategy="median")


def _steps(estimator: Any) -> list[Any]:
    """Every estimator inside ``estimator`` (pipelines, column transformers, fitted or not)."""
    found, pending = [], [estimator]
    while pending:
        current = pending.pop()
        found.append(current)
        if isinstance(current, Pipeline):
            pending.extend(step for _, step in current.steps)
        elif isinstance(current, ColumnTransformer):
            pending.extend(step for _, step, _ in current.transformers)
            pending.extend(step for _, step, _ in getattr(current, "transformers_", []))
    return found


def _median_or_nan(values: np.ndarray) -> float:
    # An all-missing column: NaN, as strategy="median" gives (the column is then dropped), without numpy's warning.
    return float(np.median(values)) if values.size else math.nan


@dataclass(frozen=True)
class TrainingData:
    """Where a fit finds its encoded fold.

    With ``folds`` set (worker processes on this machine), the fit memory-maps the fold this
    process encoded and wrote there (FoldFiles): one shared copy, not one per worker. With
    ``master`` set (a Dask worker), it reads the master CSV from the (shared) file system once,
    keeps it for its next fits, and encodes the fold itself; the file's size and modification
    time must match, so that every fit sees the same rows. Otherwise the frame travels with
    the task (or is this process's own) and the fit encodes its fold from it.
    """

    features: dict[str, list[str]]
    kinds: dict[str, str]
    target: str
    positive_label: Any
    master: str | None = None
    stamp: tuple[int, int] | None = None
    frame: pd.DataFrame | None = None
    folds: str | None = None

    @property
    def key(self) -> tuple:
        return (self.master, self.stamp, id(self.frame) if self.frame is not None else None)

    def encoded(self, fold: int | None, seed: int, splits: int) -> EncodedFold:
        if self.folds is not None:
            return FoldFiles.read(Path(self.folds), fold)
        X, y = self.load()
        return encode_fold(X, y, self.features, fold, seed, splits)

    def load(self) -> tuple[pd.DataFrame, np.ndarray]:
        cached = _DATA_CACHE.get("data")
        if cached is not None and cached[0] == self.key:
            return cached[1], cached[2]
        _DATA_CACHE.clear()  # one master at a time: a long-lived worker must not pile them up
        data = self.frame if self.frame is not None else self._read_master()
        X = feature_frame(data, self.features)
        y = binary_target(data[self.target], self.positive_label)
        _DATA_CACHE["data"] = (self.key, X, y)
        return X, y

    def _read_master(self) -> pd.DataFrame:
        path = Path(self.master)
        if _stamp(path) != self.stamp:
            raise TrainingError(
                f"the master {path} is not the file training started on (changed, or another file at that path)"
            )
        # The model's columns only: ids and dropped columns would only cost memory here.
        columns = self.features["numeric"] + self.features["categorical"] + [self.target]
        data = read_typed_csv(path, self.kinds, usecols=columns)
        if _stamp(path) != self.stamp:
            raise TrainingError(f"the master {path} changed while it was read")
        return data


_DATA_CACHE: dict[str, Any] = {}


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


class FoldFiles:
    """The encoded folds that local worker processes memory-map, written by this process.

    The frame waits in a snapshot (``training-frame.joblib``, memory-mapped while a round's
    folds are encoded, then let go); a round's folds are written before its fits start and
    removed after. So this process holds no copy of the frame while the workers fit, and the
    scratch folder holds the snapshot and at most one round's folds (about 8 bytes per
    encoded cell each)."""

    def __init__(
        self, X: pd.DataFrame, y: np.ndarray, features: dict[str, list[str]], seed: int, splits: int, folder: Path
    ):
        self.snapshot = folder / "training-frame.joblib"
        _dump((X, y), self.snapshot)
        self.features, self.seed, self.splits, self.folder = features, seed, splits, folder
        self.written: set[int | None] = set()

    def write(self, folds: set[int | None]) -> None:
        missing = sorted(folds - self.written, key=lambda f: -1 if f is None else f)
        if not missing:
            return
        X, y = joblib.load(self.snapshot, mmap_mode="r")
        for fold in missing:
            encoded = encode_fold(X, y, self.features, fold, self.seed, self.splits)
            arrays, preprocess = self._paths(self.folder, fold)
            _dump((encoded.encoded, encoded.labels, encoded.validation, encoded.held_out), arrays)
            _dump(encoded.preprocess, preprocess)
            self.written.add(fold)
            del encoded
        del X, y
        compute.release_freed_memory()

    def remove(self) -> None:
        for fold in self.written:
            for path in self._paths(self.folder, fold):
                path.unlink(missing_ok=True)
        self.written.clear()

    @staticmethod
    def read(folder: Path, fold: int | None) -> EncodedFold:
        arrays, preprocess = FoldFiles._paths(folder, fold)
        encoded, labels, validation, held_out = joblib.load(arrays, mmap_mode="r")
        # Not memory-mapped: a refit sends its fitted preprocessing back in the pipeline.
        return EncodedFold(joblib.load(preprocess), encoded, labels, validation, held_out)

    @staticmethod
    def _paths(folder: Path, fold: int | None) -> tuple[Path, Path]:
        name = "all" if fold is None else f"fold-{fold}"
        return folder / f"{name}.joblib", folder / f"{name}-preprocess.joblib"


def _dump(value: Any, path: Path) -> None:
    """``joblib.dump``; a full or unwritable temp folder is a TrainingError naming it, not a traceback."""
    try:
        joblib.dump(value, path)
    except OSError as exc:
        raise TrainingError(
            f"cannot write training's scratch file {path} ({exc.strerror or exc}): make room in {path.parent.parent} "
            "or point TMPDIR at a folder with room for a copy of the training data and its encoded folds"
        ) from exc


def _fit_task(
    source: TrainingData, name: str, params: dict[str, Any], seed: int, splits: int, fold: int | None
) -> dict[str, Any]:
    """Fit one setting on one fold's training rows (or all rows when ``fold`` is None).

    Returns the fold's out-of-fold risk scores, or the fitted pipeline, with the seconds the
    fit took and where it ran.
    """
    started = time.perf_counter()
    data = source.encoded(fold, seed, splits)
    classifier = _classifier(name, seed, params, len(data.labels))
    _fit_classifier(classifier, data)
    if fold is None:
        outcome: dict[str, Any] = {"pipeline": Pipeline([("preprocess", data.preprocess), ("classifier", classifier)])}
    else:
        outcome = {"risk": np.asarray(classifier.predict_proba(data.held_out)[:, 1])}
    del data, classifier
    compute.release_freed_memory()  # what this fit freed does not stay with the worker
    return {**outcome, "seconds": time.perf_counter() - started, "worker": _where()}


def _fit_classifier(classifier: Any, data: EncodedFold) -> None:
    """Fit on the encoded rows; gradient boosting stops early on the validation rows at their end.

    Rows holding a single row of a class have no stratified validation split (scikit-learn
    raises drawing one): boosting is fitted on all of them, as on a fold too small to stop on."""
    if isinstance(classifier, HistGradientBoostingClassifier) and classifier.early_stopping is True:
        if data.validation:
            cut = len(data.labels) - data.validation
            classifier.fit(data.encoded[:cut], data.labels[:cut], X_val=data.encoded[cut:], y_val=data.labels[cut:])
            return
        classifier.set_params(early_stopping=False)
    classifier.fit(data.encoded, data.labels)


def _where() -> str:
    """The Dask worker's address, or this process's id."""
    if "distributed" in sys.modules:  # only a Dask worker has it imported; importing it costs ~1 s
        try:
            return sys.modules["distributed"].get_worker().address
        except ValueError:
            pass
    return f"pid {os.getpid()}"


def _fold_indices(y: np.ndarray, splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified folds; they depend on the labels and the seed only, so every worker agrees."""
    folds = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(y)), y))


def _warm_task() -> int:
    """Nothing: imports this module (and scikit-learn) in a worker process."""
    return os.getpid()


def start_workers(workers: int | None = None) -> None:
    """Start the local worker processes training would use (benchmarks measure memory after this)."""
    with compute.local_runner(parallel=True, workers=workers) as runner:
        runner.map(_warm_task, [() for _ in range(runner.workers)])


# --- judging candidates ------------------------------------------------------------------------


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
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0),
            "accuracy": (tp + tn) / len(y),
            "balanced_accuracy": (
                np.where(tp + fn > 0, tp / (tp + fn), 0.0) + np.where(tn + fp > 0, tn / (tn + fp), 0.0)
            )
            / 2,
            "cost": (
                fn * (cost_matrix or {}).get("false_negative", 0.0)
                + fp * (cost_matrix or {}).get("false_positive", 0.0)
            )
            / max(len(y), 1),
        }[metric]
    return values


def judge(
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
    beats_everyone = bool(difference.mean() > 0 and difference.mean() > _standard_error(difference))
    return {
        "metric": metric,
        "mean": float(scores_array.mean()),
        "std": float(scores_array.std()),
        "standard_error": _standard_error(scores_array),
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


def _standard_error(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def choose(candidates: dict[str, dict[str, Any]], metric: str = "f1") -> tuple[str, dict[str, Any]]:
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
    }


# --- training ----------------------------------------------------------------------------------


def train_model(
    config: Config, data: pd.DataFrame | None = None, workers: int | None = None
) -> tuple[FixedThresholdClassifier, dict[str, Any]]:
    """Fit every candidate, keep the best and refit it on all the data. Returns (model, metadata).

    ``workers`` sets the number of local worker processes (default: one per usable core when
    the data is large enough to pay for them); a configured Dask cluster takes precedence.
    """
    started = time.perf_counter()
    kinds = masterstore.column_kinds(config)
    features = feature_types(config, kinds)
    master = masterstore.master_path(config)
    rows = _row_count(config, data)
    parallel = workers is not None and workers > 1 or (workers is None and rows >= PARALLEL_MIN_ROWS)
    remove_stale_scratch()
    with (
        compute.open_runner(config, parallel=parallel, workers=workers) as runner,
        tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", ignore_cleanup_errors=True) as scratch,
    ):
        runner.start_in_background(_warm_task)  # the workers start while this process reads and encodes
        source, y, files = _training_data(config, data, master, kinds, features, runner, Path(scratch))
        _check_trainable(y, config)
        seed, splits, metric = config["random_seed"], config["cv_folds"], config["metric"]
        folds = _fold_indices(y, splits, seed)
        candidates, final, fits, chosen, selection = _cross_validate(
            _Fitter(runner, source, files, seed, splits), y, folds, config
        )
        compute_used = runner.describe()
    _DATA_CACHE.clear()  # this process's copy of the frame is not needed any more
    model = _final_model(chosen, candidates, final)
    warnings = _warnings(chosen, candidates, config)
    if compute_used.get("fallback_reason"):  # the operator asked for a cluster: say it was not used
        warnings.append(
            f"trained on this machine, not on the Dask cluster at {config['dask_scheduler_address']}: "
            f"{compute_used['fallback_reason']} (dask_fallback_local is true)"
        )
    metadata = _metadata(config, chosen, model, candidates, features, kinds, len(y), y, time.perf_counter() - started)
    metadata.update(
        uninformative=not any(c["informative"] for c in candidates.values()),
        warnings=warnings,
        selection=selection,
        max_flagged_share=config["max_flagged_share"],
        flagged_share=candidates[chosen]["flagged_share"],
        compute=compute_used,
        fits=fits,
    )
    for warning in warnings:
        logger.warning("%s", warning)
    logger.info(
        "chose %s (CV %s %.4f, out-of-fold ROC AUC %.3f) in %.1fs on %s",
        chosen,
        metric,
        candidates[chosen]["mean"],
        candidates[chosen]["oof_roc_auc"],
        metadata["training_seconds"],
        runner.backend,
    )
    return model, metadata


def _row_count(config: Config, data: pd.DataFrame | None) -> int:
    if data is not None:
        return len(data)
    state = masterstore.read_master_state(config) or {}
    return int(state.get("rows") or 0)


def _training_data(
    config: Config,
    data: pd.DataFrame | None,
    master: Path,
    kinds: dict[str, str],
    features: dict[str, list[str]],
    runner: compute.Runner,
    scratch: Path,
) -> tuple[TrainingData, np.ndarray, FoldFiles | None]:
    """Where the fits find their data, the labels, and (worker processes on this machine) the
    fold files this process writes for them into ``scratch``."""
    common = {"features": features, "kinds": kinds, "target": config.target, "positive_label": config.positive_label}
    if data is not None:
        if config.target not in data.columns:
            raise TrainingError(f"target column {config.target!r} is not in the training data")
        source = TrainingData(**common, frame=data)
    else:
        if not master.exists():
            raise FileNotFoundError(f"no master dataset yet in {config.output_folder}: run ingestion first")
        source = TrainingData(**common, master=str(master), stamp=_stamp(master))
    if runner.backend == "dask":
        # The workers read the master themselves; this process needs the labels only.
        if data is not None:
            return source, binary_target(data[config.target], config.positive_label), None
        target = read_typed_csv(master, kinds, usecols=[config.target])
        return source, binary_target(target[config.target], config.positive_label), None
    X, y = source.load()  # read once, here: the fits (or the fold files) come from it
    if runner.backend == "processes":
        files = FoldFiles(X, y, features, config["random_seed"], config["cv_folds"], scratch)
        _DATA_CACHE.clear()  # the snapshot has it now
        return dataclasses.replace(source, frame=None, master=None, folds=str(scratch)), y, files
    return source, y, None


def remove_stale_scratch(folder: Path | None = None) -> list[Path]:
    """Remove the scratch folders (and their snapshots) of training runs whose process is gone.

    A run killed while training never removes its own; its folder is named with its pid, so
    the next run can tell. A live run's folder (another project's, say) is left alone."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if (
            not pid.isdigit()
            or int(pid) == os.getpid()
            or process_is_alive(int(pid))
            or path.is_symlink()
            or not path.is_dir()
        ):
            continue
        shutil.rmtree(path, ignore_errors=True)  # another user's is not ours to remove, and stays
        if not path.exists():
            removed.append(path)
    if removed:
        logger.info(
            "removed %d training scratch folder(s) left by killed runs: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def _cross_validate(
    fitter: _Fitter, y: np.ndarray, folds: list, config: Config
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Successive halving over the settings, the remaining folds of the kept ones, the refit.

    Returns the candidates' judgements, the refitted pipelines, the fit counts and times, and
    the choice with how it was made.
    """
    splits, metric = config["cv_folds"], config["metric"]
    costs = config["cost_matrix"]
    names = list(config["candidate_models"])
    screen = list(range(min(SCREEN_FOLDS, splits)))
    rest = [fold for fold in range(splits) if fold not in screen]
    log = fitter.log

    # Round 1: every setting of every model on the screening folds.
    jobs = [(name, index, fold) for name in names for index in range(len(SEARCH_SPACE[name])) for fold in screen]
    results = fitter.run(jobs)
    kept, searches = {}, {}
    for name in names:
        scored = []
        for index, params in enumerate(SEARCH_SPACE[name]):
            risk = _oof_risk(len(y), {fold: results[(name, index, fold)]["risk"] for fold in screen}, folds)
            screening = judge(metric, y, risk, [folds[f] for f in screen], cost_matrix=costs)
            scored.append(
                {
                    "params": params,
                    "screen_folds": screening["folds"],
                    "screen_mean": screening["mean"],
                    "screen_oof_roc_auc": screening["oof_roc_auc"],
                }
            )
        best = max(
            range(len(scored)),
            key=lambda i: (
                round(metric_gain(metric, scored[i]["screen_mean"], 0.0), 12),
                round(scored[i]["screen_oof_roc_auc"], 12),
                -i,
            ),
        )
        for index, entry in enumerate(scored):
            entry["kept"] = index == best
        kept[name], searches[name] = best, scored

    # Round 2: the kept settings on the remaining folds.
    results.update(fitter.run([(name, kept[name], fold) for name in names for fold in rest]))

    candidates: dict[str, dict[str, Any]] = {}
    risks = {}
    for name in names:
        index = kept[name]
        risks[name] = _oof_risk(len(y), {fold: results[(name, index, fold)]["risk"] for fold in range(splits)}, folds)
        fold_seconds = [round(results[(name, index, fold)]["seconds"], 4) for fold in range(splits)]
        candidates[name] = {
            **judge(metric, y, risks[name], folds, cost_matrix=costs),
            "params": SEARCH_SPACE[name][index],
            "fold_seconds": fold_seconds,
            "fit_seconds": round(sum(fold_seconds), 4),
            "search": searches[name],
        }
    if len(names) > 1:
        blend_risk = np.mean([risks[name] for name in names], axis=0)
        candidates[BLEND] = {
            **judge(metric, y, blend_risk, folds, cost_matrix=costs),
            "params": {"members": names, "voting": "soft"},
            "members": names,
            "fold_seconds": [round(sum(candidates[n]["fold_seconds"][f] for n in names), 4) for f in range(splits)],
            "fit_seconds": round(sum(candidates[n]["fit_seconds"] for n in names), 4),
            "search": [],
        }
    if costs is not None:  # the expected cost at every threshold, out of fold: the report plots it
        rows = np.concatenate([test for _, test in folds])
        for name, candidate in candidates.items():
            risk = blend_risk if name == BLEND else risks[name]
            curve = threshold_curve("cost", y[rows], risk[rows], costs)
            candidate["cost_curve"] = {
                "thresholds": THRESHOLD_GRID.tolist(),
                "cost": [round(float(v), 6) for v in curve],
            }
    for name, candidate in candidates.items():
        logger.info(
            "candidate %s: CV %s %.4f ± %.4f, out-of-fold ROC AUC %.3f, flag-everyone %.4f%s",
            name,
            metric,
            candidate["mean"],
            candidate["std"],
            candidate["oof_roc_auc"],
            candidate["flag_everyone_score"],
            "" if candidate["informative"] else " (uninformative)",
        )
    # Round 3: refit on all rows what was chosen (a blend: each of its members).
    modelfiles.import_skops_in_background()  # save_model needs it next
    chosen, selection = choose(candidates, metric)
    needed = candidates[BLEND]["members"] if chosen == BLEND else [chosen]
    results.update(fitter.run([(name, kept[name], None) for name in needed]))
    final = {name: results[(name, kept[name], None)]["pipeline"] for name in needed}
    for name in needed:
        candidates[name]["refit_seconds"] = round(results[(name, kept[name], None)]["seconds"], 4)
    workers: dict[str, int] = {}
    for entry in log:
        workers[entry["worker"]] = workers.get(entry["worker"], 0) + 1
    fits = {
        "count": len(log),
        "seconds": round(sum(entry["seconds"] for entry in log), 4),
        "by_worker": workers,
        "log": log,
    }
    return candidates, final, fits, chosen, selection


FOLD_PRIORITY = 100.0  # above any fit's cost: the fits of one fold run side by side, sharing its file


@dataclass
class _Fitter:
    """Runs rounds of fits where the runner runs them, with the fold files they need."""

    runner: compute.Runner
    source: TrainingData
    files: FoldFiles | None
    seed: int
    splits: int
    log: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def run(self, jobs: list[tuple[str, int, int | None]]) -> dict[tuple, dict[str, Any]]:
        folds = {fold for _, _, fold in jobs}
        rank = {fold: position for position, fold in enumerate(sorted(folds, key=lambda f: -1 if f is None else f))}
        arguments = [
            (self.source, name, SEARCH_SPACE[name][index], self.seed, self.splits, fold) for name, index, fold in jobs
        ]
        # Fold by fold, the longest fit of each first.
        costs = [
            FIT_COST[name] * (1.25 if fold is None else 1.0) + FOLD_PRIORITY * (len(folds) - rank[fold])
            for name, _, fold in jobs
        ]
        if self.files is not None:
            self.files.write(folds)
        try:
            outcomes = self.runner.map(_fit_task, arguments, costs, name="fit")
        finally:
            if self.files is not None:
                self.files.remove()  # no later round uses a fold of this one
        for (name, index, fold), outcome in zip(jobs, outcomes):
            self.log.append(
                {
                    "model": name,
                    "setting": index,
                    "fold": fold,
                    "seconds": round(outcome["seconds"], 4),
                    "worker": outcome["worker"],
                }
            )
        return dict(zip(jobs, outcomes))


def _oof_risk(rows: int, by_fold: dict[int, np.ndarray], folds: list) -> np.ndarray:
    risk = np.full(rows, np.nan)
    for fold, values in by_fold.items():
        risk[folds[fold][1]] = values
    return risk


def _final_model(chosen: str, candidates: dict[str, Any], final: dict[str, Pipeline]) -> FixedThresholdClassifier:
    """The chosen pipeline (or blend), refitted on all rows, behind its tuned threshold."""
    if chosen == BLEND:
        estimator: Any = SoftVotingBlend([(name, final[name]) for name in candidates[BLEND]["members"]])
        estimator.classes_ = np.array([0, 1])
    else:
        estimator = final[chosen]
    model = FixedThresholdClassifier(
        estimator, threshold=candidates[chosen]["threshold"], response_method="predict_proba"
    )
    # The refit ran where the fits ran; set what FixedThresholdClassifier.fit would have
    # (a fitted clone) rather than fit the whole thing again here.
    model.estimator_ = estimator
    return model


def _warnings(chosen: str, candidates: dict[str, Any], config: Config) -> list[str]:
    """Plain sentences for operators about what the chosen model can and cannot do."""
    warnings = []
    metric = config["metric"]
    best = candidates[chosen]
    if not any(c["informative"] for c in candidates.values()):
        warnings.append(
            f"No candidate model tells the classes apart: every one is no better than chance (best out-of-fold "
            f"ROC AUC {max(c['oof_roc_auc'] for c in candidates.values()):.2f}, where 0.5 is chance) or than flagging "
            f"every client ({metric} {best['flag_everyone_score']:.4f} for flagging everyone, {best['mean']:.4f} for "
            f"{chosen}). Do not act on its predictions; more or better data is needed."
        )
    if best["flagged_share"] > config["max_flagged_share"]:
        warnings.append(
            f"The decision threshold {best['threshold']:.2f} flags {best['flagged_share']:.0%} of the training rows "
            f"(out of fold), more than max_flagged_share {config['max_flagged_share']:.0%}: the model calls nearly every "
            "client at risk."
        )
    return warnings


def _check_trainable(y: np.ndarray, config: Config) -> None:
    positives = int(y.sum())
    if positives < config["cv_folds"] or len(y) - positives < config["cv_folds"]:
        raise TrainingError(
            f"need at least {config['cv_folds']} rows of each class to cross-validate; "
            f"have {positives} with target {config.target}={config.positive_label!r} and {len(y) - positives} without"
        )


def _metadata(
    config: Config,
    best: str,
    model: FixedThresholdClassifier,
    candidates: dict[str, Any],
    features: dict[str, list[str]],
    kinds: dict[str, str],
    rows: int,
    y: np.ndarray,
    seconds: float,
) -> dict[str, Any]:
    master = masterstore.master_path(config)
    return {
        "trained_at": utc_now(),
        "model": best,
        "parameters": _parameters(model.estimator_),
        "threshold": model.threshold,
        "metric": config["metric"],
        "cv_folds": config["cv_folds"],
        "random_seed": config["random_seed"],
        "candidates": candidates,
        "features": features,
        "column_kinds": kinds,
        "target": config.target,
        "positive_label": config.positive_label,
        "id_columns": config["id_columns"],
        "drop_columns": config["drop_columns"],
        "training_rows": int(rows),
        "training_positives": int(y.sum()),
        "training_data_sha256": sha256_file(master) if master.exists() else None,
        "training_files": [
            {"name": e["name"], "sha256": e["sha256"], "rows_added": e["rows_added"]}
            for e in ledger.read_record(config)
            if e["status"] == ledger.STATUS_INGESTED
        ],
        "package_versions": {name: installed_version(name) for name in REPORTED_PACKAGES},
        "python_version": sys.version.split()[0],
        "training_seconds": round(seconds, 3),
    }


def _parameters(estimator: Any) -> dict[str, Any]:
    """The classifier's parameters; a blend's as ``member.parameter``."""
    if isinstance(estimator, SoftVotingBlend):
        return {
            f"{name}.{key}": _json_or_repr(value)
            for name, pipeline in estimator.estimators
            for key, value in sorted(pipeline.named_steps["classifier"].get_params().items())
        }
    return {k: _json_or_repr(v) for k, v in sorted(estimator.named_steps["classifier"].get_params().items())}


def _json_or_repr(value: Any) -> Any:
    """A parameter as the metadata records it: strict JSON where it is a plain value, else its
    repr (an estimator, a class, a dict of weights)."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return json_ready(value)
    return repr(value)


def save_model(config: Config, model: FixedThresholdClassifier, metadata: dict[str, Any]) -> None:
    """Write the model (a skops file) and its metadata to the model folder, each file atomically."""
    folder = config.model_folder
    data = modelfiles.model_bytes(model)
    with atomic_path(folder / SKOPS_MODEL_FILE) as tmp:
        tmp.write_bytes(data)
    metadata["model_sha256"] = sha256_file(folder / SKOPS_MODEL_FILE)
    atomic_write_json(folder / METADATA_FILE, metadata)
    stale = folder / MODEL_FILE  # an earlier version's pickle: the folder holds one model
    if stale.exists():
        before_change(stale)
        stale.unlink()
