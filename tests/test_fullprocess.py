"""fullprocess.py end to end: the cron entry on real files, as cron runs it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import deployment
import fsutil
import fullprocess
import ingestion
import sampledata
from fsutil import run_lock, sha256_file
from settings import Config, load_config
from tests.conftest import write_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run(config: Config) -> int:
    return fullprocess.main(["--config", str(config.path)])


def snapshot(config: Config) -> dict[str, str]:
    """Every file of the project but the logs, by content."""
    return {
        str(p.relative_to(config.root)): sha256_file(p) if p.is_file() else os.readlink(p)
        for p in sorted(config.root.rglob("*"))
        if (p.is_file() or p.is_symlink()) and config.log_folder not in p.parents
    }


def add_shifted_batch(config: Config) -> None:
    for batch in (config.root / sampledata.SAMPLE_BATCH_FOLDER).iterdir():
        shutil.copy(batch, config.input_folder / batch.name)


def test_first_run_deploys_and_second_is_a_no_op(project: Config) -> None:
    assert run(project) == 0
    first = fullprocess.read_audit(project)[-1]
    assert first["decision"] == "redeployed" and first["version_deployed"] == "v1"
    assert first["reason"] == "no deployed model yet"
    assert first["rows_added"] == 7500 and len(first["files_ingested"]) == 3
    before = snapshot(project)

    assert run(project) == 0

    second = fullprocess.read_audit(project)[-1]
    assert second["decision"] == "no_new_data" and second["status"] == "ok"
    assert snapshot(project) == before


def test_shifted_batch_is_detected_as_drift_and_redeployed(deployed_project: Config) -> None:
    add_shifted_batch(deployed_project)

    assert run(deployed_project) == 0

    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "redeployed" and record["version_deployed"] == "v2"
    assert record["new_score"] < record["deployed_score"]
    assert record["reason"].startswith("model drift: f1")
    assert deployment.current_version(deployed_project) == "v2"
    assert deployment.read_manifest(deployment.version_path(deployed_project))["reason"] == record["reason"]
    assert len(ingestion.load_master(deployed_project)) == 9000
    # The report written during the run names the run that deployed it.
    report = json.loads((deployed_project.reports_folder / "v2" / "model_report.json").read_text())
    assert report["deployment"]["audit"]["reason"] == record["reason"]
    assert report["deployment"]["audit"]["started_at"] == record["started_at"]


def test_batch_scoring_as_well_as_the_deployed_model_is_not_drift(deployed_project: Config) -> None:
    """New rows on which the deployed model scores exactly its deployed score: no retrain."""
    shutil.copy(deployed_project.test_data_folder / "testdata.csv", deployed_project.input_folder / "recheck.csv")

    assert run(deployed_project) == 0

    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_drift"
    assert record["new_score"] == record["deployed_score"]
    assert deployment.current_version(deployed_project) == "v1"


def test_set_aside_files_are_named_in_the_audit(deployed_project: Config) -> None:
    (deployed_project.input_folder / "broken.csv").write_text("corporation,exited\nab,1\n")

    assert run(deployed_project) == 0

    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_new_rows"
    assert record["files_set_aside"][0]["name"] == "broken.csv"
    assert "missing column(s)" in record["files_set_aside"][0]["reason"]


def test_a_held_lock_makes_the_run_log_and_exit_zero(deployed_project: Config) -> None:
    add_shifted_batch(deployed_project)
    with run_lock(ingestion.lock_path(deployed_project)):
        assert run(deployed_project) == 0
    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "locked_out"
    assert deployment.current_version(deployed_project) == "v1"


@pytest.mark.slow
def test_two_runs_at_once_one_works_one_exits(project: Config) -> None:
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(project.path)]
    runs = [subprocess.Popen(command, stderr=subprocess.DEVNULL) for _ in range(2)]

    assert [p.wait(timeout=300) for p in runs] == [0, 0]

    decisions = sorted(r["decision"] for r in fullprocess.read_audit(project))
    assert decisions == ["locked_out", "redeployed"]
    assert deployment.version_names(project) == ["v1"]


@pytest.mark.slow
def test_runs_under_crons_minimal_environment_from_home(project: Config, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(project.path)]

    result = subprocess.run(command, cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert deployment.current_version(project) == "v1"
    # Libraries may keep caches under $HOME (matplotlib's ~/.config, ~/.cache); the
    # pipeline itself writes only where its config points.
    assert [p.name for p in home.iterdir() if not p.name.startswith(".")] == []


def test_the_nothing_new_path_imports_no_heavy_library(deployed_project: Config) -> None:
    probe = (
        f"import sys; sys.path.insert(0, {str(PROJECT_DIR)!r}); import fullprocess; "
        f"code = fullprocess.main(['--config', {str(deployed_project.path)!r}]); "
        "print(code, sorted(m for m in ('pandas', 'numpy', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == "0 []", result.stderr
    assert fullprocess.read_audit(deployed_project)[-1]["decision"] == "no_new_data"


def test_a_failing_step_exits_non_zero_with_the_reason_and_keeps_the_deployment(deployed_project: Config) -> None:
    add_shifted_batch(deployed_project)
    shutil.rmtree(deployed_project.test_data_folder)

    assert run(deployed_project) == 1

    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["status"] == "failed" and record["decision"] == "failed"
    assert "test_data_path" in record["reason"]
    assert deployment.current_version(deployed_project) == "v1"
    assert "fullprocess failed" in (deployed_project.log_folder / "fullprocess.log").read_text()


def test_a_bad_config_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"bogus": 1}))
    assert fullprocess.main(["--config", str(tmp_path / "config.json")]) == 1


# The team's real public datasets (see ../shared/data/README.md): odd headers, NA values,
# text targets, CRLF line endings, identifier columns.
REAL_DATASETS = {
    "german_credit_kaggle.csv": {"target": "Risk", "positive_label": "bad", "id_columns": ["Unnamed: 0"]},
    "bank_churn_modelling.csv": {"target": "Exited", "positive_label": 1, "id_columns": ["RowNumber", "CustomerId", "Surname"]},
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(REAL_DATASETS))
def test_real_public_dataset_end_to_end(shared_data: Path, tmp_path: Path, dataset: str) -> None:
    config = write_config(tmp_path, candidate_models=["logistic_regression", "hist_gradient_boosting"], **REAL_DATASETS[dataset])
    lines = (shared_data / dataset).read_bytes().split(b"\r\n")
    header, rows = lines[0], [line for line in lines[1:] if line]
    cut = int(len(rows) * 0.8)
    for folder, name, part in ((config.input_folder, "part1.csv", rows[: cut // 2]), (config.input_folder, "part2.csv", rows[cut // 2 : cut]), (config.test_data_folder, "test.csv", rows[cut:])):
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"\r\n".join([header, *part]) + b"\r\n")

    assert run(config) == 0

    record = fullprocess.read_audit(config)[-1]
    assert record["decision"] == "redeployed" and record["files_set_aside"] == []
    deployed = deployment.load_deployed_model(config)
    assert deployed.scores["rows"] == len(rows) - cut
    assert deployed.scores["roc_auc"] > 0.7, "well above chance"


def test_a_batch_of_one_class_is_not_judged_as_drift(deployed_project: Config) -> None:
    test = (deployed_project.test_data_folder / "testdata.csv").read_text().splitlines()
    stayers = [line for line in test[1:] if line.endswith(",0")]
    (deployed_project.input_folder / "quiet_month.csv").write_text("\n".join([test[0], *stayers]) + "\n")

    assert run(deployed_project) == 0

    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_drift" and "one class only" in record["reason"]
    assert deployment.current_version(deployed_project) == "v1"


def test_rows_left_undecided_by_a_failed_run_are_judged_by_the_next(project: Config) -> None:
    test_file = project.test_data_folder / "testdata.csv"
    good = test_file.read_text()
    lines = good.splitlines()
    lines[1] = ",".join([lines[1].split(",")[0], "lots", *lines[1].split(",")[2:]])  # fails scoring, after ingestion
    test_file.write_text("\n".join(lines) + "\n")
    assert run(project) == 1
    assert fullprocess.read_audit(project)[-1]["status"] == "failed"
    assert ingestion.master_path(project).exists(), "the failed run ingested"
    test_file.write_text(good)

    assert run(project) == 0  # no new file, but the ingested rows were never decided

    record = fullprocess.read_audit(project)[-1]
    assert record["decision"] == "redeployed" and record["version_deployed"] == "v1"
    assert "resumed" in record
    assert run(project) == 0
    assert fullprocess.read_audit(project)[-1]["decision"] == "no_new_data"


def test_a_handful_of_rows_waits_for_more_before_drift_is_judged(deployed_project: Config) -> None:
    test = (deployed_project.test_data_folder / "testdata.csv").read_text().splitlines()
    (deployed_project.input_folder / "few.csv").write_text("\n".join(test[:11]) + "\n")  # 10 rows

    assert run(deployed_project) == 0
    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "waiting_for_rows" and record["rows_waiting"] == 10

    assert run(deployed_project) == 0  # nothing new: the waiting rows do not make every tick work
    assert fullprocess.read_audit(deployed_project)[-1]["decision"] == "no_new_data"

    (deployed_project.input_folder / "more.csv").write_text("\n".join([test[0], *test[11:]]) + "\n")
    assert run(deployed_project) == 0
    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["rows_judged"] == 1000, "the waiting rows are judged with the new ones"
    assert record["decision"] == "no_drift" and record["new_score"] == record["deployed_score"]


def test_a_retrained_model_worse_on_the_test_data_is_not_deployed(deployed_project: Config) -> None:
    """A batch with its labels flipped drifts the model, and retraining on it does harm."""
    lines = (deployed_project.test_data_folder / "testdata.csv").read_text().splitlines()
    flipped = [f"flip{i}," + line.split(",", 1)[1][:-1] + ("0" if line.endswith("1") else "1") for i, line in enumerate(lines[1:])]
    (deployed_project.input_folder / "flipped.csv").write_text("\n".join([lines[0], *flipped, *[f.replace("flip", "flop") for f in flipped]]) + "\n")

    assert run(deployed_project) == 0

    record = fullprocess.read_audit(deployed_project)[-1]
    assert record["decision"] == "retrained_not_deployed", record
    assert record["test_score"] < record["deployed_score"]
    assert "kept v1" in record["reason"]
    assert deployment.current_version(deployed_project) == "v1"
    assert run(deployed_project) == 0 and fullprocess.read_audit(deployed_project)[-1]["decision"] == "no_new_data"


# --- runs killed at every file-system change (fault injection through fsutil.before_change) ------


def small_drift_project(folder: Path) -> Config:
    """A small project with v1 deployed and the shifted month waiting in the input folder:
    the next run is a drift run that retrains and deploys v2, in a few seconds."""
    config = write_config(folder, cv_folds=2, drift_min_rows=20, reference_sample_rows=300, block_worse_deployments=False)
    sampledata.write_sample_data(config)
    for source, rows in [*((p, 200) for p in config.input_folder.iterdir()), *((p, 200) for p in config.test_data_folder.iterdir())]:
        source.write_text("\n".join(source.read_text().splitlines()[: rows + 1]) + "\n")
    assert run(config) == 0
    for batch in (config.root / sampledata.SAMPLE_BATCH_FOLDER).iterdir():
        lines = batch.read_text().splitlines()[:301]
        (config.input_folder / batch.name).write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture(scope="session")
def small_drift_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_drift_project(tmp_path_factory.mktemp("small-drift") / "project").root


def fresh_copy(template: Path, folder: Path) -> Config:
    shutil.copytree(template, folder, symlinks=True)
    return load_config(folder / "config.json")


def run_in_child(config: Config, kill_at: str | int | None = None) -> int:
    """fullprocess.main in a forked process (the libraries are already imported, so each run
    costs only its own work); with ``kill_at`` it SIGKILLs itself before that file-system
    change. Returns the exit code, or minus the signal that ended it."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            fsutil._changes_made = 0
            if kill_at is None:
                os.environ.pop(fsutil.KILL_AT_ENV, None)
            else:
                os.environ[fsutil.KILL_AT_ENV] = str(kill_at)
            code = fullprocess.main(["--config", str(config.path)])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def leftover_temporaries(config: Config) -> list[str]:
    return [
        str(p.relative_to(config.root))
        for p in config.root.rglob("*")
        if fsutil.temporary_file_pid(p.name) is not None or p.name.startswith((".incoming-", ".current-"))
    ]


