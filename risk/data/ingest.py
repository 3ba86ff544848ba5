"""Merge new files from the input folder into the master dataset.

Each new file is validated before it touches the master: a readable UTF-8 CSV with data
rows, the target and every master column present, values of the master's types. A file
that fails is copied to ``<output>/quarantine/`` with a reason file beside it and recorded,
so it is not retried until its content changes. Accepted rows that are already in the
master (or repeated within the batch) are dropped and counted. The master itself, its
schema and the row-hash index that finds those duplicates are masterstore.py's.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from risk.core.artefacts import (
    LAST_RUN_FILE,
    LATEST_BATCH_FILE,
    QUARANTINE_FOLDER,
    utc_now,
    utc_stamp,
)
from risk.core.files import (
    NAME_MAX_BYTES,
    NotRegularFile,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    open_regular_file,
)
from risk.core.jsonfiles import append_json_line
from risk.core.settings import Config
from risk.core.tables import read_typed_csv
from risk.data import ledger
from risk.data.masterstore import (
    FileRows,
    InvalidFile,
    MasterStore,
    NewRows,
    RawRows,
    coerce_types,
    csv_header,
    declared_text_kinds,
    infer_kinds,
    integer_labels,
    master_path,
)

logger = logging.getLogger(__name__)


class StillBeingWritten(Exception):
    """The file changed while it was being read, or went: it is not recorded, and a later
    run reads what is there then."""


class RetryRefused(ValueError):
    """``--retry NAME`` cannot retry that name; the message says why."""


@dataclass
class IngestionResult:
    files_ingested: list[dict[str, Any]] = field(default_factory=list)
    files_set_aside: list[dict[str, Any]] = field(default_factory=list)
    files_waiting: list[str] = field(default_factory=list)  # changed while read: a later run reads them
    rows_added: int = 0
    seconds: float = 0.0
    new_batches: list[pd.DataFrame] = field(default_factory=list, repr=False)  # rows added, per file

    def summary(self) -> dict[str, Any]:
        return {
            "files_ingested": [f["name"] for f in self.files_ingested],
            "files_set_aside": [{"name": f["name"], "reason": f["reason"]} for f in self.files_set_aside],
            "files_waiting": list(self.files_waiting),
            "rows_added": self.rows_added,
            "seconds": round(self.seconds, 4),
        }


def ingest_new_files(config: Config, pending: list[ledger.SourceFile] | None = None) -> IngestionResult:
    """Validate and merge every pending source file. Returns what was read and set aside.

    Raises MasterMissing, before anything is read, when the master dataset is missing or
    shorter than the record says.
    """
    started = time.perf_counter()
    config.output_folder.mkdir(parents=True, exist_ok=True)
    if pending is None:
        pending = ledger.pending_files(config)
    store = MasterStore.open(config)
    result = merge_files(config, pending, store, recording=True)
    result.seconds = time.perf_counter() - started
    if result.files_ingested or result.files_set_aside:  # timings of real work only, for diagnostics' execution_time()
        atomic_write_json(config.output_folder / LAST_RUN_FILE, {**result.summary(), "finished_at": utc_now()})
    return result


def merge_files(
    config: Config, pending: list[ledger.SourceFile], store: MasterStore, recording: bool
) -> IngestionResult:
    """Judge each file and append the new rows of those accepted to the master. With
    ``recording`` (every run but a rebuild) each file judged gets a record entry, the
    rejected ones a quarantine copy, and the rows added become ``latest_batch.csv``."""
    result = IngestionResult()
    entries, judged_by_config, accepted = _judge_files(config, pending, store, recording, result)
    batches = _count_new_rows(result, accepted, store.take_new_rows())
    if batches:
        _append_batches(config, store, result, batches, recording)
    if recording:
        _record_entries(config, entries, judged_by_config)
    return result


def _judge_files(
    config: Config, pending: list[ledger.SourceFile], store: MasterStore, recording: bool, result: IngestionResult
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[FileRows]]:
    """Read and judge each file, registering the rows of those accepted with ``store``.
    Returns the record entries, those set aside for a reason the configuration decides, and
    the rows of the files accepted; fills ``result``'s lists of files."""
    run_id = uuid.uuid4().hex[:12]
    entries: list[dict[str, Any]] = []
    judged_by_config: list[dict[str, Any]] = []  # set aside for a reason the configuration decides
    accepted: list[FileRows] = []
    for source, parsed in _read_ahead(pending, store, config):
        entry = _entry(source, run_id)
        entry.update(
            getattr(source, "lineage", {})
        )  # a database pull (dbsource.Snapshot) names its source and watermark range
        try:
            file_rows = _rows_for_master(source, parsed.result(), store, config)
            store.register(file_rows)
        except StillBeingWritten as exc:
            logger.info("%s %s: not read this run", ledger.text_name(source.name), exc)
            result.files_waiting.append(source.name)
            continue
        except Exception as exc:  # one file's failure, whatever it is, must not stop the others
            reason, depends_on_config = _rejection(source, exc)
            entry.update(status=ledger.STATUS_SET_ASIDE, reason=reason)
            if depends_on_config:
                judged_by_config.append(entry)
            if recording:
                _set_aside(config, source, reason)
            result.files_set_aside.append(entry)
        else:
            entry.update(status=ledger.STATUS_INGESTED, notes=file_rows.notes)
            accepted.append(file_rows)
            result.files_ingested.append(entry)
        entries.append(entry)
    return entries, judged_by_config, accepted


