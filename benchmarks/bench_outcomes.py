"""Cost of the back-test of one labelled batch (risk/monitoring/outcomes.py), against reading the
newest call list it is joined with (the floor: the list must be read).

For each size in ``--list-rows``: two call lists of that many clients (the newest holds them all,
so the older one is never read), and a labelled batch of a tenth of them arriving after both. The
median seconds over ``--rounds`` of reading the newest list (ids, rank, risk, flagged) and of
``outcomes.backtest_batch``, and their ratio.

Usage: ``python benchmarks/bench_outcomes.py [--list-rows 100000,1000000] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
ARRIVED = "2026-12-07T10:00:00+00:00"


def measure(rows: int, rounds: int) -> tuple[float, float]:
    import numpy as np
    import pandas as pd
    from bench_calllistapi import write_list

    from risk.core.settings import load_config
    from risk.monitoring import outcomes
    from risk.registry import calllists

    folder = Path(tempfile.mkdtemp(prefix="bench-outcomes-"))
    try:
        (folder / "config.json").write_text('{"target": "exited", "id_columns": ["corporation"]}', encoding="utf-8")
        config = load_config(folder / "config.json")
        write_list(config, rows)  # the older list
        write_list(config, rows)  # the newest: same clients
        rng = np.random.default_rng(1)
        ids = rng.choice(rows, rows // 10, replace=False)
        batch = pd.DataFrame({"corporation": [f"c{i:07d}" for i in ids], "exited": rng.integers(0, 2, len(ids))})
        infos = outcomes.call_list_infos(config)
        newest = calllists.call_list_folder(config) / infos[0]["file"]
        columns = ["corporation", "rank", "risk", "flagged"]
        read, tested = [], []
        for _ in range(rounds):
            clock = time.perf_counter()
            calllists.read_call_list(newest, ["corporation"], columns)
            read.append(time.perf_counter() - clock)
            clock = time.perf_counter()
            line = outcomes.backtest_batch(config, batch, ARRIVED, {}, infos)
            tested.append(time.perf_counter() - clock)
        assert line["rows_matched"] == len(batch), line
        return statistics.median(read), statistics.median(tested)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list-rows", default="100000,1000000", help="comma-separated list sizes")
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args(argv)
    sys.path.insert(0, str(PROJECT_DIR))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    logging.disable(logging.WARNING)
    print("back-test of one labelled batch (a tenth of the list's clients) against reading the newest list")
    for rows in (int(n) for n in args.list_rows.split(",")):
        read, tested = measure(rows, args.rounds)
        print(f"  {rows:>9,} clients: read {read:6.2f} s, back-test {tested:6.2f} s, ratio {tested / read:4.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
