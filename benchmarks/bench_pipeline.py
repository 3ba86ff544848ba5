"""Pipeline benchmarks, each a ratio against a baseline measured in the same run.

1. fullprocess with nothing new: wall time as a ratio to ``python -c pass`` (target <= 5x),
   both run as cron runs them (minimal environment, $HOME as working directory).
2. Ingesting 1,000,000 rows in 20 files: throughput as a ratio to plain ``pandas.read_csv``
   of the same files plus ``concat`` (target >= 0.5x); then one more 1,000-row file, whose
   time should be at most 1/20 of the first run's. Peak memory (max RSS) of each.

Each measured step runs in its own fresh process, so its peak RSS is its own.
Usage: ``python benchmarks/bench_pipeline.py [--rows N] [--files N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchsupport  # noqa: E402 (found through the path above)

from risk.core import logbook


def cron_environment(home: Path) -> dict[str, str]:
    """What cron gives a job: no PYTHON* variables (so bytecode caches are written and
    used, as on every tick after the first), a bare PATH, HOME as the working directory."""
    return {"HOME": str(home), "PATH": "/usr/bin:/bin"}


def timed_command(command: list[str], repeat: int, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Median wall time of a command over ``repeat`` runs, after one untimed warm-up run."""
    times = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def worker(phase: str, folder: Path) -> None:
    """One measured step in this fresh process; prints seconds and peak RSS as JSON."""
    import pandas as pd

    from risk.core.settings import load_config
    from risk.data import ingest as data_ingest

    config = load_config(folder / "config.json")
    warm_up()
    started = time.perf_counter()
    if phase == "read_csv":
        frames = [pd.read_csv(p) for p in sorted(config.input_folder.glob("*.csv"))]
        rows = len(pd.concat(frames, ignore_index=True))
    else:
        rows = data_ingest.ingest_new_files(config).rows_added
    seconds = time.perf_counter() - started
    peak_mib = peak_rss_mib()
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_mib": peak_mib}))


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec, unlike ru_maxrss,
    which a child inherits from the process that forked it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up() -> None:
    """Pay pandas' first-call costs (lazy imports, parser set-up) before the clock starts,
    the same for every phase, so each figure is the work itself."""
    import io

    import pandas as pd

    frame = pd.read_csv(io.BytesIO(b"a,b\nx,1\n"), dtype={"a": str}, index_col=False)
    pd.util.hash_pandas_object(frame, index=False, categorize=False)
    pd.concat([frame, frame]).to_csv(io.StringIO(), index=False)


def run_worker(phase: str, folder: Path) -> dict:
    return benchsupport.run_worker(__file__, phase, "--folder", str(folder))


def make_project(folder: Path, rows: int, files: int) -> None:
    """A project with ``files`` source files of generated clients, ``rows`` in all."""
    import numpy as np

    from risk.data import sample

    # settle_seconds 0: the files are complete when written; the figures are ingestion's work,
    # not the wait that watches a file written seconds before for further changes.
    (folder / "config.json").write_text(json.dumps({"settle_seconds": 0}), encoding="utf-8")
    source = folder / "sourcedata"
    source.mkdir(parents=True)
    rng = np.random.default_rng(1)
    per_file = rows // files
    for index in range(files):
        frame = sample.make_clients(rng, per_file)
        frame.insert(0, "corporation", [f"c{index:03d}{i:07d}" for i in range(per_file)])
        frame.to_csv(source / f"month_{index:02d}.csv", index=False, float_format="%.0f")


def make_deployed_project(folder: Path) -> None:
    """The sample project after its first fullprocess run: ingested, deployed, decided."""
    from risk.core.settings import load_config
    from risk.data import sample

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"candidate_models": ["logistic_regression"], "package_check_seconds": 0}), encoding="utf-8"
    )
    config = load_config(folder / "config.json")
    sample.write_sample_data(config)
    subprocess.run(
        [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert logbook.read_audit(config)[-1]["decision"] == "redeployed"


def bench_fast_path(folder: Path, repeat: int) -> dict:
    make_deployed_project(folder)
    home = folder / "home"
    home.mkdir()
    env = cron_environment(home)
    python = [sys.executable]
    baseline = timed_command(python + ["-c", "pass"], repeat, env, home)
    fast = timed_command(
        python + [str(PROJECT_DIR / "fullprocess.py"), "--config", str(folder / "config.json")], repeat, env, home
    )
    return {"python_pass_s": baseline, "fullprocess_nothing_new_s": fast, "ratio": fast / baseline, "target": "<= 5x"}


def bench_ingestion(folder: Path) -> dict:
    baseline = run_worker("read_csv", folder)
    first = run_worker("ingest", folder)
    extra = folder / "sourcedata" / "month_extra.csv"
    import numpy as np

    from risk.data import sample

    frame = sample.make_clients(np.random.default_rng(2), 1000)
    frame.insert(0, "corporation", [f"extra{i:06d}" for i in range(1000)])
    frame.to_csv(extra, index=False, float_format="%.0f")
    incremental = run_worker("ingest", folder)
    return {
        "rows": first["rows"],
        "read_csv_concat_s": baseline["seconds"],
        "ingest_first_s": first["seconds"],
        "throughput_ratio": baseline["seconds"] / first["seconds"],
        "throughput_target": ">= 0.5x",
        "ingest_1000_more_s": incremental["seconds"],
        "incremental_fraction": incremental["seconds"] / first["seconds"],
        "incremental_target": "<= 0.05 (1/20)",
        "peak_mib": {
            "read_csv_concat": baseline["peak_mib"],
            "ingest_first": first["peak_mib"],
            "ingest_1000_more": incremental["peak_mib"],
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15, help="runs of each command in the fast-path timing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.folder))
        return {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        folder = Path(tmp)
        make_project(folder, args.rows, args.files)
        ingestion_figures = bench_ingestion(folder)
        fast_path = bench_fast_path(folder / "deployed", args.repeat)
    results = {"fast_path": fast_path, "ingestion": ingestion_figures}
    report(results)
    return results


def report(results: dict) -> None:
    fast, ingest = results["fast_path"], results["ingestion"]
    print("== pipeline benchmarks ==")
    print(
        f"fullprocess, nothing new: {fast['fullprocess_nothing_new_s'] * 1000:.1f} ms vs python -c pass "
        f"{fast['python_pass_s'] * 1000:.1f} ms -> {fast['ratio']:.2f}x (target <= 5x) "
        f"{'OK' if fast['ratio'] <= 5 else 'MISSED'}"
    )
    print(
        f"ingest {ingest['rows']:,} rows: {ingest['ingest_first_s']:.2f} s vs read_csv+concat "
        f"{ingest['read_csv_concat_s']:.2f} s -> throughput {ingest['throughput_ratio']:.2f}x (target >= 0.5x) "
        f"{'OK' if ingest['throughput_ratio'] >= 0.5 else 'MISSED'}"
    )
    print(
        f"ingest 1,000 more rows: {ingest['ingest_1000_more_s'] * 1000:.1f} ms = "
        f"{ingest['incremental_fraction']:.3f} of the first run (target <= 0.05) "
        f"{'OK' if ingest['incremental_fraction'] <= 0.05 else 'MISSED'}"
    )
    peaks = ingest["peak_mib"]
    print(
        f"peak RSS: read_csv+concat {peaks['read_csv_concat']:.0f} MiB, first ingest {peaks['ingest_first']:.0f} MiB, "
        f"1,000-row ingest {peaks['ingest_1000_more']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
