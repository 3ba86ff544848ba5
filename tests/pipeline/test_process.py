"""The cron run (risk.pipeline.process, behind fullprocess.py) end to end: the cron entry on real files, as
cron runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import deployment
import fullprocess
from risk.core import artefacts, files, logbook
from risk.core.files import sha256_file
from risk.core.locks import run_lock
from risk.core.settings import Config, load_config
from risk.data import ingest, ledger, masterstore, sample
from risk.pipeline import process as pipeline_process
from risk.registry import deploy, versions
from tests.conftest import REAL_DATASETS, add_shifted_month, rewrite_config, write_config

PROJECT_DIR = Path(__file__).resolve().parents[2]


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
    add_shifted_month(config)


@pytest.mark.slow
def test_first_run_deploys_and_second_is_a_no_op(project: Config) -> None:
    assert run(project) == 0
    first = logbook.read_audit(project)[-1]
    assert first["decision"] == "redeployed" and first["version_deployed"] == "v1"
    assert first["reason"] == "no deployed model yet"
    assert first["rows_added"] == 7500 and len(first["files_ingested"]) == 3
    before = snapshot(project)

    assert run(project) == 0

    second = logbook.read_audit(project)[-1]
    assert second["decision"] == "no_new_data" and second["status"] == "ok"
    assert snapshot(project) == before


@pytest.mark.slow
def test_the_console_names_a_first_deployment_as_such(project: Config) -> None:
    assert run(project) == 0
    log = (project.log_folder / artefacts.LOG_FILE).read_text()
    assert "deployed v1 (first version)" in log
    assert "no deployed model yet" not in log.splitlines()[-1], "the last line is the run's summary"


def test_with_nothing_new_the_run_says_what_it_checked_and_a_failed_source_leads(
    deployed_project: Config, capsys: pytest.CaptureFixture
) -> None:
    with sqlite3.connect(deployed_project.root / "clients.db") as connection:
        connection.execute(
            "CREATE TABLE clients (row_id INTEGER PRIMARY KEY, corporation TEXT, lastmonth_activity REAL, "
            "lastyear_activity INTEGER, number_of_employees INTEGER, exited INTEGER)"
        )
    connection.close()
    crm = {"name": "crm", "url": "sqlite:///clients.db", "table": "clients", "watermark_column": "row_id"}
    gone = {**crm, "name": "archive", "url": "sqlite:///missing.db"}
    config = rewrite_config(deployed_project, database_sources=[crm, gone], drop_columns=["row_id"])

    assert run(config) == 1
    line = capsys.readouterr().err
    assert line.startswith("fullprocess failed: database source(s) failed: archive: the database file"), line
    assert "no new rows in database source 'crm'" in line and "'archive'" not in line.split("; ", 2)[-1]

    config = rewrite_config(config, database_sources=[crm])
    assert run(config) == 0
    reason = logbook.read_audit(config)[-1]["reason"]
    assert reason == f"no new or changed files in {config.input_folder}; no new rows in database source 'crm'"


@pytest.mark.slow
def test_shifted_batch_is_detected_as_drift_and_redeployed(deployed_project: Config) -> None:
    add_shifted_batch(deployed_project)

    assert run(deployed_project) == 0

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "redeployed" and record["version_deployed"] == "v2"
    assert record["new_score"] < record["deployed_score"]
    assert record["reason"].startswith("model drift: f1")
    assert versions.current_version(deployed_project) == "v2"
    assert versions.read_manifest(versions.version_path(deployed_project))["reason"] == record["reason"]
    assert len(masterstore.load_master(deployed_project)) == 7500 + sample.SHIFTED_BATCH_ROWS
    # The report written during the run names the run that deployed it.
    report = json.loads((deployed_project.reports_folder / "v2" / "model_report.json").read_text())
    assert report["deployment"]["audit"]["reason"] == record["reason"]
    assert report["deployment"]["audit"]["started_at"] == record["started_at"]


def test_batch_scoring_as_well_as_the_deployed_model_is_not_drift(deployed_project: Config) -> None:
    """New rows on which the deployed model scores exactly its deployed score: no retrain."""
    shutil.copy(deployed_project.test_data_folder / "testdata.csv", deployed_project.input_folder / "recheck.csv")

    assert run(deployed_project) == 0

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_drift"
    assert record["new_score"] == record["deployed_score"]
    assert versions.current_version(deployed_project) == "v1"


def test_set_aside_files_are_named_in_the_audit(deployed_project: Config) -> None:
    (deployed_project.input_folder / "broken.csv").write_text("corporation,exited\nab,1\n")

    assert run(deployed_project) == 0

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_new_rows"
    assert record["files_set_aside"][0]["name"] == "broken.csv"
    assert "missing column(s)" in record["files_set_aside"][0]["reason"]


def test_a_held_lock_makes_the_run_log_and_exit_zero(deployed_project: Config) -> None:
    add_shifted_batch(deployed_project)
    with run_lock(ledger.lock_path(deployed_project)):
        assert run(deployed_project) == 0
    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "locked_out"
    assert versions.current_version(deployed_project) == "v1"


@pytest.mark.slow
def test_two_runs_at_once_one_works_one_exits(project: Config) -> None:
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(project.path)]
    runs = [subprocess.Popen(command, stderr=subprocess.DEVNULL) for _ in range(2)]

    assert [p.wait(timeout=300) for p in runs] == [0, 0]

    decisions = sorted(r["decision"] for r in logbook.read_audit(project))
    assert decisions == ["locked_out", "redeployed"]
    assert versions.version_names(project) == ["v1"]


@pytest.mark.slow
def test_runs_under_crons_minimal_environment_from_home(project: Config, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(project.path)]

    result = subprocess.run(
        command, cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr
    assert versions.current_version(project) == "v1"
    # Libraries may keep caches under $HOME (matplotlib's ~/.config, ~/.cache); the
    # pipeline itself writes only where its config points.
    assert [p.name for p in home.iterdir() if not p.name.startswith(".")] == []


def test_the_nothing_new_path_imports_no_heavy_library(deployed_project: Config) -> None:
    assert probe_fast_path(deployed_project) == "0 []"
    assert logbook.read_audit(deployed_project)[-1]["decision"] == "no_new_data"


def test_the_run_removes_prediction_log_days_past_retention_and_stays_light(deployed_project: Config) -> None:
    from datetime import date, timedelta

    folder = deployed_project.log_folder / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    today = date.today()
    old = folder / f"{(today - timedelta(days=500)).isoformat()}.jsonl"
    recent = folder / f"{(today - timedelta(days=10)).isoformat()}.jsonl"
    for path in (old, recent):
        path.write_text('{"time": "x"}\n')

    assert probe_fast_path(deployed_project) == "0 []"

    assert not old.exists() and recent.exists()
    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_new_data" and record["prediction_log_days_removed"] == 1


def test_a_failing_step_exits_non_zero_with_the_reason_and_keeps_the_deployment(deployed_project: Config) -> None:
    add_shifted_batch(deployed_project)
    shutil.rmtree(deployed_project.test_data_folder)

    assert run(deployed_project) == 1

    record = logbook.read_audit(deployed_project)[-1]
    assert record["status"] == "failed" and record["decision"] == "failed"
    assert "test_data_path" in record["reason"]
    assert versions.current_version(deployed_project) == "v1"
    assert "fullprocess failed" in (deployed_project.log_folder / "fullprocess.log").read_text()


def test_a_bad_config_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"bogus": 1}))
    assert fullprocess.main(["--config", str(tmp_path / "config.json")]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(REAL_DATASETS))
def test_real_public_dataset_end_to_end(shared_data: Path, tmp_path: Path, dataset: str) -> None:
    config = write_config(
        tmp_path, candidate_models=["logistic_regression", "hist_gradient_boosting"], **REAL_DATASETS[dataset]
    )
    lines = (shared_data / dataset).read_bytes().split(b"\r\n")
    header, rows = lines[0], [line for line in lines[1:] if line]
    cut = int(len(rows) * 0.8)
    for folder, name, part in (
        (config.input_folder, "part1.csv", rows[: cut // 2]),
        (config.input_folder, "part2.csv", rows[cut // 2 : cut]),
        (config.test_data_folder, "test.csv", rows[cut:]),
    ):
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"\r\n".join([header, *part]) + b"\r\n")

    assert run(config) == 0

    record = logbook.read_audit(config)[-1]
    assert record["decision"] == "redeployed" and record["files_set_aside"] == []
    deployed = versions.load_deployed_model(config)
    assert deployed.scores["rows"] == len(rows) - cut
    assert deployed.scores["roc_auc"] > 0.7, "well above chance"


def test_a_batch_of_one_class_is_not_judged_as_drift(deployed_project: Config) -> None:
    test = (deployed_project.test_data_folder / "testdata.csv").read_text().splitlines()
    stayers = [line for line in test[1:] if line.endswith(",0")]
    (deployed_project.input_folder / "quiet_month.csv").write_text("\n".join([test[0], *stayers]) + "\n")

    assert run(deployed_project) == 0

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "no_drift" and "one class only" in record["reason"]
    assert versions.current_version(deployed_project) == "v1"


@pytest.mark.slow
def test_rows_left_undecided_by_a_failed_run_are_judged_by_the_next(project: Config) -> None:
    test_file = project.test_data_folder / "testdata.csv"
    good = test_file.read_text()
    lines = good.splitlines()
    lines[1] = ",".join([lines[1].split(",")[0], "lots", *lines[1].split(",")[2:]])  # fails scoring, after ingestion
    test_file.write_text("\n".join(lines) + "\n")
    assert run(project) == 1
    assert logbook.read_audit(project)[-1]["status"] == "failed"
    assert masterstore.master_path(project).exists(), "the failed run ingested"
    test_file.write_text(good)

    assert run(project) == 0  # no new file, but the ingested rows were never decided

    record = logbook.read_audit(project)[-1]
    assert record["decision"] == "redeployed" and record["version_deployed"] == "v1"
    assert "resumed" in record
    assert run(project) == 0
    assert logbook.read_audit(project)[-1]["decision"] == "no_new_data"


def test_a_handful_of_rows_waits_for_more_before_drift_is_judged(deployed_project: Config) -> None:
    test = (deployed_project.test_data_folder / "testdata.csv").read_text().splitlines()
    (deployed_project.input_folder / "few.csv").write_text("\n".join(test[:11]) + "\n")  # 10 rows

    assert run(deployed_project) == 0
    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "waiting_for_rows" and record["rows_waiting"] == 10

    assert run(deployed_project) == 0  # nothing new: the waiting rows do not make every tick work
    assert logbook.read_audit(deployed_project)[-1]["decision"] == "no_new_data"

    (deployed_project.input_folder / "more.csv").write_text("\n".join([test[0], *test[11:]]) + "\n")
    assert run(deployed_project) == 0
    record = logbook.read_audit(deployed_project)[-1]
    assert record["rows_judged"] == 1000, "the waiting rows are judged with the new ones"
    assert record["decision"] == "no_drift" and record["new_score"] == record["deployed_score"]


def test_the_decision_returns_the_checkpoint_and_run_pipeline_records_it(deployed_project: Config) -> None:
    """decide_on_new_rows writes nothing: every branch hands back what run_pipeline records, in one place."""
    config = deployed_project
    test = (config.test_data_folder / "testdata.csv").read_text().splitlines()
    (config.input_folder / "few.csv").write_text("\n".join(test[:11]) + "\n")  # 10 rows
    ingest.ingest_new_files(config)
    checkpoint = config.output_folder / artefacts.CHECKPOINT_FILE
    before = checkpoint.read_bytes()

    decided, (judged, seen) = pipeline_process.decide_on_new_rows(config, {})

    assert decided["decision"] == "waiting_for_rows" and decided["rows_waiting"] == 10
    assert judged == versions.judged_offset(config) < seen == ledger.master_bytes(config)
    assert checkpoint.read_bytes() == before, "the decision records nothing itself"

    (config.input_folder / "more.csv").write_text("\n".join([test[0], *test[11:]]) + "\n")
    ingest.ingest_new_files(config)
    decided, (judged, seen) = pipeline_process.decide_on_new_rows(config, {})
    assert decided["decision"] == "no_drift" and decided["rows_judged"] == 1000
    assert judged == seen == ledger.master_bytes(config)
    assert checkpoint.read_bytes() == before


def test_a_retrained_model_worse_on_the_test_data_is_not_deployed(deployed_project: Config) -> None:
    """A batch with its labels flipped drifts the model, and retraining on it does harm."""
    lines = (deployed_project.test_data_folder / "testdata.csv").read_text().splitlines()
    flipped = [
        f"flip{i}," + line.split(",", 1)[1][:-1] + ("0" if line.endswith("1") else "1")
        for i, line in enumerate(lines[1:])
    ]
    (deployed_project.input_folder / "flipped.csv").write_text(
        "\n".join([lines[0], *flipped, *[f.replace("flip", "flop") for f in flipped]]) + "\n"
    )

    assert run(deployed_project) == 0

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "retrained_not_deployed", record
    assert record["test_score"] < record["deployed_score"]
    assert "kept v1" in record["reason"]
    assert versions.current_version(deployed_project) == "v1"
    assert run(deployed_project) == 0 and logbook.read_audit(deployed_project)[-1]["decision"] == "no_new_data"


# --- runs killed at every file-system change (fault injection through files.before_change) ------


def small_drift_project(folder: Path) -> Config:
    """A small project with v1 deployed and the shifted month waiting in the input folder:
    the next run is a drift run that retrains and deploys v2, in a few seconds."""
    config = write_config(
        folder, cv_folds=2, drift_min_rows=20, reference_sample_rows=300, block_worse_deployments=False
    )
    sample.write_sample_data(config)
    for source, rows in [
        *((p, 200) for p in config.input_folder.iterdir()),
        *((p, 200) for p in config.test_data_folder.iterdir()),
    ]:
        source.write_text("\n".join(source.read_text().splitlines()[: rows + 1]) + "\n")
    assert run(config) == 0
    for batch in (config.root / sample.SAMPLE_BATCH_FOLDER).iterdir():
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
            files._changes_made = 0
            if kill_at is None:
                os.environ.pop(files.KILL_AT_ENV, None)
            else:
                os.environ[files.KILL_AT_ENV] = str(kill_at)
            code = fullprocess.main(["--config", str(config.path)])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def leftover_temporaries(config: Config) -> list[str]:
    return [
        str(p.relative_to(config.root))
        for p in config.root.rglob("*")
        if files.temporary_file_pid(p.name) is not None or p.name.startswith((".incoming-", ".current-"))
    ]


def assert_one_new_version_finished(config: Config, master_rows: int) -> None:
    """What a drift run must leave, whatever instant it was killed at, once a rerun has run."""
    assert len(masterstore.load_master(config)) == master_rows
    assert versions.version_names(config) == ["v1", "v2"]
    assert versions.current_version(config) == "v2"
    versions.load_deployed_model(config)
    reports = config.reports_folder / "v2"
    assert sorted(p.name for p in reports.iterdir()) == [
        "confusionmatrix.png",
        "diagnostics.json",
        "model_card.md",
        "model_report.json",
        "model_report.pdf",
    ]
    assert [r["version_deployed"] for r in logbook.read_audit(config) if r.get("version_deployed")] == ["v1", "v2"]
    assert [(h["action"], h["version"]) for h in logbook.read_history(config)] == [("deploy", "v1"), ("deploy", "v2")]
    assert leftover_temporaries(config) == []


KILL_POINT_SHARES = 4  # every change is killed at in one of these tests, so parallel workers share the ~50 runs


@pytest.mark.slow
@pytest.mark.start_first
@pytest.mark.parametrize("first_point", range(1, KILL_POINT_SHARES + 1))
def test_a_drift_run_killed_before_any_file_system_change_is_finished_by_the_next_run(
    small_drift_template: Path, tmp_path: Path, first_point: int
) -> None:
    """Killed before change ``first_point``, then every KILL_POINT_SHARES-th change after it, until a
    run makes fewer changes than the point: the parametrised tests together kill before each one."""
    master_rows = 3 * 200 + 300
    point = first_point - KILL_POINT_SHARES
    while True:
        point += KILL_POINT_SHARES
        config = fresh_copy(small_drift_template, tmp_path / f"killed-at-{point}")
        code = run_in_child(config, kill_at=point)
        if code == 0:
            break  # the run made fewer changes than ``point``: every change has had its kill
        assert code == -signal.SIGKILL, f"point {point}: exit {code}"
        assert run_in_child(config) == 0, f"point {point}: the rerun failed: {logbook.read_audit(config)[-1]}"
        assert_one_new_version_finished(config, master_rows)
        assert run_in_child(config) == 0 and logbook.read_audit(config)[-1]["decision"] == "no_new_data", (
            f"point {point}"
        )
        shutil.rmtree(config.root)
    assert_one_new_version_finished(config, master_rows)
    assert point > 40, "a drift run makes dozens of file-system changes"


@pytest.mark.slow
def test_a_run_killed_between_deploying_and_recording_its_decision_does_not_deploy_again(
    small_drift_template: Path, tmp_path: Path
) -> None:
    config = fresh_copy(small_drift_template, tmp_path / "project")
    assert run_in_child(config, kill_at=artefacts.CHECKPOINT_FILE) == -signal.SIGKILL
    assert versions.version_names(config) == ["v1", "v2"], "killed after deploying v2, before its checkpoint"

    assert run(config) == 0

    assert_one_new_version_finished(config, master_rows=900)
    deployed_v2 = [r for r in logbook.read_audit(config) if r.get("version_deployed") == "v2"]
    assert deployed_v2[0]["recovered"] is True and deployed_v2[0]["reason"].startswith("model drift")
    assert (
        versions.read_manifest(versions.version_path(config, "v2"))["master_bytes"]
        == masterstore.master_path(config).stat().st_size
    )


@pytest.mark.slow
def test_a_run_killed_while_reporting_has_its_work_finished_by_the_next(
    small_drift_template: Path, tmp_path: Path
) -> None:
    config = fresh_copy(small_drift_template, tmp_path / "project")
    assert run_in_child(config, kill_at="model_report.pdf") == -signal.SIGKILL
    assert not (config.reports_folder / "v2" / "model_report.pdf").exists()

    assert run(config) == 0

    assert_one_new_version_finished(config, master_rows=900)
    last = logbook.read_audit(config)[-1]
    assert last["decision"] == "no_new_data" and last["completed_earlier_work"]["v2"]["reporting"] == "ok"
    report = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    assert report["deployment"]["audit"]["reason"].startswith("model drift"), (
        "the report names the run that deployed v2"
    )


@pytest.mark.slow
def test_reports_that_failed_after_a_deployment_are_written_by_the_next_run(
    small_drift_template: Path, tmp_path: Path
) -> None:
    config = fresh_copy(small_drift_template, tmp_path / "project")
    blocker = config.reports_folder / "v2"
    blocker.write_text("a file where v2's report folder belongs")  # diagnostics and reports fail

    assert run(config) == 1
    failed = logbook.read_audit(config)[-1]
    assert failed["version_deployed"] == "v2" and failed["after_deployment"]["reporting"].startswith("failed")
    blocker.unlink()

    assert run(config) == 0  # nothing new arrived: the run still finishes v2's reports

    assert_one_new_version_finished(config, master_rows=900)
    assert logbook.read_audit(config)[-1]["completed_earlier_work"]["v2"] == {"diagnostics": "ok", "reporting": "ok"}
    assert run(config) == 0 and "completed_earlier_work" not in logbook.read_audit(config)[-1]


def probe_fast_path(config: Config) -> str:
    """Run fullprocess in a fresh interpreter; '<exit code> [heavy libraries it imported]'."""
    probe = (
        f"import sys; sys.path.insert(0, {str(PROJECT_DIR)!r}); import fullprocess; "
        f"code = fullprocess.main(['--config', {str(config.path)!r}]); "
        "print(code, sorted(m for m in ('pandas', 'numpy', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    return result.stdout.strip() + result.stderr


@pytest.mark.slow
def test_a_version_deployed_by_hand_gets_its_reports_and_a_rollback_keeps_the_fast_path_light(
    deployed_project: Config,
) -> None:
    assert deploy.deploy_model(deployed_project, reason="by hand") == "v2"
    assert run(deployed_project) == 0
    assert (deployed_project.reports_folder / "v2" / "model_report.pdf").is_file()
    assert not [r for r in logbook.read_audit(deployed_project) if r.get("version_deployed") == "v2"], (
        "no run deployed v2"
    )

    assert deploy.rollback(deployed_project) == "v1"

    assert probe_fast_path(deployed_project) == "0 []", "v1's work was done: nothing heavy to import"
    assert logbook.read_audit(deployed_project)[-1]["decision"] == "no_new_data"
    assert probe_fast_path(deployed_project) == "0 []"


def dead_pid() -> int:
    """The pid of a process that has exited (a killed run's)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_temporary_files_of_killed_runs_are_removed_by_the_next_run(deployed_project: Config) -> None:
    pid = dead_pid()
    config = deployed_project
    left = [
        config.reports_folder / "v1" / f".model_report.pdf.{pid}.0a1b2c3d4e5f.tmp",
        config.output_folder / f".finaldata.csv.{pid}.00aa11bb22cc.tmp",
        config.output_folder / "quarantine" / f".20261128T000000Z_abcd_x.csv.{pid}.0123456789ab.tmp",
        config.output_folder / f".latest_batch.csv.{pid}.link",
        config.model_folder / f".trainedmodel.pkl.{pid}.ffffffffffff.tmp",
        config.log_folder / f".something.json.{pid}.abcdefabcdef.tmp",
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half written")
    half_built = versions.versions_folder(config) / ".incoming-0123456789abcdef"
    half_built.mkdir()
    (half_built / "trainedmodel.pkl").write_bytes(b"half")
    stray_link = config.deployment_folder / ".current-0123456789abcdef"
    os.symlink("versions/v1", stray_link)
    in_use = config.reports_folder / "v1" / f".model_report.json.{os.getpid()}.0a1b2c3d4e5f.tmp"  # a live writer's
    in_use.write_text("being written")
    users_partial_copy = config.input_folder / f".incoming.csv.{pid}.0a1b2c3d4e5f.tmp"
    users_partial_copy.write_text("the input folder is not ours to clean")

    assert run(config) == 0

    assert [p for p in [*left, half_built, stray_link] if p.exists() or p.is_symlink()] == []
    assert in_use.exists() and users_partial_copy.exists()
    record = logbook.read_audit(config)[-1]
    assert record["decision"] == "no_new_data" and record["temporary_files_removed"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("breakage", ["directory", "regular file"])
def test_a_broken_current_link_counts_as_a_version_failing_verification(
    deployed_project: Config, breakage: str
) -> None:
    link = deployed_project.deployment_folder / "current"
    link.unlink()
    if breakage == "directory":
        link.mkdir()
        (link / "trainedmodel.pkl").write_bytes(b"?")
    else:
        link.write_text("versions/v1\n")

    assert run(deployed_project) == 0  # no new data: the broken link alone makes the run redeploy

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "redeployed" and record["version_deployed"] == "v2"
    assert "failed verification" in record["reason"] and f"is a {breakage}, not a link" in record["reason"]
    assert versions.current_version(deployed_project) == "v2"
    assert [
        p.name.startswith("broken-current-") for p in deployed_project.deployment_folder.iterdir() if "broken" in p.name
    ] == [True]


@pytest.mark.slow
def test_a_manifest_that_is_not_an_object_fails_verification_and_new_data_redeploys(deployed_project: Config) -> None:
    (versions.version_path(deployed_project) / "manifest.json").write_text("[]")
    assert run(deployed_project) == 0  # nothing new: a no-op, not a crash
    add_shifted_batch(deployed_project)

    assert run(deployed_project) == 0

    record = logbook.read_audit(deployed_project)[-1]
    assert record["decision"] == "redeployed" and record["version_deployed"] == "v2"
    assert "is not a version manifest" in record["reason"]


def run_as_cron(config: Config, cwd: Path, drop_root_powers: bool = False) -> subprocess.CompletedProcess:
    """fullprocess.py as cron starts it: an empty environment, another working directory."""
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)]
    if drop_root_powers and os.geteuid() == 0:
        # root writes through file modes; without these capabilities it obeys them like any user.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a folder read-only for root")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all", *command]
    return subprocess.run(command, cwd=cwd, env={}, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_under_cron_a_run_that_works_is_silent_and_a_failure_is_one_line(project: Config, tmp_path: Path) -> None:
    cwd = tmp_path / "cron-home"
    cwd.mkdir()
    first = run_as_cron(project, cwd)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    assert versions.current_version(project) == "v1"
    no_op = run_as_cron(project, cwd)
    assert (no_op.returncode, no_op.stdout, no_op.stderr) == (0, "", "")
    assert "no_new_data" in (project.log_folder / "fullprocess.log").read_text().splitlines()[-1]

    shutil.rmtree(project.test_data_folder)
    add_shifted_batch(project)
    failed = run_as_cron(project, cwd)

    assert failed.returncode == 1 and failed.stdout == ""
    assert len(failed.stderr.splitlines()) == 1 and "Traceback" not in failed.stderr
    assert "test_data_path" in failed.stderr and "does not exist" in failed.stderr


def test_a_read_only_log_folder_is_one_clear_line_and_exit_1(deployed_project: Config, tmp_path: Path) -> None:
    logs = deployed_project.log_folder
    modes = {p: p.stat().st_mode for p in [logs, *logs.iterdir()]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    add_shifted_batch(deployed_project)
    try:
        result = run_as_cron(deployed_project, tmp_path, drop_root_powers=True)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)

    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write" in result.stderr and str(logs) in result.stderr
    assert versions.version_names(deployed_project) == ["v1"], "nothing was done without a log"


# --- set-up mistakes caught at the start of a run --------------------------------------------------


def failure_line(config: Config, capsys: pytest.CaptureFixture) -> str:
    assert run(config) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not masterstore.master_path(config).exists(), "caught before anything was ingested"
    assert logbook.read_audit(config)[-1]["status"] == "failed"
    return err


def test_a_missing_test_folder_is_caught_before_ingesting(project: Config, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(project.test_data_folder)
    err = failure_line(project, capsys)
    assert "test_data_path" in err and "does not exist" in err and "create it" in err


def test_a_test_file_without_the_target_is_caught_before_ingesting(
    project: Config, capsys: pytest.CaptureFixture
) -> None:
    test_file = project.test_data_folder / "testdata.csv"
    test_file.write_text(test_file.read_text().replace(",exited\n", ",Exited\n", 1))
    err = failure_line(project, capsys)
    assert "has no target column 'exited'" in err and "did you mean 'Exited'?" in err


def test_a_config_edited_while_no_data_arrives_is_checked_by_the_next_run(
    deployed_project: Config, capsys: pytest.CaptureFixture
) -> None:
    config = rewrite_config(deployed_project, target="exitted")

    assert run(config) == 1, "a wrong target fails the run after the edit, not the first one with new data"
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "'exitted'" in err and "did you mean 'exited'?" in err, err
    assert logbook.read_audit(config)[-1]["status"] == "failed"
    assert run(config) == 1, "it keeps failing until fixed"

    config = rewrite_config(config, target="exited")
    assert probe_fast_path(config) == "0 []", "the check after an edit is as light as the no-op"
    assert logbook.read_audit(config)[-1]["decision"] == "no_new_data"


def test_a_test_file_of_one_class_is_caught_before_ingesting(project: Config, capsys: pytest.CaptureFixture) -> None:
    test_file = project.test_data_folder / "testdata.csv"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join([lines[0], *[line for line in lines[1:] if line.endswith(",0")]]) + "\n")
    err = failure_line(project, capsys)
    assert "holds one class only" in err and "no one of its" in err and "add rows of both classes" in err


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("id_columns", ["Corporation"], "did you mean 'corporation'?"),
        ("drop_columns", ["lastmonth_activty"], "did you mean 'lastmonth_activity'"),
        ("categorical_columns", ["number_of_employes"], "did you mean 'number_of_employees'?"),
        ("target", "exitted", "which no training data file has (did you mean 'exited'?)"),
    ],
)
def test_a_misspelt_column_in_the_config_is_named_with_its_close_match(
    tmp_path: Path, capsys: pytest.CaptureFixture, key: str, value, hint: str
) -> None:
    config = write_config(tmp_path / "project")
    sample.write_sample_data(config)
    config = write_config(tmp_path / "project", **{key: value})
    if key == "target":  # the test files must carry it, else that is the first mistake named
        for path in config.test_data_folder.iterdir():
            path.write_text(path.read_text().replace(",exited\n", ",exitted\n", 1))
    err = failure_line(config, capsys)
    assert f"{key} names the column {value[0] if isinstance(value, list) else value!r}" in err and hint in err


