"""Tables as every step reads them: the column-type vocabulary, the typed CSV reader, row hashes.

A column of the master dataset is either ``numeric`` (read as numbers) or ``text`` (kept as
written: an id like ``007`` must stay ``007``); ingestion records which in ``master_state.json``.
A model sees its text features as ``categorical`` ones: that word names a feature's role in a
pipeline, never a column's kind in a file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

NUMERIC = "numeric"
TEXT = "text"
# The smallest magnitude float32 rounds to infinity (half an ulp past its max): scikit-learn's trees
# compare float32 features and refuse a batch holding one, so such a value cannot be scored.
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
CATEGORICAL = "categorical"  # a text column used as a feature (training metadata, drift, the compiled scorer)

# What pandas raises on a file that is not a readable CSV.
CSV_ERRORS = (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError)


def text_dtypes(kinds: dict[str, str], columns: Iterable[str] | None = None) -> dict[str, type]:
    """``dtype=`` for ``read_csv``: every column that is not numeric stays text."""
    wanted = kinds if columns is None else {name: kinds.get(name, TEXT) for name in columns}
    return {name: str for name, kind in wanted.items() if kind != NUMERIC}


def read_typed_csv(
    source: Path | str | IO[str] | IO[bytes],
    kinds: dict[str, str],
    usecols: list[str] | None = None,
    nrows: int | None = None,
    categories: Iterable[str] = (),
) -> pd.DataFrame:
    """Read a CSV with text columns kept as text and column names stripped.

    ``categories``: text columns read as pandas categories (each distinct value held once, not
    one string a row: a fraction of the memory for a column of few values).

    ``index_col=False``: a trailing comma on every row must not turn the first column into the
    index and shift the others (pandas' default guess). A byte-order mark is not a column name.
    """
    dtype: dict[str, Any] = text_dtypes(kinds) if usecols is None else text_dtypes(kinds, usecols)
    dtype.update((name, "category") for name in categories if name in dtype)
    options: dict[str, Any] = {"dtype": dtype, "index_col": False, "usecols": usecols, "nrows": nrows}
    if not isinstance(source, io.TextIOBase):
        options["encoding"] = "utf-8-sig"
    frame = pd.read_csv(source, **options)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame[usecols] if usecols is not None else frame


def csv_bytes(frame: pd.DataFrame, header: bool = True) -> bytes:
    """``frame.to_csv(index=False, lineterminator="\\n")`` in UTF-8, read back by :func:`read_typed_csv`
    as the same rows.

    Python 3.11's csv writer quotes a text value holding a line feed but not one holding a bare
    carriage return, where pandas' reader ends a row: such a row is written again with its text
    values quoted. Every other row keeps the bytes to_csv gives it."""
    data = frame.to_csv(header=header, index=False, lineterminator="\n").encode("utf-8")
    if b"\r" not in data:
        return data
    ends = _csv_row_ends(data)
    codes = np.frombuffer(data, dtype=np.uint8)
    bare = np.flatnonzero(codes == ord("\r"))
    bare = bare[_quotes_before(codes, bare) % 2 == 0]  # outside quotes
    rows = np.unique(np.searchsorted(ends, bare, side="right")) - int(header)  # the header is row -1
    rows = rows[rows >= 0]
    if not len(rows):
        return data
    quoted = (
        frame.iloc[rows]
        .to_csv(header=False, index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
        .encode("utf-8")
    )
    quoted_ends = _csv_row_ends(quoted)
    starts, quoted_starts = np.concatenate([[0], ends[:-1]]), np.concatenate([[0], quoted_ends[:-1]])
    pieces, done = [], 0
    for j, line in enumerate(rows + int(header)):
        pieces += [data[done : starts[line]], quoted[quoted_starts[j] : quoted_ends[j]]]
        done = ends[line]
    pieces.append(data[done:])
    return b"".join(pieces)


def _csv_row_ends(data: bytes) -> np.ndarray:
    """Where each row of csv writer output ends (after its line feed): at a line feed that an even
    number of quote characters precede (a doubled quote inside a quoted value counts two)."""
    codes = np.frombuffer(data, dtype=np.uint8)
    feeds = np.flatnonzero(codes == ord("\n"))
    return feeds[_quotes_before(codes, feeds) % 2 == 0] + 1


def _quotes_before(codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.flatnonzero(codes == ord('"')), positions)


def row_hashes(frame: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """One 64-bit hash a row, independent of how a file happened to type its numbers.

    The one scheme for "is this row already there": ingestion's duplicate index, scoring's
    test-rows-in-training count and the drift check's batch-rows-in-training count.
    """
    combined = np.zeros(len(frame), dtype=np.uint64)
    for column in frame.columns:
        values = frame[column].to_numpy()
        # + 0.0 turns -0.0 into 0.0: equal values must hash alike.
        values = values.astype("float64") + 0.0 if kinds.get(column) == NUMERIC else values.astype(object)
        # categorize=False: ids are mostly unique, so factorising them first only costs time.
        column_hash = pd.util.hash_array(values, categorize=False)
        with np.errstate(over="ignore"):  # multiply-and-add modulo 2**64, column order matters
            combined = combined * np.uint64(0x100000001B3) + column_hash
    return combined


def rows_also_in(frame: pd.DataFrame, reference: pd.DataFrame, kinds: dict[str, str]) -> int:
    """How many rows of ``frame`` are also rows of ``reference`` (on the columns both have)."""
    columns = [c for c in reference.columns if c in frame.columns]
    if not columns or frame.empty or reference.empty:
        return 0
    known = np.sort(row_hashes(reference[columns], kinds))
    return int(found_in_sorted(known, row_hashes(frame[columns], kinds)).sum())


def found_in_sorted(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of ``values`` are in ``sorted_values`` (ascending), by binary search.

    ``np.isin`` sorts both arrays together on every call: 0.39 s for 300,000 hashes against
    700,000, where searching a sorted copy takes 0.06 s. Sorted ``values`` walk it in order."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    position = np.searchsorted(sorted_values, values)
    inside = position < len(sorted_values)
    hit = np.zeros(len(values), dtype=bool)
    hit[inside] = sorted_values[position[inside]] == values[inside]
    return hit


def as_text(values: pd.Series) -> pd.Series:
    """Text values as text, missing as NaN, anything else as its text (``7`` and ``"7"`` are one level).

    Text already (the usual case: read as text, or as categories of text) needs no value-by-value
    conversion: only the checks, in C, that it is all text."""
    if isinstance(values.dtype, pd.CategoricalDtype) and pd.api.types.infer_dtype(values.cat.categories) == "string":
        return values.astype("object").where(values.notna(), np.nan)
    text = values.astype("object").where(values.notna(), np.nan)
    if pd.api.types.infer_dtype(text, skipna=True) == "string":
        return text
    return text.map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
