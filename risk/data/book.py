"""The client book: the current clients, unlabelled, as the call list scores them.

``client_book`` is a CSV file, a folder of CSV files (relative to the config's folder), or a
database entry in the form of a ``database_sources`` one without a watermark (read whole each
time). The book goes through the checks every input does: columns typed by the master's kinds,
rows without an id set aside with the reason, duplicate ids named (the first row kept), rows
whose numeric feature holds no number set aside, missing values and categories the model never
saw counted. A target column, if present, is not read.

Its content hash says whether it changed: the files' bytes, or for a database the rows read
(order aside). Stdlib only at import: the cron fast path asks whether the files changed, by
their sizes and times first (file_signatures), and hashes them only when those differ.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from risk.core.artefacts import csv_files
from risk.core.files import NotRegularFile, open_regular_file, sha256_of
from risk.core.settings import Config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

    import pandas as pd

EXAMPLES = 5  # ids and lines named per check; the counts say how many there are


class BookError(RuntimeError):
    """The book cannot be used this run; the message is one line naming the file or source."""


class Book:
    """The checked book: ``frame`` (the id columns and the features, typed, one row per client),
    where it came from, its content hash and what the checks found."""

    __slots__ = ("frame", "source", "sha256", "files", "checks")

    def __init__(self, frame: pd.DataFrame, source: str, sha256: str, files: list | None, checks: dict[str, Any]):
        self.frame = frame
        self.source = source
        self.sha256 = sha256
        self.files = files
        self.checks = checks


# ----------------------------------------------------------------------------- which files, changed or not


def is_database_book(config: Config) -> bool:
    return isinstance(config["client_book"], dict)


def book_path(config: Config) -> Path:
    return (config.root / config["client_book"]).resolve()


def book_files(config: Config) -> list[Path]:
    """The book's CSV files (a file, or a folder's CSV files by name). Raises BookError."""
    path = book_path(config)
    if path.is_dir():
        files = csv_files(path)
        if not files:
            raise BookError(f"client_book: the folder {path} holds no CSV file")
        return files
    if not path.exists():
        raise BookError(f"client_book: {path} does not exist")
    return [path]


def file_signatures(files: list[Path]) -> list[list[Any]]:
    """[name, size, mtime_ns, inode] per file: what changes when a file is replaced or edited."""
    signatures = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise BookError(f"client_book: {path} cannot be read: {exc.strerror or exc}") from None
        signatures.append([path.name, stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return signatures


def files_hash(files: list[Path]) -> str:
    """SHA-256 over each file's name and bytes: a file added, removed, renamed or changed changes it."""
    digest = hashlib.sha256()
    for path in files:
        try:
            with open_regular_file(path) as handle:
                file_digest = sha256_of(handle)
        except (OSError, NotRegularFile) as exc:
            raise BookError(f"client_book: {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        digest.update(f"{path.name}\0{file_digest}\n".encode())
    return digest.hexdigest()


def files_hash_if_changed(config: Config, recorded: dict[str, Any]) -> str:
    """The files' content hash: ``recorded["book_hash"]`` when their signatures are those recorded
    (``recorded["book_files"]``, as the last list saw them), else computed. Raises BookError."""
    files = book_files(config)
    if recorded.get("book_files") == file_signatures(files) and recorded.get("book_hash"):
        return recorded["book_hash"]
    return files_hash(files)


# ----------------------------------------------------------------------------- reading


def read_book(
    config: Config, kinds: dict[str, str], features: dict[str, list[str]], known: dict[str, frozenset[str]]
) -> Book:
    """Read and check the book. ``kinds``: the master's column kinds; ``features``: the model's
    {"numeric": [...], "categorical": [...]}; ``known``: the categories the model saw per text
    feature. Raises BookError (one line) when the book cannot be used at all."""
    import io

    from risk.data import dbpull

    wanted = list(dict.fromkeys([*config["id_columns"], *features["numeric"], *features["categorical"]]))
    if is_database_book(config):
        source = dbpull.Source(config["client_book"], config.root)
        where = f"client_book ({source.name}, {source.where})"
        try:
            data = dbpull.read_whole(source)
        except dbpull.DatabaseSourceError as exc:
            raise BookError(f"{where}: {exc}") from None
        rows = _parse(io.BytesIO(data), where, wanted, kinds, features, config)
        sha256 = rows_hash(rows, kinds)  # before the checks change any column
        frame, checks = _checked([(where, rows)], config, features, known)
        return Book(frame, f"{source.name} ({source.where})", sha256, None, checks)
    paths = book_files(config)
    files = file_signatures(paths)
    parts, digest = [], hashlib.sha256()
    for path in paths:
        try:
            with open_regular_file(path) as handle:
                data = handle.read()
        except (OSError, NotRegularFile) as exc:
            raise BookError(f"client_book: {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        digest.update(f"{path.name}\0{hashlib.sha256(data).hexdigest()}\n".encode())  # as files_hash
        parts.append((config.display_path(path), _parse(io.BytesIO(data), path.name, wanted, kinds, features, config)))
        del data
    described = config.display_path(book_path(config))
    if file_signatures(paths) != files:
        raise BookError(f"client_book: {described} changed while it was being read (still being written?)")
    frame, checks = _checked(parts, config, features, known)
    return Book(frame, described, digest.hexdigest(), files, checks)


def rows_hash(frame: pd.DataFrame, kinds: dict[str, str]) -> str:
    """A hash of a database book's rows whatever order the database returned them in."""
    import numpy as np

    from risk.core.tables import row_hashes

    return hashlib.sha256(np.sort(row_hashes(frame, kinds)).tobytes()).hexdigest()


def _parse(
    source: Any, where: str, wanted: list[str], kinds: dict[str, str], features: dict[str, list[str]], config: Config
) -> pd.DataFrame:
    """One file's (or the database's) rows: the wanted columns, ids and text as text (text features
    as categories: a fraction of the memory), numeric columns as numbers where the parser can."""
    import pandas as pd

    from risk.core.tables import CSV_ERRORS

    text = set(config["id_columns"]) | {c for c in wanted if kinds.get(c, "text") != "numeric"}
    text -= set(features["numeric"])  # a numeric feature is read as a number whatever the master says
    dtype: dict[str, Any] = {c: ("category" if c in features["categorical"] else str) for c in text}
    dtype.update({c: str for c in config["id_columns"]})
    try:
        frame = pd.read_csv(
            source,
            dtype=dtype,
            usecols=lambda name: str(name).strip() in wanted,
            index_col=False,
            encoding="utf-8-sig",
            keep_default_na=True,
        )
    except UnicodeDecodeError as exc:
        raise BookError(f"client_book: {where} is not UTF-8 text (byte offset {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise BookError(f"client_book: {where} is empty (no header, no rows)") from None
    except CSV_ERRORS as exc:
        raise BookError(f"client_book: {where} is not a readable CSV: {' '.join(str(exc).split())[:200]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.columns.duplicated().any():
        raise BookError(
            f"client_book: {where} names a column twice: {sorted(set(frame.columns[frame.columns.duplicated()]))}"
        )
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise BookError(f"client_book: {where} lacks column(s) {missing} (the id columns and the model's features)")
    return frame[wanted]


def _checked(
    parts: list[tuple[str, pd.DataFrame]],
    config: Config,
    features: dict[str, list[str]],
    known: dict[str, frozenset[str]],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every part's rows, those that cannot be scored set aside with the reason; and the checks' findings."""
    import numpy as np
    import pandas as pd

    ids = config["id_columns"]
    set_aside: list[dict[str, Any]] = []
    kept_parts = []
    for where, frame in parts:
        lines = pd.Series(np.arange(len(frame)) + 2, index=frame.index)  # +1 the header, +1 counting from 1
        keep = np.ones(len(frame), dtype=bool)
        no_id = np.zeros(len(frame), dtype=bool)
        for column in ids:
            values = frame[column]  # read as text: str.strip needs no conversion first
            no_id |= (values.isna() | (values.str.strip() == "")).to_numpy()
        _note(set_aside, where, lines, no_id & keep, f"no value in the id column(s) {ids}")
        keep &= ~no_id
        for column in features["numeric"]:
            frame[column], bad = _numbers(frame[column])
            _note(
                set_aside,
                where,
                lines,
                bad & keep,
                f"column {column!r} holds a value that is not a finite number within ±3.4e38",
            )
            keep &= ~bad
        kept_parts.append((where, frame.loc[keep], lines[keep].to_numpy()))
    frame = pd.concat([part for _, part, _ in kept_parts], ignore_index=True) if kept_parts else pd.DataFrame()
    for column in features["categorical"]:  # categories of parts that differ: back to one categorical
        if frame[column].dtype != "category":
            frame[column] = frame[column].astype("category")
    # Where each kept row came from (its part, its line), named only for the few rows a check shows.
    part_of = np.concatenate([np.full(len(lines), i) for i, (_, _, lines) in enumerate(kept_parts)])
    line_of = np.concatenate([lines for _, _, lines in kept_parts])
    duplicated = frame.duplicated(subset=ids, keep="first").to_numpy()
    duplicate_ids = []
    if duplicated.any():
        examples = frame.loc[duplicated, ids].drop_duplicates().head(EXAMPLES)
        duplicate_ids = ["/".join(str(v) for v in row) for row in examples.itertuples(index=False)]
        set_aside.append(
            {
                "reason": "duplicate id (the first row with it kept)",
                "rows": int(duplicated.sum()),
                "first": [
                    f"{kept_parts[part_of[i]][0]} line {line_of[i]}" for i in np.flatnonzero(duplicated)[:EXAMPLES]
                ],
            }
        )
        frame = frame.loc[~duplicated].reset_index(drop=True)
    if frame.empty:
        reasons = "; ".join(f"{entry['rows']} row(s): {entry['reason']}" for entry in set_aside) or "no rows"
        raise BookError(f"client_book: no client can be scored ({reasons})")
    checks = {
        "rows_read": int(sum(len(part) for _, part in parts)),
        "rows_kept": len(frame),
        "set_aside": set_aside,
        "duplicate_ids": {"count": int(duplicated.sum()), "examples": duplicate_ids},
        "missing_values": {c: int(frame[c].isna().sum()) for c in [*features["numeric"], *features["categorical"]]},
        "unknown_categories": _unknown_categories(frame, features, known),
    }
    checks["missing_values"] = {c: n for c, n in checks["missing_values"].items() if n}
    return frame, checks


def _numbers(values: pd.Series) -> tuple[pd.Series, Any]:
    """A numeric column as float64, and where a value is not a finite number a model can take (missing
    is not bad): beyond FLOAT32_OVERFLOW a tree ensemble refuses the whole chunk, not just that row."""
    import numpy as np
    import pandas as pd

    from risk.core.tables import FLOAT32_OVERFLOW

    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64"), np.ones(len(values), dtype=bool)
    if pd.api.types.is_numeric_dtype(values):  # the parser read every value as a number
        parsed = values.astype("float64")
        return parsed, np.abs(parsed.to_numpy()) >= FLOAT32_OVERFLOW
    text = values.str.strip()
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = (parsed.isna() & text.notna() & (text != "")).to_numpy()
    return parsed, bad | (np.abs(parsed.to_numpy()) >= FLOAT32_OVERFLOW)


def _note(set_aside: list[dict[str, Any]], where: str, lines: pd.Series, rows: Any, reason: str) -> None:
    count = int(rows.sum())
    if count:
        first = [f"{where} line {line}" for line in lines[rows].head(EXAMPLES).tolist()]
        set_aside.append({"reason": reason, "rows": count, "first": first})


def _unknown_categories(
    frame: pd.DataFrame, features: dict[str, list[str]], known: dict[str, frozenset[str]]
) -> dict[str, dict[str, Any]]:
    """Per text feature, the rows whose category the model never saw (scored as the model scores
    any unseen category), with a few of those values."""
    found = {}
    for column in features["categorical"]:
        if column not in known:
            continue
        values = frame[column]
        unseen = values.notna() & ~values.astype(object).isin(known[column])
        if unseen.any():
            found[column] = {
                "rows": int(unseen.sum()),
                "values": sorted(str(v) for v in values[unseen].astype(object).unique()[:EXAMPLES]),
            }
    return found
