"""Training benchmarks, each a ratio against a baseline measured in the same run.

1. ``python training.py --config ...`` wall time, imports included, as a ratio to one fit of
   scikit-learn's default ``HistGradientBoostingClassifier`` in the same preprocessing
   pipeline on the same data, timed inside its own process (target <= 20x).
2. Training beside two CPU-bound busy loops, and beside two processes of multi-threaded
   work (default-threaded gradient-boosting fits), as a ratio to its quiet time, with the cores
   training used in each case (its process tree's CPU seconds / wall seconds). Targets: beside
   the busy loops <= 2.5x; beside the multi-threaded work at least 90% of its fair share of the
   cores (its threads' share of all runnable threads), since taking more would mean starting
   more processes than cores.
3. Peak memory of training above the idle processes (interpreters and imports excluded;
   anonymous memory's proportional set size summed over the process tree, the files
   it maps, and its scratch files where the temp folder is in memory (tmpfs): ``tree_pss``)
   as a ratio to the in-memory size of the training frame (target <= 4x).
4. Training on a 2-worker ``distributed.LocalCluster`` against training locally (on a
   2-core machine this shows the cluster's overhead, not a speed-up), and the paper
   estimate of where a cluster wins, from the per-fit times training recorded.
5. Model quality on the team's shared datasets (German credit, bank churn), where present:
   a seeded stratified 80/20 split, training on the 80 and scoring the chosen model on the 20.

The data is generated: ``--rows`` (default 21,000) clients with 20 numeric and 3 text
features, as the issue's credit-default measurement. Usage:
``python benchmarks/bench_training.py [--rows N] [--repeat N] [--skip-dask] [--skip-quality]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

SHARED_DATA = PROJECT_DIR.parent / "shared" / "data"
BUSY_LOOP = "while True: pass"
# Multi-threaded neighbours: default-threaded gradient boosting, refitted forever.
THREADED_WORK = (
    "from sklearn.datasets import make_classification\n"
    "from sklearn.ensemble import HistGradientBoostingClassifier\n"
    "X, y = make_classification(n_samples=20000, n_features=20, random_state=0)\n"
    "while True: HistGradientBoostingClassifier(early_stopping=False).fit(X, y)\n"
)


def make_frame(rows: int):
    """Clients with 20 numeric and 3 text features and a minority positive class."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows, n_features=20, n_informative=8, n_redundant=4, weights=[0.78], flip_y=0.05, random_state=7
    )
    frame = pd.DataFrame(np.round(X, 4), columns=[f"x{i:02d}" for i in range(20)])
    rng = np.random.default_rng(7)
    for index, name in enumerate(("region", "segment", "channel")):
        levels = np.array([f"{name}_{k}" for k in range(4 + 3 * index)])
        informative = np.digitize(X[:, index], [-1, 0, 1])  # text that carries some of the signal
        noise = rng.integers(0, len(levels), rows)
        frame[name] = levels[np.where(rng.random(rows) < 0.6, informative, noise) % len(levels)]
    frame.insert(0, "corporation", [f"c{i:07d}" for i in range(rows)])
    frame["exited"] = y
    return frame


def make_project(folder: Path, frame, extra: dict | None = None) -> Path:
    """A project holding ``frame`` ingested as its master; returns its config path."""
    from risk.core.settings import load_config
    from risk.data import ingest

    (folder / "sourcedata").mkdir(parents=True)
    (folder / "testdata").mkdir()
    values = {"package_check_seconds": 0, **(extra or {})}
    (folder / "config.json").write_text(json.dumps(values), encoding="utf-8")
    frame.to_csv(folder / "sourcedata" / "clients.csv", index=False)
    ingest.ingest_new_files(load_config(folder / "config.json"))
    return folder / "config.json"


# --- measured steps, each in a fresh process ----------------------------------------------


