"""risk.model.compute: the same training and scoring on a real Dask cluster: a distributed.LocalCluster of two
worker processes, started by these tests. The cluster must run the fits (counted on the
scheduler) and the model it gives must equal the local run's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from risk.data import ingest, masterstore
from risk.model import compute, fitting, pipelines, scoring, training
from tests.conftest import PROJECT_DIR, add_shifted_month, import_or_fail_in_ci, write_config

distributed = import_or_fail_in_ci(
    "distributed", "distributed (Dask) is not installed: pip install -r requirements.txt"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    # dashboard_address=":0": with None the scheduler's HTTP routes still take port 8787 when free, and when
    # another test's scheduler holds it, distributed's retry leaks a socket (a ResourceWarning fails the test).
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    ) as local_cluster:
        yield local_cluster


def tasks_run_on(cluster, prefix: str) -> int:
    """Tasks the scheduler saw finish whose key starts with ``prefix``."""

    def count(dask_scheduler, prefix=prefix):
        return sum(
            1 for entry in dask_scheduler.transition_log if str(entry[0]).startswith(prefix) and entry[2] == "memory"
        )

    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        return client.run_on_scheduler(count)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ingested(project):
    ingest.ingest_new_files(project)
    return project


NAMES = ["logistic_regression", "hist_gradient_boosting"]


@pytest.mark.parametrize("sample", [{}, {"selection_sample_rows": 3000}], ids=["all-rows", "selection-sample"])
def test_the_cluster_runs_the_fits_and_gives_the_local_model(ingested, cluster, sample) -> None:
    """Also where the candidates are chosen on a sample of the rows: the workers draw the same one."""
    local_config = write_config(ingested.root, candidate_models=NAMES, **sample)
    local_model, local = training.train_model(local_config, workers=1)
    before = tasks_run_on(cluster, "risk-fit")
    config = write_config(
        ingested.root, candidate_models=NAMES, dask_scheduler_address=cluster.scheduler_address, **sample
    )

    model, remote = training.train_model(config)

    assert tasks_run_on(cluster, "risk-fit") - before == remote["fits"]["count"] == local["fits"]["count"]
    workers = set(cluster.scheduler_info["workers"])
    assert set(remote["fits"]["by_worker"]) <= workers, "every fit ran on a worker of the cluster"
    assert remote["compute"]["backend"] == "dask" and remote["compute"]["scheduler"] == cluster.scheduler_address
    assert remote["model"] == local["model"] and remote["threshold"] == local["threshold"]
    assert remote["typical_client"] == local["typical_client"], "the reasons' baseline, read here from the master"
    assert remote["selection_rows"] == local["selection_rows"] == sample.get("selection_sample_rows", 7500)
    for name, candidate in local["candidates"].items():
        np.testing.assert_allclose(remote["candidates"][name]["folds"], candidate["folds"], rtol=0, atol=1e-9)
        assert remote["candidates"][name]["oof_roc_auc"] == pytest.approx(candidate["oof_roc_auc"], abs=1e-9)
    X = scoring.feature_frame(masterstore.load_master(config), local["features"])
    np.testing.assert_allclose(model.predict_proba(X), local_model.predict_proba(X), rtol=0, atol=1e-9)


def test_the_workers_read_the_master_from_the_file_system(ingested, cluster) -> None:
    config = write_config(
        ingested.root, candidate_models=["logistic_regression"], dask_scheduler_address=cluster.scheduler_address
    )
    source = fitting.TrainingData(
        features=pipelines.feature_types(config, masterstore.column_kinds(config)),
        kinds=masterstore.column_kinds(config),
        target=config.target,
        positive_label=config.positive_label,
        master=str(masterstore.master_path(config)),
        stamp=fitting.file_stamp(masterstore.master_path(config)),
    )
    # What travels to a worker is the path and the file's size and time, not the rows.
    assert len(__import__("pickle").dumps(source)) < 2000
    with compute.open_runner(config) as runner:
        [(_, labels)] = runner.map(fitting.TrainingData.load, [(source,)], name="read")
    master = masterstore.load_master(config)
    assert len(labels) == len(master) and int(labels.sum()) == int(master["exited"].sum())


def test_large_test_sets_are_scored_on_the_cluster(ingested, cluster) -> None:
    local_config = write_config(ingested.root)
    model, metadata = training.train_model(local_config)
    test = pd.read_csv(local_config.test_data_folder / "testdata.csv")
    local = scoring.score_frame(model, test, metadata, local_config)
    config = write_config(ingested.root, dask_scheduler_address=cluster.scheduler_address)
    before = tasks_run_on(cluster, "risk-score")

    remote = scoring.score_frame(model, test, metadata, config, cluster_min_rows=100)

    assert tasks_run_on(cluster, "risk-score") - before >= 1
    assert remote["confusion"] == local["confusion"]
    figures = [k for k in local if k != "confusion"]
    assert {k: remote[k] for k in figures} == pytest.approx({k: local[k] for k in figures}, abs=1e-12)


def test_an_unreachable_scheduler_fails_at_once_with_a_clear_message(ingested, tmp_path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(ingested.root, dask_scheduler_address=address)

    with pytest.raises(compute.ComputeUnavailable, match=f"cannot reach the Dask scheduler at {address}"):
        training.train_model(config)

    finished = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "training.py"), "--config", str(config.path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        timeout=120,
    )
    assert finished.returncode == 1
    assert f"cannot reach the Dask scheduler at {address}" in finished.stderr and "Traceback" not in finished.stderr
    assert not (config.model_folder / "trainedmodel.pkl").exists()


def test_with_fallback_an_unreachable_scheduler_trains_locally_and_says_so(ingested) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(ingested.root, dask_scheduler_address=address, dask_fallback_local=True)

    _, metadata = training.train_model(config)

    assert metadata["compute"]["backend"] == "local"
    assert address in metadata["compute"]["fallback_reason"]
    # The warnings reach the audit line and the report: an operator who configured a cluster learns it was not used.
    assert any("not on the Dask cluster" in warning and address in warning for warning in metadata["warnings"])


def test_the_drift_statistics_run_on_the_cluster_with_the_same_figures(deployed_project, cluster) -> None:
    from risk.monitoring import diagnostics

    # A new month ingested while v1 is current: the newest batch is one file the workers read.
    add_shifted_month(deployed_project)
    ingest.ingest_new_files(deployed_project)
    local = diagnostics.data_drift(deployed_project)
    assert local["comparison"] == diagnostics.NEWEST_BATCH
    config = write_config(deployed_project.root, dask_scheduler_address=cluster.scheduler_address)
    before = tasks_run_on(cluster, "risk-drift")

    remote = diagnostics.data_drift(config)

    features = len(local["features"])
    assert features and tasks_run_on(cluster, "risk-drift") - before == features
    assert remote["features"] == local["features"]


def test_a_value_that_cannot_be_packed_is_not_blamed_on_the_cluster(cluster, tmp_path) -> None:
    """Packing happens here: its failure is this machine's error, raised as it is, not a fallback that
    would say the workers could not be reached (and skip a healthy scheduler for minutes)."""
    config = write_config(tmp_path, dask_scheduler_address=cluster.scheduler_address, dask_fallback_local=True)
    with compute.open_runner(config) as runner:
        with pytest.raises(TypeError, match="pickle"):
            runner.share(threading.Lock())
        assert runner.backend == "dask" and runner.fallback_reason is None
