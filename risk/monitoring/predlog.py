"""The prediction log: what ``/prediction`` answered for identified clients, one JSON line per row.

With ``log_predictions: true`` every ``/prediction`` answer row that carries every id column is
appended to ``<log_folder_path>/predictions/YYYY-MM-DD.jsonl`` (the UTC day of the answer)::

    {"time": "2026-12-07T15:20:01Z", "version": "v3", "ids": {"corporation": "abc1"}, "risk": 0.4213, "flagged": true}

The API writes with ``append_answer`` (an answer's columns as they are); ``append_predictions``
takes rows ``(ids as text, risk, flagged)`` and writes the same lines. No feature values: the log
holds no more about a client than the call list does. The risk is written as the answer gives it
(every digit of the float). The back-test
(issue 22) reads it with ``logged_predictions`` to find the latest prediction made for each client
before their outcome arrived; the run removes days older than ``prediction_log_days``
(``remove_old_days``).

Several gunicorn workers, each with threads, append to the same day's file. Each request's rows
are written with one ``os.write`` on an ``O_APPEND`` descriptor while holding an exclusive
``flock`` on it (taken with a deadline): a short write (a full disk) is cut back to the file's size
before it, so the file never holds half a line. A failure to log never fails the request: it is
logged once per process and kind, and counted (``failures()``).

Stdlib only at import: the run's cron fast path calls ``remove_old_days``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from risk.core import locks
from risk.core.files import before_change
from risk.core.settings import Config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    import pandas as pd

logger = logging.getLogger(__name__)

FOLDER = "predictions"
SUFFIX = ".jsonl"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
LOCK_DEADLINE_SECONDS = 1.0  # a holder writes one block: far less; a longer wait means something is wrong
LOCK_RETRY_SECONDS = 0.001

_encode_text = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # the C encoder json uses


class PredictionLogError(OSError):
    """The log's lock could not be taken in time."""


# ----------------------------------------------------------------------------- writing


def prediction_folder(config: Config) -> Path:
    return config.log_folder / FOLDER


def day_path(config: Config, day: str) -> Path:
    """The file of one UTC day, ``day`` as ``YYYY-MM-DD``."""
    return prediction_folder(config) / f"{day}{SUFFIX}"


def identified_rows(
    id_columns: Sequence[str], ids: dict[str, list[Any]], risk: Sequence[float], flagged: Sequence[int | bool]
) -> list[tuple[dict[str, str], float, bool]]:
    """The rows ``(ids as text, risk, flagged)`` of an answer that carry every id column: a row whose
    answer lacks one (no such column sent, or null or blank in that row) cannot be joined to an outcome."""
    if not id_columns or any(name not in ids for name in id_columns):
        return []
    columns = [ids[name] for name in id_columns]
    rows = []
    for index, (r, f) in enumerate(zip(risk, flagged)):
        values = [_id_text(column[index]) for column in columns]
        if None not in values:
            rows.append((dict(zip(id_columns, values)), float(r), bool(f)))
    return rows


def _id_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def prediction_lines(version: str, rows: Iterable[tuple[dict[str, str], float, bool]], when: float) -> bytes:
    """The rows as JSON lines, all stamped ``when`` (seconds since the epoch)."""
    return _lines(version, rows, time.strftime(TIME_FORMAT, time.gmtime(when)))


def _lines(version: str, rows: Iterable[tuple[dict[str, str], float, bool]], stamp: str) -> bytes:
    head = f'{{"time":"{stamp}","version":{_encode_text(version)},"ids":{{'
    lines = []
    for ids, risk, flagged in rows:
        given = ",".join(f"{_encode_text(name)}:{_encode_text(value)}" for name, value in ids.items())
        lines.append(f'{head}{given}}},"risk":{float(risk)!r},"flagged":{"true" if flagged else "false"}}}\n')
    return "".join(lines).encode("ascii")


def append_predictions(
    config: Config, version: str, rows: Iterable[tuple[dict[str, str], float, bool]], when: float | None = None
) -> int:
    """Append ``rows`` (``(ids as text, risk, flagged)``, see ``identified_rows``) to the day's file;
    the number of rows written. Never raises: a failure is logged once per kind, counted, and 0."""
    stamp = time.strftime(TIME_FORMAT, time.gmtime(time.time() if when is None else when))
    data = _lines(version, rows, stamp)
    if not data:
        return 0
    # Text, not Path: a Path's joins cost more than the write itself on a single-row request.
    path = f"{config.log_folder}{os.sep}{FOLDER}{os.sep}{stamp[:10]}{SUFFIX}"
    try:
        _append_whole(path, data)
    except OSError as exc:
        _FAILURES.record(path, exc)
        return 0
    return data.count(b"\n")


