"""Ingestion (risk.data.ingest, ledger, masterstore, and the rebuild) given hostile files: odd names,
what is not a regular file, files still being written, size limits, a master cut short; and files
judged again when the configuration changes, on real files in tmp_path."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

import fullprocess
import ingestion
from risk.core import artefacts, logbook
from risk.core.files import atomic_write_text, sha256_file
from risk.core.settings import Config, ConfigError, load_config
from risk.data import ingest, ledger, masterstore
from risk.pipeline import rebuild
from tests.conftest import HEADER, growing, master_rows, quarantine_reasons, rewrite_config, write, write_config

GOOD_ROW = "goodco,3,40,10,0\n"
NAME_MAX_BYTES = 255  # Linux file systems


def quarantine(config: Config) -> Path:
    return config.output_folder / artefacts.QUARANTINE_FOLDER


def set_aside_reasons(result: ingest.IngestionResult) -> dict[str, str]:
    return {f["name"]: f["reason"] for f in result.files_set_aside}


# -- long and odd file names ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "L" * 226 + ".csv",  # 230 bytes: quarantine prefix plus temp suffix went past 255
        "é" * 125 + ".csv",  # 254 bytes of two-byte characters
        os.fsdecode(b"caf\xe9-latin1-name-" + b"X" * 200 + b".csv"),  # not UTF-8: the system allows it
    ],
    ids=["230-bytes", "multibyte", "undecodable"],
)
def test_a_rejected_file_with_a_long_name_is_set_aside_and_the_good_files_go_in(project: Config, name: str) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / name, "x\n")
    write(project.input_folder / "zz_good.csv", HEADER + GOOD_ROW)

    result = ingest.ingest_new_files(project)

    assert list(set_aside_reasons(result)) == [name]
    assert [f["name"] for f in result.files_ingested] == ["zz_good.csv"] and result.rows_added == 1
    assert [e["name"] for e in ledger.read_record(project) if e["status"] == ledger.STATUS_SET_ASIDE] == [name]
    names = [os.fsencode(p.name) for p in quarantine(project).iterdir()]
    assert len(names) == 2 and all(len(n) <= NAME_MAX_BYTES for n in names)
    assert ledger.name_from_text(next(iter(quarantine_reasons(project)))) == name  # the full name is kept
    assert ledger.pending_files(project) == []  # set aside once


def test_fullprocess_runs_twice_with_a_long_named_bad_file_beside_a_good_one(deployed_project: Config) -> None:
    """The reproduction as the tester ran it: every run used to fail with ENAMETOOLONG."""
    write(deployed_project.input_folder / ("L" * 230 + ".csv"), "x\n")
    write(deployed_project.input_folder / "good.csv", HEADER + GOOD_ROW)

    assert fullprocess.main(["--config", str(deployed_project.path)]) == 0
    assert fullprocess.main(["--config", str(deployed_project.path)]) == 0

    first, second = logbook.read_audit(deployed_project)[-2:]
    assert first["files_ingested"] == ["good.csv"] and first["files_set_aside"][0]["name"] == "L" * 230 + ".csv"
    assert second["decision"] != "failed"
    assert master_rows(deployed_project)["corporation"].tolist()[-1] == "goodco"


def test_atomic_writes_take_a_target_name_as_long_as_the_file_system_allows(tmp_path: Path) -> None:
    target = tmp_path / ("n" * NAME_MAX_BYTES)

    atomic_write_text(target, "whole\n")

    assert target.read_text() == "whole\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


def test_a_file_removed_after_the_listing_does_not_stop_the_others(project: Config) -> None:
    pending = ledger.pending_files(project)
    pending[0].path.unlink()

    result = ingest.ingest_new_files(project, pending)

    assert result.files_waiting == [pending[0].name] and result.files_set_aside == []
    assert result.rows_added == 5000
    assert pending[0].name not in [e["name"] for e in ledger.read_record(project)]


def test_one_file_that_cannot_be_read_does_not_stop_the_others(project: Config) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permissions")
    ingest.ingest_new_files(project)
    locked = write(project.input_folder / "locked.csv", HEADER + "lk,1,2,3,0\n")
    locked.chmod(0)
    write(project.input_folder / "zz_good.csv", HEADER + GOOD_ROW)

    result = ingest.ingest_new_files(project)

    assert "cannot be read" in set_aside_reasons(result)["locked.csv"]
    assert result.rows_added == 1


# -- what is not a regular file is never opened --------------------------------------------


def test_a_symbolic_link_is_never_followed_nor_copied(
    project: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = write(tmp_path / "secret.txt", "corporation,exited\nTOP-SECRET,1\n")
    secret.chmod(0o600)
    (project.input_folder / "secret.csv").symlink_to(secret)
    (project.input_folder / "passwd.csv").symlink_to("/etc/passwd")

    with caplog.at_level(logging.WARNING):
        result = ingest.ingest_new_files(project)

    reasons = set_aside_reasons(result)
    assert reasons["secret.csv"] == reasons["passwd.csv"] == "a symbolic link: not read"
    assert result.rows_added == 7500  # the sample files still went in
    for copy in quarantine(project).iterdir():
        assert copy.name.endswith(".reason.txt"), "only reasons, no copies"
        assert "TOP-SECRET" not in copy.read_text() and "root:" not in copy.read_text()
    assert "secret.csv: a symbolic link: not read" in caplog.text
    # Recorded once: the next runs do not read, record or log it again.
    assert ledger.pending_files(project) == []
    assert ingest.ingest_new_files(project).files_set_aside == []


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_fifos_and_directories_are_recorded_as_set_aside_once(project: Config, kind: str) -> None:
    entry = project.input_folder / "odd.csv"
    os.mkfifo(entry) if kind == "fifo" else entry.mkdir()

    result = ingest.ingest_new_files(project)

    expected = "a FIFO (named pipe): not read" if kind == "fifo" else "a directory: not read"
    assert set_aside_reasons(result) == {"odd.csv": expected}
    assert ledger.pending_files(project) == []


def test_a_quarantine_copy_is_never_more_readable_than_its_source(project: Config) -> None:
    private = write(project.input_folder / "private.csv", "x\n")
    private.chmod(0o600)

    ingest.ingest_new_files(project)

    copies = [p for p in quarantine(project).iterdir() if p.name.endswith("_private.csv")]
    assert copies and stat.S_IMODE(copies[0].stat().st_mode) == 0o600


# -- a FIFO swapped in after the listing -----------------------------------------------------


def test_a_fifo_swapped_in_after_the_listing_does_not_block_the_run(project: Config) -> None:
    pending = ledger.pending_files(project)
    swapped = pending[0].path
    swapped.unlink()
    os.mkfifo(swapped)
    outcome: dict = {}
    run = threading.Thread(target=lambda: outcome.update(result=ingest.ingest_new_files(project, pending)), daemon=True)

    run.start()
    run.join(timeout=120)

    if run.is_alive():  # blocked in open(): give it a writer so the thread can end, then fail
        os.close(os.open(swapped, os.O_WRONLY | os.O_NONBLOCK))
        run.join(timeout=10)
        pytest.fail("ingestion blocked on a FIFO")
    result = outcome["result"]
    assert set_aside_reasons(result)[swapped.name].startswith("a FIFO (named pipe): not read")
    assert result.rows_added == 5000  # the other two sample files


# -- files still being written -----------------------------------------------------------


def test_a_file_still_growing_waits_for_a_later_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, settle_seconds=1)
    growing_file = write(config.input_folder / "growing.csv", HEADER)
    with growing(growing_file), caplog.at_level(logging.INFO):
        assert ledger.pending_files(config) == []
    assert "growing.csv is still being written" in caplog.text
    settled = growing_file.stat().st_mtime - 5
    os.utime(growing_file, (settled, settled))

    result = ingest.ingest_new_files(config)

    assert [f["name"] for f in result.files_ingested] == ["growing.csv"]
    assert result.rows_added == len(growing_file.read_text().splitlines()) - 1


def test_a_file_written_just_now_and_then_left_alone_is_read_in_the_same_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, settle_seconds=0.5)
    write(config.input_folder / "fresh.csv", HEADER + GOOD_ROW)

    assert [f.name for f in ledger.pending_files(config)] == ["fresh.csv"]


def test_a_last_line_without_its_line_end_is_never_read_into_the_master(project: Config) -> None:
    ingest.ingest_new_files(project)
    cut = write(project.input_folder / "cut.csv", HEADER + "cut1,1,2,3,0\nfjx")

    result = ingest.ingest_new_files(project)

    assert "the last line has no line end" in set_aside_reasons(result)["cut.csv"]
    assert len(master_rows(project)) == 7500
    # Finished later: read again and taken in whole.
    with cut.open("a") as handle:
        handle.write("corp,5,6,7,1\n")
    result = ingest.ingest_new_files(project)
    assert [f["name"] for f in result.files_ingested] == ["cut.csv"] and result.rows_added == 2
    assert master_rows(project)["corporation"].tolist()[-1] == "fjxcorp"


def test_settle_seconds_is_checked(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"settle_seconds": -1}))
    with pytest.raises(ConfigError, match="settle_seconds"):
        load_config(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{}")
    assert load_config(tmp_path / "config.json")["settle_seconds"] > 0


# -- field and row size limits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "limit"),
    [
        ("B" * 2000 + ",1,2,3,0\n", "max_field_bytes"),
        ('big,1,2,3,0\n"' + "x\n" * 1500 + '",1,2,3,1\n', "max_field_bytes"),  # a quoted field over many lines
        ("wide," + ",".join(["1" * 900] * 3) + ",0\n", "max_row_bytes"),
    ],
    ids=["field", "quoted-multiline-field", "row"],
)
def test_a_field_or_row_over_the_limit_sets_the_file_aside(tmp_path: Path, row: str, limit: str) -> None:
    config = write_config(tmp_path, max_field_bytes=1000, max_row_bytes=2500)
    write(config.input_folder / "a_big.csv", HEADER + row + GOOD_ROW * 400)
    write(config.input_folder / "b_good.csv", HEADER + "okco,1,2,3,1\n" + GOOD_ROW)

    result = ingest.ingest_new_files(config)

    assert limit in set_aside_reasons(result)["a_big.csv"]
    assert result.rows_added == 2 and master_rows(config)["corporation"].tolist() == ["okco", "goodco"]


def test_size_limits_default_generously(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    write(config.input_folder / "long.csv", HEADER + "L" * 5000 + ",1,2,3,0\n" + GOOD_ROW * 300)
    write(config.input_folder / "runaway.csv", HEADER + "R" * (2 * 1024 * 1024) + ",1,2,3,0\n")

    result = ingest.ingest_new_files(config)

    assert result.rows_added == 2
    assert "over max_field_bytes (1,048,576)" in set_aside_reasons(result)["runaway.csv"]


# -- a line break in a file name -----------------------------------------------------------


def test_a_line_break_in_a_file_name_cannot_split_the_name_list(project: Config) -> None:
    ingest.ingest_new_files(project)
    odd = "evil\nnext.csv"
    write(project.input_folder / odd, HEADER + "nl1,1,2,3,0\n")
    write(project.input_folder / '"quoted".csv', HEADER + "nl2,1,2,3,0\n")
    write(project.input_folder / "bad\r\nname.csv", "x\n")

    result = ingest.ingest_new_files(project)

    assert sorted(f["name"] for f in result.files_ingested) == sorted([odd, '"quoted".csv'])
    listed = ledger.read_ingested_names(project)
    lines = (project.output_folder / artefacts.INGESTED_NAMES_FILE).read_text().split("\n")[:-1]
    assert len(lines) == len(listed) == 5  # three sample files and the two new ones, one line each
    assert listed[-2:] == sorted([odd, '"quoted".csv'])
    assert "next.csv" not in lines
    assert list(quarantine_reasons(project)) == [json.dumps("bad\r\nname.csv")]  # the reason file is not split


# -- a master deleted or cut short ---------------------------------------------------------


def new_clients(count: int, prefix: str = "new") -> str:
    return HEADER + "".join(f"{prefix}{i},1,2,3,{i % 2}\n" for i in range(count))


@pytest.mark.parametrize("damage", ["deleted", "truncated", "deleted-with-state"])
def test_a_missing_or_shorter_master_stops_ingestion_before_anything_is_appended(project: Config, damage: str) -> None:
    ingest.ingest_new_files(project)
    master = masterstore.master_path(project)
    if damage == "truncated":
        master.write_bytes(master.read_bytes()[:1000])
    else:
        master.unlink()
    if damage == "deleted-with-state":
        (project.output_folder / artefacts.MASTER_STATE_FILE).unlink()
    write(project.input_folder / "more.csv", new_clients(200))
    record_before = ledger.record_path(project).read_bytes()

    with pytest.raises(masterstore.MasterMissing, match=r"python ingestion.py --rebuild"):
        ingest.ingest_new_files(project)

    assert (not master.exists()) if damage != "truncated" else len(master.read_bytes()) == 1000
    assert ledger.record_path(project).read_bytes() == record_before


def test_fullprocess_fails_with_the_recovery_command_instead_of_restarting_the_master(deployed_project: Config) -> None:
    """The reproduction: rm finaldata.csv, a new 200-row file; the master used to become those 200 rows."""
    masterstore.master_path(deployed_project).unlink()
    write(deployed_project.input_folder / "more.csv", new_clients(200))

    assert fullprocess.main(["--config", str(deployed_project.path)]) == 1

    record = logbook.read_audit(deployed_project)[-1]
    assert record["status"] == "failed" and "python ingestion.py --rebuild" in record["reason"]
    assert not masterstore.master_path(deployed_project).exists()


def test_the_command_line_names_the_recovery_and_rebuild_restores_the_master(
    project: Config, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    args = ["--config", str(project.path)]
    ingest.ingest_new_files(project)
    expected = masterstore.master_path(project).read_bytes()
    masterstore.master_path(project).unlink()
    write(project.input_folder / "more.csv", new_clients(200))

    assert ingestion.main(args) == 1
    assert "is missing" in caplog.text and "--rebuild" in caplog.text
    capsys.readouterr()

    assert ingestion.main(args + ["--rebuild"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rebuilt"] and report["files_gone"] == [] and report["rows"] == 7500
    assert masterstore.master_path(project).read_bytes() == expected
    # The pending file goes in on the next run, once, after the rebuilt rows.
    assert ingest.ingest_new_files(project).rows_added == 200
    assert len(master_rows(project)) == 7700


def test_rebuild_says_which_sources_are_gone_and_reads_them_if_they_come_back(project: Config) -> None:
    ingest.ingest_new_files(project)
    first = sorted(project.input_folder.iterdir())[0]
    kept = first.read_bytes()
    first.unlink()
    masterstore.master_path(project).write_bytes(b"truncated")

    report = rebuild.rebuild_master(project)

    assert [g["name"] for g in report["files_gone"]] == [first.name]
    assert "no longer in sourcedata" in report["files_gone"][0]["why"]
    assert report["rows"] == 5000 == len(master_rows(project))
    assert (project.root / report["damaged_master_kept_as"]).read_bytes() == b"truncated"
    assert first.name not in ledger.read_ingested_names(project)
    first.write_bytes(kept)
    assert [f.name for f in ledger.pending_files(project)] == [first.name]
    assert ingest.ingest_new_files(project).rows_added == 2500


def test_rebuild_leaves_a_whole_master_alone(project: Config) -> None:
    ingest.ingest_new_files(project)
    before = sha256_file(masterstore.master_path(project))

    assert rebuild.rebuild_master(project)["rebuilt"] is False
    assert sha256_file(masterstore.master_path(project)) == before


# -- a positive label that matches nothing -------------------------------------------------


def test_a_positive_label_matching_no_target_value_names_the_values_seen(tmp_path: Path) -> None:
    config = write_config(tmp_path, positive_label="yes")
    write(config.input_folder / "a.csv", HEADER + "a1,1,2,3,0\na2,1,2,3,1\n")

    result = ingest.ingest_new_files(config)

    reason = set_aside_reasons(result)["a.csv"]
    assert "positive_label 'yes' matches none of the values" in reason and "['0', '1']" in reason
    assert not masterstore.master_path(config).exists()


# -- judged again when the configuration changes ---------------------------------------


def test_a_file_set_aside_for_its_configuration_is_read_again_when_it_changes(tmp_path: Path) -> None:
    config = write_config(tmp_path, target="churned")
    write(config.input_folder / "a.csv", HEADER + "a1,1,2,3,0\na2,1,2,3,1\n")
    write(config.input_folder / "b.csv", "x\n")  # set aside for what it is, whatever the configuration
    assert "target column 'churned' is missing" in set_aside_reasons(ingest.ingest_new_files(config))["a.csv"]
    entry = next(e for e in ledger.read_record(config) if e["name"] == "a.csv")
    assert entry["judged_under"]["target"] == "churned"
    assert ledger.pending_files(config) == []  # unchanged configuration: not read again

    config = rewrite_config(config, target="exited")

    assert [f.name for f in ledger.pending_files(config)] == ["a.csv"]
    result = ingest.ingest_new_files(config)
    assert [f["name"] for f in result.files_ingested] == ["a.csv"] and result.rows_added == 2
    assert ledger.pending_files(config) == []


def test_a_wrong_positive_label_corrected_lets_the_files_in(tmp_path: Path) -> None:
    config = write_config(tmp_path, positive_label="yes")
    write(config.input_folder / "a.csv", HEADER + "a1,1,2,3,0\na2,1,2,3,1\n")
    ingest.ingest_new_files(config)

    config = rewrite_config(config, positive_label=1)

    assert ingest.ingest_new_files(config).rows_added == 2


def test_retry_by_hand_reads_a_set_aside_file_again(project: Config, capsys: pytest.CaptureFixture) -> None:
    args = ["--config", str(project.path)]
    ingest.ingest_new_files(project)
    write(project.input_folder / "big.csv", HEADER + "B" * 3000 + ",1,2,3,0\n")
    rewrite_config(project, max_field_bytes=1000)
    assert ingestion.main(args) == 0
    assert "max_field_bytes" in json.loads(capsys.readouterr().out)["files_set_aside"][0]["reason"]
    # Taken back by hand after the limit is raised (no change of the file, no wait for cron).
    values = json.loads(project.path.read_text())
    values["max_field_bytes"] = 5000
    project.path.write_text(json.dumps(values))

    assert ingestion.main(args + ["--retry", "big.csv"]) == 0
    assert json.loads(capsys.readouterr().out)["files_ingested"] == ["big.csv"]
    assert ingestion.main(args + ["--retry", "big.csv"]) == 1, "already ingested"
    assert ingestion.main(args + ["--retry", "absent.csv"]) == 1


def test_retry_by_hand_of_a_file_set_aside_for_its_content(project: Config) -> None:
    ingest.ingest_new_files(project)
    write(project.input_folder / "odd.csv", HEADER + "ab,lots,2,3,1\n")
    ingest.ingest_new_files(project)

    result = ingest.retry_file(project, "odd.csv")

    assert "must be numeric" in set_aside_reasons(result)["odd.csv"]
    entries = [e for e in ledger.read_record(project) if e["name"] == "odd.csv"]
    assert len(entries) == 2 and "judged_under" not in entries[-1]
