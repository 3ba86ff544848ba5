"""API benchmark: the served model against the same model called in-process, in the same run.

1. Single-row ``POST /prediction`` under gunicorn (``gunicorn.conf.py`` settings) at 8 concurrent
   keep-alive connections, by wrk (Debian's ``wrk``) or, where it is absent, a bounded Python
   load client: requests/s, p50 and p99 latency; then ``GET /healthz`` on the same server, the
   same way, as the baseline (what the server does with no model work at all). Goals:
   ``/prediction`` >= 0.6x the ``/healthz`` rate, p99 < 15 ms.
2. One 10,000-row CSV in one request, against the floor: the deployed model's ``predict_proba``
   on the same 10,000 rows in this process. Target: within 2x of the floor. The floor is measured
   both with one OpenMP thread (as each gunicorn worker runs) and with the library default.

The benchmark makes its own project in a temporary folder (sample data, ``fullprocess`` with the
default config, so the model is the one a real run picks), serves it on a free loopback port,
and stops and removes everything itself. The load generator shares the 2 cores with the server.
Usage: ``python benchmarks/bench_api.py [--seconds N] [--connections N] [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESULTS_FILE = PROJECT_DIR / "benchmarks" / "results" / "bench_api.json"
TARGET_HEALTHZ_RATIO = 0.6  # single-row /prediction rate against the same server's /healthz rate
TARGET_P99_MS = 15.0
TARGET_BATCH_RATIO = 2.0
BATCH_ROWS = 10_000
BATCH_REPEAT = 7
ONE_ROW = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def make_project(folder: Path) -> Any:
    """Sample data and a first fullprocess run with the default settings: v1 deployed."""
    import fullprocess
    from risk.core.settings import DEFAULTS, load_config
    from risk.data import sample

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({key: DEFAULTS[key] for key in ("input_folder_path", "output_folder_path", "test_data_path")})
    )
    config = load_config(folder / "config.json")
    sample.write_sample_data(config)
    if fullprocess.main(["--config", str(config.path)]) != 0:
        raise RuntimeError("fullprocess failed while setting up the benchmark project")
    return config


def batch_csv(config: Any) -> bytes:
    """10,000 rows: the test file repeated, each client with its own id."""
    import pandas as pd

    test = pd.read_csv(config.test_data_folder / "testdata.csv", dtype={"corporation": str})
    copies = -(-BATCH_ROWS // len(test))
    frame = pd.concat([test] * copies, ignore_index=True).head(BATCH_ROWS)
    frame["corporation"] = [f"{c}-{i // len(test)}" for i, c in enumerate(frame["corporation"])]
    return frame.to_csv(index=False).encode()


def floor_seconds(config: Any, csv_bytes: bytes) -> dict[str, float]:
    """The deployed model's predict_proba on the same rows, in this process (median of runs)."""
    import io

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from risk.model import batches, compiled, scoring
    from risk.registry import versions

    deployed = versions.load_deployed_model(config)
    frame = pd.read_csv(io.BytesIO(csv_bytes), dtype={"corporation": str})
    features = scoring.feature_frame(frame, deployed.metadata["features"])
    one = features.iloc[:1]
    result: dict[str, Any] = {
        "model": deployed.metadata["model"],
        "risk": deployed.model.predict_proba(features)[:, 1].tolist(),
    }
    for label, limit in (("one_thread", 1), ("default_threads", None)):
        with threadpool_limits(limits=limit):
            result[f"batch_{label}_s"] = _median_time(lambda: deployed.model.predict_proba(features), BATCH_REPEAT)
            result[f"one_row_{label}_ms"] = 1000 * _median_time(lambda: deployed.model.predict_proba(one), 50)
    # For reference: the server's own scoring code, in-process, on the same rows.
    schema = batches.Schema.from_metadata(deployed.metadata, config["id_columns"])
    scorer = compiled.build_scorer(deployed.model, schema, frame)
    batch = batches.batch_from_frame(frame, schema, 0)
    result["serving_path"] = scorer.kind
    result["serving_batch_s"] = _median_time(lambda: scorer.risk(batch), BATCH_REPEAT)
    result["serving_one_row_ms"] = 1000 * _median_time(lambda: scorer.risk(batches.slice_batch(batch, 0, 1)), 200)
    return result


