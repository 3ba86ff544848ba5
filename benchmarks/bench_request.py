"""In-process cost of one API request: the app of ``create_app()`` called as gunicorn calls it (WSGI).

What ``bench_api.py`` cannot separate: the server's own work per request, without the HTTP
server, the load generator and the other processes on the machine. For the model ``make run``
deploys and the soft-voting blend (``--kinds``), the project made as ``bench_api.make_project``
makes it:

1. single-row ``POST /prediction`` (JSON) against ``GET /healthz``, alternating in rounds, the
   median microseconds per request of each, their difference and their ratio; beside it the
   model's own scoring of the same row (``scorer.risk``), so what the request adds beyond the
   model shows;
2. the 10,000-row CSV request (``bench_api.batch_csv``) against the scoring of the same rows by
   the same scorer;
3. the cost of ``log_predictions``: the same single-row request and 10,000-row CSV request by an app
   whose config logs them (``risk.monitoring.predlog``, every row carries its id), against the app
   that does not, alternating in rounds; the ratio of the medians.

Prometheus values live in memory-mapped files as under gunicorn (``PROMETHEUS_MULTIPROC_DIR`` set
to a temporary folder before prometheus_client is imported; where another benchmark of the same
run imported it first, the output says so). Usage:
``python benchmarks/bench_request.py [--kinds deployed,soft_voting_blend] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import io
import json
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
ONE_ROW_BODY = json.dumps(
    [{"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}]
).encode()
CALLS_PER_ROUND = 1000
CSV_REPEAT = 5


def wsgi_caller(app: Any, path: str, method: str, body: bytes, content_type: str | None) -> Any:
    """A function making one request of ``app``, as a WSGI server would; it checks the answer is 200."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method=method, data=body or None, content_type=content_type).get_environ()

    def call() -> bytes:
        request = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        statuses: list[str] = []
        answer = b"".join(app(request, lambda status, headers, exc_info=None: statuses.append(status)))
        if not statuses[0].startswith("200"):
            raise RuntimeError(f"{method} {path} answered {statuses[0]}: {answer[:300]!r}")
        return answer

    return call


