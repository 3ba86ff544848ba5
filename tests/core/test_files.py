"""risk.core.files on real files in tmp_path: atomic writes that leave no partial file, their
temporary names, SHA-256, regular-file checks, and the removal of leftover temporaries."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from risk.core import files
from tests.conftest import PROJECT_DIR


def leftovers(folder: Path) -> list[str]:
    """Names in ``folder`` that look like one of our temporary files."""
    return sorted(p.name for p in folder.iterdir() if files.temporary_file_pid(p.name) is not None)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(done.stdout)
    assert not files.process_is_alive(pid)
    return pid


# --- atomic writes --------------------------------------------------------------------------------


def test_atomic_write_text_writes_the_whole_text_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.txt"  # missing folders are made
    files.atomic_write_text(target, "first\n")
    files.atomic_write_text(target, "second, longer than the first\n")
    assert target.read_text(encoding="utf-8") == "second, longer than the first\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_write_json_is_sorted_indented_and_ends_with_a_line_break(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    files.atomic_write_json(target, {"b": 1, "a": tmp_path / "x"})
    text = target.read_text(encoding="utf-8")
    assert text == json.dumps({"a": str(tmp_path / "x"), "b": 1}, indent=2, sort_keys=True) + "\n"


def test_atomic_write_bytes_keeps_every_byte(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    files.atomic_write_bytes(tmp_path / "blob", data)
    assert (tmp_path / "blob").read_bytes() == data


def test_an_error_inside_atomic_path_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="half way"):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half a ne", encoding="utf-8")
            raise RuntimeError("half way")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_error_inside_atomic_path_creates_no_target(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with pytest.raises(ValueError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_is_a_private_hidden_file_beside_the_target_until_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    with files.atomic_path(target, mode=0o640) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.json.") and tmp.name.endswith(".tmp")
        assert tmp.is_file() and stat.S_IMODE(tmp.stat().st_mode) == 0o600  # nobody reads it half written
        assert files.temporary_file_pid(tmp.name) == os.getpid()
        assert not target.exists()
        tmp.write_text("{}", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not tmp.exists()


def test_an_atomic_write_replaces_a_symbolic_link_not_the_file_it_points_to(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours\n", encoding="utf-8")
    target = tmp_path / "target.txt"
    target.symlink_to(elsewhere)
    files.atomic_write_text(target, "mine\n")
    assert not target.is_symlink() and target.read_text(encoding="utf-8") == "mine\n"
    assert elsewhere.read_text(encoding="utf-8") == "not yours\n"


def test_a_writer_killed_before_its_rename_leaves_the_old_file_and_a_temporary_that_is_then_removed(
    tmp_path: Path,
) -> None:
    """A real process killed (by the fault-injection hook) between writing its temporary and the
    rename: readers still see the old file whole; the next run removes the dead writer's temporary."""
    target = tmp_path / "master_state.json"
    target.write_text('{"rows": 1}\n', encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from risk.core.files import atomic_write_text; "
        "atomic_write_text(Path(sys.argv[1]), '{\"rows\": 2}\\n')"
    )
    env = {**os.environ, files.KILL_AT_ENV: "2"}  # change 1: create the temporary; change 2: the rename
    done = subprocess.run([sys.executable, "-c", code, str(target)], cwd=PROJECT_DIR, env=env, timeout=60)
    assert done.returncode == -9
    assert target.read_text(encoding="utf-8") == '{"rows": 1}\n'
    [left] = leftovers(tmp_path)
    assert (tmp_path / left).read_text(encoding="utf-8") == '{"rows": 2}\n'
    assert files.remove_stale_temporaries([tmp_path]) == [tmp_path / left]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master_state.json"]


# --- temporary names ------------------------------------------------------------------------------


def test_temporary_names_are_hidden_unique_and_carry_the_writers_pid() -> None:
    first, second = files.temp_name("data.csv"), files.temp_name("data.csv")
    assert first != second
    for name in (first, second):
        assert name.startswith(".data.csv.") and name.endswith(".tmp")
        assert files.temporary_file_pid(name) == os.getpid()


@pytest.mark.parametrize("name", ["x" * 255, "é" * 127 + "x", "ü" * 200])
def test_a_long_target_name_gives_a_temporary_name_the_file_system_accepts(tmp_path: Path, name: str) -> None:
    temporary = files.temp_name(name)
    assert len(os.fsencode(temporary)) <= files.NAME_MAX_BYTES
    assert files.temporary_file_pid(temporary) == os.getpid()
    (tmp_path / temporary).write_text("fits", encoding="utf-8")  # OSError (File name too long) otherwise