def _count_new_rows(result: IngestionResult, accepted: list[FileRows], batches: list[NewRows]) -> list[NewRows]:
    """Note in each ingested file's entry its rows read, added and dropped as duplicates.
    Returns the batches that hold new rows."""
    for entry, file_rows, new_rows in zip(result.files_ingested, accepted, batches):
        entry.update(
            rows_read=file_rows.rows_read,
            rows_missing_target=file_rows.rows_missing_target,
            rows_added=len(new_rows.frame),
            duplicates_dropped=len(file_rows.frame) - len(new_rows.frame),
        )
        logger.info("read %s: %d rows, %d new", entry["name"], entry["rows_read"], entry["rows_added"])
    return [b for b in batches if len(b.frame)]


def _append_batches(
    config: Config, store: MasterStore, result: IngestionResult, batches: list[NewRows], recording: bool
) -> None:
    """Append the new rows to the master (and, with ``recording``, write them as the latest batch)."""
    result.new_batches = [b.frame for b in batches]
    result.rows_added = sum(len(b.frame) for b in batches)
    # Master first, then the record: after a crash in between, the file is read again and
    # its rows are recognised as duplicates, so nothing is lost or doubled.
    csv_body = b"".join(b.csv_body() for b in batches)
    first_batch = store.state is None or not master_path(config).exists()
    store.append(csv_body, result.rows_added, result.new_batches)
    if recording:
        _write_latest_batch(config, csv_header(store.columns), csv_body, same_as_master=first_batch)


def _record_entries(config: Config, entries: list[dict[str, Any]], judged_by_config: list[dict[str, Any]]) -> None:
    """Append each file's entry to the record, then rewrite ``ingestedfiles.txt``."""
    # What they were judged under: the configuration, and the master's columns as this
    # run leaves them (they are fixed once set, so earlier files were judged under them too).
    context = ledger.judging_context(config) if judged_by_config else None
    for entry in judged_by_config:
        entry["judged_under"] = context
    for entry in entries:
        append_json_line(ledger.record_path(config), entry)
    if entries:
        ledger.write_ingested_names(config)


def _rejection(source: ledger.SourceFile, exc: Exception) -> tuple[str, bool]:
    """The reason recorded for a file that could not be merged, and whether it depends on
    the configuration. Logged here, once per file judged."""
    name = ledger.text_name(source.name)
    if isinstance(exc, InvalidFile):
        logger.warning("set aside %s: %s", name, exc)
        return str(exc), exc.depends_on_config
    if isinstance(exc, OSError):
        logger.warning("set aside %s: cannot be read: %s", name, exc.strerror or exc)
        return f"cannot be read: {exc.strerror or exc}", False
    logger.exception("set aside %s: checking it failed unexpectedly", name)
    return (
        f"checking it failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}); retry with ingestion.py --retry",
        False,
    )


def _write_latest_batch(config: Config, header: bytes, csv_body: bytes, same_as_master: bool) -> None:
    """Keep the rows this run added as ``latest_batch.csv`` (diagnostics measure drift on it)."""
    target = config.output_folder / LATEST_BATCH_FILE
    if not same_as_master:
        atomic_write_bytes(target, header + csv_body)
        return
    # The first batch is the whole master: a second name for the same bytes saves writing
    # them again. Safe because files here are only ever replaced by rename, never edited.
    staging = target.with_name(f".{target.name}.{os.getpid()}.link")
    staging.unlink(missing_ok=True)
    os.link(master_path(config), staging)
    os.replace(staging, target)


def _entry(source: ledger.SourceFile, run_id: str) -> dict[str, Any]:
    entry = {
        "name": source.name,
        "sha256": source.sha256,
        "size": source.size,
        "run_id": run_id,
        "ingested_at": utc_now(),
    }
    if source.identity != source.sha256:  # never read: what it was stands in for a hash
        entry["identity"] = source.identity
    return entry


