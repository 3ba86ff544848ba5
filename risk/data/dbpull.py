"""Pull new rows from the configured databases as snapshot files that ingestion reads like dropped files.

Each entry of ``database_sources`` in config.json names a database (a SQLAlchemy-style URL:
``sqlite:///clients.db`` relative to the config's folder, or ``postgresql://user@host:5432/db``
with the password in the environment variable named by ``password_env``), a ``table`` or a
read-only ``query``, and a ``watermark_column`` whose values only grow.

A run asks each database one small question: the smallest and largest watermark above the last
one recorded, and how many rows have the last one (``... WHERE w >= last``). Nothing above it
and no more rows at it than were recorded: nothing to do. Otherwise the rows up to that maximum
are streamed, chunk by chunk, into one immutable CSV snapshot in
``<output>/database_snapshots/``, which ingestion then validates, quarantines, de-duplicates and
records exactly as it does a dropped file. Rows that arrived late at the last watermark are read
with the rows at it again (the overlap), and ingestion drops those it has by their row hash.
The record's entry for it names the source, the watermark range, the rows pulled, the rows at
its end and without a watermark, and the snapshot's SHA-256, and that entry, written only after
the rows are in the master, *is* the recorded watermark: a run killed before it reads the same
rows again, and ingestion drops them as duplicates. A watermark that would skip rows for good
(NaN, Infinity, numbers stored as text, a SQLite column holding numbers and text) is refused
before anything is pulled.

Every wait on a server has a deadline on this side too (the query timeout plus a grace): the
server's statement_timeout cannot end a statement whose backend is stopped or blocked.

Stdlib only at import: the cron fast path imports this module. sqlite3 is imported when a SQLite
source is checked, psycopg (PostgreSQL) when a PostgreSQL one is.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

from risk.core.dburls import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_QUERY_TIMEOUT_SECONDS,
    parse_url,
    why_not_one_statement,
)
from risk.core.files import commit_path, staged_path
from risk.core.settings import Config
from risk.data import ledger

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Callable, Iterator
    from typing import Any

logger = logging.getLogger(__name__)

SNAPSHOT_FOLDER = "database_snapshots"
CHUNK_ROWS = 10_000  # rows fetched and written at a time: a pull's memory does not grow with its size
# The client's own deadline is the query timeout plus this: the server's statement_timeout, with
# its clearer message, normally ends a statement first; the client's ends one the server cannot
# (a backend stopped or blocked writing to us, a network that drops packets without a reset).
CLIENT_GRACE_SECONDS = 5


class DatabaseSourceError(RuntimeError):
    """A database source that could not be read this run; the message is one line, without credentials."""


# ----------------------------------------------------------------------------- configuration


class Source:
    """One configured database source, its URL parsed (never holding a password)."""

    __slots__ = (
        "name",
        "kind",
        "where",
        "sqlite_path",
        "connect_args",
        "password_env",
        "table",
        "query",
        "watermark_column",
        "connect_timeout",
        "query_timeout",
    )

    def __init__(self, spec: dict[str, Any], root: Path):
        self.name: str = spec["name"]
        self.password_env: str | None = spec.get("password_env")
        self.table: str | None = spec.get("table")
        self.query: str | None = spec.get("query")
        self.watermark_column: str | None = spec.get("watermark_column")  # None: client_book, read whole
        self.connect_timeout = float(spec.get("connect_timeout_seconds", DEFAULT_CONNECT_TIMEOUT_SECONDS))
        self.query_timeout = float(spec.get("query_timeout_seconds", DEFAULT_QUERY_TIMEOUT_SECONDS))
        self.kind, self.where, self.sqlite_path, self.connect_args = parse_url(spec["url"], root)

    def __repr__(self) -> str:
        return f"Source({self.name!r}, {self.where})"

    def quote(self, name: str) -> str:
        """A name quoted for this database. SQLite reads an unknown "name" as the text 'name'
        (a missing column would silently become a constant), but an unknown `name` is an error."""
        if self.kind == "sqlite":
            return "`" + name.replace("`", "``") + "`"
        return '"' + name.replace('"', '""') + '"'

    @property
    def relation(self) -> str:
        """The SQL the rows are selected from: the quoted table, or the query as a subquery."""
        if self.table is not None:
            return ".".join(self.quote(part) for part in self.table.split("."))
        problem = why_not_one_statement(self.query)
        if problem:  # checked when the config is loaded; checked again where the SQL is made
            raise DatabaseSourceError(f"the query {problem}")
        # The newline ends a trailing -- comment before the closing parenthesis.
        return f"({self.query.strip().rstrip(';').strip()}\n) AS risk_source"


def sources(config: Config) -> list[Source]:
    """The configured database sources (checked when the config was loaded: dburls.check_sources)."""
    return [Source(spec, config.root) for spec in config["database_sources"]]


# ----------------------------------------------------------------------------- pulling


class Snapshot(ledger.SourceFile):
    """A pulled snapshot, ingested like a dropped file; ``lineage`` goes into its record entry."""

    __slots__ = ("lineage",)

    def __init__(self, path: Path, sha256: str, lineage: dict[str, Any]):
        size = path.stat().st_size
        super().__init__(path.name, path, size, [size], sha256)
        self.lineage = lineage


class Pulled:
    """What a run pulled: the snapshots to ingest, and the sources that could not be read."""

    __slots__ = ("snapshots", "failures")

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.failures: list[dict[str, str]] = []

    def audit(self) -> dict[str, Any]:
        """Fields for the audit line (none when no database source is configured or did anything)."""
        fields: dict[str, Any] = {}
        if self.snapshots:
            always = ("database_source", "rows_pulled", "watermark_from", "watermark_to")
            when_any = ("late_rows_at_boundary", "rows_with_null_watermark")  # rows a watermark hides
            fields["database_pulls"] = [
                {key: s.lineage[key] for key in always}
                | {key: s.lineage[key] for key in when_any if s.lineage.get(key)}
                for s in self.snapshots
            ]
        if self.failures:
            fields["database_failures"] = self.failures
        return fields


def snapshot_folder(config: Config) -> Path:
    return config.output_folder / SNAPSHOT_FOLDER


def recorded_watermarks(config: Config) -> dict[str, tuple[str, Any, int | None]]:
    """Per source name, (watermark column, last watermark, rows that had it): the end of its
    latest pull in the ingestion record (the count is None for pulls recorded before it was kept)."""
    last: dict[str, tuple[str, Any, int | None]] = {}
    for entry in ledger.read_record(config):
        if "database_source" in entry:
            last[entry["database_source"]] = (
                entry["watermark_column"],
                entry["watermark_to"],
                entry.get("rows_at_watermark_to"),
            )
    return last


def pull_new_rows(config: Config, before_pulling: Callable[[], None] | None = None) -> Pulled:
    """Check every database source and pull its new rows into snapshots. A source that fails is
    logged (one line) and listed in ``failures``; the others, and the files, go on.

    ``before_pulling`` runs once, when the first source has rows to pull and before any is
    written: a set-up check that would fail the run after the pull fails it before (its
    exception propagates), so a run that cannot use the rows does not pull them."""
    pulled = Pulled()
    configured = sources(config)
    if not configured:
        return pulled
    last = recorded_watermarks(config)
    folder = snapshot_folder(config)
    _remove_partial_snapshots(folder)
    _remove_unrecorded_snapshots(config, folder)
    if before_pulling is not None:
        before_pulling = _once(before_pulling)
    for source in configured:
        column, after, at_after = last.get(source.name, (None, None, None))
        if column != source.watermark_column:  # a new source, or its watermark column changed: read it all
            after, at_after = None, None
        elif isinstance(after, float) and not _finite(after):
            # Recorded by an earlier version, nothing compares above it: read afresh instead
            # (ingestion drops the rows it has), and say so.
            logger.warning(
                "database source %r: the recorded watermark %s is not a finite number; reading the source afresh",
                source.name,
                _number_text(after),
            )
            after, at_after = None, None
        try:
            snapshot = pull_source(source, after, folder, at_after, before_pulling)
        except (DatabaseSourceError, OSError) as exc:
            reason = _one_line(
                str(exc) if isinstance(exc, DatabaseSourceError) else f"could not write the snapshot: {exc}", source
            )
            logger.error("database source %r (%s): %s", source.name, source.where, reason)
            pulled.failures.append({"source": source.name, "reason": reason})
            continue
        if snapshot is not None:
            logger.info(
                "database source %r: pulled %d row(s), %s %r to %r",
                source.name,
                snapshot.lineage["rows_pulled"],
                source.watermark_column,
                snapshot.lineage["watermark_from"],
                snapshot.lineage["watermark_to"],
            )
            _warn_about_unseen_rows(source, snapshot.lineage)
            pulled.snapshots.append(snapshot)
    return pulled


def _warn_about_unseen_rows(source: Source, lineage: dict[str, Any]) -> None:
    if lineage.get("late_rows_at_boundary"):
        logger.warning(
            "database source %r: %d row(s) arrived after the last pull with its watermark %r: read now",
            source.name,
            lineage["late_rows_at_boundary"],
            lineage["watermark_after"],
        )
    if lineage.get("rows_with_null_watermark"):
        logger.warning(
            "database source %r: %d row(s) have no %s (NULL) and are never read: give them one",
            source.name,
            lineage["rows_with_null_watermark"],
            source.watermark_column,
        )


# What a watermark cannot show, said in every pull's record entry.
KNOWN_LIMITS = (
    "not seen: rows changed in place without a new watermark, rows arriving with a watermark below the last one, "
    "and rows without a watermark (counted in rows_with_null_watermark)"
)


def pull_source(
    source: Source,
    after: Any,
    folder: Path,
    at_after: int | None = None,
    before_pulling: Callable[[], None] | None = None,
) -> Snapshot | None:
    """The rows of ``source`` with a watermark above ``after`` (all rows when None) as a snapshot,
    or None when there are none. ``at_after`` is how many rows had the watermark ``after`` when it
    was recorded: when more have it now, rows arrived late at the boundary, and the rows at it are
    read again (ingestion drops those it has by their row hash). Raises DatabaseSourceError."""
    reader = _SqliteReader(source) if source.kind == "sqlite" else _PostgresReader(source)
    with reader:
        low, high, at_after_now = reader.new_range(after)
        late = at_after_now - at_after if after is not None and at_after is not None else 0
        if high is None and late <= 0:
            return None
        if high is None:  # only late rows at the boundary
            low, high = after, after
        check_watermark(source, low, high)
        low, high = json_value(low), json_value(high)
        reread = late > 0  # the overlap: the boundary's rows again, de-duplicated by ingestion
        if reread:
            low = after
        if before_pulling is not None:
            before_pulling()
        at_high, nulls = reader.counts(high)  # before the pull: a row arriving at high meanwhile is re-read later
        chunks = reader.stream(after, high, reread)
        try:
            rows, sha256, path = _write_snapshot(folder, source.name, chunks)
        except BaseException:
            # A failed write (a full disk) arrives while the stream is suspended inside the
            # driver's COPY, which holds the connection: drop the connection first, or ending
            # the transaction would wait for the COPY forever.
            reader.abandon()
            raise
        finally:
            chunks.close()
    if rows == 0:  # the rows went away between the two queries: nothing to ingest or record
        path.unlink()
        return None
    lineage = {
        "database_source": source.name,
        "database": source.where,
        "watermark_column": source.watermark_column,
        "watermark_after": after,
        "watermark_from": low,
        "watermark_to": high,
        "rows_pulled": rows,
        "rows_at_watermark_to": at_high,
        "rows_with_null_watermark": nulls,
        "known_limits": KNOWN_LIMITS,
        "snapshot": f"{SNAPSHOT_FOLDER}/{path.name}",
    }
    if reread:
        lineage.update(boundary_rows_reread=at_after_now, late_rows_at_boundary=late)
    return Snapshot(path, sha256, lineage)


def read_whole(source: Source) -> bytes:
    """Every row of ``source`` as CSV bytes with a header (client_book: no watermark, the whole
    table or query each time), read-only and within the source's timeouts. Raises DatabaseSourceError."""
    reader = _SqliteReader(source) if source.kind == "sqlite" else _PostgresReader(source)
    with reader:
        chunks = reader.stream_all()
        try:
            return b"".join(data for data, _ in chunks)
        except BaseException:
            reader.abandon()  # as pull_source: the COPY holds the connection
            raise
        finally:
            chunks.close()


