"""The client book (risk.data.book): read and checked like any input, from files or a database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from risk.core.settings import Config
from risk.data import book
from tests.conftest import write_config

KINDS = {
    "corporation": "text",
    "region": "text",
    "lastmonth_activity": "numeric",
    "number_of_employees": "numeric",
    "exited": "numeric",
}
FEATURES = {"numeric": ["lastmonth_activity", "number_of_employees"], "categorical": ["region"]}
KNOWN = {"region": frozenset({"north", "south"})}
HEADER = "corporation,region,lastmonth_activity,number_of_employees,exited\n"


def project_with_book(tmp_path: Path, text: str | bytes, name: str = "clients.csv") -> Config:
    config = write_config(tmp_path / "project", client_book=f"book/{name}")
    path = config.root / "book" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return config


def read(config: Config) -> book.Book:
    return book.read_book(config, KINDS, FEATURES, KNOWN)


def test_a_clean_book_is_typed_and_its_target_ignored(tmp_path: Path) -> None:
    config = project_with_book(tmp_path, HEADER + "007,north,3,12,1\nb2,south,,40,0\n")
    found = read(config)
    assert list(found.frame.columns) == ["corporation", "lastmonth_activity", "number_of_employees", "region"]
    assert found.frame["corporation"].tolist() == ["007", "b2"], "ids stay text"
    assert found.frame["lastmonth_activity"].dtype == "float64"
    assert found.checks["rows_read"] == found.checks["rows_kept"] == 2
    assert found.checks["missing_values"] == {"lastmonth_activity": 1}
    assert found.checks["set_aside"] == [] and found.checks["unknown_categories"] == {}
    assert found.source == "book/clients.csv" and len(found.sha256) == 64


def test_rows_without_ids_and_with_wrong_types_are_set_aside_with_the_reason_and_line(tmp_path: Path) -> None:
    config = project_with_book(
        tmp_path, HEADER + "a,north,1,2,0\n,north,1,2,0\n  ,south,1,2,0\nc,south,many,2,0\nd,west,1,inf,0\n"
    )
    found = read(config)
    assert found.frame["corporation"].tolist() == ["a"]
    reasons = {entry["reason"]: entry for entry in found.checks["set_aside"]}
    no_id = reasons["no value in the id column(s) ['corporation']"]
    assert no_id["rows"] == 2 and no_id["first"] == ["book/clients.csv line 3", "book/clients.csv line 4"]
    assert reasons["column 'lastmonth_activity' holds a value that is not a finite number within ±3.4e38"]["first"] == [
        "book/clients.csv line 5"
    ]
    assert reasons["column 'number_of_employees' holds a value that is not a finite number within ±3.4e38"]["rows"] == 1


def test_a_number_too_large_for_the_trees_is_set_aside_not_the_whole_book_refused(tmp_path: Path) -> None:
    # Finite in float64 but infinite in float32, where scikit-learn's trees compare features: one such
    # client made the forest refuse the whole book ("Input X contains infinity..."), and no list was written.
    config = project_with_book(
        tmp_path, HEADER + "a,north,1,2,0\nb,north,1e308,2,0\nc,north,1,-3.5e38,0\nd,north,3e38,2,0\n"
    )
    found = read(config)
    assert found.frame["corporation"].tolist() == ["a", "d"]
    reasons = {entry["reason"]: entry for entry in found.checks["set_aside"]}
    assert reasons["column 'lastmonth_activity' holds a value that is not a finite number within ±3.4e38"]["first"] == [
        "book/clients.csv line 3"
    ]
    assert reasons["column 'number_of_employees' holds a value that is not a finite number within ±3.4e38"]["rows"] == 1


def test_duplicate_ids_are_named_and_the_first_row_kept(tmp_path: Path) -> None:
    config = project_with_book(tmp_path, HEADER + "a,north,1,2,0\nb,north,1,2,0\na,south,9,9,0\na,south,8,8,0\n")
    found = read(config)
    assert found.frame["corporation"].tolist() == ["a", "b"]
    assert found.frame["lastmonth_activity"].tolist() == [1.0, 1.0], "the first row of a is kept"
    assert found.checks["duplicate_ids"] == {"count": 2, "examples": ["a"]}
    assert found.checks["set_aside"][0]["first"] == ["book/clients.csv line 4", "book/clients.csv line 5"]


def test_unknown_categories_are_counted(tmp_path: Path) -> None:
    config = project_with_book(tmp_path, HEADER + "a,north,1,2,0\nb,west,1,2,0\nc,east,1,2,0\nd,,1,2,0\n")
    found = read(config)
    assert found.checks["unknown_categories"] == {"region": {"rows": 2, "values": ["east", "west"]}}
    assert found.checks["missing_values"] == {"region": 1}


@pytest.mark.parametrize(
    "text, words",
    [
        (b"", "is empty"),
        (HEADER.encode() + b"a,n\xe9,1,2,0\n", "not UTF-8"),
        (b"corporation,region,lastmonth_activity\na,north,1\n", "lacks column(s) ['number_of_employees']"),
        (b"region,lastmonth_activity,number_of_employees\nnorth,1,2\n", "lacks column(s) ['corporation']"),
        (HEADER.encode() + b",north,1,2,0\n", "no client can be scored (1 row(s): no value in the id column(s)"),
    ],
)
def test_a_book_that_cannot_be_used_is_one_line_naming_it(tmp_path: Path, text: bytes, words: str) -> None:
    config = project_with_book(tmp_path, text)
    with pytest.raises(book.BookError, match="client_book") as caught:
        read(config)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_book_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project", client_book="nowhere.csv")
    with pytest.raises(book.BookError, match="nowhere.csv does not exist"):
        read(config)


def test_a_folder_book_reads_every_csv_and_its_hash_follows_the_bytes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project", client_book="book")
    folder = config.root / "book"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + "a,north,1,2,0\n")
    (folder / "b.csv").write_text("corporation,number_of_employees,lastmonth_activity,region\nb,5,,south\n")
    (folder / "notes.txt").write_text("not a book")
    found = read(config)
    assert found.frame["corporation"].tolist() == ["a", "b"]
    assert found.frame["number_of_employees"].tolist() == [2.0, 5.0]
    assert found.sha256 == book.files_hash(book.book_files(config))
    recorded = {"book_hash": found.sha256, "book_files": found.files}
    assert book.files_hash_if_changed(config, recorded) == found.sha256

    (folder / "b.csv").write_text("corporation,number_of_employees,lastmonth_activity,region\nb,6,,south\n")
    assert book.files_hash_if_changed(config, recorded) != found.sha256
    (folder / "b.csv").write_text("corporation,number_of_employees,lastmonth_activity,region\nb,5,,south\n")
    assert book.files_hash_if_changed(config, recorded) == found.sha256, "touched but the same bytes"


def sqlite_book(tmp_path: Path, rows: list[tuple]) -> Config:
    config = write_config(
        tmp_path / "project", client_book={"name": "crm", "url": "sqlite:///crm.db", "table": "clients"}
    )
    with sqlite3.connect(config.root / "crm.db") as connection:
        connection.execute("DROP TABLE IF EXISTS clients")
        connection.execute(
            "CREATE TABLE clients (corporation TEXT, region TEXT, lastmonth_activity REAL, number_of_employees INTEGER)"
        )
        connection.executemany("INSERT INTO clients VALUES (?, ?, ?, ?)", rows)
    connection.close()
    return config


def test_a_sqlite_book_is_read_whole_and_its_hash_ignores_row_order(tmp_path: Path) -> None:
    rows = [("007", "north", 1.5, 10), ("b", "south", None, 20), ("b", "south", 3.0, 30), (None, "north", 1.0, 1)]
    config = sqlite_book(tmp_path, rows)
    found = read(config)
    assert found.frame["corporation"].tolist() == ["007", "b"]
    assert found.checks["duplicate_ids"]["examples"] == ["b"] and found.checks["set_aside"][0]["rows"] == 1
    assert found.source.startswith("crm (sqlite file") and found.files is None
    assert read(sqlite_book(tmp_path, rows[::-1])).sha256 == found.sha256
    changed = [*rows[:-1], (None, "north", 2.0, 1)]
    assert read(sqlite_book(tmp_path, changed)).sha256 != found.sha256


def test_an_unreachable_database_book_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project", client_book={"name": "crm", "url": "sqlite:///gone.db", "table": "t"})
    with pytest.raises(book.BookError, match=r"client_book \(crm, sqlite file .*gone.db\): the database file"):
        read(config)
