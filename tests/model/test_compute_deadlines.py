"""risk.model.compute: every wait on a Dask cluster has a deadline. A real scheduler (a
distributed.LocalCluster without workers, in this process) and a real `dask worker` process
without a nanny, killed with SIGKILL mid-task; a real TCP listener that starts a Dask
handshake and falls silent. Each ends in ComputeUnavailable with a clear message, or in local
work where dask_fallback_local says so; never in a wait without end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from risk.core import artefacts
from risk.data import ingest
from risk.model import compute
from tests.conftest import PROJECT_DIR, import_or_fail_in_ci, listener_that_answers, write_config

distributed = import_or_fail_in_ci(
    "distributed", "distributed (Dask) is not installed: pip install -r requirements.txt"
)

pytestmark = pytest.mark.slow

GUARD_SECONDS = 180  # far above every deadline under test: reaching it means a wait without end
# dask_timeout_seconds in these tests: short, yet long enough that a loaded machine's scheduler answers in time.
TIMEOUT = 5
# dask_timeout_seconds against a listener that starts a handshake and falls silent: no deadline is long
# enough for it to answer, so a short one tests the same; 2 s, not the minimum 1, keeps a loaded machine's
# own TCP connect (which must succeed for the handshake to start) well inside it.
SILENT_TIMEOUT = 2


@pytest.fixture
def scheduler():
    """A scheduler in this process (so the test can see its tasks), with no workers of its own."""
    with distributed.LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=":0", silence_logs=40
    ) as cluster:
        yield cluster


def start_worker(address: str) -> subprocess.Popen:
    """A `dask worker` process without a nanny: killed, it does not come back."""
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), "worker", address, "--no-nanny", "--nthreads", "1"],
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return worker


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + GUARD_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


@pytest.fixture
def worker(scheduler):
    process = start_worker(scheduler.scheduler_address)
    wait_until(lambda: len(scheduler.scheduler.workers) == 1, "the worker to join")
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def blocks_on_a_worker(marker: str) -> str:
    """On a Dask worker: say so in ``marker`` and never finish. Here: return at once."""
    import time as clock

    import distributed as dask_distributed

    try:
        dask_distributed.get_worker()
    except ValueError:
        return "ran locally"
    Path(marker).write_text("started", encoding="utf-8")
    clock.sleep(3600)
    return "ran on the worker"


def map_in_thread(runner: compute.Runner, marker: Path) -> tuple[threading.Thread, list]:
    outcome: list = []

    def call() -> None:
        try:
            outcome.append(runner.map(blocks_on_a_worker, [(str(marker),)], name="blocking"))
        except BaseException as exc:  # noqa: BLE001 - the test looks at whatever came out
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, outcome


def signal_mid_task(
    runner: compute.Runner, marker: Path, process: subprocess.Popen, signum: int
) -> tuple[threading.Thread, list]:
    """Start a blocking map, send ``signum`` to ``process`` once the task runs on a worker, and give
    the map GUARD_SECONDS to end; the thread and what the map gave (a result or an exception)."""
    thread, outcome = map_in_thread(runner, marker)
    wait_until(lambda: marker.exists() or not thread.is_alive(), "the task to start on the worker")
    assert not outcome, outcome
    process.send_signal(signum)
    thread.join(GUARD_SECONDS)
    return thread, outcome


@pytest.mark.parametrize("fallback", [False, True], ids=["fails", "falls-back"])
def test_a_worker_killed_mid_task_ends_the_wait(project, scheduler, worker, tmp_path, fallback) -> None:
    config = write_config(
        project.root,
        dask_scheduler_address=scheduler.scheduler_address,
        dask_timeout_seconds=TIMEOUT,
        dask_fallback_local=fallback,
    )
    runner = compute.open_runner(config)
    assert runner.backend == "dask"
    thread, outcome = signal_mid_task(runner, tmp_path / "task-started", worker, signal.SIGKILL)
    runner.close()

    assert not thread.is_alive(), "the map waited for a worker that will never come back"
    if fallback:
        assert outcome == [["ran locally"]]
        assert runner.backend == "local" and f"has had no workers for {TIMEOUT} s" in runner.fallback_reason
    else:
        [failure] = outcome
        assert isinstance(failure, compute.ComputeUnavailable), failure
        assert f"the Dask cluster at {scheduler.scheduler_address} has had no workers for {TIMEOUT} s" in str(failure)


@pytest.mark.parametrize("fallback", [False, True], ids=["fails", "falls-back"])
def test_training_py_ends_when_its_worker_is_killed_mid_fit(project, scheduler, worker, tmp_path, fallback) -> None:
    ingest.ingest_new_files(project)
    config = write_config(
        project.root,
        dask_scheduler_address=scheduler.scheduler_address,
        dask_timeout_seconds=TIMEOUT,
        dask_fallback_local=fallback,
    )
    training = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "training.py"), "--config", str(config.path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tasks = scheduler.scheduler.tasks
    wait_until(
        lambda: any(str(key).startswith("risk-fit") for key in list(tasks)) or training.poll() is not None,
        "a fit to be submitted",
    )
    worker.send_signal(signal.SIGKILL)

    try:
        out, err = training.communicate(timeout=GUARD_SECONDS)
    finally:
        training.kill()  # a no-op once it has ended; a hung one must not outlive the test
        training.wait()

    assert "Traceback" not in err
    if fallback:
        assert training.returncode == 0, err
        compute_used = json.loads((config.model_folder / artefacts.METADATA_FILE).read_text())["compute"]
        assert (
            compute_used["backend"] == "local"
            and f"has had no workers for {TIMEOUT} s" in compute_used["fallback_reason"]
        )
    else:
        assert training.returncode == 1, (out, err)
        assert f"has had no workers for {TIMEOUT} s" in err
        assert not (config.model_folder / "trainedmodel.pkl").exists()


def test_a_scheduler_that_stops_answering_mid_task_ends_the_wait(project, tmp_path) -> None:
    """The scheduler in its own process, stopped with SIGSTOP while a task runs: the kernel still
    accepts its connections, so only a deadline on the client's side ends the wait."""
    scheduler_file = tmp_path / "scheduler.json"
    dask = str(Path(sys.executable).parent / "dask")
    scheduler = subprocess.Popen(
        [
            dask,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},  # it unpickles the tasks, named by this module
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        wait_until(scheduler_file.exists, "the scheduler to start")
        wait_until(
            lambda: "address" in scheduler_file.read_text() and scheduler_file.read_text().endswith("}"), "its address"
        )
        address = json.loads(scheduler_file.read_text())["address"]
        worker = start_worker(address)
        config = write_config(project.root, dask_scheduler_address=address, dask_timeout_seconds=TIMEOUT)
        runner = compute.open_runner(config)
        thread, outcome = signal_mid_task(runner, tmp_path / "task-started", scheduler, signal.SIGSTOP)
        runner.close()
    finally:
        scheduler.send_signal(signal.SIGCONT)
        for process in (worker, scheduler):
            if process is not None:
                process.kill()
                process.wait()

    assert not thread.is_alive(), "the map waited for a scheduler that stopped answering"
    [failure] = outcome
    assert isinstance(failure, compute.ComputeUnavailable), failure
    assert f"the Dask scheduler at {address} stopped answering (nothing within {TIMEOUT} s" in str(failure)


# The start of a real scheduler's handshake: the frames' total length, their count, the first frame's length.
HANDSHAKE_START = (58).to_bytes(8, "little") + (1).to_bytes(8, "little") + (42).to_bytes(8, "little") + b"\x83"


@pytest.mark.parametrize("fallback", [False, True], ids=["fails", "falls-back"])
def test_a_listener_that_starts_a_handshake_and_falls_silent_does_not_hang_training(
    project, tmp_path, fallback
) -> None:
    ingest.ingest_new_files(project)
    server = listener_that_answers(HANDSHAKE_START)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    config = write_config(
        project.root, dask_scheduler_address=address, dask_timeout_seconds=SILENT_TIMEOUT, dask_fallback_local=fallback
    )

    finished = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "training.py"), "--config", str(config.path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    server.close()

    if fallback:
        assert finished.returncode == 0, finished.stderr
        compute_used = json.loads((config.model_folder / artefacts.METADATA_FILE).read_text())["compute"]
        assert compute_used["backend"] != "dask" and address in compute_used["fallback_reason"]
    else:
        assert finished.returncode == 1
        assert (
            f"cannot reach the Dask scheduler at {address} within {SILENT_TIMEOUT} s (no complete Dask handshake)"
            in finished.stderr
        )
        assert "Traceback" not in finished.stderr


def test_connect_gives_up_on_a_silent_handshake_without_waiting_in_del(tmp_path) -> None:
    """In a fresh process, so that the Client's __del__ (which waited 10 s more) runs before it exits."""
    server = listener_that_answers(HANDSHAKE_START)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    script = (
        "import gc, sys\n"
        "from risk.model import compute\n"
        "try:\n"
        f"    compute.connect({address!r}, timeout={SILENT_TIMEOUT})\n"
        "except compute.ComputeUnavailable as exc:\n"
        "    print('refused:', exc)\n"
        "gc.collect()\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    server.close()

    assert finished.returncode == 0 and finished.stdout.startswith(
        f"refused: cannot reach the Dask scheduler at {address}"
    )
    assert "Exception ignored" not in finished.stderr and "TimeoutError" not in finished.stderr, finished.stderr


def test_under_fallback_a_scheduler_found_unusable_is_not_asked_again_by_the_same_process(tmp_path) -> None:
    """A cron run's later steps go on locally at once instead of each waiting out dask_timeout_seconds for the
    same silence; without dask_fallback_local the scheduler is asked again. In a fresh process: what it
    remembers must not reach other tests."""
    server = listener_that_answers(HANDSHAKE_START)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    remembering = write_config(
        tmp_path / "fallback",
        dask_scheduler_address=address,
        dask_timeout_seconds=SILENT_TIMEOUT,
        dask_fallback_local=True,
    )
    failing = write_config(tmp_path / "fails", dask_scheduler_address=address, dask_timeout_seconds=SILENT_TIMEOUT)
    script = (
        "import sys\n"
        "from risk.core.settings import load_config\n"
        "from risk.model import compute\n"
        "remembering, failing = load_config(sys.argv[1]), load_config(sys.argv[2])\n"
        "for step in ('first', 'second'):\n"
        "    with compute.open_runner(remembering, parallel=False) as runner:\n"
        "        print(step, runner.backend, runner.fallback_reason)\n"
        "try:\n"
        "    compute.open_runner(failing, parallel=False)\n"
        "except compute.ComputeUnavailable as exc:\n"
        "    print('without fallback', exc)\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script, str(remembering.path), str(failing.path)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    server.close()

    silence = f"cannot reach the Dask scheduler at {address} within {SILENT_TIMEOUT} s (no complete Dask handshake)"
    first, second, without_fallback = finished.stdout.splitlines()
    assert first.startswith("first local ") and silence in first and "found at" not in first, finished.stderr
    # Remembered: the first silence's reason, when it was found, and no second wait.
    assert second.startswith("second local ") and silence in second, finished.stderr
    assert "found at 20" in second and "not asked again for 10 minutes" in second
    assert without_fallback.startswith(f"without fallback {silence}") and "found at" not in without_fallback


def kills_its_worker() -> str:
    """On a Dask worker: end the worker's process. Here: return at once."""
    import distributed as dask_distributed

    try:
        dask_distributed.get_worker()
    except ValueError:
        return "ran locally"
    os._exit(1)


def test_under_fallback_a_task_that_killed_its_workers_does_not_make_the_scheduler_skipped(
    project, monkeypatch
) -> None:
    """Workers dying while running one task (out of memory, say) say nothing of the next step's tasks:
    the cluster answered throughout, and asking it again costs no wait, so it is not remembered as unusable."""
    import dask

    monkeypatch.setattr(compute, "_UNUSABLE", {})  # what other tests' runners remembered
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),  # the first death is KilledWorker
        distributed.LocalCluster(
            n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=":0", silence_logs=40
        ) as cluster,
    ):
        worker = subprocess.Popen(  # with its nanny: killed, it comes back
            [str(Path(sys.executable).parent / "dask"), "worker", cluster.scheduler_address, "--nthreads", "1"],
            env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: len(cluster.scheduler.workers) == 1, "the worker to join")
            config = write_config(
                project.root,
                dask_scheduler_address=cluster.scheduler_address,
                dask_timeout_seconds=60,  # room for the nanny to bring the worker back
                dask_fallback_local=True,
            )
            with compute.open_runner(config) as runner:
                assert runner.backend == "dask"
                assert runner.map(kills_its_worker, [()]) == ["ran locally"]
                assert runner.backend == "local" and "died while running it" in runner.fallback_reason
            with compute.open_runner(config) as again:
                assert again.backend == "dask" and again.fallback_reason is None
        finally:
            worker.terminate()
            worker.wait(GUARD_SECONDS)


@pytest.mark.parametrize("address", ["tls://127.0.0.1:8786", "inproc://x", "not a url", "tcp://localhost:99999"])
def test_an_odd_address_given_to_connect_is_compute_unavailable(address) -> None:
    """The config refuses these when loaded; called directly, connect still answers with the error
    dask_fallback_local handles, not distributed's TypeError or ValueError."""
    with pytest.raises(compute.ComputeUnavailable, match="is not tcp://host:port"):
        compute.connect(address, timeout=TIMEOUT)


def test_a_scheduler_without_workers_is_refused_within_the_timeout(scheduler) -> None:
    address = scheduler.scheduler_address
    with pytest.raises(compute.ComputeUnavailable, match=f"the Dask scheduler at {address} has no workers"):
        compute.connect(address, timeout=TIMEOUT)


def test_a_map_that_outlasts_its_deadline_ends(project, scheduler, worker, tmp_path) -> None:
    """Workers alive, scheduler answering, the task never finishing: the map's own deadline
    (max_run_minutes, set short on the runner here) ends it."""
    config = write_config(
        project.root, dask_scheduler_address=scheduler.scheduler_address, dask_timeout_seconds=TIMEOUT
    )
    runner = compute.open_runner(config)
    assert runner.max_wait == config["max_run_minutes"] * 60
    runner.max_wait = 3
    thread, outcome = map_in_thread(runner, tmp_path / "task-started")
    thread.join(GUARD_SECONDS)
    runner.close()

    assert not thread.is_alive()
    [failure] = outcome
    assert isinstance(failure, compute.ComputeUnavailable), failure
    assert "did not finish within 0.05 minutes (max_run_minutes)" in str(failure)


HEAP_CHECK = """
import sys
import numpy as np
from risk.model import compute

def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "mapped":
    compute.map_large_allocations()
big = np.ones(2 * 2**20)
del big  # a freed 16 MiB block: glibc raises its threshold for mapping to 16 MiB
before = resident_mib()
blocks = [np.ones(2**20) for _ in range(5)]  # five 8 MiB arrays
pinned = np.ones(1000)  # a small block above them: the heap's top cannot shrink past it
del blocks
print(resident_mib() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_after_map_large_allocations_freed_arrays_leave_the_process() -> None:
    """training.train_model sets it in the process that runs the steps: freed arrays of a MiB and
    more go back to the system instead of staying resident under the next step's peak."""

    def retained(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", HEAP_CHECK, mode], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    if retained("default") < 4:
        pytest.skip("this C library hands freed blocks back by itself")
    assert retained("mapped") < 1
