"""The cost of the reasons: scoring a client book with and without them, and an explained request against a plain one.

For the model ``make run`` deploys and for each kind the trainer can choose, forced in turn (the
projects ``bench_api.make_project`` makes of the sample data: ``deployed``, then each kind):

1. a 100,000-row book (``--rows``), resampled with a fixed seed from the sample data's clients:
   its risks by the deployed model's ``predict_proba`` (what scoring a book costs) against the
   same risks plus every row's three reasons (``explain.Explainer.reasons``, in its chunks), the
   median of ``--repeat`` interleaved repeats; the ratio, and the reasons' own cost per 1,000 rows;
2. one single-row ``POST /prediction`` with ``"explain": true`` against the same request without
   it, the app called in-process as a WSGI server calls it (``bench_request.wsgi_caller``),
   alternating rounds, medians; and the one-off cost of building the version's explainer (the first
   explained request pays it).

One OpenMP/BLAS thread, as in the gunicorn workers and the call list's step. Usage:
``python benchmarks/bench_explain.py [--kinds deployed,logistic_regression,...] [--rows N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
ONE_ROW = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}
PLAIN_BODY = json.dumps([ONE_ROW]).encode()
EXPLAINED_BODY = json.dumps({"records": [ONE_ROW], "explain": True}).encode()
BOOK_SEED = 21


def book(config: Any, rows: int) -> Any:
    """``rows`` clients resampled (seeded) from the sample data's ingested and test clients."""
    import pandas as pd

    from risk.data import masterstore

    clients = pd.concat([masterstore.load_master(config), pd.read_csv(config.test_data_folder / "testdata.csv")])
    return clients.sample(rows, replace=True, random_state=BOOK_SEED).reset_index(drop=True)


def seconds(function: Any) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure_book(config: Any, rows: int, repeat: int) -> dict[str, Any]:
    from risk.model.scoring import feature_frame
    from risk.registry import predictions, versions

    deployed = versions.load_deployed_model(config)
    explainer_seconds = seconds(lambda: predictions.explainer_for(config, deployed))
    explainer = predictions.explainer_for(config, deployed)
    features = feature_frame(book(config, rows), deployed.metadata["features"])
    plain: list[float] = []
    explained: list[float] = []
    for _ in range(repeat):
        plain.append(seconds(lambda: deployed.model.predict_proba(features)))
        explained.append(seconds(lambda: (deployed.model.predict_proba(features), explainer.reasons(features, top=3))))
    return {
        "model": deployed.metadata.get("model"),
        "explainer_build_s": explainer_seconds,
        "book_plain_s": statistics.median(plain),
        "book_explained_s": statistics.median(explained),
        "book_ratio": statistics.median(e / p for e, p in zip(explained, plain)),
        "reasons_ms_per_1000_rows": 1000 * (statistics.median(explained) - statistics.median(plain)) / rows * 1000,
    }


def measure_request(config: Any, rounds: int) -> dict[str, Any]:
    import bench_request

    from risk.api import service

    app = service.create_app(config.path)
    logging.getLogger().setLevel(logging.WARNING)  # create_app's "serving v1" lines are not results
    plain = bench_request.wsgi_caller(app, "/prediction", "POST", PLAIN_BODY, "application/json")
    explained = bench_request.wsgi_caller(app, "/prediction", "POST", EXPLAINED_BODY, "application/json")
    first = seconds(explained)  # builds the explainer
    if b'"reasons"' not in explained():
        raise RuntimeError("the explained request answered without reasons")
    calls = max(5, int(0.5 / max(seconds(explained), 1e-4)))  # about half a second of explained requests a round
    times: dict[str, list[float]] = {"plain": [], "explained": []}
    for _ in range(rounds):
        for name, function, count in (("plain", plain, calls * 5), ("explained", explained, calls)):
            times[name].append(bench_request.per_call_us(function, count))
    return {
        "first_explained_request_s": first,
        "request_plain_us": statistics.median(times["plain"]),
        "request_explained_us": statistics.median(times["explained"]),
        "request_ratio": statistics.median(e / p for e, p in zip(times["explained"], times["plain"])),
    }


def report(results: dict[str, dict[str, Any]], rows: int) -> str:
    lines = [f"The reasons' cost (one thread; medians; a {rows:,}-row book resampled from the sample data)"]
    for kind, r in results.items():
        lines.append(
            f"  {kind} ({r['model']}): book {r['book_plain_s']:.2f} s scored, {r['book_explained_s']:.2f} s with reasons "
            f"-> {r['book_ratio']:.1f}x ({r['reasons_ms_per_1000_rows']:.1f} ms of reasons per 1,000 rows); "
            f"explainer built in {r['explainer_build_s']:.2f} s"
        )
        lines.append(
            f'    single-row /prediction {r["request_plain_us"]:.0f} us, with "explain": true '
            f"{r['request_explained_us']:.0f} us -> {r['request_ratio']:.1f}x (the first explained request, which "
            f"builds the explainer: {r['first_explained_request_s'] * 1000:.0f} ms)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kinds",
        default="deployed,logistic_regression,hist_gradient_boosting,random_forest,soft_voting_blend",
        help="projects to measure (bench_api's kinds)",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the client book")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats of the book (the median)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating request rounds (the median)")
    args, _ = parser.parse_known_args(argv)  # benchmarks/run.py passes every benchmark the same arguments
    sys.path.insert(0, str(PROJECT_DIR))
    sys.path.insert(0, str(PROJECT_DIR / "benchmarks"))
    import bench_api
    from threadpoolctl import threadpool_limits

    folder = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    try:
        results = {}
        for kind in [k for k in args.kinds.split(",") if k]:
            print(f"setting up the {kind} project ...", flush=True)
            config = bench_api.make_project(folder / kind, kind)
            with threadpool_limits(limits=1):
                results[kind] = {**measure_book(config, args.rows, args.repeat), **measure_request(config, args.rounds)}
        print(report(results, args.rows))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