def worker(phase: str, config_path: Path) -> None:
    """One measured step in this fresh process; prints its figures as JSON."""
    if phase == "hgb_fit":
        print(json.dumps(time_default_hgb_fit(config_path)))
    elif phase.startswith("memory"):
        print(json.dumps(training_memory(config_path, int(phase.split(":")[1]))))


def time_default_hgb_fit(config_path: Path) -> dict:
    """Median of three fits of the default HistGradientBoostingClassifier in the project's pipeline."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from risk.core.settings import load_config
    from risk.data import masterstore
    from risk.model import pipelines, scoring

    config = load_config(config_path)
    data = masterstore.load_master(config)
    features = pipelines.feature_types(config, masterstore.column_kinds(config))
    X = scoring.feature_frame(data, features)
    y = scoring.binary_target(data[config.target], config.positive_label)
    from threadpoolctl import threadpool_limits

    def median_fit() -> float:
        times = []
        for _ in range(3):
            pipeline = pipelines.build_pipeline("hist_gradient_boosting", features, 0)
            pipeline.steps[-1] = ("classifier", HistGradientBoostingClassifier())
            started = time.perf_counter()
            pipeline.fit(X, y)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    default_threads = median_fit()
    with threadpool_limits(1):  # the stricter baseline: what one core does without OpenMP's spinning
        one_thread = median_fit()
    return {"seconds": default_threads, "one_thread_seconds": one_thread, "rows": len(X)}


def training_memory(config_path: Path, workers: int) -> dict:
    """Peak extra memory of train_model over the idle process tree, against the frame's size."""
    import importlib

    import psutil

    from risk.core.settings import load_config
    from risk.data import masterstore
    from risk.model import compute, fitting, pipelines, scoring, training

    importlib.import_module("skops.io")  # training imports it in the background to save the model: not counted

    config = load_config(config_path)
    data = masterstore.load_master(config)
    features = pipelines.feature_types(config, masterstore.column_kinds(config))
    frame_bytes = int(scoring.feature_frame(data, features).memory_usage(deep=True).sum())
    del data  # training reads the master itself, as training.py does
    if workers > 1:
        fitting.start_workers(workers)  # the worker interpreters exist before the baseline
    # The frame read above is freed, but glibc keeps it in this process's heap: uncounted, training's
    # own first step gives it back to the system (train_model starts with this call) and then fills
    # up to 5 MiB of its peak under the baseline. Given back before the baseline, it is not in either.
    compute.release_freed_memory()
    me = psutil.Process()
    baseline = tree_pss(me)
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_pss(me))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    training.train_model(config, workers=workers)
    stop.set()
    sampler.join()
    return {"frame_bytes": frame_bytes, "baseline_bytes": baseline, "peak_extra_bytes": peak[0] - baseline}


def tree_pss(process) -> int:
    """The memory of a process and its descendants that training can own: their anonymous pages
    (proportional set size, so a page they share counts once) and the data files they map (the
    fold files), each once and whole, and with the temp folder in memory (tmpfs) the training
    scratch files no process maps. Shared memory is a mapped file too (a tmpfs file, /dev/shm,
    /dev/zero, memfd, SysV: each has a path in /proc/<pid>/maps), so it is counted there, once;
    its Pss_Shmem would count it a second time.

    Not the pages of shared libraries and the interpreter: their proportional size depends on
    which other processes on the machine map the same files and on which of their pages a code
    path happens to touch first: counted, the same measurement's baseline ranged over 138-183 MiB
    from run to run, and one sample rose by 33 MiB of file pages, against a frame of 7 MiB."""
    import psutil

    total, files = 0, {}
    for member in [process, *process.children(recursive=True)]:
        try:
            total += _anonymous_pss(member.pid)
            for path, size in _mapped_data_files(member.pid).items():
                files[path] = max(files.get(path, 0), size)
        except (OSError, psutil.NoSuchProcess):  # ended between the listing and the reading
            pass
    for path, size in _scratch_in_memory(process.pid).items():
        files.setdefault(path, size)
    return total + sum(files.values())


MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


def _scratch_in_memory(pid: int) -> dict[str, int]:
    """The files of the training scratch folder of ``pid`` (risk-training-<pid>-*) when the temp folder
    is in memory (tmpfs, as /tmp is on many systems): there the training-frame snapshot (about the
    frame's size), the fold files and the pipelines handed back are memory training uses even while
    no process maps them. On a disk they are page cache the system can drop, and are not counted."""
    from risk.model import training

    temp = os.path.realpath(tempfile.gettempdir())
    if _filesystem_type(temp) not in MEMORY_FILESYSTEMS:
        return {}
    sizes = {}
    for folder in Path(temp).glob(f"{training.SCRATCH_PREFIX}{pid}-*"):
        for path in folder.rglob("*"):
            try:
                if path.is_file():
                    sizes[str(path)] = path.stat().st_size
            except OSError:  # removed between the listing and the reading
                pass
    return sizes


def _filesystem_type(path: str) -> str:
    """The type of the filesystem ``path`` is on (its deepest mount point's), "" when unknown."""
    import psutil

    mounts = [
        partition
        for partition in psutil.disk_partitions(all=True)
        if path == partition.mountpoint or path.startswith(partition.mountpoint.rstrip("/") + "/")
    ]
    return max(mounts, key=lambda partition: len(partition.mountpoint)).fstype if mounts else ""


def _anonymous_pss(pid: int) -> int:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            name, _, value = line.partition(":")
            fields[name] = value
    return int(fields.get("Pss_Anon", "0 kB").split()[0]) * 1024


LIBRARY = re.compile(r"\.so(\.[0-9]+)*$|/python[0-9.]*$")


def _mapped_data_files(pid: int) -> dict[str, int]:
    """The bytes of each data file (not a library, not the interpreter) the process maps."""
    mapped: dict[str, int] = {}
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(None, 5)
            path = fields[5].strip() if len(fields) == 6 else ""
            if not path.startswith("/") or LIBRARY.search(path):
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            mapped[path] = mapped.get(path, 0) + end - start
    return mapped


def run_worker(phase: str, config_path: Path) -> dict:
    return benchsupport.run_worker(__file__, phase, "--config", str(config_path))


def time_training(config_path: Path, repeat: int) -> tuple[float, dict, float]:
    """Median wall time of ``python training.py --config``, the metadata of the last run, and
    the median number of cores it used: CPU seconds of training.py and its worker processes
    (reaped children, so counted in RUSAGE_CHILDREN) over wall seconds."""
    times, cores = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(PROJECT_DIR / "training.py"), "--config", str(config_path)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        cores.append(cpu / times[-1])
    metadata = json.loads((config_path.parent / "models" / "trainedmodel.json").read_text())
    return statistics.median(times), metadata, statistics.median(cores)


def beside(neighbour: str, count: int):
    """Start ``count`` processes running ``neighbour``; returns a function that stops them."""
    processes = [subprocess.Popen([sys.executable, "-c", neighbour]) for _ in range(count)]
    time.sleep(2.0)  # let them get going (the threaded ones import scikit-learn first)

    def stop() -> None:
        for process in processes:
            process.kill()
            process.wait()

    return stop


def timed_beside(neighbour: str, config_path: Path, repeat: int) -> tuple[float, float]:
    """Training's wall time and the cores it used beside two ``neighbour`` processes."""
    stop = beside(neighbour, 2)
    try:
        seconds, _, cores = time_training(config_path, repeat)
    finally:
        stop()
    return seconds, cores


# --- Dask ------------------------------------------------------------------------------------