def check_watermark(source: Source, low: Any, high: Any) -> None:
    """Refuse a range whose recorded end would skip rows for good. Raises DatabaseSourceError."""
    column = repr(source.watermark_column)
    for value in (low, high):
        if isinstance(value, bool):
            continue
        if isinstance(value, float) or type(value).__name__ == "Decimal":
            if not _finite(value):
                raise DatabaseSourceError(
                    f"the watermark column {column} holds {_number_text(value)}, which is not a finite number: as the watermark "
                    "it would skip every later row, so nothing was pulled; correct those rows, or leave them out "
                    "in a query"
                )
    if all(isinstance(v, str) and _looks_like_a_number(v) for v in (low, high)):
        raise DatabaseSourceError(
            f"the watermark column {column} holds numbers as text ({low!r} to {high!r}): compared as text, "
            f"'9' comes after '10', so later rows would be skipped; nothing was pulled: make it a number "
            f"column, or cast it in a query (CAST({source.watermark_column} AS integer) AS {source.watermark_column})"
        )


def _finite(value: Any) -> bool:
    """A watermark value that is not NaN or Infinity (a float, or a Decimal from PostgreSQL)."""
    return value.is_finite() if hasattr(value, "is_finite") else math.isfinite(value)


def _number_text(value: Any) -> str:
    """A non-finite number as the databases write it (Python writes nan and inf)."""
    if value != value:
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def _looks_like_a_number(text: str) -> bool:
    digits = text.strip().lstrip("+-").replace(".", "", 1)
    return digits.isdigit() and digits.isascii()


