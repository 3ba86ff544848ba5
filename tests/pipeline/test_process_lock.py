"""The run lock held too long: a run locked out by a holder past ``max_run_minutes`` fails loudly,
naming the holder; within the bound it stays quiet, as overlapping cron runs are routine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import training
from risk.core import logbook
from risk.core.locks import TIME_FORMAT, LockBusy, run_lock
from risk.core.settings import Config
from risk.data import ledger
from risk.registry import versions
from tests.conftest import PROJECT_DIR, add_shifted_month, rewrite_config


def cron_run(config: Config, cwd: Path) -> subprocess.CompletedProcess:
    """fullprocess.py as cron starts it: no terminal, an empty environment."""
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)]
    return subprocess.run(command, cwd=cwd, env={}, capture_output=True, text=True, timeout=300)


def hours_ago(hours: float) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(time.time() - hours * 3600))


def test_a_lock_held_past_max_run_minutes_fails_every_locked_out_run_naming_the_holder(
    deployed_project: Config, tmp_path: Path
) -> None:
    add_shifted_month(deployed_project)  # work waiting: the holder keeps it from being done
    lock = ledger.lock_path(deployed_project)
    with run_lock(lock):
        # The holder took the lock three hours ago (what the lock file records; the bound is 120 minutes).
        since = hours_ago(3)
        lock.write_text(f"{os.getpid()}\n{since}\n", encoding="ascii")
        outcomes = [cron_run(deployed_project, tmp_path) for _ in range(2)]

    for outcome in outcomes:
        assert outcome.returncode == 1 and outcome.stdout == ""
        [line] = outcome.stderr.splitlines()
        assert f"pid {os.getpid()}" in line and since in line and "max_run_minutes (120)" in line, line
        assert "Traceback" not in outcome.stderr
    record = logbook.read_audit(deployed_project)[-1]
    assert (record["status"], record["decision"]) == ("failed", "locked_out")
    assert record["lock_holder"]["pid"] == os.getpid() and record["lock_holder"]["started_at"] == since
    assert record["lock_holder"]["overdue"] is True and record["lock_holder"]["held_minutes"] >= 180
    assert versions.current_version(deployed_project) == "v1"


def test_a_lock_held_within_max_run_minutes_leaves_the_locked_out_run_quiet(
    deployed_project: Config, tmp_path: Path
) -> None:
    add_shifted_month(deployed_project)
    config = rewrite_config(deployed_project, max_run_minutes=240)
    lock = ledger.lock_path(config)
    with run_lock(lock):
        lock.write_text(f"{os.getpid()}\n{hours_ago(3)}\n", encoding="ascii")  # 3 h: within 240 minutes
        outcome = cron_run(config, tmp_path)

    assert (outcome.returncode, outcome.stdout, outcome.stderr) == (0, "", "")
    record = logbook.read_audit(config)[-1]
    assert (record["status"], record["decision"]) == ("ok", "locked_out")
    assert record["lock_holder"]["pid"] == os.getpid() and record["lock_holder"]["overdue"] is False


def test_the_lock_file_names_its_holder_and_when_it_took_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    before = time.time()
    with run_lock(lock):
        pid, since = lock.read_text(encoding="ascii").split()
        with pytest.raises(LockBusy) as busy:
            with run_lock(lock, max_held_seconds=3600):
                pass

    assert int(pid) == os.getpid() and time.strptime(since, TIME_FORMAT)
    assert busy.value.pid == os.getpid() and busy.value.started_at == since and not busy.value.overdue
    assert busy.value.held_seconds is not None and busy.value.held_seconds <= time.time() - before + 1
    assert f"pid {os.getpid()}" in str(busy.value) and since in str(busy.value)


def test_a_script_locked_out_names_the_holder_and_says_when_it_is_overdue(
    deployed_project: Config, caplog: pytest.LogCaptureFixture
) -> None:
    lock = ledger.lock_path(deployed_project)
    with run_lock(lock):
        since = hours_ago(5)
        lock.write_text(f"{os.getpid()}\n{since}\n", encoding="ascii")
        assert training.main(["--config", str(deployed_project.path)]) == 1

    assert f"pid {os.getpid()}" in caplog.text and since in caplog.text and "max_run_minutes" in caplog.text


@pytest.mark.parametrize("script, arguments", [("deployment.py", ["--rollback"]), ("dbsource.py", [])])
def test_every_script_that_takes_the_lock_says_when_its_holder_is_overdue(
    deployed_project: Config, tmp_path: Path, script: str, arguments: list[str]
) -> None:
    """The bound lives with the lock (ledger.pipeline_lock), so no script forgets it."""
    lock = ledger.lock_path(deployed_project)
    with run_lock(lock):
        lock.write_text(f"{os.getpid()}\n{hours_ago(3)}\n", encoding="ascii")
        command = [sys.executable, str(PROJECT_DIR / script), "--config", str(deployed_project.path), *arguments]
        outcome = subprocess.run(command, cwd=tmp_path, env={}, capture_output=True, text=True, timeout=300)
    assert outcome.returncode == 1 and "max_run_minutes (120)" in outcome.stderr, outcome.stderr
