"""Database sources (risk.data.dbpull, behind dbsource.py) against real databases: a SQLite file in tmp_path, and a real
PostgreSQL server when one is given.

PostgreSQL: `eval "$(.ci/postgres start)"` starts a throwaway cluster and exports
RISK_TEST_POSTGRES (a URL without the password) and RISK_TEST_POSTGRES_PASSWORD; .ci/run does
this. Without them the PostgreSQL cases skip, saying so, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import dbsource
import fullprocess
from risk.core import logbook
from risk.core.files import sha256_file
from risk.core.settings import Config, ConfigError, load_config
from risk.data import dbpull, ledger, masterstore, sample
from tests.conftest import skip_or_fail_in_ci

PROJECT_DIR = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "RISK_TEST_DB_PASSWORD"
COLUMNS = ["row_id", "corporation", "lastmonth_activity", "lastyear_activity", "number_of_employees", "exited"]


def client_rows(first_id: int, count: int, seed: int = 7) -> list[tuple]:
    """Sample clients (with a few missing values) numbered from ``first_id``."""
    frame = sample.make_clients(np.random.default_rng(seed + first_id), count)
    frame = frame.astype(object).where(frame.notna(), None)
    return [
        (
            first_id + i,
            f"db-{first_id + i:07d}",
            *[
                None if v is None else (int(v) if c != "lastmonth_activity" else float(v))
                for c, v in zip(frame.columns, row)
            ],
        )
        for i, row in enumerate(frame.itertuples(index=False))
    ]


# ----------------------------------------------------------------------------- the two databases


class SqliteDatabase:
    kind = "sqlite"
    slow_query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i AS row_id FROM n WHERE i < 0"
    password = None

    def __init__(self, folder: Path):
        self.path = folder / "clients.db"
        self.url = "sqlite:///clients.db"  # relative to the config's folder

    def execute(self, sql: str, rows: list[tuple] | None = None) -> None:
        with sqlite3.connect(self.path) as connection:
            if rows is None:
                connection.executescript(sql)
            else:
                connection.executemany(sql, rows)
        connection.close()

    def create_clients(self, watermark: str = "row_id INTEGER PRIMARY KEY") -> None:
        self.execute(
            f"CREATE TABLE clients ({watermark}, corporation TEXT, lastmonth_activity REAL, "
            "lastyear_activity INTEGER, number_of_employees INTEGER, exited INTEGER)"
        )

    def insert(self, rows: list[tuple], columns: list[str] = COLUMNS) -> None:
        marks = ", ".join("?" for _ in columns)
        self.execute(f"INSERT INTO clients ({', '.join(columns)}) VALUES ({marks})", rows)

    def allow_text(self, column: str) -> None:
        """SQLite already stores text in an INTEGER column: a bad value needs no change."""

    def source(self, **overrides) -> dict:
        return {"name": "crm", "url": self.url, "table": "clients", "watermark_column": "row_id", **overrides}


class PostgresDatabase:
    kind = "postgresql"
    slow_query = "SELECT c.* FROM clients c CROSS JOIN pg_sleep(30)"

    def __init__(self, server: dict[str, str]):
        import psycopg

        self.psycopg = psycopg
        self.server = server
        self.password = server["password"]
        self.name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server["url"], password=self.password, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.name}")
        base = server["url"].rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def drop(self) -> None:
        with self.psycopg.connect(self.server["url"], password=self.password, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def execute(self, sql: str, rows: list[tuple] | None = None) -> None:
        with self.psycopg.connect(self.url, password=self.password) as connection:
            if rows is None:
                connection.execute(sql)
            else:
                connection.cursor().executemany(sql, rows)

    def create_clients(self, watermark: str = "row_id bigint PRIMARY KEY") -> None:
        self.execute(
            f"CREATE TABLE clients ({watermark}, corporation text, lastmonth_activity double precision, "
            "lastyear_activity integer, number_of_employees integer, exited integer)"
        )

    def insert(self, rows: list[tuple], columns: list[str] = COLUMNS) -> None:
        if len(rows) > 1000:  # COPY: a large table in a second rather than a minute
            with self.psycopg.connect(self.url, password=self.password) as connection:
                with connection.cursor().copy(f"COPY clients ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            return
        marks = ", ".join("%s" for _ in columns)
        self.execute(f"INSERT INTO clients ({', '.join(columns)}) VALUES ({marks})", rows)

    def allow_text(self, column: str) -> None:
        self.execute(f"ALTER TABLE clients ALTER COLUMN {column} TYPE text")

    def source(self, **overrides) -> dict:
        return {
            "name": "crm",
            "url": self.url,
            "password_env": PASSWORD_ENV,
            "table": "clients",
            "watermark_column": "row_id",
            **overrides,
        }


@pytest.fixture(scope="session")
def postgres_server() -> dict[str, str]:
    url = os.environ.get("RISK_TEST_POSTGRES")
    if not url:
        message = 'no PostgreSQL server given: run `eval "$(.ci/postgres start)"` (needs Debian\'s postgresql) to test against one'
        skip_or_fail_in_ci(message)
    return {"url": url, "password": os.environ.get("RISK_TEST_POSTGRES_PASSWORD", "")}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, deployed_project: Config, monkeypatch: pytest.MonkeyPatch):
    if request.param == "sqlite":
        yield SqliteDatabase(deployed_project.root)
        return
    db = PostgresDatabase(request.getfixturevalue("postgres_server"))
    monkeypatch.setenv(PASSWORD_ENV, db.password)
    yield db
    db.drop()


def with_database(config: Config, *sources: dict, **overrides) -> Config:
    """The project's config with these database sources. Drift is never judged here (its
    threshold is out of reach): these tests are about what is read, not about the model."""
    values = json.loads(config.path.read_text())
    watermarks = sorted({source.get("watermark_column", "row_id") for source in sources})  # they must not be features
    values.update(database_sources=list(sources), drop_columns=watermarks, drift_min_rows=10**9, **overrides)
    config.path.write_text(json.dumps(values, indent=2))
    return load_config(config.path)


def run(config: Config) -> int:
    return fullprocess.main(["--config", str(config.path)])


def last_audit(config: Config) -> dict:
    return logbook.read_audit(config)[-1]


def pulls(config: Config) -> list[dict]:
    return [entry for entry in ledger.read_record(config) if "database_source" in entry]


def master_ids(config: Config) -> list[str]:
    return [c for c in masterstore.load_master(config)["corporation"] if c.startswith("db-")]


# ----------------------------------------------------------------------------- both databases


def test_first_pull_ingests_every_row_and_records_its_lineage(deployed_project: Config, database) -> None:
    database.create_clients()
    database.insert(client_rows(1, 40))
    config = with_database(deployed_project, database.source())

    assert run(config) == 0

    entry = pulls(config)[-1]
    assert entry["status"] == "ingested" and entry["database_source"] == "crm"
    assert (entry["watermark_after"], entry["watermark_from"], entry["watermark_to"]) == (None, 1, 40)
    assert entry["rows_pulled"] == entry["rows_read"] == entry["rows_added"] == 40
    snapshot = config.output_folder / entry["snapshot"]
    assert sha256_file(snapshot) == entry["sha256"]
    assert not snapshot.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), "snapshots are read-only"
    assert master_ids(config) == [f"db-{i:07d}" for i in range(1, 41)]
    audit = last_audit(config)
    assert audit["status"] == "ok" and audit["database_pulls"] == [
        {"database_source": "crm", "rows_pulled": 40, "watermark_from": 1, "watermark_to": 40}
    ]
    assert entry["name"] in audit["files_ingested"]


def test_a_second_run_pulls_only_the_rows_added_since(deployed_project: Config, database) -> None:
    database.create_clients()
    database.insert(client_rows(1, 40))
    config = with_database(deployed_project, database.source())
    assert run(config) == 0
    database.insert(client_rows(41, 25))

    assert run(config) == 0

    entry = pulls(config)[-1]
    assert (entry["watermark_after"], entry["watermark_from"], entry["watermark_to"]) == (40, 41, 65)
    assert entry["rows_pulled"] == entry["rows_added"] == 25
    assert master_ids(config) == [f"db-{i:07d}" for i in range(1, 66)]
    assert run(config) == 0
    assert last_audit(config)["decision"] == "no_new_data" and len(pulls(config)) == 2


def test_a_line_break_inside_a_text_value_keeps_its_row_whole(deployed_project: Config, database) -> None:
    # Python 3.11's csv writer leaves a value holding a bare carriage return unquoted, where pandas
    # ends a row: the snapshot and the master must still read back as the rows pulled.
    database.create_clients()
    rows = client_rows(1, 40)
    breaks = {4: "carriage\rreturn", 5: "windows\r\nbreak", 6: "line\nfeed", 7: "trailing\r", 8: '\r"quoted", comma'}
    for i, text in breaks.items():
        rows[i] = (rows[i][0], f"{rows[i][1]}{text}", *rows[i][2:])
    database.insert(rows)
    config = with_database(deployed_project, database.source())

    assert run(config) == 0

    names = [row[1] for row in rows]
    assert master_ids(config) == names
    master = masterstore.load_master(config)
    assert len(master) == masterstore.read_master_state(config)["rows"]
    assert pulls(config)[-1]["rows_read"] == pulls(config)[-1]["rows_added"] == 40
    # The row-hash index knows them: a second source reading the same table again adds nothing it holds.
    database.insert(client_rows(41, 5))
    config = with_database(deployed_project, database.source(), database.source(name="crm_again"))

    assert run(config) == 0

    assert master_ids(config) == names + [f"db-{i:07d}" for i in range(41, 46)]
    assert len(masterstore.load_master(config)) == masterstore.read_master_state(config)["rows"]
    assert [entry["rows_added"] for entry in pulls(config)[-2:]] in ([5, 0], [0, 5])


def test_nothing_new_in_the_database_imports_no_heavy_library(deployed_project: Config, database) -> None:
    database.create_clients()
    database.insert(client_rows(1, 10))
    config = with_database(deployed_project, database.source())
    assert run(config) == 0
    heavy_extra = ", 'psycopg'" if database.kind == "sqlite" else ""  # SQLite needs no driver beyond the stdlib
    probe = (
        f"import sys; sys.path.insert(0, {str(PROJECT_DIR)!r}); import fullprocess; "
        f"code = fullprocess.main(['--config', {str(config.path)!r}]); "
        f"print(code, sorted(m for m in ('pandas', 'numpy', 'sklearn', 'matplotlib', 'scipy'{heavy_extra}) if m in sys.modules))"
    )

    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)

    assert result.stdout.strip() == "0 []", result.stderr
    assert last_audit(config)["decision"] == "no_new_data"


def timestamped_clients(deployed_project: Config, database) -> tuple[Config, list[str], str]:
    """30 clients watermarked by an updated-at time (three days of it), the source configured; the
    columns and the time pattern (``stamp.format(day)``) for the rows a test adds later."""
    kind = "TEXT" if database.kind == "sqlite" else "timestamptz"
    database.create_clients(watermark=f"row_id integer, updated_at {kind}")
    columns = [*COLUMNS, "updated_at"]
    stamp = "2026-11-0{}T10:00:00.123456" + ("" if database.kind == "sqlite" else "+00:00")
    database.insert([(*row, stamp.format(1 + row[0] % 3)) for row in client_rows(1, 30)], columns)
    return with_database(deployed_project, database.source(watermark_column="updated_at")), columns, stamp


def test_a_timestamp_watermark_reads_each_row_once(deployed_project: Config, database) -> None:
    config, columns, stamp = timestamped_clients(deployed_project, database)
    assert run(config) == 0
    database.insert([(*row, stamp.format(5)) for row in client_rows(31, 5)], columns)

    assert run(config) == 0

    first, second = pulls(config)
    assert first["rows_pulled"] == 30 and second["rows_pulled"] == 5
    assert second["watermark_after"] == first["watermark_to"]
    assert second["watermark_from"] == second["watermark_to"]
    assert second["watermark_to"].startswith("2026-11-05")
    assert sorted(master_ids(config)) == [f"db-{i:07d}" for i in range(1, 36)]
    assert run(config) == 0 and len(pulls(config)) == 2


def test_a_changed_watermark_column_reads_the_source_afresh(deployed_project: Config, database) -> None:
    kind = "TEXT" if database.kind == "sqlite" else "timestamptz"
    database.create_clients(watermark=f"row_id integer, updated_at {kind}")
    database.insert(
        [(*row, f"2026-11-01T10:00:{row[0]:02d}+00:00") for row in client_rows(1, 30)], [*COLUMNS, "updated_at"]
    )
    config = with_database(deployed_project, database.source())
    assert run(config) == 0
    config = with_database(config, database.source(watermark_column="updated_at"))

    assert run(config) == 0

    entry = pulls(config)[-1]
    assert entry["watermark_column"] == "updated_at" and entry["watermark_after"] is None
    assert (entry["rows_pulled"], entry["rows_added"], entry["duplicates_dropped"]) == (30, 0, 30)
    assert master_ids(config) == [f"db-{i:07d}" for i in range(1, 31)]


def test_a_query_source_reads_through_its_query(deployed_project: Config, database) -> None:
    database.create_clients()
    database.insert(client_rows(1, 30))
    query = "SELECT * FROM clients WHERE corporation LIKE 'db%' AND row_id % 2 = 0;"
    spec = database.source(query=query)
    del spec["table"]
    config = with_database(deployed_project, spec)
    before = sha256_file(database.path) if database.kind == "sqlite" else None

    assert run(config) == 0

    assert pulls(config)[-1]["rows_pulled"] == 15
    assert master_ids(config) == [f"db-{i:07d}" for i in range(2, 31, 2)]
    if before is not None:
        assert sha256_file(database.path) == before, "the database file is opened read-only"


def test_a_bad_row_type_sets_the_pull_aside_with_the_reason(deployed_project: Config, database) -> None:
    database.create_clients()
    database.allow_text("lastyear_activity")
    rows = client_rows(1, 20)
    rows[4] = (*rows[4][:3], "lots", *rows[4][4:])
    database.insert(rows)
    config = with_database(deployed_project, database.source())

    assert run(config) == 0

    entry = pulls(config)[-1]
    assert entry["status"] == "set_aside"
    assert entry["reason"] == "column 'lastyear_activity' must be numeric but 1 value(s) are not (first on line 6)"
    quarantined = [p.name for p in (config.output_folder / "quarantine").iterdir()]
    assert any(name.endswith(entry["name"]) for name in quarantined)
    assert any(name.endswith(entry["name"] + ".reason.txt") for name in quarantined)
    assert last_audit(config)["files_set_aside"] == [{"name": entry["name"], "reason": entry["reason"]}]
    assert master_ids(config) == []
    # The pull set aside is not read again; the rows after it are.
    database.insert(client_rows(21, 5))
    assert run(config) == 0
    entry = pulls(config)[-1]
    assert entry["status"] == "ingested" and (entry["watermark_after"], entry["rows_added"]) == (20, 5)
    assert master_ids(config) == [f"db-{i:07d}" for i in range(21, 26)]


@pytest.mark.slow
def test_a_run_killed_mid_pull_loses_and_doubles_nothing(deployed_project: Config, database) -> None:
    rows = 200_000  # many chunks: the pull takes long enough to be caught in the middle
    database.create_clients()
    database.insert(client_rows(1, rows))
    config = with_database(deployed_project, database.source())
    before = masterstore.read_master_state(config)["rows"]
    folder = dbpull.snapshot_folder(config)
    command = [sys.executable, str(PROJECT_DIR / "dbsource.py"), "--config", str(config.path)]

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(folder.glob(".*.pulling")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    caught = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert caught, "the pull ended before it could be killed"

    assert list(folder.glob("*.csv")) == [] and pulls(config) == []
    assert masterstore.read_master_state(config)["rows"] == before
    assert dbsource.main(["--config", str(config.path)]) == 0
    entry = pulls(config)[-1]
    assert entry["rows_pulled"] == entry["rows_added"] == rows and entry["watermark_to"] == rows
    assert list(folder.iterdir()) == [config.output_folder / entry["snapshot"]], "the partial file is gone"
    master = masterstore.load_master(config)
    assert len(master) == before + rows and not master.duplicated().any()


def test_a_run_killed_before_recording_the_watermark_reads_the_rows_again(deployed_project: Config, database) -> None:
    """The rows reached the master but the record entry (the watermark) did not: read again, not doubled."""
    database.create_clients()
    database.insert(client_rows(1, 30))
    config = with_database(deployed_project, database.source())
    assert dbsource.main(["--config", str(config.path)]) == 0
    record = ledger.record_path(config)
    lines = record.read_text().splitlines(keepends=True)
    record.write_text("".join(lines[:-1]))  # as if killed between the master and the record
    rows_before = masterstore.read_master_state(config)["rows"]

    assert dbsource.main(["--config", str(config.path)]) == 0

    entry = pulls(config)[-1]
    assert (entry["rows_pulled"], entry["rows_added"], entry["duplicates_dropped"]) == (30, 0, 30)
    assert entry["watermark_to"] == 30 and len(pulls(config)) == 1
    assert masterstore.read_master_state(config)["rows"] == rows_before
    assert master_ids(config) == [f"db-{i:07d}" for i in range(1, 31)]


@pytest.mark.parametrize(
    "problem, source, expected",
    [
        ("missing table", {"table": "no_such_table"}, "no_such_table"),
        ("missing column", {"watermark_column": "updated_at"}, "updated_at"),
        ("failing query", {"query": "SELECT no_such_function(row_id) AS row_id FROM clients"}, "no_such_function"),
    ],
)
def test_a_failing_source_is_one_line_the_files_still_go_in_and_the_run_fails(
    deployed_project: Config, database, problem: str, source: dict, expected: str
) -> None:
    database.create_clients()
    database.insert(client_rows(1, 10))
    spec = database.source(**source)
    if "query" in spec:
        del spec["table"]
    config = with_database(deployed_project, spec)
    test = (config.test_data_folder / "testdata.csv").read_text().splitlines()
    (config.input_folder / "few.csv").write_text("\n".join(test[:11]) + "\n")

    assert run(config) == 1

    audit = last_audit(config)
    assert audit["status"] == "failed" and audit["files_ingested"] == ["few.csv"]
    [failure] = audit["database_failures"]
    assert failure["source"] == "crm" and expected in failure["reason"] and "\n" not in failure["reason"]
    log = (config.log_folder / "fullprocess.log").read_text()
    [line] = [line for line in log.splitlines() if "database source 'crm'" in line]
    assert expected in line and "ERROR" in line
    assert pulls(config) == []


def test_a_query_past_its_timeout_is_stopped_and_said_so(deployed_project: Config, database) -> None:
    database.create_clients()
    database.insert(client_rows(1, 10))
    spec = database.source(query=database.slow_query, query_timeout_seconds=1)
    del spec["table"]
    config = with_database(deployed_project, spec)
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ})

    assert result.returncode == 1
    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"] == "the check for new rows did not finish within query_timeout_seconds (1 s)"


def test_a_missing_sqlite_file_is_a_failure_and_is_not_created(deployed_project: Config) -> None:
    config = with_database(deployed_project, SqliteDatabase(deployed_project.root).source(url="sqlite:///missing.db"))

    assert run(config) == 1

    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"] == f"the database file {config.root / 'missing.db'} does not exist"
    assert not (config.root / "missing.db").exists()


# ----------------------------------------------------------------------------- PostgreSQL only


@pytest.fixture
def postgres(deployed_project: Config, postgres_server: dict, monkeypatch: pytest.MonkeyPatch):
    db = PostgresDatabase(postgres_server)
    monkeypatch.setenv(PASSWORD_ENV, db.password)
    db.create_clients()
    db.insert(client_rows(1, 10))
    yield db
    db.drop()


def run_subprocess(config: Config, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """fullprocess as cron runs it; the timeout is the bound the run must end within."""
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_postgres_refused_login_is_one_line_without_the_password(deployed_project: Config, postgres) -> None:
    config = with_database(deployed_project, postgres.source())
    wrong = "not-the-" + postgres.password

    result = run_subprocess(config, {**os.environ, PASSWORD_ENV: wrong})

    assert result.returncode == 1
    [failure] = last_audit(config)["database_failures"]
    assert "password authentication failed" in failure["reason"]
    for text in (
        result.stderr,
        (config.log_folder / "fullprocess.log").read_text(),
        logbook.audit_path(config).read_text(),
    ):
        assert wrong not in text and postgres.password not in text


def test_postgres_missing_password_variable_is_named(
    deployed_project: Config, postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = with_database(deployed_project, postgres.source())
    monkeypatch.delenv(PASSWORD_ENV)

    assert run(config) == 1

    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"] == f"the environment variable {PASSWORD_ENV} (password_env) is not set"


@pytest.mark.parametrize("server", ["silent", "closed"])
def test_postgres_unreachable_port_ends_the_run_within_the_timeout(
    deployed_project: Config, postgres, server: str
) -> None:
    """A port where something accepts but never answers (the connect timeout must end the wait),
    and a closed port (refused at once)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "silent":
        listener.listen(8)  # the kernel completes the handshake; nobody ever answers
    else:
        listener.close()
    url = f"postgresql://riskadmin@127.0.0.1:{port}/{postgres.name}"
    config = with_database(deployed_project, postgres.source(url=url, connect_timeout_seconds=2))
    try:
        result = run_subprocess(config, {**os.environ}, timeout=60)
    finally:
        listener.close()

    assert result.returncode == 1
    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"].startswith("could not connect:")
    assert ("timeout" if server == "silent" else "refused") in failure["reason"]