def json_value(value: Any) -> Any:
    """A watermark as JSON keeps it: numbers stay numbers, times become ISO text, the rest text.
    The databases compare the text form back to the column's own type."""
    if value is None or isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _write_snapshot(folder: Path, name: str, chunks: Iterator[tuple[bytes, int]]) -> tuple[int, str, Path]:
    """Stream CSV chunks to a temporary file, then rename it to a name made of its content hash.
    Returns (rows, sha256, path). The file is made read-only: snapshots are never changed."""
    import hashlib

    digest, rows = hashlib.sha256(), 0
    # Removed if the pull fails (a full disk mid-write leaves no partial file); a killed run's is
    # removed by the next pull (_remove_partial_snapshots).
    with staged_path(folder / f".{name}.{os.getpid()}.pulling") as tmp:
        with open(tmp, "wb") as handle:
            for data, count in chunks:
                handle.write(data)
                digest.update(data)
                rows += count
        path = folder / f"db_{name}_{digest.hexdigest()[:16]}.csv"
        commit_path(tmp, path, mode=0o444)
    return rows, digest.hexdigest(), path


def _once(function: Callable[[], None]) -> Callable[[], None]:
    done = []

    def call() -> None:
        if not done:
            done.append(True)
            function()

    return call


def _remove_unrecorded_snapshots(config: Config, folder: Path) -> None:
    """Snapshots no record entry names were pulled by runs that failed or were killed before
    ingesting them: their rows are pulled again (the watermark was not recorded), so keeping them
    would only fill the disk, one full pull per failed run."""
    if not folder.is_dir():
        return
    recorded = {entry.get("name") for entry in ledger.read_record(config) if "database_source" in entry}
    for path in folder.glob("db_*.csv"):
        if path.name not in recorded:
            logger.info("removing %s: pulled by a run that did not record it", path.name)
            path.unlink(missing_ok=True)