# --- reading one file: its bytes, their size limits, the CSV parse ----------------------------


def _read_ahead(
    pending: list[ledger.SourceFile], store: MasterStore, config: Config
) -> Iterator[tuple[ledger.SourceFile, Future]]:
    """Each pending file with its parse, the next file being parsed while the caller checks
    and hashes this one (pandas' parser releases the GIL, so the two overlap on two cores).

    Reading needs the master's column kinds, fixed once a first file is accepted: until
    then files are parsed one at a time, in order.
    """
    limits = (config["max_field_bytes"], config["max_row_bytes"])

    def submit(source: ledger.SourceFile, kinds: dict[str, str]) -> Future:
        if source.problem is not None:  # never opened: the reason is known already
            refused: Future = Future()
            refused.set_exception(InvalidFile(source.problem))
            return refused
        return reader.submit(_read_csv, source, kinds, limits)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as reader:
        upcoming: Future | None = None
        for index, source in enumerate(pending):
            current = upcoming or submit(source, store.kinds or declared_text_kinds(config))
            upcoming = None
            if store.state is not None and index + 1 < len(pending):
                upcoming = submit(pending[index + 1], store.kinds)
            yield source, current


def _read_csv(source: ledger.SourceFile, kinds: dict[str, str], limits: tuple[int, int]) -> tuple[bytes, pd.DataFrame]:
    data = _read_source(source)
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise StillBeingWritten("changed while it was being read (still being written?)")
    _refuse_other_formats(data)
    _require_last_line_end(data)
    lines = _limit_sizes(data, *limits)
    try:
        frame = read_typed_csv(io.BytesIO(data), kinds)
    except UnicodeDecodeError as exc:
        raise InvalidFile(f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise InvalidFile("empty file (no header, no rows)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InvalidFile(f"not a readable CSV: {str(exc).strip()[:200]}") from None
    if frame.columns.duplicated().any():
        raise InvalidFile(f"duplicate column names {sorted(set(frame.columns[frame.columns.duplicated()]))}")
    if lines is not None and b'"' in data and (lines.text_lines != len(frame) + 1 or lines.longest > limits[0]):
        # Quoted fields span lines, or hold commas on a long line: the line lengths alone
        # cannot bound each field and row, so measure the parsed values.
        _limit_parsed_sizes(frame, *limits)
    return data, frame


def _read_source(source: ledger.SourceFile) -> bytes:
    """The file's bytes, read without following a link or blocking on a FIFO."""
    try:
        with open_regular_file(source.path) as handle:
            return handle.read()
    except NotRegularFile as exc:  # swapped in since the folder was listed
        raise InvalidFile(f"{exc.kind}: not read (it replaced a file after the folder was listed)") from None
    except FileNotFoundError:  # nothing to record: if it comes back, it is new again
        raise StillBeingWritten("was removed or renamed after the folder was listed") from None


def _require_last_line_end(data: bytes) -> None:
    """A last line without a line end is what a file cut short looks like: not read."""
    if data and data[-1:] not in (b"\n", b"\r"):
        raise InvalidFile(
            "the last line has no line end: the file looks cut short (still being written?); "
            "it is read again once it changes (complete it or end its last line)"
        )


# Newlines are searched for in slices of this many bytes, to bound the memory it takes.
_SCAN_BYTES = 8 * 1024 * 1024


def _line_spans(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and length of every line (line ends excluded)."""
    view = np.frombuffer(data, dtype=np.uint8)
    ends = [np.flatnonzero(view[i : i + _SCAN_BYTES] == 10) + i for i in range(0, len(view), _SCAN_BYTES)]
    ends.append(np.array([len(data)]))
    stops = np.concatenate(ends)
    starts = np.concatenate(([0], stops[:-1] + 1))
    return starts, stops - starts


@dataclass
class _Lines:
    text_lines: int  # lines that are not empty
    longest: int  # bytes


def _limit_sizes(data: bytes, max_field: int, max_row: int) -> _Lines | None:
    """Refuse a file with a line longer than ``max_row`` bytes or an unquoted field longer
    than ``max_field``, before it is parsed (a 200 MB cell must not reach the parser).
    Returns what the lines look like, or None for a file too small to break a limit."""
    if len(data) <= max_field:
        return None
    starts, lengths = _line_spans(data)
    longest = int(lengths.argmax())
    if lengths[longest] > max_row:
        raise InvalidFile(
            f"line {longest + 1} is {int(lengths[longest]):,} bytes, over max_row_bytes ({max_row:,})",
            depends_on_config=True,
        )
    for line in np.flatnonzero(lengths > max_field):  # only a long line can hold a long field
        start = int(starts[line])
        widest = max(len(f) for f in data[start : start + int(lengths[line])].split(b","))
        if widest > max_field:
            raise InvalidFile(
                f"a field on line {line + 1} is {widest:,} bytes, over max_field_bytes ({max_field:,})",
                depends_on_config=True,
            )
    return _Lines(text_lines=int(np.count_nonzero(lengths)), longest=int(lengths[longest]))


def _limit_parsed_sizes(frame: pd.DataFrame, max_field: int, max_row: int) -> None:
    """The same limits on the parsed text values (a quoted field may span several lines)."""
    row_bytes = np.zeros(len(frame), dtype=np.int64)
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        sizes = (
            frame[column].map(lambda v: len(v.encode("utf-8", "surrogatepass")) if isinstance(v, str) else 0).to_numpy()
        )
        if len(sizes) and sizes.max() > max_field:
            row = int(sizes.argmax())
            raise InvalidFile(
                f"a value of column {column!r} (data row {row + 1}) is {int(sizes[row]):,} bytes, "
                f"over max_field_bytes ({max_field:,})",
                depends_on_config=True,
            )
        row_bytes += sizes
    if len(row_bytes) and row_bytes.max() > max_row:
        row = int(row_bytes.argmax())
        raise InvalidFile(f"data row {row + 1} is over max_row_bytes ({max_row:,})", depends_on_config=True)


# Signatures of files that are often dropped by mistake where CSVs belong.
_FORMAT_SIGNATURES = {
    b"\x1f\x8b": "a gzip-compressed file",
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx workbook is one)",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office document",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
}


def _refuse_other_formats(data: bytes) -> None:
    """Name what a file is when it is plainly not CSV text, rather than a parser error."""
    for signature, kind in _FORMAT_SIGNATURES.items():
        if data.startswith(signature):
            raise InvalidFile(f"not CSV text: the file is {kind}")
    header = data.split(b"\n", 1)[0]
    if b"," not in header:
        for separator, name in ((b";", "semicolons"), (b"\t", "tabs"), (b"|", "pipes")):
            if separator in header:
                raise InvalidFile(f"the header is separated by {name}; files must be comma-separated CSV")


# --- checking one file against the master, typing its rows ------------------------------------


def _rows_for_master(
    source: ledger.SourceFile, parsed: tuple[bytes, pd.DataFrame], store: MasterStore, config: Config
) -> FileRows:
    """The file's rows with the target, typed to the master's columns and kinds; raises
    InvalidFile (the reason recorded) for a file that cannot join the master."""
    data, frame = parsed
    if frame.empty:
        raise InvalidFile("no data rows (the file holds only a header)")
    if config.target not in frame.columns:
        raise InvalidFile(f"target column {config.target!r} is missing", depends_on_config=True)
    notes = []
    # Until a first file is accepted there is no master schema: this file proposes one.
    columns = store.columns or list(frame.columns)
    kinds = store.kinds or infer_kinds(frame, config)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidFile(f"missing column(s) {missing} that the master dataset has", depends_on_config=True)
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        notes.append(f"ignored column(s) not in the master dataset: {extra}")
    raw = _data_lines(data, len(frame)) if list(frame.columns) == columns else None
    kinds = _settle_unobserved(frame, kinds, store, config)
    if list(frame.columns) != columns:
        frame = frame.reindex(columns=columns)  # a new frame of the master's columns, in order
    frame, reformatted = coerce_types(frame, kinds)
    rows_read = len(frame)
    keep = _rows_with_target(frame, config.target)
    rows_missing_target = int((~keep).sum())
    if rows_missing_target:
        notes.append(f"{rows_missing_target} row(s) without a target value were not added")
        frame = frame.loc[keep].reset_index(drop=True)
        raw = None if raw is None else raw.select(keep)
    if frame.empty:
        raise InvalidFile(f"every row lacks a value for the target {config.target!r}", depends_on_config=True)
    labels = integer_labels(frame[config.target])
    reformatted |= labels.dtype != frame[config.target].dtype
    frame[config.target] = labels
    store.check_target_classes(frame[config.target], config)
    if reformatted:  # the file's text differs from the values kept: write the values
        raw = None
    return FileRows(frame, raw, rows_read, rows_missing_target, notes, kinds)


def _settle_unobserved(
    frame: pd.DataFrame, kinds: dict[str, str], store: MasterStore, config: Config
) -> dict[str, str]:
    """Give a column that has only ever been empty the kind its first real values show."""
    settled = dict(kinds)
    for column in store.unobserved:
        if column in frame.columns and frame[column].notna().any():
            settled[column] = infer_kinds(frame[[column]], config)[column]
    return settled


def _rows_with_target(frame: pd.DataFrame, target: str) -> np.ndarray:
    missing = frame[target].isna()
    if frame[target].dtype == object:
        missing |= frame[target].astype(str).str.strip() == ""
    return ~missing.to_numpy()


def _data_lines(data: bytes, rows: int) -> RawRows | None:
    """The file's data lines if each is exactly one row (no quoted line breaks, no blank lines)."""
    if b"\r" in data:  # Windows line ends: the master keeps Unix ones throughout
        data = data.replace(b"\r\n", b"\n")
    header_end = data.find(b"\n") + 1
    if not header_end or b'"' in data or b"\r" in data:
        return None  # quotes, or bare carriage returns as line ends: let to_csv write the rows
    header, body = data[:header_end], data[header_end:].rstrip(b"\n")
    # read_csv skips blank lines and joins quoted line breaks: either makes the counts differ.
    # Each line must also hold as many fields as the header (a trailing comma on every row
    # parses, but would not parse mixed with the master's lines); without quotes, counting
    # commas is exact.
    if not body or body.count(b"\n") + 1 != rows or b"\n\n" in body:
        return None
    if body.count(b",") != header.count(b",") * rows:
        return None
    return RawRows(body)


# --- setting a file aside ---------------------------------------------------------------------


REASON_SUFFIX = ".reason.txt"


def _set_aside(config: Config, source: ledger.SourceFile, reason: str) -> None:
    """Copy a rejected file to quarantine with its reason; the source is left untouched.

    The copy's name is shortened and cleaned (the full name is in the reason file and the
    record), and the copy is never more readable than the source. An entry that is not a
    regular file is never opened: only its reason is written. A failure here is logged;
    the file is still recorded as set aside.
    """
    folder = config.output_folder / QUARANTINE_FOLDER
    tag = source.sha256[:8] if source.sha256 else "not-read"
    stem = _quarantine_name(f"{utc_stamp()}_{tag}_", source.name, NAME_MAX_BYTES - len(REASON_SUFFIX))
    try:
        if source.problem is None:
            _copy_without_widening(source, folder / stem)
        atomic_write_text(
            folder / f"{stem}{REASON_SUFFIX}",
            f"file: {ledger.text_name(source.name)}\nsha256: {source.sha256 or 'none (not read)'}\n"
            f"set aside at: {utc_now()}\nreason: {reason}\n",
        )
    except (OSError, InvalidFile) as exc:
        logger.error("could not keep a quarantine copy of %s: %s", ledger.text_name(source.name), exc)


def _copy_without_widening(source: ledger.SourceFile, target: Path) -> None:
    try:
        handle = open_regular_file(source.path)
    except NotRegularFile as exc:
        raise InvalidFile(f"{exc.kind}: not copied") from None
    with handle, atomic_path(target, mode=os.fstat(handle.fileno()).st_mode & 0o644) as tmp:
        with open(tmp, "wb") as copy:
            shutil.copyfileobj(handle, copy)


def _quarantine_name(prefix: str, name: str, max_bytes: int) -> str:
    """``prefix`` + ``name`` with unprintable characters replaced, shortened in the middle
    (keeping its extension) to fit ``max_bytes`` bytes."""
    clean = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name)
    room = max_bytes - len(prefix.encode())
    if len(clean.encode()) <= room:
        return prefix + clean
    extension = clean[clean.rfind(".") :] if "." in clean[-12:] else ""
    head_room = room - len(extension.encode()) - len("...")
    head = clean.encode()[:head_room].decode("utf-8", "ignore")
    return f"{prefix}{head}...{extension}"


# --- reading one file again, and the command line ---------------------------------------------


def retry_file(config: Config, name: str) -> IngestionResult:
    """Read one file of the input folder again now, whatever the record says about it
    (unless it is already ingested with this content)."""
    if not name or "/" in name or name in (".", ".."):
        raise RetryRefused(
            f"{name!r} is not a file name: give the name of a file in {config.display_path(config.input_folder)}"
        )
    source = ledger.source_file(config, name)
    if source is None:
        raise RetryRefused(
            f"{ledger.text_name(name)} is not in {config.display_path(config.input_folder)} (or is still being written)"
        )
    latest = ledger.latest_entries(config).get((source.name, source.identity))
    if latest is not None and latest["status"] == ledger.STATUS_INGESTED:
        raise RetryRefused(f"{ledger.text_name(name)} is already ingested with this content: nothing to retry")
    return ingest_new_files(config, [source])
