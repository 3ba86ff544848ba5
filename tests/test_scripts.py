"""The top-level scripts (ingestion.py, training.py, scoring.py, deployment.py): each main(): arguments,
output and exit codes, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import deployment
import ingestion
import scoring
import training
from risk.core import logbook
from risk.core.locks import run_lock
from risk.core.settings import Config
from risk.data import ledger
from tests.conftest import write_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_step_by_step_scripts_ingest_train_score_deploy(project: Config, capsys: pytest.CaptureFixture) -> None:
    args = ["--config", str(project.path)]

    assert ingestion.main(args) == 0
    assert json.loads(capsys.readouterr().out)["rows_added"] == 7500
    assert training.main(args) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "logistic_regression"
    assert scoring.main(args) == 0
    assert json.loads(capsys.readouterr().out)["f1"] > 0
    assert deployment.main(args + ["--reason", "by hand"]) == 0
    assert "current version: v1" in capsys.readouterr().out
    assert deployment.main(args + ["--list"]) == 0
    listing = capsys.readouterr().out
    assert "* v1" in listing and "by hand" in listing


def test_rollback_from_the_command_line(deployed_project: Config, capsys: pytest.CaptureFixture) -> None:
    args = ["--config", str(deployed_project.path)]
    assert deployment.main(args) == 0
    assert deployment.main(args + ["--rollback"]) == 0
    assert "current version: v1" in capsys.readouterr().out
    assert deployment.main(args + ["--rollback"]) == 1, "nothing older than v1"


def test_scripts_refuse_to_run_while_another_holds_the_lock(deployed_project: Config) -> None:
    args = ["--config", str(deployed_project.path)]
    with run_lock(ledger.lock_path(deployed_project)):
        assert ingestion.main(args) == 1
        assert training.main(args) == 1
        assert deployment.main(args) == 1


def test_a_missing_input_folder_is_named(project: Config, caplog: pytest.LogCaptureFixture) -> None:
    for source in project.input_folder.iterdir():
        source.unlink()
    project.input_folder.rmdir()
    assert ingestion.main(["--config", str(project.path)]) == 1
    assert "input_folder_path: folder" in caplog.text


@pytest.mark.parametrize(
    "script",
    [
        "ingestion.py",
        # These two import scikit-learn and pandas before parsing: 3-4 s each as a program.
        pytest.param("training.py", marks=pytest.mark.slow),
        pytest.param("scoring.py", marks=pytest.mark.slow),
        "deployment.py",
        "fullprocess.py",
        "sampledata.py",
    ],
)
def test_every_script_answers_help_from_any_directory(script: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / script), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0 and "--config" in result.stdout


def test_versions_listing_shows_which_is_current_since_when_and_every_rollback(
    deployed_project: Config, capsys: pytest.CaptureFixture
) -> None:
    args = ["--config", str(deployed_project.path)]
    assert deployment.main(args + ["--reason", "second"]) == 0
    assert deployment.main(args + ["--rollback"]) == 0
    capsys.readouterr()

    assert deployment.main(args + ["--list"]) == 0

    listing = capsys.readouterr().out
    rollback_at = logbook.read_history(deployed_project)[-1]["at"]
    assert "* v1" in listing
    assert f"current: v1, since {rollback_at} (rolled back from v2)" in listing
    assert f"{rollback_at}  rollback v2 -> v1" in listing


def test_activate_from_the_command_line(deployed_project: Config, capsys: pytest.CaptureFixture) -> None:
    args = ["--config", str(deployed_project.path)]
    assert deployment.main(args + ["--reason", "second"]) == 0
    assert deployment.main(args + ["--reason", "third"]) == 0

    assert deployment.main(args + ["--activate", "v1"]) == 0
    assert "current version: v1" in capsys.readouterr().out
    assert deployment.main(args + ["--list"]) == 0
    assert "(activated from v3)" in capsys.readouterr().out
    assert deployment.main(args + ["--activate", "v7"]) == 1
    assert "there is no version 'v7'" in capsys.readouterr().err


def test_a_broken_current_link_gives_a_clear_message_not_a_traceback(deployed_project: Config) -> None:
    link = deployed_project.deployment_folder / "current"
    link.unlink()
    link.mkdir()
    command = [sys.executable, str(PROJECT_DIR / "deployment.py"), "--config", str(deployed_project.path)]

    listing = subprocess.run([*command, "--list"], capture_output=True, text=True, timeout=60)
    rollback = subprocess.run([*command, "--rollback"], capture_output=True, text=True, timeout=60)

    assert listing.returncode == 0 and "current: none usable" in listing.stdout and "is a directory" in listing.stdout
    assert "Traceback" not in listing.stderr + rollback.stderr
    assert rollback.returncode == 0 and "current version: v1" in rollback.stdout


def test_training_names_a_misspelt_column_before_training(project: Config, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(project.root, id_columns=["Corporation"])
    assert training.main(["--config", str(config.path)]) == 1
    assert "id_columns names the column 'Corporation'" in caplog.text and "did you mean 'corporation'?" in caplog.text


@pytest.mark.parametrize("action", [["--list"], ["--inventory"], ["--rollback"]])
def test_listing_and_rolling_back_load_no_data_library(deployed_project: Config, action: list[str]) -> None:
    """deployment.py's everyday and emergency actions start at once, and work where pandas or
    scikit-learn is broken: only an approval decision loads the report libraries."""
    probe = (
        f"import sys; sys.path.insert(0, {str(PROJECT_DIR)!r}); import deployment; "
        f"code = deployment.main(['--config', {str(deployed_project.path)!r}, *{action!r}]); "
        "print(code, sorted(m for m in ('pandas', 'numpy', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    heavy = result.stdout.strip().splitlines()[-1]
    assert heavy.endswith(" []"), result.stdout + result.stderr