def _remove_partial_snapshots(folder: Path) -> None:
    """A run killed while pulling leaves its temporary file; the run lock says nobody is writing now."""
    if folder.is_dir():
        for partial in folder.glob(".*.pulling"):
            partial.unlink(missing_ok=True)


def _one_line(message: str, source: Source) -> str:
    """Driver messages can span lines; the password, should a driver ever echo it, is blanked."""
    text = " ".join(message.split())
    password = os.environ.get(source.password_env or "") if source.password_env else None
    if password:
        text = text.replace(password, "***")
    return text


class _SqliteReader:
    """A SQLite file opened read-only (it is never created or written), with a deadline per step."""

    def __init__(self, source: Source):
        self.source = source
        self.connection: Any = None
        self.deadline = 0.0

    def __enter__(self) -> _SqliteReader:
        import sqlite3
        from urllib.parse import quote

        path = self.source.sqlite_path
        if not path.is_file():
            raise DatabaseSourceError(f"the database file {path} does not exist")
        try:
            self.connection = sqlite3.connect(
                f"file:{quote(str(path))}?mode=ro", uri=True, timeout=self.source.connect_timeout
            )
            self.connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise DatabaseSourceError(f"could not open {path}: {exc}") from None
        # Called every few thousand steps of the engine: ends a query that runs past its deadline.
        self.connection.set_progress_handler(lambda: time.monotonic() > self.deadline, 10_000)
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()

    def abandon(self) -> None:
        """Nothing to do: a SQLite read holds no lock that closing would wait for."""

    def _run(self, sql: str, params: tuple, what: str) -> Any:
        import sqlite3

        self.deadline = time.monotonic() + self.source.query_timeout
        try:
            return self.connection.execute(sql, params)
        except sqlite3.Error as exc:
            raise DatabaseSourceError(self._explain(exc, what)) from None

    def _explain(self, exc: Exception, what: str) -> str:
        if "interrupted" in str(exc):
            return f"{what} did not finish within query_timeout_seconds ({self.source.query_timeout:g} s)"
        return f"{what} failed: {exc}"

    # SQLite keeps any value in any column and orders every number below every text: the kinds of
    # value a watermark holds are counted, integers and reals being one kind (both compare as numbers).
    KIND = "CASE WHEN typeof({w}) IN ('integer', 'real') THEN 'number' ELSE typeof({w}) END"

    def new_range(self, after: Any) -> tuple[Any, Any, int]:
        """(smallest, largest watermark above ``after``, rows whose watermark is ``after``)."""
        w, relation = self.source.quote(self.source.watermark_column), self.source.relation
        kind = self.KIND.format(w=w)
        if after is None:
            sql = f"SELECT min({w}), max({w}), 0, count(DISTINCT {kind}) FROM {relation} WHERE {w} IS NOT NULL"
            params: tuple = ()
        else:
            new = f"CASE WHEN {w} > ? THEN {w} END"
            sql = (
                f"SELECT min({new}), max({new}), total({w} = ?), count(DISTINCT CASE WHEN {w} > ? THEN {kind} END) "
                f"FROM {relation} WHERE {w} >= ?"
            )
            params = (after,) * 5
        low, high, at_after, kinds = self._run(sql, params, "the check for new rows").fetchone()
        if kinds > 1:
            self._refuse_mixed_kinds(after)
        return low, high, int(at_after)

    def _refuse_mixed_kinds(self, after: Any) -> None:
        w, relation = self.source.quote(self.source.watermark_column), self.source.relation
        where, params = (f"{w} > ?", (after,)) if after is not None else (f"{w} IS NOT NULL", ())
        sql = f"SELECT {self.KIND.format(w=w)}, count(*), max({w}) FROM {relation} WHERE {where} GROUP BY 1 ORDER BY 2 DESC"
        kinds = self._run(sql, params, "the check for new rows").fetchall()
        counted = ", ".join(
            f"{count} {kind}" + (f" such as {value!r}" if i else "") for i, (kind, count, value) in enumerate(kinds)
        )
        raise DatabaseSourceError(
            f"the watermark column {self.source.watermark_column!r} holds values of more than one type ({counted}): "
            "compared across types, one type always sorts above the other and the watermark would skip rows; "
            "nothing was pulled: correct those rows"
        )

    def counts(self, high: Any) -> tuple[int, int]:
        """(rows whose watermark is ``high``, rows without a watermark)."""
        w, relation = self.source.quote(self.source.watermark_column), self.source.relation
        sql = f"SELECT total({w} = ?), total({w} IS NULL) FROM {relation} WHERE {w} = ? OR {w} IS NULL"
        at_high, nulls = self._run(sql, (high, high), "the count of rows at the watermark").fetchone()
        return int(at_high), int(nulls)

    def stream(self, after: Any, high: Any, reread: bool = False) -> Iterator[tuple[bytes, int]]:
        column = self.source.quote(self.source.watermark_column)
        op = ">=" if reread else ">"
        lower, params = (f"{column} {op} ? AND ", (after, high)) if after is not None else ("", (high,))
        sql = f"SELECT * FROM {self.source.relation} WHERE {lower}{column} <= ? ORDER BY {column}"
        return self._stream_rows(sql, params, "the pull of new rows")

    def stream_all(self) -> Iterator[tuple[bytes, int]]:
        return self._stream_rows(f"SELECT * FROM {self.source.relation}", (), "the read of every row")

    def _stream_rows(self, sql: str, params: tuple, what: str) -> Iterator[tuple[bytes, int]]:
        import csv
        import io
        import sqlite3

        cursor = self._run(sql, params, what)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([d[0] for d in cursor.description])
        yield buffer.getvalue().encode("utf-8"), 0
        while True:
            self.deadline = time.monotonic() + self.source.query_timeout
            try:
                rows = cursor.fetchmany(CHUNK_ROWS)
            except sqlite3.Error as exc:
                raise DatabaseSourceError(self._explain(exc, what)) from None
            if not rows:
                return
            yield _csv_rows(buffer, writer, rows).encode("utf-8"), len(rows)


