"""Rows a request brings, checked against the deployed model's schema before anything is scored.

JSON records, a CSV body or a named data file become one ``Batch``: numeric features as a float
matrix (NaN where missing: the model imputes them), categories as text or None. Anything that does
not fit raises ``InputError``, whose message names the field or column, never the caller's value.
Scoring a batch is ``compiled.py``'s job.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from risk.core.tables import CATEGORICAL, NUMERIC, TEXT, read_typed_csv

logger = logging.getLogger(__name__)

LINE_ENDS = re.compile(r"\r\n|\r|\n")  # the csv module's line ends (str.splitlines knows more)
FEW_ROWS = 16  # up to this many rows, per-row Python is cheaper than numpy's per-call cost
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


class InputError(ValueError):
    """The request's rows do not fit the model's schema. The message names the field, never a value."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Schema:
    """The columns a deployed model reads, and the id columns echoed back with each prediction."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    ids: tuple[str, ...]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], id_columns: list[str]) -> Schema:
        features = metadata["features"]
        return cls(tuple(features[NUMERIC]), tuple(features[CATEGORICAL]), tuple(id_columns))

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def describe(self) -> dict[str, list[str]]:
        return {NUMERIC: list(self.numeric), CATEGORICAL: list(self.categorical), "id_columns": list(self.ids)}


@dataclass
class Batch:
    """Validated rows: numeric features as a float matrix (NaN = missing), categories as text or None."""

    numeric: np.ndarray
    categorical: list[list[str | None]]
    ids: dict[str, list[Any]] = field(default_factory=dict)
    ignored_columns: tuple[str, ...] = ()  # the columns given that the model does not use, by name

    @property
    def rows(self) -> int:
        return int(self.numeric.shape[0])

    def missing_values(self, schema: Schema) -> dict[str, int]:
        """Missing values per feature column (the model imputes them), only where there are some."""
        if self.rows <= FEW_ROWS:  # Python's loop beats numpy's per-call cost on a few values
            columns = zip(*self.numeric.tolist()) if self.rows else [()] * len(schema.numeric)
            counts = {name: sum(v != v for v in values) for name, values in zip(schema.numeric, columns)}  # NaN != NaN
        else:
            counts = dict(zip(schema.numeric, np.isnan(self.numeric).sum(axis=0).tolist()))
        counts.update(
            {name: sum(v is None for v in values) for name, values in zip(schema.categorical, self.categorical)}
        )
        return {name: int(count) for name, count in counts.items() if count}

    def frame(self, schema: Schema) -> pd.DataFrame:
        """The rows as ``scoring.feature_frame`` types them, for scikit-learn."""
        columns: dict[str, Any] = {name: self.numeric[:, i] for i, name in enumerate(schema.numeric)}
        for name, values in zip(schema.categorical, self.categorical):
            columns[name] = pd.Series([np.nan if v is None else v for v in values], dtype="object")
        return pd.DataFrame(columns, index=pd.RangeIndex(self.rows))


def check_row_count(rows: int, max_rows: int) -> None:
    if rows == 0:
        raise InputError("no rows to score: the input is empty")
    if max_rows and rows > max_rows:
        raise InputError(f"{rows} rows exceed the limit of {max_rows} rows per request (api_max_rows)", status=413)


def batch_from_records(records: Any, schema: Schema, max_rows: int) -> Batch:
    """Rows given as JSON objects. Numbers must be JSON numbers, categories strings; null is missing."""
    if not isinstance(records, list):
        raise InputError(f"records must be an array of objects, not {_json_type(records)}")
    check_row_count(len(records), max_rows)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"records[{index}] must be an object, not {_json_type(record)}")
    numeric = np.empty((len(records), len(schema.numeric)), dtype=np.float64)
    for column, name in enumerate(schema.numeric):
        for index, record in enumerate(records):
            numeric[index, column] = _json_number(record, name, index)
    categorical = [
        [_json_category(record, name, index) for index, record in enumerate(records)] for name in schema.categorical
    ]
    ids = {}
    for name in schema.ids:
        if any(name in record for record in records):
            ids[name] = [_json_id(record.get(name), name, index) for index, record in enumerate(records)]
    known = set(schema.features) | set(schema.ids)
    ignored = {key for record in records for key in record} - known
    return Batch(numeric, categorical, ids, tuple(sorted(ignored)))


def _json_type(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return JSON_TYPES.get(type(value), "an unsupported value")


def _json_number(record: dict[str, Any], name: str, index: int) -> float:
    try:
        value = record[name]
    except KeyError:
        raise InputError(f"records[{index}]: missing field {name!r} (send null for a missing value)") from None
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"records[{index}].{name} must be a number or null, not {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise InputError(f"records[{index}].{name} is too large a number") from None
    if math.isinf(number):
        raise InputError(f"records[{index}].{name} must be a finite number")
    return number  # NaN (a non-standard JSON literal) counts as missing, like null


def _json_category(record: dict[str, Any], name: str, index: int) -> str | None:
    try:
        value = record[name]
    except KeyError:
        raise InputError(f"records[{index}]: missing field {name!r} (send null for a missing value)") from None
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"records[{index}].{name} must be a string or null, not {_json_type(value)}")


def _json_id(value: Any, name: str, index: int) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    raise InputError(
        f"records[{index}].{name} (an id column) must be a string, a number or null, not {_json_type(value)}"
    )


def read_csv_bytes(data: bytes, schema: Schema, max_columns: int = 0) -> pd.DataFrame:
    """A CSV body read by ``tables.read_typed_csv``, as ingestion reads files: text columns kept as text, names stripped.

    Stricter than pandas on shape: a row with more or fewer fields than the header is refused,
    because pandas would silently take extra leading fields as an index (shifting every column)
    or fill short rows with missing values. A header wider than ``max_columns`` (0: no limit) is
    refused before any row is read: every step after it costs time per column.
    """
    if not data.strip():
        raise InputError("the CSV is empty: it needs a header line and at least one row")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the CSV is not UTF-8 text") from None
    header = _check_shape(text, max_columns)
    repeated = {name for name, count in Counter(header).items() if count > 1}  # linear in the columns
    if repeated:
        named = sorted(repeated & set(schema.features + schema.ids))
        raise InputError(f"the CSV header repeats {len(repeated)} column name(s)" + (f": {named}" if named else ""))
    kinds = {name: TEXT for name in schema.categorical + schema.ids}
    try:
        return read_typed_csv(io.StringIO(text), kinds)
    except pd.errors.EmptyDataError:
        raise InputError("the CSV is empty: it needs a header line and at least one row") from None
    except (pd.errors.ParserError, ValueError, OverflowError):
        raise InputError("the body is not a readable CSV") from None


def _check_shape(text: str, max_columns: int = 0) -> list[str]:
    """The stripped header names, once every non-blank row has as many fields as the header."""
    if '"' not in text and "\x00" not in text:  # no quoting: each line is a row, its commas split fields
        lines = LINE_ENDS.split(text)
        if max(map(len, lines)) <= csv.field_size_limit():  # else the csv module's refusal, below
            return _check_plain_shape(lines, max_columns)
    try:
        rows = csv.reader(io.StringIO(text, newline=""))
        header = [name.strip() for name in next(rows, [])]
        _check_width(header, max_columns)
        for line, fields in enumerate(rows, start=2):
            # A blank line is one empty or white field; a line of commas is a row of the wrong width
            # (pandas would take its extra fields as an index, warning, and shift the columns).
            if fields and len(fields) != len(header) and (len(fields) > 1 or fields[0].strip()):
                raise InputError(_wrong_width(line, len(fields), len(header)))
    except csv.Error:
        raise InputError("the body is not a readable CSV") from None
    return header


def _check_plain_shape(lines: list[str], max_columns: int) -> list[str]:
    """``_check_shape`` of a CSV without quotes, line by line: the same answers, a few times faster."""
    header = [name.strip() for name in lines[0].split(",")] if lines[0] else []
    _check_width(header, max_columns)
    width = len(header)
    for line, text in enumerate(lines[1:], start=2):
        fields = text.count(",") + 1
        if fields != width and (fields > 1 or text.strip()):  # an empty or white line is blank
            raise InputError(_wrong_width(line, fields, width))
    return header


def _check_width(header: list[str], max_columns: int) -> None:
    if max_columns and len(header) > max_columns:
        raise InputError(
            f"the CSV header has {len(header)} columns, more than the limit of {max_columns} (api_max_columns)",
            status=413,
        )


def _wrong_width(line: int, fields: int, width: int) -> str:
    return f"the body is not a readable CSV: row {line} has {fields} fields but the header has {width}"


def batch_from_frame(frame: pd.DataFrame, schema: Schema, max_rows: int) -> Batch:
    """Rows read from a CSV. Numeric cells must parse as finite numbers; empty cells are missing."""
    missing = [name for name in schema.features if name not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}: the model needs {list(schema.features)}")
    check_row_count(len(frame), max_rows)
    numeric = np.empty((len(frame), len(schema.numeric)), dtype=np.float64)
    for column, name in enumerate(schema.numeric):
        numeric[:, column] = _numeric_column(frame[name], name)
    categorical = [_text_column(frame[name]) for name in schema.categorical]
    ids = {name: _id_column(frame[name]) for name in schema.ids if name in frame.columns}
    ignored = set(map(str, frame.columns)) - set(schema.features) - set(schema.ids)
    return Batch(numeric, categorical, ids, tuple(sorted(ignored)))


def _numeric_column(values: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        raise InputError(f"column {name!r} must be numeric, not true/false")
    if pd.api.types.is_numeric_dtype(values):
        parsed = values.astype("float64")
    else:
        text = values.astype("object").where(values.notna(), None).map(lambda v: v.strip() if isinstance(v, str) else v)
        parsed = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = parsed.isna() & text.notna() & (text != "")
        if bad.any():
            raise InputError(
                f"column {name!r} must be numeric but {int(bad.sum())} value(s) are not "
                f"(first on data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1})"
            )
    array = parsed.to_numpy(dtype=np.float64)
    infinite = np.isinf(array)
    if infinite.any():
        raise InputError(f"column {name!r} must hold finite numbers but {int(infinite.sum())} value(s) are infinite")
    return array


def _text_column(values: pd.Series) -> list[str | None]:
    return [v if isinstance(v, str) else (None if _is_missing(v) else str(v)) for v in values.tolist()]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _id_column(values: pd.Series) -> list[Any]:
    return _text_column(values) if values.dtype == object else _json_safe_list(values)


def _json_safe_list(values: pd.Series) -> list[Any]:
    return [None if _is_missing(v) or (isinstance(v, float) and math.isinf(v)) else v for v in values.tolist()]


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    """Rows [start, stop) of the features (ids are not needed to score)."""
    return Batch(batch.numeric[start:stop], [values[start:stop] for values in batch.categorical])
