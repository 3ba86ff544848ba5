"""In-process cost of ``GET /calllist`` and ``GET /calllist.csv``, against ``GET /healthz`` of the same app.

For a synthetic list of each size in ``--rows`` (written by the list's own writer,
``risk.registry.calllists``, with three reasons per client as long as the sample's), in a fresh
project with no model:

1. the first ``GET /calllist`` after the list changed: it reads the list (once per change and
   worker), in seconds;
2. then, alternating in rounds, ``GET /healthz``, ``GET /calllist`` (the budget's 100 clients),
   ``GET /calllist?top=10000`` and ``GET /calllist.csv`` (the whole file): the median microseconds
   per request, each as a ratio to ``/healthz``.

Usage: ``python benchmarks/bench_calllistapi.py [--list-rows 10000,100000] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUDGET = 100
CALLS = {"/healthz": 200, "/calllist": 200, "/calllist?top=10000": 5, "/calllist.csv": 5}


def write_list(config: Any, rows: int) -> None:
    """A list of ``rows`` clients as the run writes it: ranked, compared with none, the budget summed."""
    import numpy as np
    import pandas as pd

    from risk.registry import calllists

    ids = config["id_columns"]
    rng = np.random.default_rng(0)
    frame = calllists.ranked(pd.DataFrame({ids[0]: [f"c{i:07d}" for i in range(rows)], "risk": rng.random(rows)}), ids)
    frame["band"] = "amber"
    frame["flagged"] = frame["risk"] >= 0.3
    for n, column in enumerate(calllists.REASON_COLUMNS, start=1):
        frame[column] = f"lastyear_activity = 3{n}18 (typical 142): +0.{n}6"
    frame = calllists.with_changes(frame, None, ids)[calllists.list_columns(ids)]
    info = {
        "version": "v1",
        "model": "logistic_regression",
        "threshold": 0.3,
        "id_columns": ids,
        "warnings": [],
        "written_at": "2026-12-07T09:00:00+00:00",
        "method": "benchmark",
        "previous": None,
        **calllists.budget_summary(frame["risk"].to_numpy(), frame["flagged"].to_numpy(), BUDGET),
    }
    calllists.write_call_list(config, info, frame, "20261207T090000Z")


def caller(app: Any, path: str) -> Any:
    from werkzeug.test import EnvironBuilder

    route, _, query = path.partition("?")
    environ = EnvironBuilder(path=route, query_string=query, method="GET").get_environ()

    def call() -> None:
        statuses: list[str] = []
        answer = app(dict(environ, **{"wsgi.input": io.BytesIO(b"")}), lambda s, h, e=None: statuses.append(s))
        try:
            for _ in answer:  # the whole body, as a server sends it
                pass
        finally:
            getattr(answer, "close", lambda: None)()
        if not statuses[0].startswith("200"):
            raise RuntimeError(f"GET {path} answered {statuses[0]}")

    return call


def measure(rows: int, rounds: int) -> dict[str, Any]:
    from risk.api import service
    from risk.core.settings import load_config

    folder = Path(tempfile.mkdtemp(prefix="bench-calllistapi-"))
    try:
        shutil.copy(PROJECT_DIR / "config.json", folder / "config.json")
        config = load_config(folder / "config.json")
        write_list(config, rows)
        app = service.create_app(config.path)
        logging.getLogger().setLevel(logging.WARNING)
        calls = {path: caller(app, path) for path in CALLS}
        started = time.perf_counter()
        calls["/calllist"]()
        first = time.perf_counter() - started
        timings: dict[str, list[float]] = {path: [] for path in CALLS}
        for _ in range(rounds):
            for path, count in CALLS.items():
                started = time.perf_counter()
                for _ in range(count):
                    calls[path]()
                timings[path].append((time.perf_counter() - started) / count * 1e6)
        return {"rows": rows, "first": first, **{path: statistics.median(values) for path, values in timings.items()}}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list-rows", default="10000,100000", help="list sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args, _ = parser.parse_known_args(argv)  # run.py passes every benchmark the same arguments
    os.environ.pop("API_TOKEN", None)
    sys.path.insert(0, str(PROJECT_DIR))
    print("GET /calllist and /calllist.csv, in-process, against GET /healthz of the same app (median of rounds)")
    for rows in (int(text) for text in args.list_rows.split(",")):
        result = measure(rows, args.rounds)
        health = result["/healthz"]
        print(f"  list of {rows:,} clients: first /calllist (reads the list) {result['first']:.2f} s")
        for path in CALLS:
            print(f"    {path:<22} {result[path]:>10.0f} us  {result[path] / health:>7.1f}x /healthz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
