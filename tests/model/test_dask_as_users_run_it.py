"""A Dask cluster as a Dask user runs it (docs/training.md): `dask scheduler` and `dask worker`
started as programs from the pinned packages, in a folder that is not the project and without
PYTHONPATH, so they cannot import the project; the project's code travels with its tasks.

test_compute_dask.py's LocalCluster shares this process's sys.path, so it cannot show this."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from risk.model import scoring
from risk.registry import versions
from tests.conftest import PROJECT_DIR, import_or_fail_in_ci, rewrite_config, write_config

distributed = import_or_fail_in_ci(
    "distributed", "distributed (Dask) is not installed: pip install -r requirements.txt"
)

pytestmark = pytest.mark.slow

DASK = Path(sys.executable).with_name("dask")  # the virtualenv's own `dask` program, as the docs run it
START_SECONDS = 60  # a scheduler listening, a worker registered (imports take seconds on a busy machine)
RUN_SECONDS = 300  # one small project's whole fullprocess run


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment() -> dict[str, str]:
    """This environment without PYTHONPATH: nothing points at the project."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@contextlib.contextmanager
def started(command: list[str], folder: Path, log: Path) -> Iterator[subprocess.Popen]:
    """``command`` running in ``folder`` (its output in ``log``), stopped with every process it started."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=folder, env=environment(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the worker's nanny and its worker process too
        process.wait(timeout=15)


@contextlib.contextmanager
def cluster(folder: Path, worker_python: Path | None = None) -> Iterator[str]:
    """A scheduler and one single-threaded worker, started in ``folder`` with the docs' commands;
    yields the scheduler's address once the worker has joined."""
    folder.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{free_port()}"
    worker = [str(DASK)] if worker_python is None else [str(worker_python), "-m", "dask"]
    with (
        started([str(DASK), "scheduler", "--port", address.rsplit(":", 1)[1]], folder, folder / "scheduler.log"),
        started([*worker, "worker", address, "--nworkers", "1", "--nthreads", "1"], folder, folder / "worker.log"),
    ):
        wait_for_a_worker(address, folder)
        yield address


def wait_for_a_worker(address: str, folder: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, TimeoutError):
            with distributed.Client(address, timeout=5, set_as_default=False) as client:
                client.wait_for_workers(1, timeout=max(1.0, deadline - time.monotonic()))
                return
        time.sleep(0.5)
    logs = {name: (folder / name).read_text()[-2000:] for name in ("scheduler.log", "worker.log")}
    pytest.fail(f"no Dask worker joined {address} within {START_SECONDS} s: {logs}")


def on_cluster(address: str, where: str, function):
    """``function()`` run on the scheduler (``where`` "scheduler") or on every worker; a function
    nested in a test travels as code, so the cluster needs nothing of ours to run it."""
    with distributed.Client(address, timeout=10, set_as_default=False) as client:
        if where == "scheduler":
            return client.run_on_scheduler(function)
        return client.run(function)


def finished_tasks(address: str, prefix: str) -> int:
    """Tasks whose key starts with ``prefix`` that the scheduler saw finish."""

    def count(dask_scheduler, prefix=prefix):
        return sum(1 for e in dask_scheduler.transition_log if str(e[0]).startswith(prefix) and e[2] == "memory")

    return on_cluster(address, "scheduler", count)


def cannot_import_the_project(address: str) -> bool:
    """Whether the scheduler and every worker at ``address`` fail to find the project's package."""

    def cannot_import_risk() -> bool:  # nested: it travels as code (a module-level one is looked up by name)
        import importlib.util

        return importlib.util.find_spec("risk") is None

    return on_cluster(address, "scheduler", cannot_import_risk) and all(
        on_cluster(address, "workers", cannot_import_risk).values()
    )


@pytest.fixture(scope="module")
def users_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with cluster(tmp_path_factory.mktemp("dask-cluster")) as address:
        assert cannot_import_the_project(address), "the precondition: the cluster cannot import the project"
        yield address


