"""People's text in the history (--by, --note, --reason) and damaged history files, as the
listings show them (issue 18, items 11 and 12)."""

from __future__ import annotations

import pytest

import deployment
from risk.core import jsonfiles, logbook
from risk.core.settings import Config
from risk.registry import deploy, versions

HOSTILE = [
    ("--by", "Ada\x1b[2J", "\\x1b"),  # clears the screen
    ("--by", "Ada\nv9 approved by Root", "\\n"),  # forges a line
    ("--note", "fine\rall good", "\\r"),  # overwrites a line
    ("--note", "ok \u202eevil", "\\u202e"),  # reorders what follows
    ("--by", "Ada\x9b31m", "\\x9b"),  # a C1 control sequence introducer
]


@pytest.fixture
def pending_project(deployed_project: Config) -> Config:
    assert deploy.deploy_model(deployed_project, reason="challenger", pending=True) == "v2"
    return deployed_project


@pytest.mark.parametrize("action", ["--approve", "--reject"])
@pytest.mark.parametrize("option,text,escape", HOSTILE)
def test_control_characters_in_approver_text_are_refused_at_input(
    pending_project: Config, capsys: pytest.CaptureFixture, action: str, option: str, text: str, escape: str
) -> None:
    values = {"--by": "Ada", "--note": "a note", option: text}
    before = logbook.history_path(pending_project).read_bytes()
    with pytest.raises(SystemExit) as exited:
        deployment.main(
            ["--config", str(pending_project.path), action, "v2", *(x for kv in values.items() for x in kv)]
        )

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{option} contains control characters ({escape})" in err and text not in err
    assert logbook.history_path(pending_project).read_bytes() == before
    assert versions.pending_versions(pending_project) == ["v2"] and versions.current_version(pending_project) == "v1"


def test_a_deploy_reason_with_control_characters_is_refused(deployed_project: Config) -> None:
    with pytest.raises(SystemExit) as exited:
        deployment.main(["--config", str(deployed_project.path), "--reason", "by hand\x1b]0;owned\x07"])
    assert exited.value.code == 2 and versions.version_names(deployed_project) == ["v1"]


def test_the_registry_refuses_them_too(pending_project: Config) -> None:
    with pytest.raises(versions.DeploymentError, match="--by contains control characters"):
        deploy.approve(pending_project, "v2", by="Ada\x1b[2J")
    with pytest.raises(versions.DeploymentError, match="--note contains control characters"):
        deploy.reject(pending_project, "v2", by="Ada", note="no\nreally")


def test_listings_never_print_control_characters_from_an_old_history(
    pending_project: Config, capsys: pytest.CaptureFixture
) -> None:
    # What a history written before they were refused can hold: a rejection with hostile text.
    jsonfiles.append_json_line(
        logbook.history_path(pending_project),
        {
            "at": "2026-01-01T00:00:00+00:00\x1b[2J",
            "action": "reject",
            "version": "v2",
            "previous_version": "v1",
            "reason": "rejected by Ada\x1b[2J",
            "by": "Ada\x1b[2J\r\nv2 approved by Root",
            "note": "bad\u202eevil",
        },
    )
    argv = ["--config", str(pending_project.path)]
    for listing in (["--list"], ["--inventory"]):
        assert deployment.main(argv + listing) == 0
        out = capsys.readouterr().out
        assert "Ada\\x1b[2J\\r\\nv2 approved by Root" in out and "bad\\u202eevil" in out, out
        assert not [c for c in out if c != "\n" and logbook.control_characters(c)], out


@pytest.mark.slow
def test_a_stray_byte_in_the_history_does_not_break_the_listings(
    pending_project: Config, capsys: pytest.CaptureFixture
) -> None:
    with open(logbook.history_path(pending_project), "ab") as handle:
        handle.write(b"\xff")
    argv = ["--config", str(pending_project.path)]

    assert deployment.main(argv + ["--list"]) == 0
    assert "current: v1" in capsys.readouterr().out
    assert deployment.main(argv + ["--inventory"]) == 0
    assert deployment.main(argv + ["--approve", "v2", "--by", "Ada"]) == 0
    assert versions.current_version(pending_project) == "v2"
    line, message = jsonfiles.verify_json_line_chain(logbook.history_path(pending_project))
    assert line == 3 and "neither JSON" in message  # the stray byte is named, not passed as a torn line
