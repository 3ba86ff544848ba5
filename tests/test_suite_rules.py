"""The test suite's own rules: a program or server a test needs, when absent, skips it here but
fails it under CI=true."""
from __future__ import annotations

import pytest

from tests.conftest import skip_or_fail_in_ci


def test_a_missing_program_skips_the_test_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pdftoppm is absent"):
        skip_or_fail_in_ci("pdftoppm is absent")


def test_a_missing_program_fails_the_test_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test: pdftoppm is absent"):
        skip_or_fail_in_ci("pdftoppm is absent")