def append_answer(
    config: Config,
    version: str,
    ids: dict[str, list[Any]],
    risk: Sequence[float],
    flagged: Sequence[int | bool],
    when: float | None = None,
) -> tuple[int, int]:
    """``append_predictions(config, version, identified_rows(config["id_columns"], ids, risk, flagged))``
    column by column, for an API answer of many rows (less than half the cost); (rows to log, rows
    written): they differ only where the append failed (logged once and counted, never raised)."""
    stamp = time.strftime(TIME_FORMAT, time.gmtime(time.time() if when is None else when))
    path = f"{config.log_folder}{os.sep}{FOLDER}{os.sep}{stamp[:10]}{SUFFIX}"
    try:
        data, rows = answer_lines(version, config["id_columns"], ids, risk, flagged, stamp)
    except Exception as exc:  # a value nobody foresaw: the answer still goes out, the failure is counted
        _FAILURES.record(path, exc)
        return len(risk), 0
    if not rows:
        return 0, 0
    try:
        _append_whole(path, data)
    except OSError as exc:
        _FAILURES.record(path, exc)
        return rows, 0
    return rows, rows


def answer_lines(
    version: str,
    id_columns: Sequence[str],
    ids: dict[str, list[Any]],
    risk: Sequence[float],
    flagged: Sequence[int | bool],
    stamp: str,
) -> tuple[bytes, int]:
    """The lines of the rows that carry every id column, and how many; the same bytes as
    ``_lines(version, identified_rows(...), stamp)``."""
    if not id_columns or any(name not in ids for name in id_columns):
        return b"", 0
    columns = [_id_texts(ids[name]) for name in id_columns]
    if len(columns) == 1:
        keep = [index for index, value in enumerate(columns[0]) if value is not None]
    else:
        keep = [index for index, values in enumerate(zip(*columns)) if None not in values]
    if not keep:
        return b"", 0
    parts = []
    for name, column in zip(id_columns, columns):
        prefix = _encode_text(name) + ":"
        parts.append([prefix + _encode_text(column[index]) for index in keep])
    given = parts[0] if len(parts) == 1 else [",".join(row) for row in zip(*parts)]
    head = f'{{"time":"{stamp}","version":{_encode_text(version)},"ids":{{'
    lines = [
        f'{head}{g}}},"risk":{float(risk[index])!r},"flagged":{"true" if flagged[index] else "false"}}}\n'
        for g, index in zip(given, keep)
    ]
    return "".join(lines).encode("ascii"), len(keep)


def _id_texts(values: list[Any]) -> list[str | None]:
    """``_id_text`` of each value; text, the usual case, without the call."""
    return [(v if v.strip() else None) if type(v) is str else _id_text(v) for v in values]


def _append_whole(path: str, data: bytes) -> None:
    """``data`` at the end of ``path`` in one write under the file's lock, or not at all."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC  # read: the last byte
    try:
        fd = os.open(path, flags, 0o640)
    except FileNotFoundError:  # the first line ever, or the folder was removed
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o640)
    try:
        _lock(fd, path)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line ends here, not in ours
            data = b"\n" + data
        written = os.write(fd, data)
        if written != len(data):  # a full disk: no half line left behind for the next writer to follow
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes could be written", path)
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, path: str) -> None:
    if not locks.flock_within(fd, LOCK_DEADLINE_SECONDS, LOCK_RETRY_SECONDS):
        raise PredictionLogError(errno.ETIMEDOUT, f"its lock was not free within {LOCK_DEADLINE_SECONDS:g} s", path)


class _Failures:
    """Rows not logged in this process: counted every time, logged once per kind of failure."""

    def __init__(self) -> None:
        self.count = 0
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def record(self, path: str, exc: Exception) -> None:
        kind = f"{type(exc).__name__}:{getattr(exc, 'errno', None)}"
        with self._lock:
            self.count += 1
            first = kind not in self._logged
            self._logged.add(kind)
        if first:  # once per kind: a full disk must not also fill the error log
            logger.error("predictions not logged (the answers were given; counted, logged once): %s: %s", path, exc)


_FAILURES = _Failures()


def failures() -> int:
    """How many appends failed in this process."""
    return _FAILURES.count


# ----------------------------------------------------------------------------- reading


def day_files(config: Config) -> list[tuple[str, Path]]:
    """``(day, path)`` of every day's file, oldest first (a directory listing: cheap)."""
    try:
        names = os.listdir(prediction_folder(config))
    except FileNotFoundError:
        return []
    days = [(match.group(1), name) for name in names if (match := DAY_FILE.match(name))]
    folder = prediction_folder(config)
    return [(day, folder / name) for day, name in sorted(days)]


