"""Fit candidate scikit-learn pipelines on the master dataset, pick the best, save it.

Every candidate is one ``Pipeline``: median imputation (with missing-value indicators) and
scaling for numeric features, imputation and one-hot encoding (``handle_unknown="ignore"``)
for categorical ones, then the classifier. Candidates are compared on the configured metric
over stratified cross-validation folds. The decision threshold is tuned on the
out-of-fold risk scores (F1 on the positive class by default), because with a minority
positive class the default 0.5 misses most of the clients at risk.

Saves ``trainedmodel.pkl`` and ``trainedmodel.json`` (parameters, CV scores of every
candidate, features and their types, data hash, package versions, time taken).
"""
from __future__ import annotations

import json
import logging
import pickle
import sys
import time
from datetime import datetime, timezone
from importlib import metadata as package_metadata
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import ingestion
import ledger
import preflight
from fsutil import LockBusy, atomic_path, atomic_write_json, configure_logging, run_lock, sha256_file
from scoring import METADATA_FILE, MODEL_FILE, THRESHOLD_METRICS, binary_target, feature_frame, metric_value
from settings import Config, ConfigError, load_config, script_parser

logger = logging.getLogger(__name__)

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
REPORTED_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "joblib")


class TrainingError(ValueError):
    """The data cannot be trained on; the message says why."""


def feature_types(config: Config, kinds: dict[str, str]) -> dict[str, list[str]]:
    """Numeric and categorical feature columns: every column but target, ids and drops."""
    excluded = {config.target, *config.excluded_columns}
    forced = set(config["categorical_columns"] or [])
    features = [c for c in kinds if c not in excluded]
    if not features:
        raise TrainingError("no feature columns left after removing target, id_columns and drop_columns")
    return {
        "numeric": [c for c in features if kinds[c] == ingestion.NUMERIC and c not in forced],
        "categorical": [c for c in features if kinds[c] == ingestion.TEXT or c in forced],
    }


def build_pipeline(name: str, features: dict[str, list[str]], seed: int) -> Pipeline:
    numeric = Pipeline(
        [("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())]
    )
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
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("classifier", _classifier(name, seed))])


def _classifier(name: str, seed: int) -> Any:
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, C=1.0)
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=300, max_leaf_nodes=15, random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=300, min_samples_leaf=5, n_jobs=-1, random_state=seed)
    raise ConfigError(f"candidate_models: unknown model {name!r}")


def evaluate_candidate(
    pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, folds: StratifiedKFold, metric: str
) -> dict[str, Any]:
    """Cross-validated score of one candidate, with the decision threshold tuned out of fold."""
    risk = cross_val_predict(pipeline, X, y, cv=folds, method="predict_proba")[:, 1]
    tuning_metric = metric if metric in THRESHOLD_METRICS else "f1"
    threshold = max(THRESHOLD_GRID, key=lambda t: metric_value(tuning_metric, y, risk, (risk >= t).astype(int)))
    fold_scores = []
    for _, test_index in folds.split(X, y):
        fold_risk, fold_y = risk[test_index], y[test_index]
        fold_scores.append(metric_value(metric, fold_y, fold_risk, (fold_risk >= threshold).astype(int)))
    return {
        "metric": metric,
        "mean": float(np.mean(fold_scores)),
        "std": float(np.std(fold_scores)),
        "folds": [round(s, 6) for s in fold_scores],
        "threshold": float(threshold),
    }


def train_model(config: Config, data: pd.DataFrame | None = None) -> tuple[FixedThresholdClassifier, dict[str, Any]]:
    """Fit every candidate, keep the best and refit it on all the data. Returns (model, metadata)."""
    started = time.perf_counter()
    kinds = ingestion.column_kinds(config)
    if data is None:
        data = ingestion.load_master(config)
    if config.target not in data.columns:
        raise TrainingError(f"target column {config.target!r} is not in the training data")
    features = feature_types(config, kinds)
    X = feature_frame(data, features)
    y = binary_target(data[config.target], config.positive_label)
    _check_trainable(y, config)
    seed = config["random_seed"]
    folds = StratifiedKFold(n_splits=config["cv_folds"], shuffle=True, random_state=seed)
    candidates = {}
    for name in config["candidate_models"]:
        candidates[name] = evaluate_candidate(build_pipeline(name, features, seed), X, y, folds, config["metric"])
        logger.info("candidate %s: CV %s %.4f ± %.4f", name, config["metric"], candidates[name]["mean"], candidates[name]["std"])
    best = max(candidates, key=lambda name: candidates[name]["mean"])
    model = FixedThresholdClassifier(
        build_pipeline(best, features, seed), threshold=candidates[best]["threshold"], response_method="predict_proba"
    ).fit(X, y)
    metadata = _metadata(config, best, model, candidates, features, kinds, data, y, time.perf_counter() - started)
    logger.info("chose %s (CV %s %.4f) in %.1fs", best, config["metric"], candidates[best]["mean"], metadata["training_seconds"])
    return model, metadata


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
    data: pd.DataFrame,
    y: np.ndarray,
    seconds: float,
) -> dict[str, Any]:
    master = ingestion.master_path(config)
    classifier = model.estimator_.named_steps["classifier"]
    return {
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": best,
        "parameters": {k: _json_safe(v) for k, v in sorted(classifier.get_params().items())},
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
        "training_rows": int(len(data)),
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


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None


def save_model(config: Config, model: FixedThresholdClassifier, metadata: dict[str, Any]) -> None:
    """Write the model and its metadata to the model folder, each file atomically."""
    folder = config.model_folder
    with atomic_path(folder / MODEL_FILE) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    metadata["model_sha256"] = sha256_file(folder / MODEL_FILE)
    atomic_write_json(folder / METADATA_FILE, metadata)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = load_config(args.config)
        preflight.check_columns(config)  # a misspelt column name fails now, naming the close matches
        with run_lock(ledger.lock_path(config)):
            model, metadata = train_model(config)
            save_model(config, model, metadata)
    except (ConfigError, TrainingError, LockBusy, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps({k: metadata[k] for k in ("model", "metric", "threshold", "candidates", "training_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
