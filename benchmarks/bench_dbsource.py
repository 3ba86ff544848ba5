"""Database-source benchmarks, each against a baseline measured in the same run.

1. The cron fast path with a database source configured and nothing new: fullprocess's wall
   time with a SQLite source and with a PostgreSQL source, against the files-only fast path and
   ``python -c pass`` (all run as cron runs them: minimal environment, $HOME as working folder).
   Deciding costs one small query (min/max of the watermark above the last one recorded).
2. A 1,000,000-row pull from SQLite and from PostgreSQL: the pull alone (rows streamed into the
   snapshot file) and the pull plus its ingestion, each in a fresh process with its peak memory
   (VmHWM), against ingesting the same rows dropped as one CSV file.

PostgreSQL: the server in RISK_TEST_POSTGRES / RISK_TEST_POSTGRES_PASSWORD (what ``.ci/postgres
start`` prints); without them a throwaway cluster is started with ``.ci/postgres`` where Debian's
postgresql is installed, and stopped at the end; otherwise the PostgreSQL figures are skipped.
Usage: ``python benchmarks/bench_dbsource.py [--rows N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(HERE))

from bench_pipeline import cron_environment, make_deployed_project, peak_rss_mib

PASSWORD_ENV = "RISK_BENCH_DB_PASSWORD"
FAST_PATH_ROWS = 10_000
COLUMNS = ["row_id", "corporation", "lastmonth_activity", "lastyear_activity", "number_of_employees", "exited"]


# ----------------------------------------------------------------------------- the data


def clients_csv(rows: int) -> Path:
    """``rows`` generated clients with a row_id watermark, as a CSV file (loaded into both databases)."""
    import numpy as np

    from risk.data import sample

    frame = sample.make_clients(np.random.default_rng(3), rows)
    frame.insert(0, "corporation", [f"db-{i:07d}" for i in range(1, rows + 1)])
    frame.insert(0, "row_id", np.arange(1, rows + 1))
    path = Path(tempfile.mkstemp(prefix="bench-dbsource-", suffix=".csv")[1])
    frame.to_csv(path, index=False, float_format="%.0f")
    return path


def load_sqlite(path: Path, csv_path: Path) -> None:
    import csv

    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE clients (row_id INTEGER PRIMARY KEY, corporation TEXT, lastmonth_activity REAL, "
            "lastyear_activity INTEGER, number_of_employees INTEGER, exited INTEGER)"
        )
        with open(csv_path, newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            connection.executemany(
                "INSERT INTO clients VALUES (?, ?, ?, ?, ?, ?)", ([v or None for v in row] for row in reader)
            )
    connection.close()


def load_postgres(server: dict, database: str, csv_path: Path) -> str:
    """A fresh database holding the clients table; returns its URL."""
    import psycopg

    with psycopg.connect(server["url"], password=server["password"], autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {database}")
    url = f"{server['url'].rsplit('/', 1)[0]}/{database}"
    with psycopg.connect(url, password=server["password"]) as connection:
        connection.execute(
            "CREATE TABLE clients (row_id bigint PRIMARY KEY, corporation text, lastmonth_activity double precision, "
            "lastyear_activity integer, number_of_employees integer, exited integer)"
        )
        with (
            connection.cursor().copy("COPY clients FROM STDIN (FORMAT csv, HEADER)") as copy,
            open(csv_path, "rb") as handle,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
    return url


def source(kind: str, url: str) -> dict:
    spec = {"name": kind, "url": url, "table": "clients", "watermark_column": "row_id"}
    if kind == "postgresql":
        spec["password_env"] = PASSWORD_ENV
    return spec


def write_config(folder: Path, sources: list[dict], **extra) -> Path:
    path = folder / "config.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    values.update(database_sources=sources, drop_columns=["row_id"], **extra)
    path.write_text(json.dumps(values))
    return path


# ----------------------------------------------------------------------------- PostgreSQL server


class PostgresServer:
    """The server given in the environment, or a throwaway one from .ci/postgres, or none."""

    def __init__(self) -> None:
        self.info: dict | None = None
        self.started_dir: str | None = None
        self.why_not = ""

    def __enter__(self) -> PostgresServer:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            self.why_not = "psycopg is not installed"
            return self
        if os.environ.get("RISK_TEST_POSTGRES"):
            self.info = {
                "url": os.environ["RISK_TEST_POSTGRES"],
                "password": os.environ.get("RISK_TEST_POSTGRES_PASSWORD", ""),
            }
            return self
        started = subprocess.run([str(PROJECT_DIR / ".ci" / "postgres"), "start"], capture_output=True, text=True)
        if started.returncode != 0:
            self.why_not = f"no server given and none could be started ({started.stderr.strip().splitlines()[-1:]})"
            return self
        exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if line)
        self.started_dir = exports["RISK_TEST_POSTGRES_DIR"]
        self.info = {"url": exports["RISK_TEST_POSTGRES"], "password": exports["RISK_TEST_POSTGRES_PASSWORD"]}
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_dir:
            subprocess.run([str(PROJECT_DIR / ".ci" / "postgres"), "stop", self.started_dir], check=False)


# ----------------------------------------------------------------------------- measurements


def bench_fast_path(folder: Path, csv_path: Path, server: PostgresServer, repeat: int) -> dict:
    """fullprocess with nothing new: files only, with a SQLite source, with a PostgreSQL one.

    Three copies of one deployed project, timed in turns (one run of each per round) so that
    the load of a shared machine falls on all of them alike."""
    base = folder / "files"
    make_deployed_project(base)
    home = folder / "home"
    home.mkdir()
    env = cron_environment(home)
    commands = {"python_pass": ([sys.executable, "-c", "pass"], env), "files_only": (fullprocess_command(base), env)}
    variants = [("sqlite", "sqlite:///clients.db", env)]
    if server.info:
        url = load_postgres(server.info, "bench_fast_path", csv_path)
        variants.append(("postgresql", url, {**env, PASSWORD_ENV: server.info["password"]}))
    for kind, url, run_env in variants:
        project = folder / kind
        shutil.copytree(base, project, symlinks=True)
        if kind == "sqlite":
            load_sqlite(project / "clients.db", csv_path)
        # Drift is not judged on the rows pulled (out of reach): the first run pulls, then nothing is new.
        write_config(project, [source(kind, url)], drift_min_rows=10**9)
        subprocess.run(
            fullprocess_command(project),
            env=run_env,
            cwd=home,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        commands[kind] = (fullprocess_command(project), run_env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(repeat + 1):  # the first round warms up and is not counted
        for name, (command, run_env) in commands.items():
            started = time.perf_counter()
            subprocess.run(
                command, env=run_env, cwd=home, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if round_number:
                times[name].append(time.perf_counter() - started)
    for kind, _, _ in variants:
        audit = (folder / kind / "logs" / "audit.jsonl").read_text().splitlines()[-1]
        assert json.loads(audit)["decision"] == "no_new_data", audit
    return {f"{name}_s": statistics.median(values) for name, values in times.items()}


def fullprocess_command(project: Path) -> list[str]:
    return [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(project / "config.json")]


def worker(phase: str, folder: Path) -> None:
    """One measured step in this fresh process; prints seconds, rows and peak memory as JSON."""
    from risk.core.settings import load_config

    config = load_config(folder / "config.json")
    started = time.perf_counter()
    if phase == "pull":  # the snapshot only: what streaming costs, without pandas
        from risk.data import dbpull

        pulled = dbpull.pull_new_rows(config)
        assert not pulled.failures, pulled.failures
        rows = sum(s.lineage["rows_pulled"] for s in pulled.snapshots)
    elif phase == "pull_ingest":  # what fullprocess does with a database source
        from risk.data import dbpull, ingest, ledger

        pulled = dbpull.pull_new_rows(config)
        assert not pulled.failures, pulled.failures
        rows = ingest.ingest_new_files(config, ledger.pending_files(config) + pulled.snapshots).rows_added
    else:  # "ingest_file": the same rows dropped as one CSV file
        from risk.data import ingest

        rows = ingest.ingest_new_files(config).rows_added
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows, "peak_mib": peak_rss_mib()}))


def run_worker(phase: str, folder: Path, env: dict | None = None) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--worker", phase, "--folder", str(folder)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_large_pull(folder: Path, csv_path: Path, server: PostgresServer) -> dict:
    baseline = folder / "file"
    (baseline / "sourcedata").mkdir(parents=True)
    shutil.copy(csv_path, baseline / "sourcedata" / "clients.csv")
    write_config(baseline, [])
    results = {"ingest_file": run_worker("ingest_file", baseline)}
    variants = [("sqlite", None)]
    if server.info:
        variants.append(("postgresql", server.info))
    for kind, info in variants:
        project = folder / kind
        (project / "sourcedata").mkdir(parents=True)
        env = dict(os.environ)
        if kind == "sqlite":
            load_sqlite(project / "clients.db", csv_path)
            url = "sqlite:///clients.db"
        else:
            url = load_postgres(info, "bench_large_pull", csv_path)
            env[PASSWORD_ENV] = info["password"]
        write_config(project, [source(kind, url)])
        results[f"{kind}_pull"] = run_worker("pull", project, env)
        results[f"{kind}_pull_ingest"] = run_worker("pull_ingest", project, env)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the large pull")
    parser.add_argument("--repeat", type=int, default=21, help="rounds of the fast-path timing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)  # benchmarks/run.py passes every benchmark the same arguments
    if args.worker:
        worker(args.worker, Path(args.folder))
        return {}
    with PostgresServer() as server, tempfile.TemporaryDirectory(prefix="bench-dbsource-") as tmp:
        folder = Path(tmp)
        small, large = clients_csv(FAST_PATH_ROWS), clients_csv(args.rows)
        try:
            results = {
                "fast_path": bench_fast_path(folder / "deployed", small, server, args.repeat),
                "large_pull": bench_large_pull(folder, large, server),
                "postgresql": "measured" if server.info else f"skipped: {server.why_not}",
            }
        finally:
            small.unlink()
            large.unlink()
    report(results)
    return results


def report(results: dict) -> None:
    fast, large = results["fast_path"], results["large_pull"]
    print("== database-source benchmarks ==")
    base, files = fast["python_pass_s"], fast["files_only_s"]
    print(
        f"fullprocess, nothing new, files only: {files * 1000:.1f} ms ({files / base:.2f}x python -c pass {base * 1000:.1f} ms)"
    )
    for kind in ("sqlite", "postgresql"):
        if f"{kind}_s" in fast:
            seconds = fast[f"{kind}_s"]
            print(
                f"  + a {kind} source: {seconds * 1000:.1f} ms ({seconds / base:.2f}x python -c pass, "
                f"{seconds / files:.2f}x files only)"
            )
        else:
            print(f"  + a {kind} source: {results['postgresql']}")
    file_ingest = large["ingest_file"]
    print(
        f"{file_ingest['rows']:,} rows dropped as one CSV file: ingest {file_ingest['seconds']:.2f} s, peak {file_ingest['peak_mib']:.0f} MiB"
    )
    for kind in ("sqlite", "postgresql"):
        if f"{kind}_pull" not in large:
            continue
        pull, both = large[f"{kind}_pull"], large[f"{kind}_pull_ingest"]
        print(
            f"  {kind}: pull {pull['rows']:,} rows {pull['seconds']:.2f} s, peak {pull['peak_mib']:.0f} MiB; "
            f"pull + ingest {both['seconds']:.2f} s ({both['seconds'] / file_ingest['seconds']:.2f}x the file), "
            f"peak {both['peak_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