def test_postgres_query_runs_read_only(deployed_project: Config, postgres) -> None:
    postgres.execute("CREATE SEQUENCE counter")
    spec = postgres.source(query="SELECT c.*, nextval('counter') AS n FROM clients c")
    del spec["table"]
    config = with_database(deployed_project, spec)

    assert run(config) == 1

    [failure] = last_audit(config)["database_failures"]
    assert "read-only transaction" in failure["reason"]


def test_postgres_query_cannot_stack_statements(deployed_project: Config, postgres) -> None:
    """Wrapped as a subquery, this query closed it, committed the read-only transaction and deleted
    a table's rows on every run. Refused when the config is loaded; nothing reaches the server."""
    postgres.execute("CREATE TABLE victim (x integer); INSERT INTO victim VALUES (1), (2)")
    hostile = "SELECT * FROM clients) AS x; COMMIT; DELETE FROM victim; SELECT 1 FROM (SELECT 1 AS row_id"
    values = json.loads(deployed_project.path.read_text())
    spec = postgres.source(query=hostile)
    del spec["table"]
    values.update(database_sources=[spec], drop_columns=["row_id"])
    deployed_project.path.write_text(json.dumps(values))

    result = run_subprocess(deployed_project, {**os.environ})

    assert result.returncode != 0
    assert "query must be one statement" in result.stderr
    with postgres.psycopg.connect(postgres.url, password=postgres.password) as connection:
        assert connection.execute("SELECT count(*) FROM victim").fetchone() == (2,)


