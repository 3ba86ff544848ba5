"""risk.registry.listing: what `deployment.py --list` and `--inventory` say about the versions,
on versions laid out by hand in tmp_path."""

from __future__ import annotations

import pytest

from risk.core.settings import Config
from risk.registry import listing, versions
from tests.conftest import rewrite_config
from tests.registry.test_versions import make_current, make_version, write_history


@pytest.fixture
def two_versions(tmp_path) -> Config:
    from tests.conftest import write_config

    config = write_config(tmp_path / "project")
    make_version(
        config,
        "v1",
        {
            "deployed_at": "2026-12-01",
            "model": "m1",
            "metric": "f1",
            "reason": "first",
            "warnings": [],
            "scores": {"f1": 0.581, "roc_auc": 0.8, "cost": 0.9, "rows": 1000, "positives": 200},
        },
    )
    make_version(
        config,
        "v2",
        {
            "deployed_at": "2026-12-02",
            "model": "m2",
            "metric": "f1",
            "reason": "drift",
            "warnings": [],
            "pending_approval": True,
            "scores": {"f1": 0.4844, "roc_auc": 0.79, "cost": 0.7840, "rows": 1400, "positives": 330},
        },
    )
    make_current(config, "v1")
    write_history(
        config,
        {"action": "deploy", "version": "v1", "at": "t1"},
        {"action": "deploy", "version": "v2", "at": "t2", "previous_version": "v1", "pending_approval": True},
    )
    return config


def test_the_score_column_is_headed_with_the_configured_metric(two_versions: Config, capsys) -> None:
    config = rewrite_config(two_versions, metric="cost", cost_matrix={"false_negative": 5, "false_positive": 1})
    listing.print_versions(config, versions.inventory(config, verify=False))
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[4] == "cost" and "f1" not in header, out
    assert "0.7840" in out and "0.9000" in out and "0.4844" not in out


def test_scores_on_different_test_data_are_said_not_to_compare_the_versions(two_versions: Config, capsys) -> None:
    listing.print_versions(two_versions, versions.inventory(two_versions, verify=False))
    out = " ".join(capsys.readouterr().out.split())
    assert "1,000" in out and "1,400" in out, "each version's test rows"
    assert "they do not compare the versions" in out


def test_scores_on_the_same_test_data_need_no_note(two_versions: Config, capsys) -> None:
    rows = versions.inventory(two_versions, verify=False)
    for row in rows:
        row.update(test_rows=1000, test_positives=200)
    listing.print_versions(two_versions, rows)
    assert "do not compare" not in capsys.readouterr().out


@pytest.mark.parametrize("action, decision", [("approve", "approved"), ("reject", "rejected")])
def test_after_a_decision_no_listing_says_the_version_still_awaits_it(
    two_versions: Config, action: str, decision: str
) -> None:
    before = {row["version"]: row for row in versions.inventory(two_versions, verify=False)}["v2"]
    assert before["pending_approval"] is True and before["approval_required"] is True
    write_history(two_versions, {"action": action, "version": "v2", "at": "t3", "by": "ana", "previous_version": "v1"})
    if action == "approve":
        make_current(two_versions, "v2")
    row = {row["version"]: row for row in versions.inventory(two_versions, verify=False)}["v2"]
    assert row["decision"] == decision and row["pending_approval"] is False, row
    assert row["approval_required"] is True, "it was deployed needing approval: that stays true"
