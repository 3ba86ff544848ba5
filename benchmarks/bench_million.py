"""The first fullprocess run on a synthetic loan book of a million rows, against its floor.

The project (benchmarks/loanbook.py, seeded): 70% of the rows in three source files, 30% as
test data. Measured in one run:

- the first ``fullprocess.py`` run, as a subprocess: wall time, each step's seconds (the audit
  line's ``step_seconds``), and the largest process's peak RSS (the run and its children; each
  process's own peak is polled from /proc, the largest confirmed by ``RUSAGE_CHILDREN``);
- the floor: reading the training data as training reads it, plus one default
  ``HistGradientBoostingClassifier`` fit on it (median of ``--repeat`` fresh processes), and the
  memory of that frame (pandas ``memory_usage(deep=True)``).

Goals: the whole first run <= 8x the floor; the largest process <= 5x the training frame.
Usage: ``python benchmarks/bench_million.py [--rows N] [--repeat N] [--keep FOLDER]``
(``--rows 233154``: the size of the public book it imitates).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchsupport  # noqa: E402 (found through the path above)
import loanbook  # noqa: E402

RUN_GOAL = 8.0
MEMORY_GOAL = 5.0
STEPS = ("ingestion", "training", "scoring", "deployment", "diagnostics", "reporting")
MIB = 1024 * 1024


# --- the measured first run (in its own process, so RUSAGE_CHILDREN is this run's alone) -----------


def run_first_fullprocess(config_path: Path) -> dict:
    """Run fullprocess once; its wall time and the peak RSS of every process it started."""
    home = config_path.parent / "home"
    home.mkdir(exist_ok=True)
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config_path)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks: dict[int, dict] = {}
    watcher = threading.Thread(target=_watch_peaks, args=(process, peaks), daemon=True)
    watcher.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    watcher.join(timeout=5)
    if process.returncode != 0:
        raise RuntimeError(f"fullprocess failed ({process.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    processes = sorted(peaks.values(), key=lambda p: -p["peak_mib"])
    return {"seconds": seconds, "largest_mib": largest, "processes": processes[:6]}


def _watch_peaks(process, peaks: dict[int, dict]) -> None:
    """Each descendant's high-water mark (VmHWM), read every 50 ms until the run ends."""
    import psutil

    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for member in family:
            try:
                peak = _vm_hwm_mib(member.pid)
                role = _role(member.cmdline(), member.pid == process.pid)
            except (psutil.Error, OSError, ValueError):
                continue
            entry = peaks.setdefault(member.pid, {"pid": member.pid, "role": role, "peak_mib": 0.0})
            entry["peak_mib"] = max(entry["peak_mib"], peak)
        time.sleep(0.05)


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no VmHWM")


def _role(cmdline: list[str], is_root: bool) -> str:
    if is_root:
        return "fullprocess (main)"
    text = " ".join(cmdline)
    return "worker" if "loky" in text or "multiprocessing" in text or "joblib" in text else text[:60]


# --- the floor: read the training data as training does, one default HGB fit --------------------


def floor(config_path: Path) -> dict:
    """Seconds to read the master as training does and fit one default gradient boosting on it;
    the memory of the training frame (its text as strings, one a row, as pandas reads text by
    default: the issue's measure), and of the frame as training now holds it."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from risk.core.settings import load_config
    from risk.core.tables import read_typed_csv
    from risk.data import masterstore
    from risk.model.fitting import TrainingData, file_stamp
    from risk.model.pipelines import feature_types
    from risk.model.scoring import feature_frame

    config = load_config(config_path)
    kinds = masterstore.column_kinds(config)
    master = masterstore.master_path(config)
    features = feature_types(config, kinds)
    source = TrainingData(features, kinds, config.target, config.positive_label, str(master), file_stamp(master))
    started = time.perf_counter()
    X, y = source.load()
    read = time.perf_counter() - started
    # Text columns as pandas categories: the default fit takes them as they are ("from_dtype").
    text = X.select_dtypes(exclude=["number", "category"]).columns
    HistGradientBoostingClassifier().fit(X.astype(dict.fromkeys(text, "category")), y)
    seconds = time.perf_counter() - started
    held_mib = (X.memory_usage(deep=True).sum() + y.nbytes) / MIB
    del X
    columns = features["numeric"] + features["categorical"] + [config.target]
    as_text = feature_frame(read_typed_csv(master, kinds, usecols=columns), features)
    frame_mib = (as_text.memory_usage(deep=True).sum() + y.nbytes) / MIB
    return {"seconds": seconds, "read_seconds": read, "frame_mib": frame_mib, "held_mib": held_mib, "rows": len(y)}


# --- the benchmark -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes timing the floor (median)")
    parser.add_argument("--keep", type=Path, help="build the project in this (new) folder and keep it")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)  # run.py passes every benchmark the same options
    if args.worker:
        found = run_first_fullprocess(args.config) if args.worker == "run" else floor(args.config)
        print(json.dumps(found))
        return {}
    if args.keep:
        args.keep.mkdir(parents=True)
        return measure(args.keep, args.rows, args.seed, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench-million-") as tmp:
        return measure(Path(tmp), args.rows, args.seed, args.repeat)


def measure(folder: Path, rows: int, seed: int, repeat: int) -> dict:
    config_path = loanbook.write_project(folder, rows, seed)
    run = benchsupport.run_worker(__file__, "run", "--config", str(config_path))
    audit = json.loads((folder / "logs" / "audit.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    floors = [benchsupport.run_worker(__file__, "floor", "--config", str(config_path)) for _ in range(repeat)]
    results = {
        "rows": rows,
        "run": run,
        "status": audit.get("status"),
        "model": audit.get("model"),
        "steps": audit.get("step_seconds", {}),
        "floor_s": statistics.median(f["seconds"] for f in floors),
        "floor_read_s": statistics.median(f["read_seconds"] for f in floors),
        "frame_mib": floors[0]["frame_mib"],
        "held_mib": floors[0]["held_mib"],
        "training_rows": floors[0]["rows"],
    }
    results["run_ratio"] = run["seconds"] / results["floor_s"]
    results["memory_ratio"] = run["largest_mib"] / results["frame_mib"]
    report(results)
    return results


def report(results: dict) -> None:
    run = results["run"]
    print(f"== first fullprocess run on {results['rows']:,} loans ({results['training_rows']:,} training rows) ==")
    print(f"status {results['status']}, model {results['model']}")
    steps = results["steps"]
    print("steps: " + ", ".join(f"{step} {steps[step]:.1f} s" for step in STEPS if step in steps))
    print(
        f"floor (read the training data + one default HGB fit): {results['floor_s']:.1f} s "
        f"(read {results['floor_read_s']:.1f} s)"
    )
    print(
        f"whole run: {run['seconds']:.1f} s -> {results['run_ratio']:.1f}x the floor (goal <= {RUN_GOAL:g}x) "
        f"{'OK' if results['run_ratio'] <= RUN_GOAL else 'MISSED'}"
    )
    print(
        f"largest process: {run['largest_mib']:.0f} MiB -> {results['memory_ratio']:.1f}x the "
        f"{results['frame_mib']:.0f} MiB training frame (goal <= {MEMORY_GOAL:g}x) "
        f"{'OK' if results['memory_ratio'] <= MEMORY_GOAL else 'MISSED'}; training holds that frame in "
        f"{results['held_mib']:.0f} MiB (text features as categories)"
    )
    print("peaks: " + ", ".join(f"{p['role']} {p['peak_mib']:.0f} MiB" for p in run["processes"]))


if __name__ == "__main__":
    main()
