"""A deployed version's risk scores and 0/1 decisions on rows of data.

What diagnostics (drift of the predicted risk, fairness), reporting (the test-data figures)
and promotion (the champion's side of the comparison) all ask of a deployed model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from risk.core import logs
from risk.model import scoring
from risk.model.compute import single_threaded
from risk.registry import versions

logger = logging.getLogger(__name__)


def risk_and_predictions(deployed: versions.DeployedModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The deployed model's risk scores and 0/1 decisions for every row of ``frame``."""
    return model_risk_and_predictions(deployed.model, deployed.metadata["features"], frame, deployed.version)


def model_risk_and_predictions(
    model: Any, features: dict[str, list[str]], frame: pd.DataFrame, version: str
) -> tuple[np.ndarray, np.ndarray]:
    """A model's risk scores and 0/1 decisions for every row of ``frame`` (a function of plain
    values, so that a Dask worker can run it on a chunk).

    Single-threaded: a few thousand rows at a time, and on a busy host OpenMP's spinning
    threads made each prediction up to thirty times slower than one thread does.
    """
    features = scoring.feature_frame(frame, features)
    with single_threaded(), logs.captured_warnings() as caught:
        risk, predicted = model.predict_proba(features)[:, 1], model.predict(features).astype(int)
    for message in caught:  # once each, in the log, not a line per call on stderr
        logger.warning("%s predicting %d rows: %s", version, len(frame), message)
    return risk, predicted
