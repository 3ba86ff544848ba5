"""The prediction log: whole lines from concurrent processes, the reader, the retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from risk.core.settings import Config, ConfigError
from risk.monitoring import predlog
from tests.conftest import rewrite_config, write, write_config

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAY = 86400.0
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path / "project", log_predictions=True, id_columns=["corporation", "branch"])


def rows(n: int, prefix: str = "c") -> list[tuple[dict[str, str], float, bool]]:
    return [({"corporation": f"{prefix}{i}", "branch": "north"}, i / (n + 1), i % 2 == 0) for i in range(n)]


def test_a_logged_row_is_one_json_line_of_ids_risk_flagged_version_and_time(config: Config) -> None:
    assert predlog.append_predictions(config, "v3", rows(2), when=NOON.timestamp()) == 2
    path = config.log_folder / "predictions" / "2026-12-07.jsonl"
    lines = path.read_text(encoding="ascii").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"time": "2026-12-07T12:00:00Z", "version": "v3", "ids": {"corporation": "c0", "branch": "north"},
         "risk": 0.0, "flagged": True},
        {"time": "2026-12-07T12:00:00Z", "version": "v3", "ids": {"corporation": "c1", "branch": "north"},
         "risk": 1 / 3, "flagged": False},
    ]  # fmt: skip


def test_only_rows_carrying_every_id_column_are_logged() -> None:
    ids = {"corporation": ["a", None, "", 7, "d"], "branch": ["x", "y", "z", "w", "  "]}
    kept = predlog.identified_rows(["corporation", "branch"], ids, [0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 1, 1])
    assert kept == [({"corporation": "a", "branch": "x"}, 0.1, False), ({"corporation": "7", "branch": "w"}, 0.4, True)]
    assert predlog.identified_rows(["corporation", "branch"], {"corporation": ["a"]}, [0.1], [0]) == []
    assert predlog.identified_rows([], {}, [0.1], [0]) == []


def test_nothing_to_log_writes_no_file(config: Config) -> None:
    assert predlog.append_predictions(config, "v1", []) == 0
    assert not (config.log_folder / "predictions").exists()


# Each writer a real process of its own, importing only what the API's workers use to append.
WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from risk.core.settings import load_config
from risk.monitoring import predlog
config, worker, BATCHES = load_config(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for batch in range(BATCHES):
    count = 1 + (batch * 7 + worker) % 60  # batches of different sizes, many beyond a pipe's atomic 4 KiB
    rows = [({"corporation": f"w{worker}b{batch}r{i}", "branch": "north"}, i / 61, i % 2 == 0) for i in range(count)]
    assert predlog.append_predictions(config, f"v{worker}", rows) == count
"""


BATCHES = 300


def test_concurrent_processes_append_only_whole_lines(config: Config) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(PROJECT_DIR), str(config.path), str(w), str(BATCHES)])
        for w in range(4)
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * 4
    expected = sum(1 + (b * 7 + w) % 60 for w in range(4) for b in range(BATCHES))
    lines = b"".join(p.read_bytes() for _, p in predlog.day_files(config)).split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]  # every line whole: each parses
    assert len(parsed) == expected
    ids = {row["ids"]["corporation"] for row in parsed}
    assert len(ids) == expected  # none lost, none doubled


def test_a_failure_to_log_is_counted_and_never_raised(config: Config) -> None:
    write(config.log_folder / "predictions", "a file where the folder should be")
    before = predlog.failures()
    assert predlog.append_predictions(config, "v1", rows(1)) == 0
    assert predlog.append_predictions(config, "v1", rows(1)) == 0
    assert predlog.failures() == before + 2


def test_the_reader_gives_rows_made_before_a_time_as_a_frame(config: Config) -> None:
    for offset, version in ((-2 * DAY, "v1"), (-DAY, "v1"), (0, "v2"), (DAY, "v2")):
        predlog.append_predictions(config, version, rows(3, prefix=version), when=NOON.timestamp() + offset)
    folder = config.log_folder / "predictions"
    with open(folder / "2026-12-07.jsonl", "ab") as handle:
        handle.write(b'{"time": "2026-12-07T13:00:00Z", "version": "v2"}\n{"half a li')
    write(folder / "notes.txt", "not a day")
    frame = predlog.logged_predictions(config, before=NOON + timedelta(seconds=1))
    assert list(frame.columns) == ["time", "version", "corporation", "branch", "risk", "flagged"]
    assert len(frame) == 9  # three days of three rows; the next day's and the damaged lines left out
    assert frame["time"].is_monotonic_increasing
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame["corporation"].tolist()[:3] == ["v10", "v11", "v12"]
    assert frame["flagged"].tolist()[:3] == [True, False, True]
    assert len(predlog.logged_predictions(config, before=NOON)) == 6  # strictly before
    assert len(predlog.logged_predictions(config)) == 12
    empty = predlog.logged_predictions(write_config(config.root.parent / "other"))
    assert empty.empty and list(empty.columns) == ["time", "version", "corporation", "risk", "flagged"]