def iter_logged_predictions(config: Config, before: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Every logged row (as written, ``ids`` a dict of text) made strictly before ``before`` (UTC;
    None: all), oldest day first. A line that is not a logged row is skipped, counted and logged."""
    limit = None if before is None else _utc_stamp(before)
    for day, path in day_files(config):
        if limit is not None and day > limit[:10]:
            break
        yield from _rows_of(path, limit)


def _rows_of(path: Path, limit: str | None) -> Iterator[dict[str, Any]]:
    skipped = 0
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; a generator)
    except FileNotFoundError:  # removed by the run since the listing
        return
    with handle:
        for line in handle:
            row = _parsed(line)
            if row is None:
                skipped += 1
            elif limit is None or row["time"] < limit:
                yield row
    if skipped:
        logger.warning("%s: %d line(s) that are not logged predictions skipped", path, skipped)


def _parsed(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if (
        not isinstance(row, dict)
        or not isinstance(row.get("time"), str)
        or not isinstance(row.get("version"), str)
        or not isinstance(row.get("ids"), dict)
        or not isinstance(row.get("risk"), (int, float))
        or not isinstance(row.get("flagged"), bool)
    ):
        return None
    return row


def _utc_stamp(moment: datetime) -> str:
    """``moment`` as the log writes times (a naive datetime is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(TIME_FORMAT)


def logged_predictions(
    config: Config, before: datetime | None = None, clients: set[tuple[str, ...]] | None = None
) -> pd.DataFrame:
    """The logged rows made before ``before`` as a frame: ``time`` (UTC datetimes), ``version``, one text
    column per configured id column, ``risk``, ``flagged``; oldest first. Rows logged under other id
    columns (the config changed since) are left out, counted in the log. ``clients`` (id tuples): only
    their rows are kept, as they are read (a year of a busy API's answers is not held for a batch)."""
    import pandas as pd

    id_columns = list(config["id_columns"])
    records = []
    other = 0
    for row in iter_logged_predictions(config, before):
        ids = row["ids"]
        if any(not isinstance(ids.get(name), str) for name in id_columns):
            other += 1
            continue
        # Stripped as ingestion and the client book strip them: ' c1 ' sent to the API is client c1.
        key = tuple(ids[name].strip() for name in id_columns)
        if clients is None or key in clients:
            records.append((row["time"], row["version"], *key, row["risk"], row["flagged"]))
    if other:
        logger.warning("%d logged prediction(s) lack the configured id columns %s: left out", other, id_columns)
    columns = ["time", "version", *id_columns, "risk", "flagged"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], format=TIME_FORMAT, utc=True)
    frame["risk"] = frame["risk"].astype("float64")
    frame["flagged"] = frame["flagged"].astype(bool)
    for name in ["version", *id_columns]:
        frame[name] = frame[name].astype(object)
    return frame.sort_values("time", kind="mergesort", ignore_index=True)


# ----------------------------------------------------------------------------- retention


def remove_old_days(config: Config, now: datetime) -> list[Path]:
    """Remove the days older than ``prediction_log_days`` before ``now``'s UTC day; the files removed.

    Kept: the day ``prediction_log_days`` days ago and every later one. A directory listing and no
    more when nothing is due (the cron fast path).
    """
    oldest_kept = (_utc_day(now) - timedelta(days=int(config["prediction_log_days"]))).isoformat()
    removed = []
    for day, path in day_files(config):
        if day >= oldest_kept:
            break
        before_change(path)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:  # housekeeping: it must not stop the run (it runs before ingestion)
            logger.warning("prediction log: %s is past the retention but cannot be removed: %s", path.name, exc)
            continue
        removed.append(path)
    if removed:
        logger.info("prediction log: removed %d day(s) older than %s", len(removed), oldest_kept)
    return removed


def _utc_day(moment: datetime) -> Any:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()