# --- honest decisions ---------------------------------------------------------------------------

CHANCE_WARNING = "no candidate beats chance or the rule 'flag everyone': the model is no better than chance"


def train_and_score_uninformative(config: Config) -> None:
    """A real training and scoring, then the training metadata marked as the training step marks
    a model without signal (the shared contract: "uninformative" and "warnings")."""
    from risk.model import scoring, training

    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)
    scoring.score_model(config)
    path = config.model_folder / "trainedmodel.json"
    written = json.loads(path.read_text())
    written.update(uninformative=True, warnings=[CHANCE_WARNING])
    path.write_text(json.dumps(written))


def test_an_uninformative_model_does_not_replace_a_deployed_one(
    deployed_project: Config, capsys: pytest.CaptureFixture
) -> None:
    train_and_score_uninformative(deployed_project)
    v1_score = versions.load_deployed_model(deployed_project).scores["f1"]

    outcome = pipeline_process.decide_deployment(
        deployed_project, "model drift: f1 0.2 on new rows < deployed 0.5", v1_score, kept="v1"
    )

    assert outcome["decision"] == "retrained_not_deployed"
    assert "no better than chance" in outcome["reason"] and "kept v1" in outcome["reason"]
    assert outcome["uninformative"] is True and CHANCE_WARNING in outcome["warnings"]
    assert versions.version_names(deployed_project) == ["v1"]


