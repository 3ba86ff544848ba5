"""risk.model.compute: the local runners' map, and what it tells its caller as results arrive."""

from __future__ import annotations

import os
import time
from pathlib import Path

from risk.model import compute, fitting
from tests.conftest import still_running

SIGNAL_WAIT_SECONDS = 30.0  # a guard against a wait without end, not a measure


def test_done_is_called_in_the_order_the_tasks_ran_once_each() -> None:
    for workers in (1, 2):  # in this process (in the order given), in worker processes (the costliest first)
        calls: list[int] = []
        with compute.local_runner(workers=workers) as runner:
            results = runner.map(abs, [(-1,), (-2,), (-3,)], costs=[1.0, 3.0, 2.0], done=calls.append)
        assert results == [1, 2, 3]
        assert calls == ([1, 2, 0] if runner.backend == "processes" else [0, 1, 2])


def test_done_is_called_as_a_result_arrives_while_the_other_tasks_still_run(tmp_path) -> None:
    """FitRounds removes a fold's files from ``done`` while the round's later folds are fitted: it
    must come while the other tasks run, not once all are over."""
    signal = tmp_path / "first-task-done"

    def task(waits: bool) -> str:
        if not waits:
            return "ran"
        deadline = time.monotonic() + SIGNAL_WAIT_SECONDS
        while not signal.exists():
            if time.monotonic() > deadline:
                return "done was not called while this task ran"
            time.sleep(0.01)
        return "done was called while this task ran"

    with compute.local_runner(workers=2) as runner:
        # The costlier task (position 1) starts first and returns at once; the other waits for its done.
        results = runner.map(task, [(True,), (False,)], costs=[1.0, 2.0], done=lambda i: i == 1 and signal.touch())
    assert results == ["done was called while this task ran", "ran"]


def test_a_map_of_fewer_tasks_than_workers_gives_each_task_the_idle_workers_cores() -> None:
    """Training's refit is often the only task of its round: it gets both workers' cores (its OpenMP and
    BLAS pools, and task_threads for the rest); two tasks on two workers, or any task in this process,
    one each."""
    expected = os.environ.get("GOMP_SPINCOUNT", "10000")  # an operator's own setting is kept

    def threads() -> tuple[int, set[int]]:
        from threadpoolctl import threadpool_info

        return compute.task_threads(), {
            pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"
        }

    with compute.local_runner(workers=2) as runner:
        runner.start_in_background(fitting.warm_worker)  # scikit-learn's OpenMP is loaded in the workers
        assert runner.map(threads, [()]) == [(2, {2})]
        assert runner.map(threads, [(), ()]) == [(1, {1}), (1, {1})]

    def wait_policy() -> str | None:
        return os.environ.get("GOMP_SPINCOUNT")

    with compute.local_runner(workers=2) as runner:
        assert runner.map(wait_policy, [(), ()]) == [expected, expected], (
            "the workers' OpenMP threads spin briefly, then sleep"
        )
    with compute.local_runner(parallel=False) as runner:
        assert runner.map(threads, [()]) == [(1, {1})]
    assert compute.task_threads() == 1, "outside a map"


def test_a_runner_that_does_not_keep_its_workers_lets_them_go_unless_another_still_uses_them(tmp_path) -> None:
    """Training's runner lets the worker processes go as it closes, without waiting for them; while a
    runner that keeps them is open they stay; a runner opened afterwards starts new ones."""
    with compute.local_runner(workers=2) as keeping:
        kept = worker_pids(keeping, tmp_path / "kept")
        with compute.local_runner(workers=2, keep_workers=False) as leaving:
            assert worker_pids(leaving, tmp_path / "shared") == kept
        assert worker_pids(keeping, tmp_path / "still") == kept, "the same processes still run its tasks"
    with compute.local_runner(workers=2, keep_workers=False) as leaving:
        pids = worker_pids(leaving, tmp_path / "leaving")
    assert not still_running(pids, SIGNAL_WAIT_SECONDS), "the workers exited"
    with compute.local_runner(workers=2) as again:
        assert not worker_pids(again, tmp_path / "again") & pids


def worker_pids(runner: compute.Runner, folder: Path) -> set[int]:
    """The ids of the runner's two worker processes: two tasks that each wait for the other to start."""
    folder.mkdir()

    def meet() -> int:
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + SIGNAL_WAIT_SECONDS
        while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.getpid()

    pids = set(runner.map(meet, [(), ()]))
    assert len(pids) == 2, "each task ran in its own worker process"
    return pids
