"""benchmarks/bench_training.py's memory measure: what training's memory is made of, counted."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import benchmark_module

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bench():
    return benchmark_module("bench_training")


def scratch_growth(bench, temp: Path, megabytes: int) -> int:
    """How much tree_pss of this process grows when a training scratch file of ``megabytes`` is
    written into ``temp`` (as the temp folder) and nothing maps it."""
    import psutil

    from risk.model import training

    scratch = temp / f"{training.SCRATCH_PREFIX}{os.getpid()}-test"
    scratch.mkdir()
    chunk = bytes(MIB)  # written a chunk at a time: this process's own memory stays as it is
    before = bench.tree_pss(psutil.Process())
    with open(scratch / "training-frame.joblib", "wb") as snapshot:
        for _ in range(megabytes):
            snapshot.write(chunk)
    return bench.tree_pss(psutil.Process()) - before


def test_scratch_files_in_a_temp_folder_in_memory_count_as_training_memory(bench, monkeypatch) -> None:
    """On tmpfs (/tmp on many systems) the snapshot, fold files and pipelines handed back are RAM
    even while no process maps them: a measure without them would hide about the frame's size."""
    if bench._filesystem_type("/dev/shm") != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm to put the temp folder on")
    temp = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        assert scratch_growth(bench, temp, 16) >= 15 * MIB
    finally:
        shutil.rmtree(temp)


def test_scratch_files_on_a_disk_are_page_cache_and_not_counted(bench, monkeypatch, tmp_path) -> None:
    if bench._filesystem_type(str(tmp_path.resolve())) in bench.MEMORY_FILESYSTEMS:
        pytest.skip("the test's temp folder is itself in memory")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert scratch_growth(bench, tmp_path, 16) < 8 * MIB


def test_a_mapped_file_in_memory_counts_once(bench) -> None:
    """A file on tmpfs that training maps (fold files with TMPDIR there, joblib's memory-mapped
    arguments in /dev/shm) is shared memory and a mapped data file: counted once, not twice."""
    import mmap

    import psutil

    if bench._filesystem_type("/dev/shm") != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    temp = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        path = temp / "fold-0-encoded.npy"
        with open(path, "wb") as file:
            for _ in range(16):
                file.write(bytes(MIB))
        before = bench.tree_pss(psutil.Process())
        with open(path, "r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
            assert sum(mapped[offset] for offset in range(0, len(mapped), 4096)) == 0  # every page touched
            grown = bench.tree_pss(psutil.Process()) - before
        assert 15 * MIB <= grown <= 20 * MIB
    finally:
        shutil.rmtree(temp)