def test_with_nothing_deployed_an_uninformative_model_is_deployed_and_says_so(
    project: Config, capsys: pytest.CaptureFixture
) -> None:
    ingest.ingest_new_files(project)
    train_and_score_uninformative(project)

    outcome = pipeline_process.decide_deployment(project, "no deployed model yet", None, kept=None)

    assert outcome["decision"] == "redeployed" and outcome["version_deployed"] == "v1"
    assert "deployed although it is no better than chance" in outcome["reason"]
    assert CHANCE_WARNING in outcome["warnings"]
    assert deployment.main(["--config", str(project.path), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "(no better than chance)" in listing and f"warning: {CHANCE_WARNING}" in listing


def test_a_retrained_model_blocked_by_a_test_set_of_one_class_says_why(deployed_project: Config) -> None:
    from risk.model import scoring, training

    test_file = deployed_project.test_data_folder / "testdata.csv"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join([lines[0], *[line for line in lines[1:] if line.endswith(",0")]]) + "\n")
    model, metadata = training.train_model(deployed_project)
    training.save_model(deployed_project, model, metadata)
    scoring.score_model(deployed_project)
    v1_score = versions.load_deployed_model(deployed_project).scores["f1"]

    outcome = pipeline_process.decide_deployment(deployed_project, "model drift", v1_score, kept="v1")

    assert outcome["decision"] == "retrained_not_deployed" and outcome["test_score"] == 0.0
    assert (
        "the test data holds one class only" in outcome["reason"] and "says nothing about a model" in outcome["reason"]
    )
