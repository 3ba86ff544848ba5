"""risk.core.tables: the typed CSV reader (text kept as written, column names cleaned), the
dtype vocabulary, and the row hashes that say whether a row is already there."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from risk.core import tables
from risk.core.tables import NUMERIC, TEXT

KINDS = {"corporation": TEXT, "lastmonth_activity": NUMERIC, "region": TEXT}


def csv(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- the dtype vocabulary -------------------------------------------------------------------------


def test_text_dtypes_keeps_every_column_that_is_not_numeric_as_text() -> None:
    assert tables.text_dtypes(KINDS) == {"corporation": str, "region": str}


def test_text_dtypes_for_given_columns_reads_unknown_ones_as_text() -> None:
    assert tables.text_dtypes(KINDS, ["lastmonth_activity", "never_seen"]) == {"never_seen": str}


# --- read_typed_csv -------------------------------------------------------------------------------


def test_text_columns_stay_as_written_and_numeric_ones_are_numbers(tmp_path: Path) -> None:
    path = csv(tmp_path, "corporation,lastmonth_activity,region\n007,12,0042\n1e3,3.5,\n")
    frame = tables.read_typed_csv(path, KINDS)
    assert frame["corporation"].tolist() == ["007", "1e3"]
    assert frame["region"].iloc[0] == "0042" and pd.isna(frame["region"].iloc[1])
    assert frame["lastmonth_activity"].tolist() == [12.0, 3.5]
    assert frame["lastmonth_activity"].dtype.kind == "f"


def test_a_trailing_comma_on_every_row_does_not_shift_the_columns(tmp_path: Path) -> None:
    path = csv(tmp_path, "corporation,lastmonth_activity\nabc,1,\ndef,2,\n")
    frame = tables.read_typed_csv(path, KINDS)
    assert list(frame.columns) == ["corporation", "lastmonth_activity"]
    assert frame["corporation"].tolist() == ["abc", "def"]
    assert frame["lastmonth_activity"].tolist() == [1, 2]


def test_a_byte_order_mark_and_spaces_are_not_part_of_column_names(tmp_path: Path) -> None:
    path = csv(tmp_path, "\ufeffcorporation , lastmonth_activity\nabc,1\n".encode())
    frame = tables.read_typed_csv(path, KINDS)
    assert list(frame.columns) == ["corporation", "lastmonth_activity"]
    assert frame["corporation"].tolist() == ["abc"]


def test_a_byte_stream_with_a_byte_order_mark_reads_like_the_file(tmp_path: Path) -> None:
    stream = io.BytesIO("\ufeffcorporation,lastmonth_activity\n007,1\n".encode())
    frame = tables.read_typed_csv(stream, KINDS)
    assert list(frame.columns) == ["corporation", "lastmonth_activity"] and frame["corporation"].tolist() == ["007"]


def test_a_text_stream_is_read_as_it_is(tmp_path: Path) -> None:
    frame = tables.read_typed_csv(io.StringIO("corporation,lastmonth_activity\n007,1\n"), KINDS)
    assert frame["corporation"].tolist() == ["007"] and frame["lastmonth_activity"].tolist() == [1]


def test_usecols_gives_the_columns_in_the_order_asked_and_nrows_limits_rows(tmp_path: Path) -> None:
    path = csv(tmp_path, "corporation,lastmonth_activity,region\na,1,x\nb,2,y\nc,3,z\n")
    frame = tables.read_typed_csv(path, KINDS, usecols=["region", "corporation"], nrows=2)
    assert list(frame.columns) == ["region", "corporation"]
    assert frame.values.tolist() == [["x", "a"], ["y", "b"]]


def test_a_column_unknown_to_the_kinds_is_read_as_text_when_asked_for(tmp_path: Path) -> None:
    path = csv(tmp_path, "corporation,code\na,0012\n")
    frame = tables.read_typed_csv(path, KINDS, usecols=["code"])
    assert frame["code"].tolist() == ["0012"]


@pytest.mark.parametrize(
    "content",
    [b"", "corporation,lastmonth_activity\nabc,1\n".encode("utf-16"), b'a,b\n"unclosed,1\n'],
    ids=["empty", "utf-16", "unclosed-quote"],
)
def test_what_is_not_a_readable_csv_raises_one_of_csv_errors(tmp_path: Path, content: bytes) -> None:
    path = csv(tmp_path, content)
    with pytest.raises(tables.CSV_ERRORS):
        tables.read_typed_csv(path, KINDS)


# --- row hashes -----------------------------------------------------------------------------------


def test_equal_rows_hash_alike_however_their_numbers_were_typed() -> None:
    kinds = {"id": TEXT, "x": NUMERIC}
    as_ints = pd.DataFrame({"id": ["a", "b"], "x": np.array([1, 0], dtype="int64")})
    as_floats = pd.DataFrame({"id": ["a", "b"], "x": [1.0, -0.0]})
    assert tables.row_hashes(as_ints, kinds).tolist() == tables.row_hashes(as_floats, kinds).tolist()


def test_rows_that_differ_in_any_value_or_in_which_column_holds_it_hash_apart() -> None:
    kinds = {"a": NUMERIC, "b": NUMERIC, "id": TEXT}
    frame = pd.DataFrame({"a": [1.0, 2.0, 1.0, 1.0], "b": [2.0, 1.0, 2.0, 2.0], "id": ["x", "x", "y", "007"]})
    hashes = tables.row_hashes(frame, kinds)
    assert hashes.dtype == np.uint64 and len(set(hashes.tolist())) == 4


def test_text_ids_are_hashed_as_written() -> None:
    kinds = {"id": TEXT}
    hashes = tables.row_hashes(pd.DataFrame({"id": ["007", "7", "007"]}), kinds)
    assert hashes[0] == hashes[2] != hashes[1]


def test_rows_also_in_counts_rows_of_the_batch_found_in_the_reference() -> None:
    kinds = {"id": TEXT, "x": NUMERIC}
    reference = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    batch = pd.DataFrame({"x": [2, 3, 4, 2], "id": ["b", "c", "d", "b"], "extra": ["p", "q", "r", "s"]})
    # column order and extra batch columns do not matter; a duplicate counts each time
    assert tables.rows_also_in(batch, reference, kinds) == 3


def test_rows_also_in_is_zero_without_shared_columns_or_rows() -> None:
    kinds = {"id": TEXT}
    reference = pd.DataFrame({"id": ["a"]})
    assert tables.rows_also_in(pd.DataFrame({"other": ["a"]}), reference, kinds) == 0
    assert tables.rows_also_in(pd.DataFrame({"id": pd.Series([], dtype=object)}), reference, kinds) == 0
    assert tables.rows_also_in(pd.DataFrame({"id": ["a"]}), reference.iloc[:0], kinds) == 0


def test_found_in_sorted_agrees_with_isin_past_both_ends_and_in_any_order() -> None:
    rng = np.random.default_rng(3)
    known = np.sort(rng.integers(0, 2**63, 500, dtype=np.uint64))
    values = np.concatenate(
        [known[::7], known[:1] - np.uint64(1), known[-1:] + np.uint64(1), rng.integers(0, 2**63, 300, dtype=np.uint64)]
    )
    rng.shuffle(values)
    assert np.array_equal(tables.found_in_sorted(known, values), np.isin(values, known))
    assert not tables.found_in_sorted(np.empty(0, dtype=np.uint64), values).any()


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["a", None, "b", np.nan]),
        pd.Series(["a", None, "b"], dtype="category"),
        pd.Series([7, "7", None, 2.5, True], dtype=object),
        pd.Series([1.0, np.nan, 3.0]),
    ],
)
def test_as_text_gives_every_value_its_text_and_keeps_missing_missing(values: pd.Series) -> None:
    expected = [None if pd.isna(v) else str(v) for v in values.astype(object)]
    text = tables.as_text(values)
    assert text.dtype == object
    assert [None if isinstance(v, float) and np.isnan(v) else v for v in text] == expected  # missing: NaN
