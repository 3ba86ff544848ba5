"""After a person approves or rejects a version, every place that shows the decision shows the new one:
page 1 of its report, `deployment.py --inventory --json` and `/model?all=1`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deployment
import fullprocess
from risk.api import service
from risk.core.settings import Config
from risk.data import sample
from risk.registry import versions
from tests.conftest import page_text, private_copy, write_config


@pytest.fixture(scope="module")
def approved_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A first version deployed pending approval, then approved by Ada (which rewrites its reports);
    built once for the module, each test gets its own copy."""
    config = write_config(
        tmp_path_factory.mktemp("approved") / "project", require_approval=True, package_check_seconds=0
    )
    sample.write_sample_data(config)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("API_TOKEN", raising=False)
        assert fullprocess.main(["--config", str(config.path)]) == 0
        assert versions.pending_versions(config) == ["v1"]
        before = " ".join(page_text(config.reports_folder / "v1" / "model_report.pdf", 1).split())
        assert "AWAITING APPROVAL" in before and "v1 awaits approval" in before
        assert deployment.main(["--config", str(config.path), "--approve", "v1", "--by", "Ada", "--note", "ok"]) == 0
    return config.root


@pytest.fixture
def approved(approved_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.delenv("API_TOKEN", raising=False)
    return private_copy(approved_template, tmp_path)


@pytest.mark.slow
def test_page_one_shows_the_approval_beside_the_runs_own_decision(approved: Config) -> None:
    text = " ".join(page_text(approved.reports_folder / "v1" / "model_report.pdf", 1).split())
    assert "AWAITING APPROVAL" not in text
    # The run's decision stays as it was recorded; what a person decided since follows it.
    assert "Decision pending_approval" in text and "Since then approved by Ada at" in text
    assert "Validator sign-off Approved by Ada" in text


@pytest.mark.slow
def test_the_inventory_json_and_the_api_show_the_approval(approved: Config, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert deployment.main(["--config", str(approved.path), "--inventory", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["status"], row["decision"], row["pending_approval"]) == ("current", "approved", False)
    served = service.create_app(approved.path).test_client().get("/model?all=1").get_json()
    [row] = served["versions"]
    assert (row["status"], row["decision"], row["pending_approval"]) == ("current", "approved", False)
    assert served["awaiting_approval"] == []