def assert_one_new_version_finished(config: Config, master_rows: int) -> None:
    """What a drift run must leave, whatever instant it was killed at, once a rerun has run."""
    assert len(ingestion.load_master(config)) == master_rows
    assert deployment.version_names(config) == ["v1", "v2"]
    assert deployment.current_version(config) == "v2"
    deployment.load_deployed_model(config)
    reports = config.reports_folder / "v2"
    assert sorted(p.name for p in reports.iterdir()) == ["confusionmatrix.png", "diagnostics.json", "model_report.json", "model_report.pdf"]
    assert [r["version_deployed"] for r in fullprocess.read_audit(config) if r.get("version_deployed")] == ["v1", "v2"]
    assert [(h["action"], h["version"]) for h in deployment.history(config)] == [("deploy", "v1"), ("deploy", "v2")]
    assert leftover_temporaries(config) == []


@pytest.mark.slow
def test_a_drift_run_killed_before_any_file_system_change_is_finished_by_the_next_run(small_drift_template: Path, tmp_path: Path) -> None:
    master_rows = 3 * 200 + 300
    point = 0
    while True:
        point += 1
        config = fresh_copy(small_drift_template, tmp_path / f"killed-at-{point}")
        code = run_in_child(config, kill_at=point)
        if code == 0:
            break  # the run made fewer changes than ``point``: every change has had its kill
        assert code == -signal.SIGKILL, f"point {point}: exit {code}"
        assert run_in_child(config) == 0, f"point {point}: the rerun failed: {fullprocess.read_audit(config)[-1]}"
        assert_one_new_version_finished(config, master_rows)
        assert run_in_child(config) == 0 and fullprocess.read_audit(config)[-1]["decision"] == "no_new_data", f"point {point}"
        shutil.rmtree(config.root)
    assert_one_new_version_finished(config, master_rows)
    assert point > 40, "a drift run makes dozens of file-system changes"