def bench_dask(config_path: Path, local_seconds: float, metadata: dict, repeat: int) -> dict | None:
    """Training on a 2-worker LocalCluster against the local run, and the paper estimate."""
    try:
        from distributed import LocalCluster
    except ImportError:
        return None
    values = json.loads(config_path.read_text())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        dask_config = config_path.parent / "config.dask.json"
        dask_config.write_text(json.dumps({**values, "dask_scheduler_address": cluster.scheduler_address}))
        seconds, dask_metadata, _ = time_training(dask_config, repeat)
    return {
        "local_s": local_seconds,
        "cluster_s": seconds,
        "ratio": seconds / local_seconds,
        "same_model": dask_metadata["model"] == metadata["model"]
        and dask_metadata["threshold"] == metadata["threshold"],
        "estimate": paper_estimate(metadata, seconds - local_seconds),
    }


def paper_estimate(metadata: dict, cluster_overhead_s: float) -> dict:
    """Where a cluster wins: rows x fits x per-row fit time, against workers and the overhead.

    A fit of these models costs about linearly in rows, so the measured single-threaded
    fit time per row scales to other sizes; the number of fits is candidates' settings x
    folds (plus refits). Local training spreads them over this machine's 2 cores; a cluster
    over W single-threaded workers, after a fixed overhead (connecting, each worker reading
    the master, shipping tasks), taken as the extra time measured on the 2-worker run.
    """
    fits = metadata.get("fits") or {}
    count, fit_seconds, rows = fits.get("count"), fits.get("seconds"), metadata["training_rows"]
    if not count or not fit_seconds:
        return {}
    per_row = fit_seconds / count / rows
    overhead = max(cluster_overhead_s, 0.0)
    table = []
    for scale_rows in (rows, 10 * rows, 100 * rows):
        work = per_row * scale_rows * count
        table.append(
            {"rows": scale_rows, "local_2_cores_s": work / 2, "cluster_s": {w: overhead + work / w for w in (8, 32)}}
        )
    # Break-even rows for W workers: rows * count * per_row * (1/2 - 1/W) = overhead.
    break_even = {w: overhead / (count * per_row * (0.5 - 1 / w)) for w in (8, 32)}
    return {
        "fits": count,
        "per_fit_s": fit_seconds / count,
        "overhead_s": overhead,
        "table": table,
        "break_even_rows": break_even,
    }


# --- model quality on the shared data ---------------------------------------------------------


QUALITY_DATASETS = (
    ("german_credit_kaggle.csv", {"target": "Risk", "positive_label": "bad", "id_columns": ["Unnamed: 0"]}),
    (
        "bank_churn_modelling.csv",
        {"target": "Exited", "positive_label": 1, "id_columns": ["RowNumber", "CustomerId", "Surname"]},
    ),
)


