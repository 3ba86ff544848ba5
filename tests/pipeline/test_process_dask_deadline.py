"""The cron run under a Dask "scheduler" that starts its handshake and falls silent: the run ends
within its deadline, loudly (exit 1, one line) or on this machine where dask_fallback_local says so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from risk.core import logbook
from risk.registry import versions
from tests.conftest import PROJECT_DIR, add_shifted_month, listener_that_answers, rewrite_config
from tests.model.test_compute_deadlines import GUARD_SECONDS, HANDSHAKE_START, SILENT_TIMEOUT

pytestmark = pytest.mark.slow


@pytest.mark.start_first
@pytest.mark.parametrize("fallback", [False, True], ids=["fails", "falls-back"])
def test_a_silent_scheduler_ends_the_cron_run(deployed_project, tmp_path, fallback) -> None:
    add_shifted_month(deployed_project)  # drift: the run retrains, on the configured cluster
    server = listener_that_answers(HANDSHAKE_START)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    config = rewrite_config(
        deployed_project,
        dask_scheduler_address=address,
        dask_timeout_seconds=SILENT_TIMEOUT,
        dask_fallback_local=fallback,
    )

    finished = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    server.close()

    record = logbook.read_audit(config)[-1]
    if fallback:
        assert finished.returncode == 0, finished.stderr
        assert record["decision"] == "redeployed" and versions.current_version(config) == "v2"
    else:
        assert finished.returncode == 1 and finished.stdout == ""
        [line] = finished.stderr.splitlines()
        assert f"cannot reach the Dask scheduler at {address} within {SILENT_TIMEOUT} s" in line, line
        assert record["status"] == "failed" and versions.current_version(config) == "v1"
