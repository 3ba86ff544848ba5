"""The hash-chained JSON lines (risk.core.jsonfiles): edges of the chain, the keyed chain (issue 18, item 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from risk.core import jsonfiles

KEY = "correct horse battery staple"


def test_a_blank_last_line_does_not_break_the_next_append(tmp_path: Path) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"n": 1})
    with open(log, "ab") as handle:
        handle.write(b"   \n\t\n")  # whitespace-only lines: verification skips them, so the chain must too
    jsonfiles.append_json_line(log, {"n": 2})
    with open(log, "ab") as handle:
        handle.write(b"  ")  # and whitespace without a newline
    jsonfiles.append_json_line(log, {"n": 3})

    line, message = jsonfiles.verify_json_line_chain(log)
    assert line is None, message
    assert [r["n"] for r in jsonfiles.read_json_lines(log)] == [1, 2, 3]


def test_a_last_line_longer_than_many_chunks_is_found_whole(tmp_path: Path) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"n": 1})
    jsonfiles.append_json_line(log, {"note": "x" * (jsonfiles.TAIL_CHUNK_BYTES * 5 + 17)})
    with open(log, "ab") as handle:
        handle.write(b"\n" * (jsonfiles.TAIL_CHUNK_BYTES * 2))  # blank lines spanning chunks after it
    jsonfiles.append_json_line(log, {"n": 2})
    assert jsonfiles.verify_json_line_chain(log)[0] is None


def test_stray_bytes_that_are_not_utf8_fail_verification_and_are_skipped_by_readers(tmp_path: Path) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"n": 1})
    with open(log, "ab") as handle:
        handle.write(b"\xff")

    assert [r["n"] for r in jsonfiles.read_json_lines(log)] == [1]  # no UnicodeDecodeError
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line == 2 and "neither JSON nor a line cut short by a crash" in message
    jsonfiles.append_json_line(log, {"n": 2})  # chaining to it does not launder it
    assert jsonfiles.verify_json_line_chain(log)[0] == 2


def test_a_line_cut_short_by_a_crash_is_still_covered(tmp_path: Path) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"n": 1})
    with open(log, "ab") as handle:
        handle.write(b'{"n": 2, "note": "cut')
    jsonfiles.append_json_line(log, {"n": 3})
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line is None and "1 torn line(s)" in message


def test_without_a_key_an_edited_last_line_and_a_forged_appended_line_pass(tmp_path: Path) -> None:
    """What the README states: the unkeyed chain cannot tell them from genuine lines."""
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"by": "Ada"})
    jsonfiles.append_json_line(log, {"by": "Ada"})
    lines = log.read_text().splitlines()
    lines[-1] = lines[-1].replace("Ada", "Eve")  # the last line edited
    log.write_text("\n".join(lines) + "\n")
    forged = {"by": "Mallory", jsonfiles.CHAIN_FIELD: jsonfiles.line_sha256(lines[-1].encode())}
    with open(log, "a") as handle:
        handle.write(json.dumps(forged) + "\n")  # a line appended by someone who recomputed the hash

    assert jsonfiles.verify_json_line_chain(log)[0] is None


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jsonfiles.AUDIT_KEY_ENV, KEY)


def test_with_the_key_an_edited_last_line_is_named(tmp_path: Path, keyed: None) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"by": "Ada"})
    jsonfiles.append_json_line(log, {"by": "Ada"})
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line is None and "2 keyed line(s) whose HMAC holds" in message

    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], lines[1].replace("Ada", "Eve")]) + "\n")  # the last line edited

    line, message = jsonfiles.verify_json_line_chain(log)
    assert line == 2 and "hmac_sha256 does not match" in message


def test_with_the_key_a_forged_appended_line_is_named(tmp_path: Path, keyed: None) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"by": "Ada"})
    last = log.read_bytes().rstrip(b"\n")
    for forged in (
        {"by": "Mallory", jsonfiles.CHAIN_FIELD: jsonfiles.line_sha256(last)},  # no HMAC
        {"by": "Mallory", jsonfiles.CHAIN_FIELD: jsonfiles.line_sha256(last), "hmac_sha256": "0" * 64},
    ):
        copy = tmp_path / "copy.jsonl"
        copy.write_bytes(last + b"\n" + json.dumps(forged, sort_keys=True).encode() + b"\n")
        line, message = jsonfiles.verify_json_line_chain(copy)
        assert line == 2, message


def test_a_line_verified_with_another_key_fails(tmp_path: Path, keyed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"by": "Ada"})
    monkeypatch.setenv(jsonfiles.AUDIT_KEY_ENV, "another key")
    assert jsonfiles.verify_json_line_chain(log)[0] == 1


def test_lines_before_the_key_was_turned_on_are_accepted_and_without_the_key_keyed_lines_are_said_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"n": 1})  # before the key
    monkeypatch.setenv(jsonfiles.AUDIT_KEY_ENV, KEY)
    jsonfiles.append_json_line(log, {"n": 2})
    jsonfiles.append_json_line(log, {"n": 3})
    assert jsonfiles.verify_json_line_chain(log)[0] is None
    assert [r["n"] for r in jsonfiles.read_json_lines(log)] == [1, 2, 3]

    monkeypatch.delenv(jsonfiles.AUDIT_KEY_ENV)
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line is None and "2 keyed line(s) NOT checked: RISK_AUDIT_KEY is not set" in message

    jsonfiles.append_json_line(log, {"n": 4})  # written without the key after keyed lines
    monkeypatch.setenv(jsonfiles.AUDIT_KEY_ENV, KEY)
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line == 4 and "has no hmac_sha256 although earlier lines are keyed" in message