def _csv_rows(buffer: Any, writer: Any, rows: list[tuple]) -> str:
    """The rows as ``writer`` (csv, line feeds, into ``buffer``) writes them, except a row holding a
    text value with a carriage return: Python 3.11's csv writer leaves such a value unquoted, where
    pandas ends a row, so that row is written with its text values quoted."""
    import csv

    buffer.seek(0)
    buffer.truncate()
    writer.writerows(rows)
    text = buffer.getvalue()
    if "\r" not in text:
        return text
    buffer.seek(0)
    buffer.truncate()
    quoting = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    for row in rows:
        (quoting if any(isinstance(value, str) and "\r" in value for value in row) else writer).writerow(row)
    return buffer.getvalue()


class _PostgresReader:
    """A PostgreSQL connection with connect and statement timeouts, in a read-only transaction."""

    def __init__(self, source: Source):
        self.source = source
        self.connection: Any = None
        self.cut = False  # set when the client's deadline closed the connection

    def __enter__(self) -> _PostgresReader:
        try:
            import psycopg
        except ImportError:
            raise DatabaseSourceError("PostgreSQL needs the psycopg package: pip install -r requirements.txt") from None
        args = dict(self.source.connect_args)
        if self.source.password_env:
            password = os.environ.get(self.source.password_env)
            if password is None:
                raise DatabaseSourceError(
                    f"the environment variable {self.source.password_env} (password_env) is not set"
                )
            args["password"] = password
        timeout_ms = int(self.source.query_timeout * 1000)
        timeouts = f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
        args.update(
            # libpq counts whole seconds, at least 2.
            connect_timeout=max(2, round(self.source.connect_timeout)),
            # Every statement ends within the query timeout, and a server that vanishes mid-pull
            # is noticed by TCP keep-alives instead of waiting forever.
            options=f"{args.get('options', '')} {timeouts}".strip(),
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=timeout_ms,
            application_name="risk-assessment ingestion",
            client_encoding="UTF8",
        )
        try:
            self.connection = psycopg.connect(**args)
        except psycopg.Error as exc:
            raise DatabaseSourceError(f"could not connect: {exc}") from None
        try:
            self.connection.read_only = True  # the query may read, never write
        except psycopg.Error as exc:
            self.connection.close()
            raise DatabaseSourceError(f"could not start a read-only transaction: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        import psycopg

        if self.connection.closed:  # abandoned
            return
        try:
            with self._deadline():
                self.connection.rollback()  # nothing was written; end the read-only transaction
        except psycopg.Error:
            pass  # the connection is already broken (a timeout, a server gone): closing is all that is left
        finally:
            self.connection.close()

    def abandon(self) -> None:
        """Close the connection without ending the transaction: closing takes no lock, and the
        server rolls back a read-only transaction whose connection is gone."""
        self.connection.close()

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        """Within the block, a wait on the server ends at the query timeout (plus a grace) even when
        the server never answers: a timer thread shuts the socket, and the driver's wait fails."""
        import threading

        timer = threading.Timer(self.source.query_timeout + CLIENT_GRACE_SECONDS, self._cut)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()  # a cut in progress ends before the connection is closed and its socket reused

    def _cut(self) -> None:
        import socket

        try:
            # shutdown acts on the socket itself, not on this duplicate descriptor of it
            with socket.socket(fileno=os.dup(self.connection.pgconn.socket)) as sock:
                self.cut = True
                sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # the connection is already gone: nothing left to stop
            logger.debug("client deadline: nothing to cut", exc_info=True)

    def _explain(self, exc: Exception, what: str) -> str:
        limit = f"query_timeout_seconds ({self.source.query_timeout:g} s)"
        if self.cut:
            return f"{what} did not finish within {limit}: the server stopped answering, and the connection was closed"
        if getattr(exc, "sqlstate", None) == "57014":  # query_canceled: the statement timeout
            return f"{what} did not finish within {limit}"
        return f"{what} failed: {exc}"

    def new_range(self, after: Any) -> tuple[Any, Any, int]:
        """(smallest, largest watermark above ``after``, rows whose watermark is ``after``)."""
        from psycopg import sql

        # Values are inlined as quoted literals, never as %s parameters: a query holding a
        # % (LIKE 'a%') must reach the server as written. An unknown-typed literal is read in
        # the column's own type.
        w = sql.SQL(self.source.quote(self.source.watermark_column))
        if after is None:
            query = sql.SQL("SELECT min({w}), max({w}), 0 FROM {r}")
        else:
            query = sql.SQL(
                "SELECT min({w}) FILTER (WHERE {w} > {a}), max({w}) FILTER (WHERE {w} > {a}), "
                "count(*) FILTER (WHERE {w} = {a}) FROM {r} WHERE {w} >= {a}"
            )
        low, high, at_after = self._one_row(
            query.format(w=w, a=sql.Literal(after), r=sql.SQL(self.source.relation)), "the check for new rows"
        )
        return low, high, at_after

    def counts(self, high: Any) -> tuple[int, int]:
        """(rows whose watermark is ``high``, rows without a watermark)."""
        from psycopg import sql

        query = sql.SQL(
            "SELECT count(*) FILTER (WHERE {w} = {h}), count(*) FILTER (WHERE {w} IS NULL) FROM {r} "
            "WHERE {w} = {h} OR {w} IS NULL"
        ).format(
            w=sql.SQL(self.source.quote(self.source.watermark_column)),
            h=sql.Literal(high),
            r=sql.SQL(self.source.relation),
        )
        at_high, nulls = self._one_row(query, "the count of rows at the watermark")
        return at_high, nulls

    def _one_row(self, query: Any, what: str) -> tuple:
        import psycopg

        try:
            with self._deadline():
                # Prepared: the extended protocol runs one statement only, whatever the query holds.
                return tuple(self.connection.execute(query, prepare=True).fetchone())
        except psycopg.Error as exc:
            raise DatabaseSourceError(self._explain(exc, what)) from None

    def stream(self, after: Any, high: Any, reread: bool = False) -> Iterator[tuple[bytes, int]]:
        """COPY streams the rows as CSV the server formats: fast, and never all in memory."""
        from psycopg import sql

        column = sql.SQL(self.source.quote(self.source.watermark_column))
        op = sql.SQL(">=" if reread else ">")
        lower = sql.SQL("{} {} {} AND ").format(column, op, sql.Literal(after)) if after is not None else sql.SQL("")
        query = sql.SQL("COPY (SELECT * FROM {} WHERE {}{} <= {} ORDER BY {}) TO STDOUT (FORMAT csv, HEADER)").format(
            sql.SQL(self.source.relation), lower, column, sql.Literal(high), column
        )
        return self._copy(query, "the pull of new rows")

    def stream_all(self) -> Iterator[tuple[bytes, int]]:
        from psycopg import sql

        query = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT csv, HEADER)").format(sql.SQL(self.source.relation))
        return self._copy(query, "the read of every row")

    def _copy(self, query: Any, what: str) -> Iterator[tuple[bytes, int]]:
        import psycopg

        cursor = self.connection.cursor()
        try:
            with self._deadline(), cursor.copy(query) as copy:
                pending, size = [], 0
                for block in copy:
                    pending.append(bytes(block))
                    size += len(block)
                    if size >= 1 << 20:
                        yield b"".join(pending), 0
                        pending, size = [], 0
                yield b"".join(pending), 0
        except psycopg.Error as exc:
            raise DatabaseSourceError(self._explain(exc, what)) from None
        yield b"", max(cursor.rowcount, 0)  # COPY reports its row count once it is done