def test_a_query_with_semicolons_in_quotes_and_a_trailing_comment_still_reads(
    deployed_project: Config, database
) -> None:
    database.create_clients()
    database.insert(client_rows(1, 12))
    spec = database.source(query="SELECT * FROM clients WHERE corporation <> 'a;b' /* ; */ -- the last ; word")
    del spec["table"]
    config = with_database(deployed_project, spec)

    assert run(config) == 0

    assert pulls(config)[-1]["rows_pulled"] == 12


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "source, message",
    [
        ({"url": "postgresql://risk:s3cret-pw@db.example:5432/crm"}, "must not hold a password"),
        ({"url": "postgresql://risk@db.example/crm?password=s3cret-pw"}, "must not hold a password"),
        ({"url": "mysql://risk@db.example/crm"}, "must start with sqlite:/// or postgresql://"),
        ({"url": "sqlite:///"}, "names no database file"),
        ({"query": "SELECT * FROM clients"}, "either a table or a query"),
        ({"watermark_column": "changed_at"}, "'changed_at' must also be listed in drop_columns"),
        ({"name": "my crm"}, "name must be a non-empty word"),
        ({"tabel": "clients"}, "unknown key(s) ['tabel']"),
        ({"query_timeout_seconds": 0}, "query_timeout_seconds must be a positive number"),
        ({"table": None, "query": "SELECT * FROM clients; DELETE FROM clients"}, "query must be one statement"),
        ({"table": None, "query": "SELECT 1 -- ;\n; SELECT 2"}, "query must be one statement"),
    ],
)
def test_a_bad_database_source_is_a_config_error_without_the_password(
    tmp_path: Path, source: dict, message: str
) -> None:
    spec = {"name": "crm", "url": "sqlite:///clients.db", "table": "clients", "watermark_column": "row_id", **source}
    spec = {key: value for key, value in spec.items() if value is not None}
    (tmp_path / "config.json").write_text(json.dumps({"database_sources": [spec], "drop_columns": ["row_id"]}))

    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "config.json")

    assert message in str(error.value) and "s3cret-pw" not in str(error.value)