def per_call_us(function: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1e6


def measure_kind(config: Any, rounds: int) -> dict[str, Any]:
    import bench_api

    from risk.api import service
    from risk.model import batches

    app = service.create_app(config.path)
    logging.getLogger().setLevel(logging.WARNING)  # create_app's "serving v1" lines are not results
    loaded = app.extensions[service.EXTENSION].holder.get()
    healthz = wsgi_caller(app, "/healthz", "GET", b"", None)
    prediction = wsgi_caller(app, "/prediction", "POST", ONE_ROW_BODY, "application/json")
    one = batches.batch_from_records(json.loads(ONE_ROW_BODY), loaded.schema, 0)
    scoring = lambda: loaded.scorer.risk(one)  # noqa: E731
    times: dict[str, list[float]] = {"healthz": [], "prediction": [], "scoring": []}
    for function in (healthz, prediction, scoring):
        per_call_us(function, CALLS_PER_ROUND // 4)  # warm up
    for _ in range(rounds):
        for name, function in (("healthz", healthz), ("prediction", prediction), ("scoring", scoring)):
            times[name].append(per_call_us(function, CALLS_PER_ROUND))
    result: dict[str, Any] = {"model": loaded.deployed.metadata.get("model")}
    result.update({f"{name}_us": statistics.median(values) for name, values in times.items()})
    result["ratio_healthz_to_prediction"] = statistics.median(
        h / p for h, p in zip(times["healthz"], times["prediction"])
    )
    csv_bytes = bench_api.batch_csv(config)
    csv_request = wsgi_caller(app, "/prediction", "POST", csv_bytes, "text/csv")
    frame = batches.read_csv_bytes(csv_bytes, loaded.schema)
    batch = batches.batch_from_frame(frame, loaded.schema, 0)
    result["csv_request_ms"] = 1000 * bench_api._median_time(csv_request, CSV_REPEAT)
    result["csv_scoring_ms"] = 1000 * bench_api._median_time(lambda: loaded.scorer.risk(batch), CSV_REPEAT)
    result.update(measure_logging(config, rounds, prediction, csv_request))
    return result


def measure_logging(config: Any, rounds: int, prediction: Any, csv_request: Any) -> dict[str, Any]:
    """The single-row and 10,000-row requests with ``log_predictions`` on against off (the apps otherwise alike)."""
    from risk.api import service

    logging_config = config.path.with_name("config-logging.json")  # beside it: the same folders
    values = json.loads(config.path.read_text(encoding="utf-8"))
    logging_config.write_text(json.dumps({**values, "log_predictions": True}), encoding="utf-8")
    app = service.create_app(logging_config)
    import bench_api

    logged = wsgi_caller(app, "/prediction", "POST", ONE_ROW_BODY, "application/json")
    logged_csv = wsgi_caller(app, "/prediction", "POST", bench_api.batch_csv(config), "text/csv")
    per_call_us(logged, CALLS_PER_ROUND // 4)  # warm up (and the day's file made)
    single: dict[str, list[float]] = {"off": [], "on": []}
    batch: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        single["off"].append(per_call_us(prediction, CALLS_PER_ROUND))
        single["on"].append(per_call_us(logged, CALLS_PER_ROUND))
        batch["off"].append(1000 * bench_api._median_time(csv_request, 1))
        batch["on"].append(1000 * bench_api._median_time(logged_csv, 1))
    lines = sum(len(path.read_bytes().splitlines()) for path in (config.log_folder / "predictions").glob("*.jsonl"))
    return {
        "single_off_us": statistics.median(single["off"]),
        "single_on_us": statistics.median(single["on"]),
        "single_ratio": statistics.median(on / off for on, off in zip(single["on"], single["off"])),
        "csv_off_ms": statistics.median(batch["off"]),
        "csv_on_ms": statistics.median(batch["on"]),
        "csv_ratio": statistics.median(on / off for on, off in zip(batch["on"], batch["off"])),
        "lines_logged": lines,
    }


def report(results: dict[str, dict[str, Any]], multiprocess: bool) -> str:
    lines = [
        "In-process request cost (create_app() called as a WSGI server calls it; medians of alternating rounds)"
        + (
            ""
            if multiprocess
            else "; prometheus_client was imported before this benchmark: values in memory, not mmap files"
        ),
    ]
    for kind, r in results.items():
        lines.append(
            f"  {kind} ({r['model']}): GET /healthz {r['healthz_us']:.0f} us, single-row POST /prediction "
            f"{r['prediction_us']:.0f} us (the model's scoring {r['scoring_us']:.0f} us, the rest of the request "
            f"{r['prediction_us'] - r['scoring_us']:.0f} us); /healthz : /prediction = "
            f"{r['ratio_healthz_to_prediction']:.2f}"
        )
        lines.append(
            f"    10,000-row CSV request {r['csv_request_ms']:.0f} ms against its scoring {r['csv_scoring_ms']:.0f} ms "
            f"-> {r['csv_request_ms'] / r['csv_scoring_ms']:.2f}x"
        )
        lines.append(
            f"    log_predictions on : off: single-row {r['single_on_us']:.0f} us : {r['single_off_us']:.0f} us "
            f"= {r['single_ratio']:.2f}x (+{r['single_on_us'] - r['single_off_us']:.0f} us); 10,000-row CSV "
            f"{r['csv_on_ms']:.0f} ms : {r['csv_off_ms']:.0f} ms = {r['csv_ratio']:.2f}x "
            f"({r['lines_logged']:,} lines logged)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="deployed,soft_voting_blend", help="projects to measure (bench_api's kinds)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (the median is reported)")
    args, _ = parser.parse_known_args(argv)  # benchmarks/run.py passes every benchmark the same arguments
    sys.path.insert(0, str(PROJECT_DIR))
    sys.path.insert(0, str(PROJECT_DIR / "benchmarks"))
    folder = Path(tempfile.mkdtemp(prefix="bench-request-"))
    multiprocess = "prometheus_client" not in sys.modules
    own_metrics = multiprocess and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_metrics:  # a folder of this run's, removed with it: the variable goes too
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "metrics")
        (folder / "metrics").mkdir()
    import bench_api

    try:
        results = {}
        for kind in [k for k in args.kinds.split(",") if k]:
            print(f"setting up the {kind} project ...", flush=True)
            results[kind] = measure_kind(bench_api.make_project(folder / kind, kind), args.rounds)
        print(report(results, multiprocess))
    finally:
        if own_metrics:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
