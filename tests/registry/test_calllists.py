"""The call list's format: ordering with stable ties, the change column, the files and their reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from risk.core.settings import ConfigError
from risk.registry import calllists
from tests.conftest import write_config


def scored(ids: list[str], risks: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"corporation": ids, "risk": risks})


def a_list(ids: list[str], risks: list[float], previous: pd.DataFrame | None = None) -> pd.DataFrame:
    frame = calllists.ranked(scored(ids, risks), ["corporation"])
    frame["band"] = "green"
    frame["flagged"] = frame["risk"] >= 0.5
    for column in calllists.REASON_COLUMNS:
        frame[column] = ""
    frame = calllists.with_changes(frame, previous, ["corporation"])
    return frame[calllists.list_columns(["corporation"])]


def test_the_riskiest_come_first_and_ties_go_by_id_whatever_the_book_order() -> None:
    ids, risks = ["c", "a", "d", "b"], [0.4, 0.4, 0.9, 0.1]
    first = calllists.ranked(scored(ids, risks), ["corporation"])
    shuffled = calllists.ranked(scored(ids[::-1], risks[::-1]), ["corporation"])
    assert first["corporation"].tolist() == ["d", "a", "c", "b"]
    assert first["rank"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(first, shuffled)


def test_ties_on_two_id_columns_go_by_the_first_then_the_second() -> None:
    frame = pd.DataFrame({"branch": ["b", "a", "a"], "client": ["1", "2", "1"], "risk": [0.3, 0.3, 0.3]})
    order = calllists.ranked(frame, ["branch", "client"])
    assert list(zip(order["branch"], order["client"])) == [("a", "1"), ("a", "2"), ("b", "1")]


def test_the_change_column_against_the_previous_list() -> None:
    before = a_list(["a", "b", "c", "f"], [0.9, 0.5, 0.1, 0.05])
    after = a_list(["a", "b", "c", "d", "f"], [0.05, 0.8, 0.1, 0.95, 0.75], previous=before)
    by_id = after.set_index("corporation")
    assert by_id.loc["d", "change"] == "new" and pd.isna(by_id.loc["d", "previous_rank"])
    assert (by_id.loc["f", "previous_rank"], by_id.loc["f", "rank"], by_id.loc["f", "change"]) == (4, 3, "up")
    assert (by_id.loc["a", "previous_rank"], by_id.loc["a", "rank"], by_id.loc["a", "change"]) == (1, 5, "down")
    assert (by_id.loc["b", "previous_rank"], by_id.loc["b", "rank"], by_id.loc["b", "change"]) == (2, 2, "same")
    assert a_list(["x"], [0.5])["change"].tolist() == ["new"]


def info(version: str = "v1") -> dict:
    return {"version": version, "id_columns": ["corporation"], "warnings": []}


def test_a_written_list_reads_back_typed_and_latest_names_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project")
    assert calllists.latest_call_list(config) is None
    first = a_list(["007", "NA", "b"], [0.7, 0.2, 0.5])
    path = calllists.write_call_list(config, info(), first, "20261207T100000Z")
    assert path.name == "20261207T100000Z_v1.csv"
    second = a_list(["007", "NA", "b", "c"], [0.1, 0.2, 0.5, 0.6], previous=first)
    calllists.write_call_list(config, info(), second, "20261207T100000Z")  # the same second: not overwritten

    meta, frame = calllists.latest_call_list(config)
    assert meta["file"] == "20261207T100000Z_v1-2.csv" and meta["rows"] == 4
    assert (config.root / "calllists" / "20261207T100000Z_v1.csv").is_file()
    assert json.loads(calllists.latest_json_path(config).read_text())["file"] == meta["file"]
    assert list(frame.columns) == calllists.list_columns(["corporation"])
    assert frame["corporation"].tolist() == ["c", "b", "NA", "007"]  # ids stay text: 007, NA
    assert frame["flagged"].dtype == bool and frame["flagged"].tolist() == [True, True, False, False]
    assert frame["reason_1"].tolist() == [""] * 4
    assert frame["previous_rank"].isna().tolist() == [True, False, False, False]
    assert frame["change"].tolist() == ["new", "same", "same", "down"]
    assert calllists.latest_csv_path(config).read_bytes() == (config.root / "calllists" / meta["file"]).read_bytes()
    lines = calllists.latest_csv_path(config).read_text().splitlines()
    assert lines[0] == "rank,corporation,risk,band,flagged,reason_1,reason_2,reason_3,previous_rank,change"
    assert [line.split(",")[-2] for line in lines[1:]] == ["", "2", "3", "1"]  # whole ranks, not "2.0"


def test_an_id_holding_a_carriage_return_reads_back_in_its_row(tmp_path: Path) -> None:
    # to_csv leaves a value holding a bare carriage return unquoted, where pandas ends a row.
    config = write_config(tmp_path / "project")
    ids = ["a\rb", "007", "NA", "c\r"]
    written = a_list(ids, [0.7, 0.2, 0.5, 0.9])
    calllists.write_call_list(config, info(), written, "20261207T100000Z")

    meta, frame = calllists.latest_call_list(config)
    assert meta["rows"] == len(frame) == 4
    pd.testing.assert_frame_equal(frame, written.assign(flagged=written["flagged"].astype(bool)))


def test_the_first_rows_read_alone_and_a_truncated_file_is_still_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project")
    calllists.write_call_list(config, info(), a_list([f"c{i}" for i in range(50)], list(np.linspace(0, 1, 50))), "T")
    meta, frame = calllists.latest_call_list(config, rows=5)
    assert meta["rows"] == 50 and frame["rank"].tolist() == [1, 2, 3, 4, 5]
    stamped = config.root / "calllists" / meta["file"]
    stamped.write_bytes(stamped.read_bytes()[: stamped.stat().st_size // 2])
    with pytest.raises(calllists.CallListError, match="says 50"):
        calllists.latest_call_list(config, rows=5)


def test_a_damaged_latest_json_is_an_error_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project")
    calllists.latest_json_path(config).parent.mkdir()
    calllists.latest_json_path(config).write_text("{not json")
    with pytest.raises(calllists.CallListError, match="latest.json"):
        calllists.latest_call_list(config)


@pytest.mark.parametrize("named", ["/etc/passwd", "../../config.json", "sub/list.csv", 7])
def test_a_latest_json_naming_a_file_outside_its_folder_is_refused(tmp_path: Path, named: object) -> None:
    # latest.json's "file" was joined to the folder as given: "/etc/passwd" was read (and its first
    # line quoted in the API's 503), while the API's download took the name's last part: two files.
    config = write_config(tmp_path / "project")
    calllists.write_call_list(config, info(), a_list(["a", "b"], [0.1, 0.2]), "T")
    meta = json.loads(calllists.latest_json_path(config).read_text())
    calllists.latest_json_path(config).write_text(json.dumps({**meta, "file": named}))
    with pytest.raises(calllists.CallListError, match="latest.json is not a call list's JSON") as caught:
        calllists.latest_call_list(config)
    assert "root:" not in str(caught.value)


def test_the_budget_summary() -> None:
    risk = np.array([0.9, 0.8, 0.2, 0.1])
    summary = calllists.budget_summary(risk, risk >= 0.15, budget=2)
    assert summary["flagged"] == 3 and summary["flagged_beyond_budget"] == 1
    assert summary["expected_positives_reached"] == pytest.approx(1.7 / 2.0)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"client_book": ""}, "client_book"),
        ({"client_book": 3}, "client_book"),
        ({"client_book": {"name": "book", "url": "sqlite:///crm.db"}}, "table or a query"),
        (
            {"client_book": {"name": "book", "url": "sqlite:///crm.db", "table": "t", "watermark_column": "x"}},
            "unknown",
        ),
        ({"call_list_path": ""}, "call_list_path"),
        # the lists written into a folder book became part of the book: the next run refused it
        ({"client_book": "clientbook", "call_list_path": "clientbook"}, "call_list_path must not be"),
        ({"client_book": "./clientbook/", "call_list_path": "clientbook/lists"}, "call_list_path must not be"),
        ({"contact_budget": 0}, "contact_budget"),
        ({"contact_budget": True}, "contact_budget"),
    ],
)
def test_bad_call_list_settings_are_refused_by_name(tmp_path: Path, overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        write_config(tmp_path / "project", **overrides)


def test_a_database_book_without_a_watermark_is_accepted(tmp_path: Path) -> None:
    book = {"name": "book", "url": "sqlite:///crm.db", "table": "clients"}
    assert write_config(tmp_path / "project", client_book=book)["client_book"] == book
