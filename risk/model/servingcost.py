"""What one row costs to score, measured the way the API scores it.

The API scores with ``compiled.build_scorer(model, schema, check_frame)`` (the compiled scorer,
or scikit-learn's own where compiling fails or is inexact); this module builds that same
scorer and times ``scorer.risk`` on one row: the median of ``SERVING_CALLS`` calls after
``SERVING_WARMUP`` untimed ones, in microseconds. It is this machine's figure at the time it
was measured (training, beside whatever else ran): a comparison between candidates measured in
the same run, not a promise about another host. The HTTP request around it is not counted.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pandas as pd

from risk.model import compiled
from risk.model.batches import Schema, slice_batch
from risk.model.compute import single_threaded

SERVING_WARMUP = 20
SERVING_CALLS = 200
# Rows for the scorer's self-check here: enough to tell whether the compiled scorer is exact (the API checks
# its version's reference sample again when it loads it). With the API's 2,000 rows the blend's scorer took
# 0.9-1.1 s to build on the sample data, against 0.27-0.32 s with 200.
CHECK_ROWS = 200


def serving_cost(model: Any, schema: Schema, check_frame: pd.DataFrame | None) -> dict[str, Any]:
    """The single-row serving cost of ``model`` (a fitted FixedThresholdClassifier) as the API would serve it.

    ``check_frame``: rows of the training data, for the scorer's self-check (its first CHECK_ROWS; the
    API uses the version's reference sample) and the row timed (its first; without rows, a row of
    missing values)."""
    if check_frame is not None:
        check_frame = check_frame.head(CHECK_ROWS)
    # One OpenMP / BLAS thread, as gunicorn.conf.py sets for the API's workers (several spin against each other
    # on a busy machine: the self-check alone took up to 1.5 s instead of 0.05).
    with single_threaded():
        started = time.perf_counter()
        scorer = compiled.build_scorer(model, schema, check_frame)
        built = time.perf_counter() - started
        row = slice_batch(compiled.self_check_batch(schema, check_frame), 0, 1)
        for _ in range(SERVING_WARMUP):
            scorer.risk(row)
        timings = []
        for _ in range(SERVING_CALLS):
            start = time.perf_counter_ns()
            scorer.risk(row)
            timings.append(time.perf_counter_ns() - start)
    return {
        "serving_us_per_row": round(statistics.median(timings) / 1000, 1),
        "serving_scorer": scorer.kind,
        "serving_build_seconds": round(built, 4),
    }