def run_script(script: str, config_path: Path, folder: Path) -> subprocess.CompletedProcess:
    """A project script as cron runs it: from another folder, without PYTHONPATH."""
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / script), "--config", str(config_path)],
        capture_output=True,
        text=True,
        cwd=folder,
        env=environment(),
        timeout=RUN_SECONDS,
    )


def test_fullprocess_trains_on_the_cluster_and_its_model_scores_there(users_cluster, project, tmp_path) -> None:
    config = write_config(project.root, dask_scheduler_address=users_cluster)
    before = finished_tasks(users_cluster, "risk-fit")

    finished = run_script("fullprocess.py", config.path, tmp_path)

    assert finished.returncode == 0, finished.stderr[-3000:]
    deployed = versions.load_deployed_model(config)
    assert deployed.version == "v1"
    assert deployed.metadata["compute"]["backend"] == "dask" and deployed.metadata["compute"]["fallback_reason"] is None
    workers = on_cluster(users_cluster, "workers", lambda: True).keys()
    assert set(deployed.metadata["fits"]["by_worker"]) <= set(workers), "every fit ran on the cluster's worker"
    assert finished_tasks(users_cluster, "risk-fit") - before == deployed.metadata["fits"]["count"] > 0

    # The deployed model, sent to the workers once, scores a test set there as it does here.
    test = pd.read_csv(config.test_data_folder / "testdata.csv")
    local = scoring.score_frame(
        deployed.model, test, deployed.metadata, rewrite_config(config, dask_scheduler_address=None)
    )
    before = finished_tasks(users_cluster, "risk-score")
    remote = scoring.score_frame(deployed.model, test, deployed.metadata, config, cluster_min_rows=100)
    assert finished_tasks(users_cluster, "risk-score") - before >= 1
    assert remote["confusion"] == local["confusion"]
    figures = [k for k in local if k != "confusion"]
    assert {k: remote[k] for k in figures} == pytest.approx({k: local[k] for k in figures}, abs=1e-12)


def environment_without(package: str, distribution: str, folder: Path) -> Path:
    """A virtualenv with every package of this one but ``package``: a worker machine whose
    environment was not installed from requirements.txt. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    here = Path(sysconfig.get_paths()["purelib"])
    there = Path(
        subprocess.run(
            [str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    for entry in here.iterdir():
        if entry.name == package or entry.name.startswith(f"{distribution}-"):
            continue
        (there / entry.name).symlink_to(entry)
    return folder / "bin" / "python"


def test_a_worker_that_cannot_run_the_tasks_fails_the_run_in_one_line(project, tmp_path) -> None:
    python = environment_without("sklearn", "scikit_learn", tmp_path / "worker-venv")
    assert subprocess.run([str(python), "-c", "import sklearn"], capture_output=True, timeout=60).returncode != 0
    from risk.data import ingest

    ingest.ingest_new_files(project)
    with cluster(tmp_path / "cluster", worker_python=python) as address:
        assert cannot_import_the_project(address)
        config = write_config(project.root, dask_scheduler_address=address)

        failed = run_script("training.py", config.path, tmp_path)

        assert failed.returncode == 1
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert f"the Dask workers at {address} cannot run this project's tasks" in lines[0]
        assert "no scikit-learn" in lines[0] and "pip install -r requirements.txt" in lines[0]
        assert not (config.model_folder / "trainedmodel.pkl").exists()

        # With dask_fallback_local the run trains here instead, and says why.
        config = write_config(project.root, dask_scheduler_address=address, dask_fallback_local=True)
        finished = run_script("training.py", config.path, tmp_path)

    assert finished.returncode == 0, finished.stderr[-3000:]
    metadata = json.loads((config.model_folder / "trainedmodel.json").read_text())
    assert metadata["compute"]["backend"] == "local"
    assert "no scikit-learn" in metadata["compute"]["fallback_reason"]
