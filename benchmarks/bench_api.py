"""API benchmark: the served models against the same server's /healthz and against MLflow, in one run.

1. For the model that ``make run`` deploys (a project of the sample data after ``fullprocess``
   with the default config) and for each kind the trainer can choose, forced in turn (a project
   whose ``candidate_models`` is that kind alone; the soft-voting blend by all three candidates
   with the trainer's choice forced to it): single-row ``POST /prediction`` under gunicorn
   (``gunicorn.conf.py`` settings) at 8 keep-alive connections, by wrk (Debian's ``wrk``) or,
   where it is absent, a bounded Python load client, alternating with ``GET /healthz`` on the same
   server (what the server does with no model work at all) for a few rounds; the median of the
   rounds' ratios. Goal: ``/prediction`` >= 0.6x the ``/healthz`` rate for every kind. Beside it,
   the requests each gunicorn worker answered during the ``/prediction`` runs (from the server's
   own ``riskapi_worker_requests``), so that one worker doing all the work shows.
2. ``mlflow models serve`` with the deployed model's scikit-learn pipeline (``predict_proba``,
   the same number of workers), its ``/invocations`` single-row rate against ours, alternating.
   Goal: ours >= 10x. MLflow is not a requirement of the project: the benchmark uses the
   ``mlflow`` command named by ``RISK_BENCH_MLFLOW`` (for example one in a venv of its own,
   ``python3 -m venv /tmp/mlflowvenv && /tmp/mlflowvenv/bin/pip install mlflow scikit-learn==1.7.2``),
   else this Python's mlflow where it is installed, else it says it skipped the comparison.
3. One 10,000-row CSV in one request (the deployed model), against the floor: the model's
   ``predict_proba`` on the same 10,000 rows in this process. Target: within 2x of the floor.

The benchmark makes its projects in a temporary folder, serves each on a free loopback port,
and stops and removes everything itself. The load generator shares the 2 cores with the server.
Usage: ``python benchmarks/bench_api.py [--seconds N] [--rounds N] [--connections N] [--workers N]
[--kinds deployed,logistic_regression,...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESULTS_FILE = PROJECT_DIR / "benchmarks" / "results" / "bench_api.json"
TARGET_HEALTHZ_RATIO = 0.6  # single-row /prediction rate against the same server's /healthz rate
TARGET_MLFLOW_RATIO = 10.0  # our single-row /prediction rate against mlflow models serve's /invocations
TARGET_P99_MS = 15.0
TARGET_BATCH_RATIO = 2.0
BATCH_ROWS = 10_000
BATCH_REPEAT = 7
DEPLOYED = "deployed"
KINDS = ("logistic_regression", "hist_gradient_boosting", "random_forest", "soft_voting_blend")
MLFLOW_ENV = "RISK_BENCH_MLFLOW"
MLFLOW_START_SECONDS = 180.0
ONE_ROW = {"corporation": "abcd01", "lastmonth_activity": 3, "lastyear_activity": 120, "number_of_employees": 40}
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def make_project(folder: Path, kind: str = DEPLOYED) -> Any:
    """Sample data and a deployed v1: for ``deployed`` by a first fullprocess run with the default
    settings (what ``make run`` deploys); for a model kind by ingestion, training with that kind
    forced, scoring and deployment (``make ingest train score deploy``; no reports)."""
    import fullprocess
    from risk.core.settings import DEFAULTS, load_config
    from risk.data import sample

    folder.mkdir(parents=True)
    settings = {key: DEFAULTS[key] for key in ("input_folder_path", "output_folder_path", "test_data_path")}
    if kind not in (DEPLOYED, KINDS[-1]):
        settings["candidate_models"] = [kind]
    (folder / "config.json").write_text(json.dumps(settings))
    config = load_config(folder / "config.json")
    sample.write_sample_data(config)
    if kind == DEPLOYED:
        steps = [fullprocess.main]
    else:
        import deployment
        import ingestion
        import scoring
        import training

        steps = [ingestion.main, training.main, scoring.main, deployment.main]
    output = io.StringIO()  # the steps print their JSON summaries and log to the console: quoted if one fails
    with forced_choice(kind), contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        failed = next((step for step in steps if step(["--config", str(config.path)]) != 0), None)
    if failed is not None:
        raise RuntimeError(
            f"{failed.__module__} failed while setting up the {kind} project:\n{output.getvalue()[-3000:]}"
        )
    return config


@contextlib.contextmanager
def forced_choice(kind: str) -> Iterator[None]:
    """Training picks ``kind`` (the blend) whatever the selection rule would pick; nothing for other kinds."""
    if kind != KINDS[-1]:
        yield
        return
    from risk.model import training

    if not callable(getattr(training, "pick_best", None)):
        raise RuntimeError("risk.model.training no longer chooses through pick_best: update forced_choice")
    by_rule = training.pick_best

    def pick_the_blend(candidates: dict[str, Any], *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        _, selection = by_rule(candidates, *args, **kwargs)
        return kind, {**selection, "reason": f"forced by benchmarks/bench_api.py to measure serving a {kind}"}

    training.pick_best = pick_the_blend
    try:
        yield
    finally:
        training.pick_best = by_rule


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


class Load:
    """One load generator for the whole run: wrk where installed, else a bounded Python client."""

    def __init__(self, seconds: int, connections: int, folder: Path, use_wrk: bool):
        self.seconds, self.connections, self.folder, self.use_wrk = seconds, connections, folder, use_wrk
        self.client = "wrk (1 thread)" if use_wrk else f"Python threads ({connections}), competing for the CPU"

    def run(self, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``url`` for ``seconds``: a POST of ``body`` as JSON, or a GET where None."""
        if self.use_wrk:
            return self._wrk(url, body)
        return self._python(url, body)

    def _wrk(self, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        command = ["wrk", "-t1", f"-c{self.connections}", f"-d{self.seconds}s", "--latency"]
        if body is not None:
            script = self.folder / "post.lua"
            script.write_text(WRK_SCRIPT.format(body=json.dumps(body)))
            command += ["-s", str(script)]
        command.append(url)
        output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=self.seconds + 60).stdout
        percentiles = {
            int(p): float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        }
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        socket_errors = re.search(r"Socket errors: (.*)", output)
        return {
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50_ms": percentiles[50],
            "p99_ms": percentiles[99],
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else None,
        }

    def _python(self, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        import requests

        latencies: list[list[float]] = [[] for _ in range(self.connections)]
        failures = [0] * self.connections
        deadline = time.monotonic() + self.seconds

        def client(index: int) -> None:
            with requests.Session() as session:
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    if body is not None:
                        response = session.post(url, json=body, timeout=30)
                    else:
                        response = session.get(url, timeout=30)
                    latencies[index].append(time.perf_counter() - started)
                    failures[index] += response.status_code != 200

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.connections)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        every = sorted(x for per in latencies for x in per)
        return {
            "requests_per_s": len(every) / elapsed,
            "p50_ms": 1000 * every[len(every) // 2],
            "p99_ms": 1000 * every[int(len(every) * 0.99)],
            "non_2xx": sum(failures),
            "socket_errors": None,
        }


def requests_by_worker(url: str) -> dict[str, float]:
    """The server's own count of requests answered by each live worker (riskapi_worker_requests by pid)."""
    import requests

    text = requests.get(url + "/metrics", timeout=30).text
    return {pid: float(v) for pid, v in re.findall(r'^riskapi_worker_requests\{pid="(\d+)"\} (\S+)$', text, re.M)}


def measure_kind(url: str, load: Load, rounds: int) -> dict[str, Any]:
    """Rounds of /healthz then single-row /prediction on one server; medians, and the requests each
    worker answered during the /prediction runs."""
    import requests

    serving_path = requests.get(url + "/readyz", timeout=30).json().get("serving_path")
    healthz, prediction, ratios = [], [], []
    counted: dict[str, float] = {}
    for _ in range(rounds):
        healthz.append(load.run(url + "/healthz"))
        before = requests_by_worker(url)
        prediction.append(load.run(url + "/prediction", {"records": [ONE_ROW]}))
        after = requests_by_worker(url)
        for pid in after:
            counted[pid] = counted.get(pid, 0.0) + after[pid] - before.get(pid, 0.0)
        ratios.append(prediction[-1]["requests_per_s"] / healthz[-1]["requests_per_s"])
    return {
        "serving_path": serving_path,
        "prediction": _medians(prediction),
        "healthz": _medians(healthz),
        "ratio_to_healthz": statistics.median(ratios),
        "ratios": ratios,
        "requests_by_worker": [int(counted[pid]) for pid in sorted(counted, key=counted.get, reverse=True)],
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": [r["socket_errors"] for r in runs if r["socket_errors"]],
    }


# ----------------------------------------------------------------------------- MLflow


def mlflow_command() -> tuple[list[str] | None, str]:
    """How to run mlflow (``RISK_BENCH_MLFLOW``, else this Python's), or None and why not."""
    named = os.environ.get(MLFLOW_ENV)
    if named:
        if not Path(named).is_file():
            return None, f"{MLFLOW_ENV}={named} is not a file"
        return [named], f"{named}"
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        return [sys.executable, "-m", "mlflow"], "this Python's mlflow"
    return None, f"MLflow is not installed here and {MLFLOW_ENV} does not name an mlflow command"


def mlflow_python(command: list[str]) -> str:
    """The Python of an mlflow command: the interpreter beside it (a venv's bin/), else this one."""
    if command[0] == sys.executable:
        return sys.executable
    beside = Path(command[0]).with_name("python")
    return str(beside) if beside.exists() else sys.executable


SAVE_FOR_MLFLOW = """
import pickle, sys, mlflow, mlflow.sklearn, sklearn
with open(sys.argv[1], "rb") as file:
    model = pickle.load(file)
mlflow.sklearn.save_model(
    model, sys.argv[2], serialization_format="pickle", pyfunc_predict_fn="predict_proba", code_paths=[sys.argv[3]],
    pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
)
print(mlflow.__version__)
"""


def save_for_mlflow(config: Any, command: list[str], folder: Path) -> tuple[Path, str, list[dict], list[float]]:
    """The deployed model's scikit-learn pipeline saved as an MLflow model (by mlflow's own Python),
    its version, and the features of ONE_ROW as MLflow's /invocations takes them."""
    import pickle

    import pandas as pd

    from risk.model import scoring
    from risk.registry import versions

    deployed = versions.load_deployed_model(config)
    (folder / "model.pkl").write_bytes(pickle.dumps(deployed.model))
    features = scoring.feature_frame(pd.DataFrame([ONE_ROW]), deployed.metadata["features"])
    expected = deployed.model.predict_proba(features)[0].tolist()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}  # the blend's class is the project's own
    done = subprocess.run(
        [mlflow_python(command), "-c", SAVE_FOR_MLFLOW, str(folder / "model.pkl"), str(folder / "mlflow-model")]
        + [str(PROJECT_DIR / "risk")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"saving the model for MLflow failed:\n{done.stderr[-3000:]}")
    return folder / "mlflow-model", done.stdout.strip().splitlines()[-1], features.to_dict(orient="records"), expected


@contextlib.contextmanager
def mlflow_server(command: list[str], model: Path, workers: int, log_path: Path) -> Iterator[str]:
    """``mlflow models serve`` of ``model`` on a free loopback port; stopped on exit."""
    import requests

    import localserver

    port = localserver.free_port()
    # As if its venv were activated: mlflow runs uvicorn by name.
    path = os.pathsep.join([str(Path(command[0]).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "PATH": path}
    serve = [*command, "models", "serve", "-m", str(model), "-h", localserver.LOOPBACK, "-p", str(port)]
    serve += ["--env-manager", "local", "--workers", str(workers)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{localserver.LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + MLFLOW_START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {process.returncode}; its log: {log_path}")
            try:
                if requests.get(url + "/ping", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not answer within {MLFLOW_START_SECONDS:.0f}s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # its own session: the uvicorn workers go with it
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def measure_mlflow(config: Any, ours: str, load: Load, rounds: int, workers: int, folder: Path) -> dict[str, Any]:
    """Rounds of our single-row /prediction then MLflow's /invocations with the same model."""
    import requests

    command, source = mlflow_command()
    if command is None:
        return {"skipped": source}
    folder.mkdir(parents=True, exist_ok=True)
    model, version, records, expected = save_for_mlflow(config, command, folder)
    body = {"dataframe_records": records}
    with mlflow_server(command, model, workers, folder / "mlflow.log") as url:
        answer = requests.post(url + "/invocations", json=body, timeout=60)
        answer.raise_for_status()
        got = answer.json()["predictions"][0]
        if max(abs(a - b) for a, b in zip(got, expected)) > 1e-9:
            raise RuntimeError(f"MLflow answers {got}, the model in this process {expected}")
        theirs, ours_runs, ratios = [], [], []
        for _ in range(rounds):
            ours_runs.append(load.run(ours + "/prediction", {"records": [ONE_ROW]}))
            theirs.append(load.run(url + "/invocations", body))
            ratios.append(ours_runs[-1]["requests_per_s"] / theirs[-1]["requests_per_s"])
    return {
        "mlflow": f"mlflow {version} ({source})",
        "workers": workers,
        "ours": _medians(ours_runs),
        "invocations": _medians(theirs),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
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


def worker_spread(counts: list[int], workers: int) -> str:
    """How evenly the workers shared the requests: the least one's share, or why that cannot be told
    (gunicorn's max_requests recycles workers, so a long run can count more processes than workers)."""
    if not counts or not sum(counts):
        return "no worker counted"
    if len(counts) > workers:
        return f"{len(counts)} processes for {workers} workers: recycled by max_requests during the run"
    least = min(counts) if len(counts) == workers else 0  # a worker that answered nothing is not counted
    return f"least {least / sum(counts):.0%}"


def report(result: dict[str, Any]) -> str:
    lines = [
        f"API benchmark: {result['workers']} gunicorn workers x {result['threads']} threads, "
        f"{result['connections']} keep-alive connections, {result['rounds']} rounds of {result['seconds']}s "
        f"per endpoint (medians), client: {result['client']}",
        f"  single-row /prediction against GET /healthz of the same server (goal >= {TARGET_HEALTHZ_RATIO} for every kind):",
    ]
    for label, kind in result["kinds"].items():
        if "error" in kind:
            lines.append(f"    {label:<42} not measured: {kind['error']}")
            continue
        pred, health, ratio = kind["prediction"], kind["healthz"], kind["ratio_to_healthz"]
        counts = kind["requests_by_worker"]
        spread = worker_spread(counts, result["workers"])
        problems = f"; non-2xx {pred['non_2xx']}" if pred["non_2xx"] else ""
        problems += f"; socket errors {pred['socket_errors']}" if pred["socket_errors"] else ""
        lines.append(
            f"    {label:<42} {pred['requests_per_s']:7.0f} req/s p99 {pred['p99_ms']:6.1f} ms | /healthz "
            f"{health['requests_per_s']:7.0f} req/s p99 {health['p99_ms']:6.1f} ms | ratio {ratio:.2f} "
            f"({_verdict(ratio >= TARGET_HEALTHZ_RATIO)}) | per worker {' / '.join(str(c) for c in counts) or 'none'} "
            f"({spread}){problems}"
        )
    lines.append(
        f"  single-row /prediction p99 goal < {TARGET_P99_MS:.0f} ms: "
        + ", ".join(
            f"{label} {_verdict(kind['prediction']['p99_ms'] < TARGET_P99_MS)}"
            for label, kind in result["kinds"].items()
            if "prediction" in kind
        )
    )
    mlflow = result.get("mlflow")
    if mlflow is None:
        pass
    elif "skipped" in mlflow:
        lines.append(f"  against mlflow models serve: skipped ({mlflow['skipped']})")
    elif "error" in mlflow:
        lines.append(f"  against mlflow models serve: not measured: {mlflow['error']}")
    else:
        ours, theirs, ratio = mlflow["ours"], mlflow["invocations"], mlflow["ratio"]
        lines.append(
            f"  against {mlflow['mlflow']}, mlflow models serve --workers {mlflow['workers']}, the deployed "
            f"model's pipeline: /invocations {theirs['requests_per_s']:.0f} req/s p99 {theirs['p99_ms']:.1f} ms; "
            f"ours {ours['requests_per_s']:.0f} req/s p99 {ours['p99_ms']:.1f} ms"
        )
        lines.append(
            f"    ratio {ratio:.1f}x  (goal >= {TARGET_MLFLOW_RATIO:.0f}x: {_verdict(ratio >= TARGET_MLFLOW_RATIO)})"
        )
    batch, floor = result.get("batch"), result.get("floor")
    if batch and floor:
        ratio_one = batch["median_s"] / floor["batch_one_thread_s"]
        ratio_default = batch["median_s"] / floor["batch_default_threads_s"]
        lines += [
            f"  deployed model ({floor['model']}) in-process: predict_proba on one row {floor['one_row_one_thread_ms']:.2f} ms "
            f"(1 thread), serving path ({floor['serving_path']}) {floor['serving_one_row_ms']:.3f} ms",
            f"  {BATCH_ROWS:,}-row CSV request: median {batch['median_s'] * 1000:.0f} ms (best {batch['best_s'] * 1000:.0f} ms), "
            f"answers equal to scikit-learn's within 1e-9; in-process serving path alone: {floor['serving_batch_s'] * 1000:.0f} ms",
            f"    floor, in-process predict_proba: {floor['batch_one_thread_s'] * 1000:.0f} ms with 1 thread (as in a worker) "
            f"-> ratio {ratio_one:.2f}; {floor['batch_default_threads_s'] * 1000:.0f} ms with default threads "
            f"-> ratio {ratio_default:.2f}  (goal <= {TARGET_BATCH_RATIO:.0f}x: {_verdict(max(ratio_one, ratio_default) <= TARGET_BATCH_RATIO)})",
        ]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per endpoint (the median is reported)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, help="threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument("--kinds", default=",".join((DEPLOYED, *KINDS)), help="which servers to measure, in order")
    parser.add_argument("--python-client", action="store_true", help="use the Python load client even where wrk exists")
    args, _ = parser.parse_known_args(argv)  # benchmarks/run.py passes every benchmark the same arguments
    sys.path.insert(0, str(PROJECT_DIR))
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = [kind for kind in kinds if kind not in (DEPLOYED, *KINDS)]
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; choose from {[DEPLOYED, *KINDS]}")
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    workers = args.workers or _conf_default("workers")
    threads = args.threads or _conf_default("threads")
    load = Load(args.seconds, args.connections, folder, bool(shutil.which("wrk")) and not args.python_client)
    result: dict[str, Any] = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "workers": workers,
        "threads": threads,
        "client": load.client,
        "kinds": {},
    }
    try:
        for kind in kinds:
            print(f"setting up the {kind} project and serving it ...", flush=True)
            label, measured = measure_project(kind, folder, load, args.rounds, workers, threads, result)
            result["kinds"][label] = measured
        print(report(result))
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def measure_project(
    kind: str, folder: Path, load: Load, rounds: int, workers: int, threads: int, result: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Make the project, serve it, measure it; for the deployed one also the batch and MLflow."""
    import localserver
    from risk.registry import versions

    config = make_project(folder / kind, kind)
    chosen = versions.load_deployed_model(config).metadata["model"]
    label = f"deployed by make run ({chosen})" if kind == DEPLOYED else f"forced {kind}"
    if kind != DEPLOYED and chosen != kind:
        return label, {"error": f"the trainer deployed {chosen}, not {kind}"}
    if kind == DEPLOYED:
        csv_bytes = batch_csv(config)
        result["floor"] = floor_seconds(config, csv_bytes)
    server = localserver.gunicorn_server(
        config.path, workers, threads, env={"API_TOKEN": ""}, log_path=folder / f"gunicorn-{kind}.log"
    )
    with server as url:
        measured = measure_kind(url, load, rounds)
        if kind == DEPLOYED:
            result["batch"] = time_batch_request(url, csv_bytes, result["floor"].pop("risk"))
            try:
                result["mlflow"] = measure_mlflow(config, url, load, rounds, workers, folder / "mlflow")
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                result["mlflow"] = {"error": str(exc)}
    return label, measured


def _conf_default(name: str) -> int:
    """A setting as gunicorn.conf.py computes it (workers, threads), honouring the environment."""
    namespace: dict[str, Any] = {"__file__": str(PROJECT_DIR / "gunicorn.conf.py")}
    exec(compile((PROJECT_DIR / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    return int(namespace[name])


if __name__ == "__main__":
    sys.exit(main())
