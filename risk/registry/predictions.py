"""A deployed version's risk scores and 0/1 decisions on rows of data, and the reasons' explainer.

What diagnostics (drift of the predicted risk, fairness), reporting (the test-data figures)
and promotion (the champion's side of the comparison) all ask of a deployed model; the call list
and ``/prediction`` with ``"explain": true`` ask it for its explainer (``explainer_for``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from risk.core import logs
from risk.core.settings import Config
from risk.core.tables import read_typed_csv
from risk.data import masterstore
from risk.model import scoring
from risk.model.compute import single_threaded
from risk.model.explain import Explainer, typical_client
from risk.registry import versions

logger = logging.getLogger(__name__)


def risk_and_predictions(deployed: versions.DeployedModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The deployed model's risk scores and 0/1 decisions for every row of ``frame``.

    Single-threaded: a few thousand rows at a time, and on a busy host OpenMP's spinning
    threads made each prediction up to thirty times slower than one thread does.
    """
    features = scoring.feature_frame(frame, deployed.metadata["features"])
    with single_threaded(), logs.captured_warnings() as caught:
        risk, predicted = scoring.risk_and_decisions(deployed.model, features)
    _log_warnings(caught, deployed.version, len(frame))
    return risk, predicted


def model_risk(model: Any, features: dict[str, list[str]], frame: pd.DataFrame, version: str) -> np.ndarray:
    """A model's risk scores for every row of ``frame``, single-threaded as risk_and_predictions
    (a function of plain values, so that a Dask worker can run it on a chunk)."""
    inputs = scoring.feature_frame(frame, features)
    with single_threaded(), logs.captured_warnings() as caught:
        risk = model.predict_proba(inputs)[:, 1]
    _log_warnings(caught, version, len(frame))
    return risk


def served_threshold(deployed: versions.DeployedModel) -> float:
    """The threshold the deployed model decides at: a risk at or above it is flagged, as the API decides."""
    return float(getattr(deployed.model, "threshold", deployed.metadata["threshold"]))


def _log_warnings(caught: list[str], version: str, rows: int) -> None:
    for message in caught:  # once each, in the log, not a line per call on stderr
        logger.warning("%s predicting %d rows: %s", version, rows, message)


def explainer_for(config: Config, deployed: versions.DeployedModel) -> Explainer:
    """The reasons' explainer for a deployed version, against its training data's typical client.

    Versions trained before the typical client was recorded (no ``typical_client`` in their
    metadata) get it from the master's first ``training_rows`` rows (the master only grows: the rows
    they were trained on), logged as such.
    """
    features = deployed.metadata["features"]
    typical = deployed.metadata.get("typical_client")
    if typical is None:
        typical = typical_client_from_master(config, deployed)
    return Explainer(deployed.model, features, typical)


def typical_client_from_master(config: Config, deployed: versions.DeployedModel) -> dict[str, Any]:
    """The typical client of a version whose metadata lacks it, from the master's rows it was trained on."""
    metadata = deployed.metadata
    features = metadata["features"]
    columns = features["numeric"] + features["categorical"]
    kinds = {column: metadata["column_kinds"][column] for column in columns}
    rows = metadata.get("training_rows")
    master = masterstore.master_path(config)
    frame = read_typed_csv(master, kinds, usecols=columns, nrows=rows, categories=features["categorical"])
    logger.info(
        "%s records no typical client (trained before it was recorded): computed from the first %d rows of %s",
        deployed.version,
        len(frame),
        master,
    )
    return typical_client(frame, features)