def test_a_row_appended_after_a_torn_line_is_read(config: Config) -> None:
    """A day file whose last line is torn (a power cut, a hand edit, another writer): the next append
    starts a line of its own; it was glued to the torn bytes and lost with them."""
    predlog.append_predictions(config, "v1", rows(1, prefix="a"), when=NOON.timestamp())
    with open(config.log_folder / "predictions" / "2026-12-07.jsonl", "ab") as handle:
        handle.write(b'{"time": "2026-12-07T12:00:0')
    assert predlog.append_predictions(config, "v1", rows(2, prefix="b"), when=NOON.timestamp()) == 2
    frame = predlog.logged_predictions(config)
    assert frame["corporation"].tolist() == ["a0", "b0", "b1"]


def test_the_reader_keeps_only_the_clients_asked_for(config: Config) -> None:
    """The back-test asks for its batch's clients: the rest of a year's log is not held in memory."""
    predlog.append_predictions(config, "v1", rows(50), when=NOON.timestamp())
    frame = predlog.logged_predictions(config, clients={("c3", "north"), ("c7", "north"), ("c7", "south")})
    assert frame["corporation"].tolist() == ["c3", "c7"]


def test_rows_logged_under_other_id_columns_are_left_out(config: Config) -> None:
    predlog.append_predictions(config, "v1", rows(2))
    changed = rewrite_config(config, id_columns=["customer"])
    assert predlog.logged_predictions(changed).empty


def test_retention_removes_only_days_older_than_the_setting(config: Config) -> None:
    config = rewrite_config(config, prediction_log_days=30)
    for days_ago in (0, 1, 29, 30, 31, 400):
        predlog.append_predictions(config, "v1", rows(1), when=NOON.timestamp() - days_ago * DAY)
    other = write(config.log_folder / "predictions" / "keep-me.jsonl", "{}\n")
    removed = predlog.remove_old_days(config, NOON)
    assert sorted(p.name for p in removed) == ["2025-11-02.jsonl", "2026-11-06.jsonl"]
    left = [day for day, _ in predlog.day_files(config)]
    assert left == ["2026-11-07", "2026-11-08", "2026-12-06", "2026-12-07"]
    assert other.exists()
    assert predlog.remove_old_days(config, NOON) == []


def test_a_day_the_retention_cannot_remove_is_said_and_never_fails_the_run(config: Config, caplog) -> None:
    """Retention runs first in every run, the cron no-op included: an old day it cannot remove (a
    folder by that name here; a file of another user in a folder it may not write, in production)
    is logged and left, and the later days are still removed; raising stopped every run before
    ingestion."""
    config = rewrite_config(config, prediction_log_days=30)
    stuck = config.log_folder / "predictions" / "2025-01-01.jsonl"
    stuck.mkdir(parents=True)
    predlog.append_predictions(config, "v1", rows(1), when=NOON.timestamp() - 400 * DAY)
    removed = predlog.remove_old_days(config, NOON)
    assert [p.name for p in removed] == ["2025-11-02.jsonl"]
    assert stuck.is_dir() and "2025-01-01.jsonl" in caplog.text


def test_retention_without_a_log_does_nothing(config: Config) -> None:
    assert predlog.remove_old_days(config, NOON) == []
    assert not (config.log_folder / "predictions").exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [("log_predictions", "yes"), ("log_predictions", 1), ("prediction_log_days", 0), ("prediction_log_days", 1.5)],
)
def test_bad_settings_are_refused(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        write_config(tmp_path, **{key: value})


def test_logging_is_off_by_default(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert config["log_predictions"] is False and config["prediction_log_days"] == 400


def test_the_file_holds_no_feature_values(config: Config) -> None:
    predlog.append_predictions(config, "v1", rows(1))
    (path,) = [p for _, p in predlog.day_files(config)]
    assert set(json.loads(path.read_text())) == {"time", "version", "ids", "risk", "flagged"}
    assert os.stat(path).st_mode & 0o007 == 0  # not readable by every user of the machine


def test_an_answer_is_logged_column_by_column_as_row_by_row(config: Config) -> None:
    ids = {"corporation": ["a", None, "", 7, "d", 2.5, True], "branch": ["x", "y", "z", "w", "  ", "é", 'q"']}
    risk, flagged = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0, 0, 0, 1, 1, 1, 0]
    stamp = "2026-12-07T12:00:00Z"
    columns = predlog.answer_lines("v2", ["corporation", "branch"], ids, risk, flagged, stamp)
    by_row = predlog.identified_rows(["corporation", "branch"], ids, risk, flagged)
    assert columns == (predlog.prediction_lines("v2", by_row, NOON.timestamp()), 4)
    assert predlog.answer_lines("v2", ["corporation"], {"corporation": ["a", None]}, [0.5, 0.6], [1, 0], stamp) == (
        predlog.prediction_lines("v2", [({"corporation": "a"}, 0.5, True)], NOON.timestamp()),
        1,
    )
    assert predlog.answer_lines("v2", ["corporation", "branch"], {"corporation": ["a"]}, [0.1], [0], stamp) == (b"", 0)
    assert predlog.append_answer(config, "v2", ids, risk, flagged, when=NOON.timestamp()) == (4, 4)
    assert len(predlog.logged_predictions(config)) == 4


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this id")


def test_an_id_nobody_foresaw_is_counted_not_raised(config: Config) -> None:
    before = predlog.failures()
    ids = {"corporation": ["a", Unprintable()], "branch": ["x", "y"]}
    assert predlog.append_answer(config, "v1", ids, [0.1, 0.2], [0, 1]) == (2, 0)
    assert predlog.failures() == before + 1