@pytest.mark.parametrize(
    "name, pid",
    [
        (".a.csv.123.0badcafe.tmp", 123),
        (".a.csv.456.link", 456),  # ingestion's hard-link staging
        (".a.csv.123.tmp", None),  # no random part
        (".a.csv.123.xyz.tmp", None),  # the random part is hex
        ("a.csv.123.0badcafe.tmp", None),  # not hidden
        ("a.csv", None),
        (".a.csv.12x.link", None),
    ],
)
def test_temporary_file_pid_recognises_only_our_temporary_names(name: str, pid: int | None) -> None:
    assert files.temporary_file_pid(name) == pid


# --- hashing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, files.HASH_CHUNK_BYTES, files.HASH_CHUNK_BYTES * 2 + 17])
def test_sha256_file_is_hashlibs_digest_whatever_the_size(tmp_path: Path, size: int) -> None:
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert files.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_regular_file_gives_the_digest_and_the_stat_of_the_file_hashed(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"a,b\n1,2\n")
    digest, stat_result = files.sha256_regular_file(path)
    assert digest == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert (stat_result.st_ino, stat_result.st_size) == (path.stat().st_ino, 8)


# --- regular files only ---------------------------------------------------------------------------


def test_open_regular_file_reads_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_bytes(b"content")
    with files.open_regular_file(tmp_path / "f.csv") as handle:
        assert handle.read() == b"content"


def test_open_regular_file_refuses_a_symbolic_link_even_to_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "real.csv").write_bytes(b"content")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    with pytest.raises(files.NotRegularFile) as refused:
        files.open_regular_file(tmp_path / "link.csv")
    assert refused.value.kind == "a symbolic link" and "link.csv" in str(refused.value)
    with pytest.raises(files.NotRegularFile):
        files.sha256_regular_file(tmp_path / "link.csv")


def test_open_regular_file_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(files.NotRegularFile) as refused:
        files.open_regular_file(tmp_path / "folder.csv")
    assert refused.value.kind == "a directory"


def test_open_regular_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """No writer ever opens the FIFO: an ordinary open would wait for one for ever."""
    os.mkfifo(tmp_path / "pipe.csv")
    code = (
        "import sys; from pathlib import Path; from risk.core import files\n"
        "try:\n    files.open_regular_file(Path(sys.argv[1]))\n"
        "except files.NotRegularFile as exc:\n    print(exc.kind)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pipe.csv")],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "a FIFO (named pipe)", done.stderr


def test_a_missing_file_is_file_not_found_not_a_kind(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.open_regular_file(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    "mode, kind",
    [
        (stat.S_IFREG | 0o644, None),
        (stat.S_IFLNK | 0o777, "a symbolic link"),
        (stat.S_IFIFO | 0o600, "a FIFO (named pipe)"),
        (stat.S_IFDIR | 0o755, "a directory"),
        (stat.S_IFCHR | 0o666, "a character device"),
        (stat.S_IFBLK | 0o660, "a block device"),
        (stat.S_IFSOCK | 0o755, "a socket"),
        (0o644, "not a regular file"),
    ],
)
def test_non_regular_kind_names_every_file_type(mode: int, kind: str | None) -> None:
    assert files.non_regular_kind(mode) == kind


# --- leftover temporaries -------------------------------------------------------------------------


def test_remove_stale_temporaries_removes_only_files_of_writers_that_are_gone(tmp_path: Path) -> None:
    gone = dead_pid()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            names = {
                "stale": f".data.csv.{gone}.00ff.tmp",
                "stale_link": f".data.csv.{gone}.link",
                "alive": f".data.csv.{alive.pid}.00ff.tmp",
                "ours": f".data.csv.{os.getpid()}.00ff.tmp",
                "data": "data.csv",
                "lookalike": f"data.csv.{gone}.00ff.tmp",
            }
            for name in names.values():
                (tmp_path / name).write_text("x", encoding="utf-8")
            (tmp_path / f".folder.{gone}.00ff.tmp").mkdir()  # a directory is never removed
            below = tmp_path / "below"
            below.mkdir()
            (below / names["stale"]).write_text("x", encoding="utf-8")  # not below the folders given

            removed = files.remove_stale_temporaries([tmp_path])
        finally:
            alive.kill()

    assert sorted(removed) == sorted([tmp_path / names["stale"], tmp_path / names["stale_link"]])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names[k] for k in ("alive", "ours", "data", "lookalike")} | {f".folder.{gone}.00ff.tmp", "below"}
    assert (below / names["stale"]).exists()


def test_remove_stale_temporaries_passes_over_folders_that_are_missing_or_files(tmp_path: Path) -> None:
    gone = dead_pid()
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    real = tmp_path / "real"
    real.mkdir()
    (real / f".x.{gone}.1.tmp").write_text("x", encoding="utf-8")
    removed = files.remove_stale_temporaries([tmp_path / "missing", tmp_path / "a-file", real])
    assert removed == [real / f".x.{gone}.1.tmp"]


def test_process_is_alive_tells_a_running_process_from_a_finished_one() -> None:
    assert files.process_is_alive(os.getpid())
    assert not files.process_is_alive(dead_pid())
