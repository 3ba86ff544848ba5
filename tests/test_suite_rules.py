"""The test suite's own rules: a program or server a test needs, when absent, skips it here but
fails it under CI=true; a warning fails the test that raised it (pytest.ini)."""

from __future__ import annotations

import warnings

import pytest

from tests.conftest import import_or_fail_in_ci, skip_or_fail_in_ci


def test_a_missing_program_skips_the_test_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pdftoppm is absent"):
        skip_or_fail_in_ci("pdftoppm is absent")


def test_a_missing_program_fails_the_test_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test: pdftoppm is absent"):
        skip_or_fail_in_ci("pdftoppm is absent")


def test_a_warning_fails_the_test_that_raised_it() -> None:
    with pytest.raises(UserWarning):
        warnings.warn("an unexpected warning", UserWarning)


def test_a_leaked_file_or_socket_fails() -> None:
    """pytest.ini lists no exceptions: an unclosed file or socket is an error like any warning."""
    with pytest.raises(ResourceWarning):
        warnings.warn(
            "unclosed file <_io.BufferedReader name='/srv/project/ingesteddata/finaldata.csv'>", ResourceWarning
        )
    with pytest.raises(ResourceWarning):
        warnings.warn(
            "unclosed <socket.socket fd=7, family=2, type=1, proto=0, laddr=('10.0.0.5', 8786)>", ResourceWarning
        )


def test_a_missing_package_skips_outside_ci_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        import_or_fail_in_ci("no_such_package_here", "no_such_package_here is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        import_or_fail_in_ci("no_such_package_here", "no_such_package_here is not installed")
    assert import_or_fail_in_ci("json", "json is missing").dumps([1]) == "[1]"