def test_no_database_source_needs_no_driver(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config = load_config(tmp_path / "config.json")
    assert config["database_sources"] == [] and dbpull.pull_new_rows(config).audit() == {}


@pytest.mark.slow
def test_sqlite_url_is_relative_to_the_config_under_crons_environment(deployed_project: Config, tmp_path: Path) -> None:
    database = SqliteDatabase(deployed_project.root)
    database.create_clients()
    database.insert(client_rows(1, 12))
    config = with_database(deployed_project, database.source())
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)]

    result = subprocess.run(
        command, cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr
    assert pulls(config)[-1]["rows_added"] == 12
    assert [p.name for p in home.iterdir() if not p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- faults


@pytest.fixture
def small_disk(deployed_project: Config):
    """The snapshot folder on a 2 MiB tmpfs: a pull larger than that meets a full disk mid-COPY."""
    if os.geteuid() != 0:
        skip_or_fail_in_ci("mounting a small tmpfs needs root")
    folder = deployed_project.output_folder / dbpull.SNAPSHOT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        skip_or_fail_in_ci(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def sessions_of_the_puller(postgres: PostgresDatabase) -> list[tuple]:
    with postgres.psycopg.connect(postgres.url, password=postgres.password, autocommit=True) as connection:
        return connection.execute(
            "SELECT pid, state, wait_event, query FROM pg_stat_activity "
            "WHERE application_name = 'risk-assessment ingestion'"
        ).fetchall()


def test_postgres_full_disk_mid_copy_fails_the_run_and_closes_the_connection(
    deployed_project: Config, postgres, small_disk: Path
) -> None:
    postgres.insert(client_rows(11, 150_000))  # about 5 MiB of CSV: more than the disk holds
    config = with_database(deployed_project, postgres.source())

    result = run_subprocess(config, {**os.environ}, timeout=60)  # before the fix: hung here for good

    assert result.returncode == 1
    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"].startswith("could not write the snapshot: [Errno 28] No space left on device")
    assert [(pid, state) for pid, state, *_ in sessions_of_the_puller(postgres)] == []
    assert list(small_disk.iterdir()) == [] and pulls(config) == []
    again = run_subprocess(config, {**os.environ}, timeout=60)  # the lock was released: not locked out
    assert again.returncode == 1 and last_audit(config)["decision"] != "locked_out"


def test_postgres_backend_stopped_mid_copy_ends_the_run_at_the_query_timeout(
    deployed_project: Config, postgres
) -> None:
    """A SIGSTOPped backend answers nothing and its statement_timeout never fires: the client's
    own deadline must end the wait (before the fix the run waited for good)."""
    slow = "SELECT c.* FROM clients c CROSS JOIN LATERAL (SELECT pg_sleep(0.1)) AS s"  # about 1 s per statement
    spec = postgres.source(query=slow, query_timeout_seconds=4)
    del spec["table"]
    config = with_database(deployed_project, spec)
    command = [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = None
    try:
        while stopped is None and process.poll() is None:
            copying = [pid for pid, _, _, query in sessions_of_the_puller(postgres) if query.startswith("COPY")]
            if copying:
                stopped = copying[0]
                os.kill(stopped, signal.SIGSTOP)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)

    assert stopped is not None, "the pull ended before its backend could be stopped"
    assert process.returncode == 1, stderr
    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"] == (
        "the pull of new rows did not finish within query_timeout_seconds (4 s): "
        "the server stopped answering, and the connection was closed"
    )
    assert pulls(config) == []


# ----------------------------------------------------------------------------- watermarks that would skip rows


def test_postgres_nan_watermark_is_refused_and_never_recorded(deployed_project: Config, postgres) -> None:
    """NaN sorts above every number: recorded as the watermark ("NaN" in the JSON), no later row was read."""
    postgres.execute("DROP TABLE clients")
    postgres.create_clients(watermark="row_id double precision")
    postgres.insert(client_rows(1, 20))
    postgres.execute("INSERT INTO clients (row_id, corporation) VALUES ('NaN', 'db-nan')")
    config = with_database(deployed_project, postgres.source())

    assert run(config) == 1

    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"].startswith("the watermark column 'row_id' holds NaN, which is not a finite number")
    assert pulls(config) == [] and "NaN" not in ledger.record_path(config).read_text()
    postgres.execute("DELETE FROM clients WHERE corporation = 'db-nan'")
    assert run(config) == 0
    assert pulls(config)[-1]["watermark_to"] == 20.0 and len(master_ids(config)) == 20


def test_postgres_a_nan_watermark_recorded_earlier_reads_the_source_afresh(deployed_project: Config, postgres) -> None:
    """An earlier version recorded NaN: nothing compares above it, so every later row was skipped."""
    postgres.execute("DROP TABLE clients")
    postgres.create_clients(watermark="row_id double precision")
    postgres.insert(client_rows(1, 20))
    config = with_database(deployed_project, postgres.source())
    assert run(config) == 0
    record = ledger.record_path(config)
    text = record.read_text()
    assert text.count('"watermark_to": 20.0') == 1
    record.write_text(text.replace('"watermark_to": 20.0', '"watermark_to": NaN'))
    postgres.insert(client_rows(21, 10))

    assert run(config) == 0

    entry = pulls(config)[-1]
    assert (entry["watermark_after"], entry["watermark_to"]) == (None, 30.0)
    assert (entry["rows_added"], entry["duplicates_dropped"]) == (10, 20)
    log = (config.log_folder / "fullprocess.log").read_text()
    assert "the recorded watermark NaN is not a finite number; reading the source afresh" in log


def test_sqlite_text_in_an_integer_watermark_is_refused(deployed_project: Config) -> None:
    """SQLite orders every text above every number: 'abc' became the watermark and 50 later rows were never read."""
    database = SqliteDatabase(deployed_project.root)
    database.create_clients(watermark="row_id INTEGER")  # not a PRIMARY KEY: that one refuses text
    database.insert(client_rows(1, 20))
    config = with_database(deployed_project, database.source())
    assert run(config) == 0
    database.execute("INSERT INTO clients (row_id, corporation) VALUES ('abc', 'db-abc')")
    database.insert(client_rows(21, 50))

    assert run(config) == 1

    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"].startswith(
        "the watermark column 'row_id' holds values of more than one type (50 number, 1 text such as 'abc')"
    )
    assert len(pulls(config)) == 1
    database.execute("DELETE FROM clients WHERE row_id = 'abc'")
    assert run(config) == 0
    assert pulls(config)[-1]["watermark_to"] == 70 and len(master_ids(config)) == 70


def test_numbers_stored_as_text_are_refused_as_a_watermark(deployed_project: Config, database) -> None:
    """As text '9' sorts after '20': '9' was recorded and rows '21'..'80' were never read."""
    database.create_clients(watermark="row_id text")
    database.insert([(str(row[0]), *row[1:]) for row in client_rows(1, 20)])
    config = with_database(deployed_project, database.source())

    assert run(config) == 1

    [failure] = last_audit(config)["database_failures"]
    assert failure["reason"].startswith("the watermark column 'row_id' holds numbers as text ('1' to '9')")
    assert "CAST(row_id AS integer) AS row_id" in failure["reason"] and pulls(config) == []


# ----------------------------------------------------------------------------- rows a watermark cannot see


def test_late_rows_at_the_boundary_are_read_and_null_watermarks_counted(deployed_project: Config, database) -> None:
    config, columns, stamp = timestamped_clients(deployed_project, database)
    assert run(config) == 0
    first = pulls(config)[-1]
    assert (first["rows_at_watermark_to"], first["rows_with_null_watermark"]) == (10, 0)
    assert first["known_limits"].startswith("not seen: rows changed in place without a new watermark")
    # Five rows arrive late with the last watermark, five without one.
    database.insert([(*row, first["watermark_to"]) for row in client_rows(31, 5)], columns)
    database.insert([(*row, None) for row in client_rows(36, 5)], columns)

    assert run(config) == 0

    second = pulls(config)[-1]
    assert second["late_rows_at_boundary"] == 5 and second["boundary_rows_reread"] == 15
    assert (second["rows_pulled"], second["rows_added"], second["duplicates_dropped"]) == (15, 5, 10)
    assert second["watermark_to"] == first["watermark_to"] and second["rows_at_watermark_to"] == 15
    assert second["rows_with_null_watermark"] == 5
    assert sorted(master_ids(config)) == [f"db-{i:07d}" for i in range(1, 36)]
    assert run(config) == 0 and len(pulls(config)) == 2, "nothing late since: nothing read again"
    log = (config.log_folder / "fullprocess.log").read_text()
    assert "5 row(s) have no updated_at (NULL) and are never read" in log
    [audited] = logbook.read_audit(config)[-2]["database_pulls"]
    assert (audited["late_rows_at_boundary"], audited["rows_with_null_watermark"]) == (5, 5)


# ----------------------------------------------------------------------------- failed runs leave no snapshots


def test_a_set_up_mistake_fails_before_the_pull_and_unrecorded_snapshots_go(deployed_project: Config, database) -> None:
    """Each tick of a broken set-up pulled the whole range again and left another full snapshot."""
    database.create_clients()
    database.insert(client_rows(1, 30))
    config = with_database(deployed_project, database.source())
    test_data = config.test_data_folder.rename(config.root / "testdata-away")
    folder = dbpull.snapshot_folder(config)

    for _ in range(2):
        assert run(config) == 1
        assert "test_data_path: the folder" in last_audit(config)["reason"]
        assert list(folder.glob("*.csv")) == [], "nothing pulled for a run that cannot use it"
    # A snapshot an earlier (failed or killed) run pulled but never recorded:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db_crm_0123456789abcdef.csv").write_text("row_id,corporation\n1,db-0000001\n")
    test_data.rename(config.test_data_folder)

    assert run(config) == 0

    entry = pulls(config)[-1]
    assert entry["rows_added"] == 30
    assert sorted(p.name for p in folder.iterdir()) == [entry["name"]]
