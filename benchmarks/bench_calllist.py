"""The call list's step on large client books, against a floor measured in the same run.

A project deployed from the sample data (``fullprocess.py``, as ``make run`` does), and client
books of ``--rows`` clients (default 100,000 and 1,000,000) resampled from the sample's book with
new ids. For each book, in fresh processes (``--repeat`` times, interleaved, median):

- the floor: read the book (the typed CSV reader) and one ``predict_proba`` over all of it;
- the list without reasons: read and check the book, score it in chunks, rank it, write it;
- the list with reasons (the deployed version's explainer, in the same chunks).

Each process reports its peak RSS (the largest process: the step runs in one), compared with the
book frame's size (pandas ``memory_usage(deep=True)`` of the book as read for the floor).
Usage: ``python benchmarks/bench_calllist.py [--rows 100000,1000000] [--repeat N] [--keep FOLDER]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchsupport  # noqa: E402 (found through the path above)

MIB = 1024 * 1024
PHASES = ("floor", "plain", "reasons")


def build_project(folder: Path) -> Path:
    """The sample project with the shipped config.json, deployed (v1) by one fullprocess run, as
    ``make run`` does; the book it writes stays unconfigured (each phase configures its own)."""
    import fullprocess
    from risk.core.settings import load_config
    from risk.data import sample

    values = json.loads((PROJECT_DIR / "config.json").read_text())
    values["client_book"] = None
    (folder / "project").mkdir()
    config_path = folder / "project" / "config.json"
    config_path.write_text(json.dumps(values))
    sample.write_sample_data(load_config(config_path))
    if fullprocess.main(["--config", str(config_path)]) != 0:
        raise RuntimeError("fullprocess failed on the sample data")
    return config_path


def write_book(config_path: Path, rows: int, seed: int = 0) -> str:
    """A book of ``rows`` clients drawn from the sample's book, each with a new id; its name."""
    import numpy as np
    import pandas as pd

    from risk.data import sample

    clients = pd.read_csv(config_path.parent / sample.SAMPLE_BOOK)
    rng = np.random.default_rng(seed)
    book = clients.iloc[rng.integers(0, len(clients), rows)].reset_index(drop=True)
    book["corporation"] = [f"c{i:07d}" for i in range(rows)]
    name = f"book_{rows}.csv"
    book.to_csv(config_path.parent / name, index=False, float_format="%.0f")
    return name


# --- the measured phases, each in a fresh process -------------------------------------------------


def phase(config_path: Path, book_name: str, which: str) -> dict:
    from risk.core.settings import load_config
    from risk.registry import versions

    config = load_config(config_path)
    deployed = versions.load_deployed_model(config)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    found: dict = {}
    if which == "floor":
        from risk.core.tables import read_typed_csv
        from risk.data import masterstore
        from risk.model.scoring import feature_frame

        kinds = masterstore.column_kinds(config)
        frame = read_typed_csv(config.root / book_name, {k: v for k, v in kinds.items() if k != config.target})
        deployed.model.predict_proba(feature_frame(frame, deployed.metadata["features"]))
        found["frame_mib"] = frame.memory_usage(deep=True).sum() / MIB
    else:
        import json as _json

        from risk.registry import booklist, calllists

        values = _json.loads(config_path.read_text())
        values.update(client_book=book_name, call_list_path=f"lists_{which}")
        config_path.with_name(f"config_{which}.json").write_text(_json.dumps(values))
        config = load_config(config_path.with_name(f"config_{which}.json"))
        the_book = booklist.read_book_for(config, deployed)
        info, frame = booklist.make_call_list(config, deployed, the_book, None, explain=which == "reasons")
        calllists.write_call_list(config, info, frame, "bench")
        found["reasons_filled"] = int((frame["reason_1"] != "").sum())
    found["seconds"] = time.perf_counter() - started
    found["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found["peak_before_mib"] = peak_before
    return found


def measure(folder: Path, sizes: list[int], repeat: int) -> dict:
    config_path = build_project(folder)
    model = json.loads((config_path.parent / "models" / "trainedmodel.json").read_text())["model"]
    results = {}
    for rows in sizes:
        book_name = write_book(config_path, rows)
        runs: dict[str, list[dict]] = {name: [] for name in PHASES}
        for _ in range(repeat):
            for name in PHASES:
                runs[name].append(
                    benchsupport.run_worker(__file__, name, "--config", str(config_path), "--book", book_name)
                )
        summary = {name: statistics.median(r["seconds"] for r in found) for name, found in runs.items()}
        peaks = {name: max(r["peak_mib"] for r in found) for name, found in runs.items()}
        # What the step itself added: the peak above the process's high-water mark once the model was loaded.
        growth = {name: max(r["peak_mib"] - r["peak_before_mib"] for r in found) for name, found in runs.items()}
        frame_mib = runs["floor"][0]["frame_mib"]
        results[rows] = {"seconds": summary, "peak_mib": peaks, "growth_mib": growth, "frame_mib": frame_mib}
        report(rows, model, summary, peaks, growth, frame_mib, runs["reasons"][0]["reasons_filled"])
        (config_path.parent / book_name).unlink()
    return results


def report(rows: int, model: str, seconds: dict, peaks: dict, growth: dict, frame_mib: float, filled: int) -> None:
    floor = seconds["floor"]
    print(f"== call list of {rows:,} clients ({model}) ==")
    print(
        f"floor (read the book + one predict_proba): {floor:.2f} s; the book frame {frame_mib:.0f} MiB; "
        f"the floor's process {peaks['floor']:.0f} MiB (+{growth['floor']:.0f} MiB over the loaded model)"
    )
    for name in ("plain", "reasons"):
        label = "list without reasons" if name == "plain" else f"list with reasons ({filled:,} clients given one)"
        print(
            f"{label}: {seconds[name]:.2f} s = {seconds[name] / floor:.1f}x the floor; largest process "
            f"{peaks[name]:.0f} MiB = {peaks[name] / frame_mib:.1f}x the book frame "
            f"(+{growth[name]:.0f} MiB over the loaded model = {growth[name] / frame_mib:.1f}x the book frame)"
        )
    print(f"reasons cost: {seconds['reasons'] / seconds['plain']:.1f}x the list without them")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="book sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (median)")
    parser.add_argument("--keep", type=Path, help="build the project in this (new) folder and keep it")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--book", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)  # run.py passes every benchmark the same options
    if args.worker:
        print(json.dumps(phase(args.config, args.book, args.worker)))
        return {}
    sizes = [int(size) for size in args.rows.split(",")]
    if args.keep:
        args.keep.mkdir(parents=True)
        return measure(args.keep, sizes, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench-calllist-") as tmp:
        return measure(Path(tmp), sizes, args.repeat)


if __name__ == "__main__":
    main()
