"""risk.model.compute: the local runners' map, and what it tells its caller as results arrive."""

from __future__ import annotations

import time

from risk.model import compute

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