def _median_time(function: Any, repeat: int) -> float:
    function()  # warm up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_wrk(url: str, seconds: int, connections: int, folder: Path, path: str = "/prediction") -> dict[str, Any]:
    """wrk against ``path``: a single-row POST for /prediction, a plain GET otherwise."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if path == "/prediction":
        script = folder / "one_row.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps({"records": [ONE_ROW]})))
        command += ["-s", str(script)]
    command.append(url + path)
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    percentiles = {
        int(p): float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "client": "wrk (1 thread)",
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": percentiles[50],
        "p99_ms": percentiles[99],
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def run_python_load(url: str, seconds: int, connections: int, path: str = "/prediction") -> dict[str, Any]:
    """A bounded load client: ``connections`` threads, each one keep-alive session, for ``seconds``."""
    import requests

    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures = [0] * connections
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                if path == "/prediction":
                    response = session.post(url + path, json={"records": [ONE_ROW]}, timeout=30)
                else:
                    response = session.get(url + path, timeout=30)
                latencies[index].append(time.perf_counter() - started)
                failures[index] += response.status_code != 200

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = sorted(x for per in latencies for x in per)
    return {
        "client": f"python threads ({connections}), competing with the server for the CPU",
        "requests_per_s": len(every) / elapsed,
        "p50_ms": 1000 * every[len(every) // 2],
        "p99_ms": 1000 * every[int(len(every) * 0.99)],
        "non_2xx": sum(failures),
        "socket_errors": None,
    }


def time_batch_request(url: str, csv_bytes: bytes, expected: list[float]) -> dict[str, Any]:
    """The 10,000-row CSV in one request, timed; its answers checked against scikit-learn's."""
    import requests

    times = []
    with requests.Session() as session:
        for attempt in range(BATCH_REPEAT + 1):
            started = time.perf_counter()
            response = session.post(
                url + "/prediction", data=csv_bytes, headers={"Content-Type": "text/csv"}, timeout=120
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            risk = [row["risk"] for row in response.json()["predictions"]]
            if len(risk) != len(expected) or max(abs(a - b) for a, b in zip(risk, expected)) > 1e-9:
                raise RuntimeError("the served probabilities differ from scikit-learn's")
            if attempt:  # the first one warms up
                times.append(elapsed)
    return {
        "median_s": statistics.median(times),
        "best_s": min(times),
        "bytes_in": len(csv_bytes),
        "bytes_out": len(response.content),
    }


def report(result: dict[str, Any]) -> str:
    load, batch, floor, healthz = result["single_row"], result["batch"], result["floor"], result["healthz"]
    rps, p99 = load["requests_per_s"], load["p99_ms"]
    healthz_ratio = rps / healthz["requests_per_s"]
    ratio_one = batch["median_s"] / floor["batch_one_thread_s"]
    ratio_default = batch["median_s"] / floor["batch_default_threads_s"]
    batch_ok = max(ratio_one, ratio_default) <= TARGET_BATCH_RATIO
    indent = " " * 15
    return "\n".join(
        [
            f"API benchmark ({floor['model']}, {result['workers']} gunicorn workers x {result['threads']} threads, "
            f"{result['connections']} connections, {result['seconds']}s, client: {load['client']})",
            f"  single row:  {rps:8.0f} req/s; GET /healthz on the same server: {healthz['requests_per_s']:.0f} req/s "
            f"(p99 {healthz['p99_ms']:.2f} ms)",
            f"{indent}ratio to /healthz {healthz_ratio:.2f}  (goal >= {TARGET_HEALTHZ_RATIO}: {_verdict(healthz_ratio >= TARGET_HEALTHZ_RATIO)})",
            f"{indent}p50 {load['p50_ms']:.2f} ms, p99 {p99:.2f} ms, p99 / goal {p99 / TARGET_P99_MS:.2f}  "
            f"(goal p99 < {TARGET_P99_MS:.0f} ms: {_verdict(p99 < TARGET_P99_MS)}); non-2xx: {load['non_2xx']}",
            f"{indent}in-process predict_proba on one row: {floor['one_row_one_thread_ms']:.2f} ms (1 thread), "
            f"{floor['one_row_default_threads_ms']:.2f} ms (default threads)",
            f"{indent}in-process serving path ({floor['serving_path']}) on one row: {floor['serving_one_row_ms']:.3f} ms",
            f"  {BATCH_ROWS:,}-row CSV request: median {batch['median_s'] * 1000:.0f} ms (best {batch['best_s'] * 1000:.0f} ms), "
            f"answers equal to scikit-learn's within 1e-9; in-process serving path alone: {floor['serving_batch_s'] * 1000:.0f} ms",
            f"{indent}floor, in-process predict_proba: {floor['batch_one_thread_s'] * 1000:.0f} ms with 1 thread (as in a worker) "
            f"-> ratio {ratio_one:.2f}; {floor['batch_default_threads_s'] * 1000:.0f} ms with default threads -> ratio {ratio_default:.2f}",
            f"{indent}(goal <= {TARGET_BATCH_RATIO:.0f}x: {_verdict(batch_ok)})",
        ]
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of the single-row load run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, help="threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument("--python-client", action="store_true", help="use the Python load client even where wrk exists")
    args, _ = parser.parse_known_args(argv)  # benchmarks/run.py passes every benchmark the same arguments
    sys.path.insert(0, str(PROJECT_DIR))
    import localserver

    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        print("setting up a project (sample data, fullprocess with the default config) ...", flush=True)
        config = make_project(folder / "project")
        csv_bytes = batch_csv(config)
        floor = floor_seconds(config, csv_bytes)
        workers = args.workers or _conf_default("workers")
        threads = args.threads or _conf_default("threads")
        server = localserver.gunicorn_server(
            config.path, workers, threads, env={"API_TOKEN": ""}, log_path=folder / "gunicorn.log"
        )
        with server as url:
            batch = time_batch_request(url, csv_bytes, floor.pop("risk"))
            use_wrk = shutil.which("wrk") and not args.python_client
            load, healthz = (
                run_wrk(url, args.seconds, args.connections, folder, path)
                if use_wrk
                else run_python_load(url, args.seconds, args.connections, path)
                for path in ("/prediction", "/healthz")
            )
        result = {
            "seconds": args.seconds,
            "connections": args.connections,
            "workers": workers,
            "threads": threads,
            "single_row": load,
            "healthz": healthz,
            "batch": batch,
            "floor": floor,
        }
        print(report(result))
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _conf_default(name: str) -> int:
    """A setting as gunicorn.conf.py computes it (workers, threads), honouring the environment."""
    namespace: dict[str, Any] = {"__file__": str(PROJECT_DIR / "gunicorn.conf.py")}
    exec(compile((PROJECT_DIR / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    return int(namespace[name])


if __name__ == "__main__":
    sys.exit(main())