def bench_quality(folder: Path) -> list[dict]:
    """Train on a seeded 80% split of each shared dataset, score the chosen model on the other 20%."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from risk.model import scoring

    results = []
    for name, settings in QUALITY_DATASETS:
        path = SHARED_DATA / name
        if not path.is_file():
            continue
        frame = pd.read_csv(path, keep_default_na=False, na_values=["NA", ""])
        frame.columns = [str(c).strip() or "Unnamed: 0" for c in frame.columns]
        if "" in frame.columns or frame.columns[0].startswith("Unnamed"):
            frame = frame.rename(columns={frame.columns[0]: "Unnamed: 0"})
        labels = scoring.binary_target(frame[settings["target"]], settings["positive_label"])
        train, test = train_test_split(frame, test_size=0.2, stratify=labels, random_state=20261128)
        project = folder / name.split(".")[0]
        config_path = make_project(project, train, settings)
        test.to_csv(project / "testdata" / "testdata.csv", index=False)
        seconds, metadata, _ = time_training(config_path, 1)
        scores = json.loads(
            subprocess.run(
                [sys.executable, str(PROJECT_DIR / "scoring.py"), "--config", str(config_path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        results.append(
            {
                "dataset": name,
                "train_rows": len(train),
                "test_rows": len(test),
                "model": metadata["model"],
                "cv_metric": metadata["candidates"][metadata["model"]]["mean"],
                "test_f1": scores["f1"],
                "test_roc_auc": scores["roc_auc"],
                "test_average_precision": scores["average_precision"],
                "training_s": seconds,
            }
        )
    return results


# --- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=21_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of training.py in each timing (median)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--only-quality", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.config))
        return {}
    results: dict = {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        folder = Path(tmp)
        if not args.only_quality:
            config_path = make_project(folder / "generated", make_frame(args.rows))
            baseline = run_worker("hgb_fit", config_path)
            quiet, metadata, quiet_cores = time_training(config_path, args.repeat)
            results["speed"] = {
                "rows": baseline["rows"],
                "hgb_fit_s": baseline["seconds"],
                "hgb_fit_one_thread_s": baseline.get("one_thread_seconds"),
                "training_s": quiet,
                "ratio": quiet / baseline["seconds"],
                "model": metadata["model"],
                "metadata_seconds": metadata.get("training_seconds"),
                "fits": metadata.get("fits"),
            }
            busy_loops_s, busy_loops_cores = timed_beside(BUSY_LOOP, config_path, args.repeat)
            threaded_s, threaded_cores = timed_beside(THREADED_WORK, config_path, args.repeat)
            results["load"] = {
                "quiet_s": quiet,
                "busy_loops_s": busy_loops_s,
                "threaded_work_s": threaded_s,
                "cores": {"quiet_s": quiet_cores, "busy_loops_s": busy_loops_cores, "threaded_work_s": threaded_cores},
            }
            results["memory"] = run_worker("memory:2", config_path)
            results["memory_one_process"] = run_worker("memory:1", config_path)
            if not args.skip_dask:
                results["dask"] = bench_dask(config_path, quiet, metadata, args.repeat)
        if not args.skip_quality and SHARED_DATA.is_dir():
            results["quality"] = bench_quality(folder / "quality")
    results["load_average_after"] = os.getloadavg()
    report(results)
    return results


def report(results: dict) -> None:
    print("== training benchmarks ==")
    print(
        f"{results['cpus']} CPUs; load average before {results['load_average_before'][0]:.1f}, after {results['load_average_after'][0]:.1f}"
    )
    if results.get("speed"):
        _report_speed(results)
    if results.get("dask"):
        _report_dask(results["dask"])
    for row in results.get("quality", []):
        print(
            f"quality {row['dataset']} ({row['train_rows']} train / {row['test_rows']} test rows): chose {row['model']}, "
            f"CV {row['cv_metric']:.4f}; test F1 {row['test_f1']:.4f}, ROC AUC {row['test_roc_auc']:.4f}, "
            f"AP {row['test_average_precision']:.4f}; trained in {row['training_s']:.1f} s"
        )


def _report_speed(results: dict) -> None:
    speed = results["speed"]
    if speed:
        print(
            f"training.py on {speed['rows']:,} rows: {speed['training_s']:.1f} s vs one default HGB fit "
            f"{speed['hgb_fit_s']:.2f} s -> {speed['ratio']:.1f}x (target <= 20x) {'OK' if speed['ratio'] <= 20 else 'MISSED'}"
            f"; chose {speed['model']}; train_model itself {speed['metadata_seconds']} s"
        )
        if speed.get("hgb_fit_one_thread_s"):
            print(
                f"  against one single-threaded default HGB fit ({speed['hgb_fit_one_thread_s']:.2f} s): "
                f"{speed['training_s'] / speed['hgb_fit_one_thread_s']:.1f}x"
            )
        fits = speed.get("fits")
        if fits:
            print(
                f"  {fits['count']} fits, {fits['seconds']:.1f} s of fitting in all, by worker {json.dumps(fits['by_worker'])}"
            )
    _report_load(results["load"])
    _report_memory(results)


def _report_load(load: dict) -> None:
    cores = load["cores"]
    print(f"quiet: training.py used {cores['quiet_s']:.2f} cores (CPU seconds of its process tree / wall seconds)")
    for key, label in (("busy_loops_s", "two busy loops"), ("threaded_work_s", "two multi-threaded fit loops")):
        ratio = load[key] / load["quiet_s"]
        if key == "busy_loops_s":
            verdict = f"(target <= 2.5x) {'OK' if ratio <= 2.5 else 'MISSED'}"
        else:
            verdict = "(no ratio target: see the fair share below)"
        print(f"beside {label}: {load[key]:.1f} s vs quiet {load['quiet_s']:.1f} s -> {ratio:.2f}x {verdict}")
        # wall = CPU / cores, so the ratio is (CPU beside / CPU quiet) x (cores quiet / cores beside).
        cpu_ratio = (load[key] * cores[key]) / (load["quiet_s"] * cores["quiet_s"])
        print(
            f"  used {cores[key]:.2f} cores beside them: ratio = CPU {cpu_ratio:.2f}x "
            f"x cores quiet/beside {cores['quiet_s'] / cores[key]:.2f}"
        )
    _report_fair_share(cores["threaded_work_s"])


def _report_fair_share(used: float) -> None:
    """Beside multi-threaded work, training should get its share of the runnable threads, no more
    (starting more processes to win a bigger share would slow the quiet run and cost memory)."""
    from risk.model.compute import usable_cores

    machine = usable_cores()
    ours = machine  # training's worker processes: one per usable core
    theirs = 2 * machine  # two neighbours, each with OpenMP's default of one thread per core
    fair = machine * ours / (ours + theirs)
    print(
        f"  fair share beside them: {ours} of {ours + theirs} runnable threads on {machine} cores = {fair:.2f} cores; "
        f"used {used / fair:.0%} of it (target >= 90%) {'OK' if used >= 0.9 * fair else 'MISSED'}"
    )


def _report_memory(results: dict) -> None:
    for key, label in (("memory", "fits in worker processes"), ("memory_one_process", "fits in one process")):
        memory = results[key]
        ratio = memory["peak_extra_bytes"] / memory["frame_bytes"]
        print(
            f"peak memory of training ({label}): {memory['peak_extra_bytes'] / 2**20:.1f} MiB above the idle processes "
            f"({memory['baseline_bytes'] / 2**20:.0f} MiB) vs frame {memory['frame_bytes'] / 2**20:.1f} MiB -> {ratio:.1f}x "
            f"(target <= 4x) {'OK' if ratio <= 4 else 'MISSED'}"
        )
    temp = os.path.realpath(tempfile.gettempdir())
    kind = _filesystem_type(temp) or "an unknown filesystem"
    counted = "counted: they are memory there" if kind in MEMORY_FILESYSTEMS else "not counted: page cache of a disk"
    print(f"  training's scratch files (snapshot, folds, pipelines) in {temp}, on {kind}: {counted}")


def _report_dask(dask: dict) -> None:
    print(
        f"2-worker LocalCluster: {dask['cluster_s']:.1f} s vs local {dask['local_s']:.1f} s -> {dask['ratio']:.2f}x "
        f"(on this 2-core machine the workers share the same cores: this is the cluster's overhead, not a speed-up); "
        f"same model and threshold: {dask['same_model']}"
    )
    estimate = dask["estimate"]
    if estimate:
        print(
            f"paper estimate: {estimate['fits']} fits, {estimate['per_fit_s']:.2f} s each (single-threaded), "
            f"cluster overhead {estimate['overhead_s']:.1f} s"
        )
        for row in estimate["table"]:
            cluster = ", ".join(f"{w} workers {s:.0f} s" for w, s in row["cluster_s"].items())
            print(
                f"  {row['rows']:>10,} rows: local on 2 cores {row['local_2_cores_s']:.0f} s of fitting; cluster {cluster}"
            )
        print(
            "  a cluster wins above about "
            + ", ".join(f"{rows:,.0f} rows with {w} workers" for w, rows in estimate["break_even_rows"].items())
            + f" ({estimate['fits']} fits; more candidates or folds lower it in proportion)"
        )


if __name__ == "__main__":
    main()
