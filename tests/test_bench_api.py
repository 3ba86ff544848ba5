"""The API benchmark's own arithmetic: what it prints about the workers must be true."""

from __future__ import annotations

from tests.conftest import benchmark_module

bench_api = benchmark_module("bench_api")


def test_the_least_busy_workers_share_is_printed_when_each_worker_is_one_process() -> None:
    assert bench_api.worker_spread([700, 300], workers=2) == "least 30%"


def test_a_worker_that_answered_nothing_shows_as_none_of_the_work() -> None:
    assert bench_api.worker_spread([1000], workers=2) == "least 0%"


def test_workers_recycled_during_the_run_are_said_to_be_so_not_shown_as_an_idle_worker() -> None:
    spread = bench_api.worker_spread([12236, 12159, 11267, 11039], workers=2)
    assert spread == "4 processes for 2 workers: recycled by max_requests during the run"
    assert bench_api.worker_spread([], workers=2) == "no worker counted"
