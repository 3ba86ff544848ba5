"""Score a trained model on the labelled hold-out data in the test folder.

Writes the classic ``latestscore.txt`` (the F1 score on the positive class) and
``scores.json`` (F1, ROC AUC, precision, recall, accuracy and the confusion counts) beside
the model.
"""
from __future__ import annotations

import json
import logging
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

import ingestion
from fsutil import atomic_write_json, atomic_write_text, configure_logging
from settings import Config, ConfigError, load_config, script_parser

logger = logging.getLogger(__name__)

MODEL_FILE = "trainedmodel.pkl"
METADATA_FILE = "trainedmodel.json"
SCORE_FILE = "latestscore.txt"
SCORES_JSON_FILE = "scores.json"

# Metrics that judge hard 0/1 decisions rather than the ranking of risk scores.
THRESHOLD_METRICS = ("f1", "precision", "recall", "accuracy", "balanced_accuracy")


class ScoringError(ValueError):
    """The data cannot be scored; the message says which file or column is at fault."""


def binary_target(values: pd.Series, positive_label: Any) -> np.ndarray:
    """1 where the label is the configured positive ("at risk") label, else 0."""
    if pd.api.types.is_numeric_dtype(values) and isinstance(positive_label, (int, float)):
        return (values.to_numpy() == positive_label).astype(int)
    return (values.astype(str).str.strip() == str(positive_label)).to_numpy().astype(int)


def metric_value(name: str, y_true: np.ndarray, risk: np.ndarray, predicted: np.ndarray) -> float | None:
    """One metric; None where it is undefined (ROC AUC with a single class present)."""
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


def classification_metrics(y_true: np.ndarray, risk: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Every figure the system reports about a model on labelled data."""
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    names = ("f1", "roc_auc", "average_precision", "precision", "recall", "accuracy", "balanced_accuracy")
    result: dict[str, Any] = {name: metric_value(name, y_true, risk, predicted) for name in names}
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
        columns[column] = frame[column].astype("object").where(frame[column].notna(), np.nan).map(
            lambda v: v if isinstance(v, str) or pd.isna(v) else str(v)
        )
    return pd.DataFrame(columns, index=frame.index)


def score_frame(model: Any, frame: pd.DataFrame, metadata: dict[str, Any], config: Config) -> dict[str, Any]:
    """Metrics of ``model`` on a labelled frame."""
    if config.target not in frame.columns:
        raise ScoringError(f"target column {config.target!r} is missing")
    features = feature_frame(frame, metadata["features"])
    y_true = binary_target(frame[config.target], config.positive_label)
    risk = model.predict_proba(features)[:, 1]
    predicted = model.predict(features).astype(int)
    return classification_metrics(y_true, risk, predicted)


def load_test_data(config: Config) -> pd.DataFrame:
    """Every CSV in the test folder, in name order."""
    folder = config.require_folder("test_data_path")
    files = sorted(p for p in folder.glob("*.csv") if not p.name.startswith("."))
    if not files:
        raise ScoringError(f"test_data_path: no CSV file in {folder}")
    kinds = ingestion.column_kinds(config)
    return pd.concat([ingestion.read_dataset(path, kinds) for path in files], ignore_index=True)


def load_trained_model(config: Config) -> tuple[Any, dict[str, Any]]:
    """The freshly trained model in the model folder and its metadata.

    Only files this system wrote there are read; deployed models go through
    deployment.load_deployed_model, which verifies a checksum first.
    """
    folder = config.model_folder
    metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    with open(folder / MODEL_FILE, "rb") as handle:
        model = pickle.load(handle)
    return model, metadata


def score_model(config: Config) -> dict[str, Any]:
    """Score the trained model on the test data and write the score files beside it."""
    model, metadata = load_trained_model(config)
    scores = score_frame(model, load_test_data(config), metadata, config)
    scores["model_trained_at"] = metadata["trained_at"]
    scores["metric"] = config["metric"]
    write_scores(config.model_folder, scores)
    return scores


def write_scores(folder: Path, scores: dict[str, Any]) -> None:
    atomic_write_json(folder / SCORES_JSON_FILE, scores)
    atomic_write_text(folder / SCORE_FILE, f"{scores['f1']}\n")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    configure_logging()
    try:
        scores = score_model(load_config(args.config))
    except (ConfigError, ScoringError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
