"""Ingestion (risk.data.ingest, ledger, masterstore) on real files in tmp_path."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from risk.core import artefacts, tables
from risk.core.files import sha256_file
from risk.core.settings import Config
from risk.data import ingest, ledger, masterstore
from tests.conftest import HEADER, master_rows, quarantine_reasons, write, write_config


def test_first_run_ingests_every_sample_file(project: Config) -> None:
    result = ingest.ingest_new_files(project)

    assert result.files_ingested and not result.files_set_aside
    assert result.rows_added == 7500 == len(master_rows(project))
    names = (project.output_folder / "ingestedfiles.txt").read_text().split()
    assert names == sorted(p.name for p in project.input_folder.iterdir())
    record = ledger.read_record(project)
    assert {e["sha256"] for e in record} == {sha256_file(p) for p in project.input_folder.iterdir()}
    assert all(e["rows_read"] == e["rows_added"] == 2500 and e["duplicates_dropped"] == 0 for e in record)
    assert len(pd.read_csv(project.output_folder / artefacts.LATEST_BATCH_FILE)) == 7500


def test_second_run_reads_nothing_and_changes_nothing(project: Config) -> None:
    ingest.ingest_new_files(project)
    before = sha256_file(masterstore.master_path(project))

    assert ledger.pending_files(project) == []
    result = ingest.ingest_new_files(project)

    assert result.rows_added == 0 and result.files_ingested == []
    assert sha256_file(masterstore.master_path(project)) == before


def test_touched_but_unchanged_file_is_not_new(project: Config) -> None:
    ingest.ingest_new_files(project)
    source = next(project.input_folder.iterdir())
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))

    assert ledger.pending_files(project) == []


def test_changed_file_under_old_name_adds_only_its_new_rows(project: Config) -> None:
    ingest.ingest_new_files(project)
    source = sorted(project.input_folder.iterdir())[0]
    with source.open("a", encoding="utf-8") as handle:
        handle.write("newco01,5,60,12,1\nnewco02,0,3,4,0\n")

    result = ingest.ingest_new_files(project)

    assert [f["name"] for f in result.files_ingested] == [source.name]
    assert result.rows_added == 2
    assert result.files_ingested[0]["duplicates_dropped"] == 2500
    assert len(master_rows(project)) == 7502
    assert (project.output_folder / "ingestedfiles.txt").read_text().split().count(source.name) == 2


def test_duplicate_rows_within_and_across_files_are_dropped_and_counted(project: Config) -> None:
    ingest.ingest_new_files(project)
    existing = sorted(project.input_folder.iterdir())[0].read_text().splitlines()[1]
    write(project.input_folder / "dupes.csv", HEADER + f"{existing}\nnewco01,5,60,12,1\nnewco01,5,60,12,1\n")

    result = ingest.ingest_new_files(project)

    entry = result.files_ingested[0]
    assert (entry["rows_read"], entry["rows_added"], entry["duplicates_dropped"]) == (3, 1, 2)
    assert len(master_rows(project)) == 7501


def test_same_row_typed_differently_is_a_duplicate(project: Config) -> None:
    """5 and 5.0, or a numeric and a quoted id, are the same values."""
    ingest.ingest_new_files(project)
    write(project.input_folder / "a.csv", HEADER + "x1,5,60,12,1\n")
    write(project.input_folder / "b.csv", HEADER + '"x1",5.0,60.0,12,1\n')

    result = ingest.ingest_new_files(project)

    assert result.rows_added == 1


BAD_FILES = {
    "empty.csv": ("", "empty file"),
    "header_only.csv": (HEADER, "no data rows"),
    "no_target.csv": (
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees\nab,1,2,3\n",
        "target column 'exited' is missing",
    ),
    "text_in_number.csv": (HEADER + "ab,1,2,3,0\ncd,lots,2,3,1\n", "column 'lastmonth_activity' must be numeric"),
    "latin1.csv": (HEADER.encode() + "caf\xe9,1,2,3,0\n".encode("latin-1"), "not UTF-8"),
    "missing_column.csv": ("corporation,lastmonth_activity,exited\nab,1,0\n", "missing column(s)"),
    "three_classes.csv": (HEADER + "ab,1,2,3,0\ncd,1,2,3,2\n", "binary target"),
    "binary.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "a PNG image"),
    "clients.csv.gz": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip-compressed"),
    "semicolons.csv": (HEADER.replace(",", ";") + "ab;1;2;3;0\n", "separated by semicolons"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_set_aside_with_reason_and_master_intact(project: Config, name: str) -> None:
    ingest.ingest_new_files(project)
    master_before = sha256_file(masterstore.master_path(project))
    content, expected_reason = BAD_FILES[name]
    write(project.input_folder / name, content)
    write(project.input_folder / "zz_good.csv", HEADER + "goodco,3,40,10,0\n")

    result = ingest.ingest_new_files(project)

    assert [f["name"] for f in result.files_set_aside] == [name]
    assert expected_reason in result.files_set_aside[0]["reason"]
    assert [f["name"] for f in result.files_ingested] == ["zz_good.csv"]
    assert result.rows_added == 1
    reasons = quarantine_reasons(project)
    assert expected_reason in reasons[name]
    quarantined = [p for p in (project.output_folder / "quarantine").iterdir() if p.name.endswith(name)]
    assert quarantined and quarantined[0].read_bytes() == (project.input_folder / name).read_bytes()
    # The master holds exactly its old bytes plus the good row.
    master = masterstore.master_path(project).read_bytes()
    assert master.endswith(b"goodco,3,40,10,0\n")
    assert len(master_rows(project)) == 7501
    assert master_before != sha256_file(masterstore.master_path(project))
    # Set aside once: not retried until its content changes.
    assert ledger.pending_files(project) == []


def test_rows_without_target_are_counted_not_silently_dropped(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "partly.csv", HEADER + "ab,1,2,3,\ncd,1,2,3,1\n")

    result = ingest.ingest_new_files(project)

    entry = result.files_ingested[0]
    assert entry["rows_missing_target"] == 1 and entry["rows_added"] == 1
    assert "without a target" in entry["notes"][0]


def test_extra_columns_are_ignored_with_a_note(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "extra.csv", "region," + HEADER + "north,ab,1,2,3,0\n")

    result = ingest.ingest_new_files(project)

    assert result.rows_added == 1
    assert "region" in result.files_ingested[0]["notes"][0]
    assert list(master_rows(project).columns) == HEADER.strip().split(",")


def test_hidden_files_are_ignored(project: Config) -> None:
    write(project.input_folder / ".partial.csv.swp", "junk")

    assert all(not f.name.startswith(".") for f in ledger.pending_files(project))


def test_interrupted_run_is_recovered_without_duplicates(project: Config) -> None:
    """A run that died after renaming the master but before its index: rebuilt, no doubles."""
    first = sorted(project.input_folder.iterdir())[0]
    stash = project.root / "stash"
    stash.mkdir()
    for other in sorted(project.input_folder.iterdir())[1:]:
        shutil.move(other, stash / other.name)
    ingest.ingest_new_files(project)
    # Simulate the crash: the master gained the next file's rows, index and record did not.
    second = sorted(stash.iterdir())[0]
    rows = second.read_text().split("\n", 1)[1]
    with masterstore.master_path(project).open("a") as handle:
        handle.write(rows)
    shutil.move(second, project.input_folder / second.name)

    result = ingest.ingest_new_files(project)

    assert result.rows_added == 0
    assert result.files_ingested[0]["duplicates_dropped"] == 2500
    assert len(master_rows(project)) == 5000
    assert first.name in (project.output_folder / "ingestedfiles.txt").read_text()


def test_text_target_and_string_ids_keep_their_values(tmp_path: Path) -> None:
    config = write_config(tmp_path, target="Risk", positive_label="bad", id_columns=["id"])
    write(config.input_folder / "a.csv", "id,Age,Saving accounts,Risk\r\n007,30,NA,good\r\n008,41,little,bad\r\n")
    config.test_data_folder.mkdir()

    ingest.ingest_new_files(config)

    master = master_rows(config)
    assert list(master["id"]) == ["007", "008"]
    assert master["Saving accounts"].isna().tolist() == [True, False]
    assert masterstore.column_kinds(config)["Risk"] == tables.TEXT


def test_first_run_killed_before_its_state_was_written_is_rebuilt_not_doubled(project: Config) -> None:
    ingest.ingest_new_files(project)
    for name in (artefacts.MASTER_STATE_FILE, artefacts.HASHES_FILE, artefacts.RECORD_FILE):
        (project.output_folder / name).unlink()

    result = ingest.ingest_new_files(project)

    assert result.rows_added == 0
    assert len(master_rows(project)) == 7500
    assert masterstore.read_master_state(project)["target_classes"] == ["0", "1"]


def test_float_labels_join_the_integer_classes_even_after_a_rebuild(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "floats.csv", HEADER + "fl1,1,2,3,1.0\nfl2,1,2,3,0.0\n")
    assert ingest.ingest_new_files(project).rows_added == 2
    (project.output_folder / artefacts.HASHES_FILE).unlink()  # force a rebuild
    write(project.input_folder / "ints.csv", HEADER + "in1,1,2,3,1\n")

    result = ingest.ingest_new_files(project)

    assert result.files_set_aside == [] and result.rows_added == 1
    assert masterstore.read_master_state(project)["target_classes"] == ["0", "1"]
    assert set(master_rows(project)["exited"].unique()) == {0, 1}


@pytest.mark.parametrize(
    ("values", "reason"),
    [("True,2,3,1\nxy,False,2,3,0", "true/false"), ("inf,2,3,1", "infinite")],
)
def test_booleans_and_infinities_in_numeric_columns_are_set_aside(project: Config, values: str, reason: str) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "odd.csv", HEADER + "ab," + values + "\n")

    result = ingest.ingest_new_files(project)

    assert [f["name"] for f in result.files_set_aside] == ["odd.csv"]
    assert reason in result.files_set_aside[0]["reason"]


def test_a_column_empty_in_the_first_file_takes_its_kind_from_the_first_values(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    write(config.input_folder / "a.csv", "corporation,sector,exited\nab,,1\ncd,,0\n")
    write(config.input_folder / "b.csv", "corporation,sector,exited\nef,retail,1\n")

    result = ingest.ingest_new_files(config)

    assert result.files_set_aside == [] and result.rows_added == 3
    assert masterstore.column_kinds(config)["sector"] == tables.TEXT
    assert masterstore.read_master_state(config)["unobserved"] == []


def test_negative_zero_is_the_same_value_as_zero(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "a.csv", HEADER + "z1,0.0,60,12,1\n")
    write(project.input_folder / "b.csv", HEADER + "z1,-0.0,60,12,1\n")

    assert ingest.ingest_new_files(project).rows_added == 1


def test_content_replaced_with_its_old_size_and_mtime_is_still_new(project: Config) -> None:
    ingest.ingest_new_files(project)
    source = sorted(project.input_folder.iterdir())[0]
    stat = source.stat()
    text = source.read_text()
    source.write_text(text.replace(",1\n", ",0\n", 1))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size

    assert [f.name for f in ledger.pending_files(project)] == [source.name]


def test_a_trailing_comma_on_every_row_does_not_shift_the_columns(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "trailing.csv", HEADER + "tc1,1,2,3,0,\ntc2,4,5,6,1,\n")

    result = ingest.ingest_new_files(project)

    assert result.rows_added == 2
    added = master_rows(project).tail(2)
    assert added["corporation"].tolist() == ["tc1", "tc2"] and added["exited"].tolist() == [0, 1]


def test_windows_line_ends_do_not_reach_the_master(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "windows.csv", (HEADER + "w1,1,2,3,0\nw2,4,5,6,1\n").replace("\n", "\r\n").encode())

    assert ingest.ingest_new_files(project).rows_added == 2
    assert b"\r" not in masterstore.master_path(project).read_bytes()


# --- a seeded sample of the master (what each deployed version keeps for drift) --------------------


def _whole_master_sample(config: Config, rows: int, seed: int) -> pd.DataFrame:
    master = masterstore.load_master(config)
    return master.sample(n=rows, random_state=seed).sort_index() if len(master) > rows else master


def _ingest_lines(config: Config, lines: list[str], newline: str, bom: bool = False) -> None:
    body = newline.join([HEADER.strip()] + lines) + newline
    write(config.input_folder / "rows.csv", (b"\xef\xbb\xbf" if bom else b"") + body.encode())
    ingest.ingest_new_files(config)


@pytest.mark.parametrize(("newline", "bom"), [("\n", False), ("\r\n", True)])
def test_a_sample_of_the_master_is_the_rows_a_sample_of_the_whole_master_gives(
    tmp_path: Path, newline: str, bom: bool
) -> None:
    config = write_config(tmp_path / "project")
    lines = [f"c{i:03d},{i % 7},{'' if i % 5 == 0 else i * 1.5},{i},{i % 2}" for i in range(300)]
    _ingest_lines(config, lines, newline, bom)

    for rows, seed in [(40, 0), (40, 7), (299, 1), (300, 0), (0, 0)]:
        expected = _whole_master_sample(config, rows or 10**9, seed)
        sample = masterstore.sample_master(config, rows, seed)
        pd.testing.assert_frame_equal(sample, expected)
        assert sample.to_csv(index=False) == expected.to_csv(index=False)  # the version's reference file


def test_a_master_whose_lines_are_not_its_rows_is_sampled_whole_and_the_same(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project")
    lines = [f"c{i:03d},{i % 7},{i},{i},{i % 2}" for i in range(200)]
    lines[10] = '"multi\nline, name",1,2,3,0'  # one row on two lines
    _ingest_lines(config, lines, "\n")
    assert len(masterstore.load_master(config)) == 200

    for seed in (0, 3):
        pd.testing.assert_frame_equal(
            masterstore.sample_master(config, 50, seed), _whole_master_sample(config, 50, seed)
        )
    # A row added behind the state's back (its row count and size no longer describe the file): still the same.
    with masterstore.master_path(config).open("a", encoding="utf-8") as handle:
        handle.write("late,1,2,3,1\n")
    pd.testing.assert_frame_equal(masterstore.sample_master(config, 50, 0), _whole_master_sample(config, 50, 0))


@pytest.mark.parametrize("odd", ["", "NA", "4.0"])
def test_a_sample_of_whole_numbers_keeps_the_type_the_whole_master_gives_them(tmp_path: Path, odd: str) -> None:
    # One row holds a gap or a decimal where the others hold whole numbers: pandas reads that column of
    # the whole master as floats (written "5.0"), and a sample without that row as integers ("5").
    config = write_config(tmp_path / "project")
    lines = [f"c{i:03d},{odd if i == 13 else i % 7},{i * 1.5},{i},{i % 2}" for i in range(300)]
    _ingest_lines(config, lines, "\n")

    for seed in range(4):  # seed 2 draws row 13, the others do not
        expected = _whole_master_sample(config, 40, seed)
        sample = masterstore.sample_master(config, 40, seed)
        pd.testing.assert_frame_equal(sample, expected)
        assert sample.to_csv(index=False) == expected.to_csv(index=False)


def test_a_master_with_a_carriage_return_in_a_line_is_sampled_whole_and_the_same(tmp_path: Path) -> None:
    # A quoted name holding a bare carriage return reaches the master quoted (tables.csv_bytes):
    # its lines are then not its rows, and the sample is drawn from the whole master.
    config = write_config(tmp_path / "project")
    lines = [f"c{i:03d},{i % 7},{i * 1.5},{i},{i % 2}" for i in range(300)]
    lines[5] = '"carriage\rreturn",1,2.5,3,0'
    _ingest_lines(config, lines, "\n")

    for seed in (0, 3):
        pd.testing.assert_frame_equal(
            masterstore.sample_master(config, 40, seed), _whole_master_sample(config, 40, seed)
        )


# --- line breaks inside quoted text values ---------------------------------------------------------

BROKEN_NAMES = {
    5: "carriage\rreturn",
    6: "windows\r\nbreak",
    7: "line\nfeed",
    8: "two\r\rreturns, a comma",
    9: '\rleading "quoted"',
    200: "trailing\r",
}


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_line_break_inside_a_quoted_value_keeps_its_row_whole_in_the_master(tmp_path: Path, newline: str) -> None:
    # Python 3.11's csv writer quotes a value holding a line feed but not one holding a bare carriage
    # return, where pandas ends a row: the master must still read back as the rows that went in.
    config = write_config(tmp_path / "project")
    lines = [f"c{i:03d},{i % 7},{'' if i % 5 == 0 else i * 1.5},{i},{i % 2}" for i in range(300)]
    for i, name in BROKEN_NAMES.items():
        lines[i] = '"{}",{},,{},{}'.format(name.replace('"', '""'), i % 7, i, i % 2)
    _ingest_lines(config, lines, newline)
    kinds = masterstore.column_kinds(config)
    source = tables.read_typed_csv(config.input_folder / "rows.csv", kinds)

    master = masterstore.load_master(config)
    assert len(master) == masterstore.read_master_state(config)["rows"] == 300
    assert [master["corporation"][i] for i in BROKEN_NAMES] == list(BROKEN_NAMES.values())
    pd.testing.assert_frame_equal(master, source)
    assert (tables.row_hashes(master, kinds) == tables.row_hashes(source, kinds)).all()
    # Training reads its columns of the master this way, the drift reference is a sample of it.
    features = tables.read_typed_csv(
        masterstore.master_path(config), kinds, usecols=["corporation", "exited"], categories=["corporation"]
    )
    assert features["corporation"].astype(str).tolist() == source["corporation"].tolist()
    for seed in (0, 2):
        pd.testing.assert_frame_equal(
            masterstore.sample_master(config, 40, seed), _whole_master_sample(config, 40, seed)
        )

    # The row-hash index knows the rows: a second file holding them again adds only its new row.
    again = newline.join([HEADER.strip(), *lines[:12], "c999,1,2,3,0"]) + newline
    write(config.input_folder / "again.csv", again.encode())
    assert ingest.ingest_new_files(config).rows_added == 1
    master = masterstore.load_master(config)
    assert len(master) == masterstore.read_master_state(config)["rows"] == 301
    assert master["corporation"].tolist() == [*source["corporation"], "c999"]


def test_ordinary_rows_are_written_as_to_csv_writes_them_beside_a_carriage_return(tmp_path: Path) -> None:
    # Rows without a carriage return keep the bytes to_csv gives them; the row holding one reads back
    # as the same values, with the same row hash (missing values, "007" ids, numbers, -0.0).
    body = (
        '"id","x","n","t"\n007,1.5,1,plain\n"8\r8",,2,NA\n009,-0.0,3,"comma, here"\n"010",2.0,4,"a\rb"\n011,3.25,5,\n'
    )
    kinds = {"id": tables.TEXT, "x": tables.NUMERIC, "n": tables.NUMERIC, "t": tables.TEXT}
    frame = tables.read_typed_csv(io.BytesIO(body.encode()), kinds)
    written = masterstore.NewRows(frame, None).csv_body()

    back = tables.read_typed_csv(io.BytesIO(masterstore.csv_header(list(frame.columns)) + written), kinds)
    pd.testing.assert_frame_equal(back, frame)
    assert (tables.row_hashes(back, kinds) == tables.row_hashes(frame, kinds)).all()
    ordinary = frame.drop(index=[1, 3]).to_csv(header=False, index=False, lineterminator="\n").encode()
    assert [line for line in written.split(b"\n") if b"\r" not in line] == ordinary.split(b"\n")
