"""In-process scoring of one row: the compiled scorer the API serves against scikit-learn's predict_proba.

For every candidate kind and the soft-voting blend, fitted as training builds them (each
model's first setting, sized for the rows) on the sample data and, where ``../shared/data``
is present, on the bank churn and German credit data: the microseconds one ``/prediction``
row costs through ``compiled.build_scorer``'s scorer and through scikit-learn's
``predict_proba`` (the fallback, ``SklearnScorer``), measured in the same run on the same rows,
repeats interleaved so that a busy neighbour slows both alike; the median CPU time of ``--repeat``
repeats, one OpenMP/BLAS thread as in the gunicorn workers. Also the largest difference
between the two over the held-out rows scored one at a time, and the scorer's kind (a fallback
would show "scikit-learn"). Usage: ``python benchmarks/bench_scoring.py [--repeat N] [--rows N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import benchsupport
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from risk.data import sample
from risk.model import batches, compiled
from risk.model.scoring import binary_target, feature_frame

SHARED_DATA = HERE.parent.parent / "shared" / "data"
# name: (file, target, positive label, identifier columns); the sample data comes from risk.data.sample
SHARED = {
    "bank churn": ("bank_churn_modelling.csv", "Exited", 1, ["RowNumber", "CustomerId", "Surname"]),
    "german credit": ("german_credit_kaggle.csv", "Risk", "bad", ["Unnamed: 0"]),
}
TRAIN_SHARE = 0.7
CALLS_PER_REPEAT = 20  # single-row calls per timed repeat, cycling over the rows


def datasets() -> dict[str, tuple[pd.DataFrame, str, object]]:
    """Each dataset's rows (identifier columns dropped), its target column and its positive label."""
    files = sample.build_sample()
    rows = [frame for name, frame in files.items() if name.startswith("input/")] + [files["test/testdata.csv"]]
    found = {"sample": (pd.concat(rows).drop(columns=["corporation"]).reset_index(drop=True), "exited", 1)}
    for name, (file, target, positive, ids) in SHARED.items():
        if (SHARED_DATA / file).is_file():
            found[name] = (pd.read_csv(SHARED_DATA / file).drop(columns=ids), target, positive)
    return found


def fitted_models(
    frame: pd.DataFrame, target: str, positive: object
) -> tuple[dict[str, Any], dict[str, list[str]], pd.DataFrame]:
    """Every candidate kind and their blend, fitted on the first rows; the features and the held-out rows."""
    columns = [c for c in frame.columns if c != target]
    features = {
        "numeric": [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])],
        "categorical": [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])],
    }
    train = frame.iloc[: int(len(frame) * TRAIN_SHARE)]
    X, y = feature_frame(train, features), binary_target(train[target], positive)
    models = benchsupport.every_kind(features, X, y)
    return models, features, frame.iloc[len(train) :]


def per_call_us(functions: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median CPU microseconds per call of each function, their repeats interleaved.

    CPU time, not wall time: on a shared machine the wall clock also counts the time this
    process waits for a core, which says nothing about the scorer."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeat):
        for function, measured in zip(functions, times):
            started = time.process_time()
            function()
            measured.append((time.process_time() - started) / CALLS_PER_REPEAT * 1e6)
    return [statistics.median(measured) for measured in times]


def cycling(score: Callable[[batches.Batch], object], rows: list[batches.Batch]) -> Callable[[], None]:
    """CALLS_PER_REPEAT single-row calls, cycling over ``rows``."""
    calls = [rows[i % len(rows)] for i in range(CALLS_PER_REPEAT)]

    def run() -> None:
        for row in calls:
            score(row)

    return run


def measure(dataset: str, frame: pd.DataFrame, target: str, positive: object, repeat: int, rows: int) -> None:
    models, features, held_out = fitted_models(frame, target, positive)
    schema = batches.Schema(tuple(features["numeric"]), tuple(features["categorical"]), ())
    batch = batches.batch_from_frame(held_out, schema, 0)
    singles = [batches.slice_batch(batch, i, i + 1) for i in range(batch.rows)]
    for name, model in models.items():
        scorer = compiled.build_scorer(model, schema, feature_frame(frame.iloc[: len(frame) - len(held_out)], features))
        fallback = compiled.SklearnScorer(model, schema)
        one_at_a_time = np.concatenate([scorer.risk(one) for one in singles])
        worst = float(np.max(np.abs(one_at_a_time - fallback.risk(batch))))
        ours, theirs = per_call_us(
            [cycling(scorer.risk, singles[:rows]), cycling(fallback.risk, singles[:rows])], repeat
        )
        print(
            f"{dataset:<14} {name:<23} {ours:>12.1f} {theirs:>13.1f} {theirs / ours:>8.1f} {worst:>10.1e}  {scorer.kind}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=31, help="timed repeats per scorer (median)")
    parser.add_argument("--rows", type=int, default=50, help="distinct held-out rows cycled through")
    args, _ = parser.parse_known_args(argv)
    print("scoring one row in-process: the compiled scorer against scikit-learn's predict_proba, same run")
    print(
        f"{'data':<14} {'model':<23} {'compiled us':>12} {'sklearn us':>13} {'faster x':>8} {'max diff':>10}  served by"
    )
    with threadpool_limits(limits=1):
        found = datasets()
        for dataset, (frame, target, positive) in found.items():
            measure(dataset, frame, target, positive, args.repeat, args.rows)
    if len(found) == 1:
        print(f"(the bank churn and German credit rows are skipped: {SHARED_DATA} is absent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
