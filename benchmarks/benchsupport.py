"""What the benchmarks share: a measurement run in a fresh interpreter of the benchmark's own script."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_worker(script: str, phase: str, *options: str) -> dict:
    """Run ``script --worker PHASE OPTIONS…`` in a fresh Python (its imports and peak memory
    are its own) and return the JSON it prints on its last line."""
    output = subprocess.run(
        [sys.executable, script, "--worker", phase, *options],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def every_kind(features: dict[str, list[str]], X: Any, y: Any, threshold: float = 0.3) -> dict[str, Any]:
    """Each candidate kind fitted as training builds it (its first setting, sized for the rows) and
    their soft-voting blend, each behind a fixed threshold as training saves them."""
    import numpy as np
    from sklearn.model_selection import FixedThresholdClassifier

    from risk.model import pipelines

    fitted = {
        name: pipelines.build_pipeline(name, features, 0, rows=len(y)).fit(X, y) for name in pipelines.SEARCH_SPACE
    }
    blend = pipelines.SoftVotingBlend(list(fitted.items()))
    blend.classes_ = np.array([0, 1])
    models = {}
    for name, estimator in [*fitted.items(), (pipelines.BLEND, blend)]:
        models[name] = FixedThresholdClassifier(estimator, threshold=threshold, response_method="predict_proba")
        models[name].estimator_ = estimator
    return models
