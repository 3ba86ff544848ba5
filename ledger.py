"""The record of what ingestion has read, and the cheap check for new source files.

Stdlib only: ``fullprocess.py`` calls :func:`pending_files` on every cron tick, and that
path must not import pandas or scikit-learn.

A source file is known by its name *and* its content hash. Size and modification time,
cached from earlier runs, tell which files need hashing at all.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses cost import time on the cron fast path
    from typing import Any

from fsutil import atomic_write_json, atomic_write_text, read_json_lines, sha256_file
from settings import Config

logger = logging.getLogger(__name__)

RECORD_FILE = "ingestion_record.jsonl"
MASTER_STATE_FILE = "master_state.json"  # written by ingestion; its byte count is read here
LOCK_FILE = "pipeline.lock"
INGESTED_NAMES_FILE = "ingestedfiles.txt"
STAT_CACHE_FILE = ".source_stat_cache.json"

STATUS_INGESTED = "ingested"
STATUS_SET_ASIDE = "set_aside"


class SourceFile:
    """A file in the input folder, identified by name and content hash."""

    __slots__ = ("name", "path", "size", "signature", "sha256")

    def __init__(self, name: str, path: Path, size: int, signature: list[int], sha256: str):
        self.name, self.path, self.size, self.signature, self.sha256 = name, path, size, signature, sha256

    @property
    def cache_entry(self) -> dict[str, Any]:
        return {"signature": self.signature, "sha256": self.sha256}

    def __repr__(self) -> str:
        return f"SourceFile({self.name!r}, sha256={self.sha256[:12]}…)"


def lock_path(config: Config) -> Path:
    """The one lock every pipeline step that writes shared state takes."""
    return config.log_folder / LOCK_FILE


def master_bytes(config: Config) -> int:
    """Size of the master dataset as ingestion last committed it (0 before any data)."""
    try:
        return int(json.loads((config.output_folder / MASTER_STATE_FILE).read_text(encoding="utf-8"))["bytes"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def record_path(config: Config) -> Path:
    return config.output_folder / RECORD_FILE


def read_record(config: Config) -> list[dict[str, Any]]:
    """Every per-file entry ingestion has written, oldest first."""
    return read_json_lines(record_path(config))


def known_files(config: Config) -> set[tuple[str, str]]:
    """(name, sha256) of every file already ingested or set aside."""
    return {(entry["name"], entry["sha256"]) for entry in read_record(config)}


def pending_files(config: Config) -> list[SourceFile]:
    """Files in the input folder whose (name, content) has not been seen, sorted by name.

    Hidden files (a leading dot, as editors and partial copies use) are ignored.
    """
    folder = config.require_folder("input_folder_path")
    cache_path = config.output_folder / STAT_CACHE_FILE
    cache = _read_stat_cache(cache_path)
    known = known_files(config)
    fresh_cache: dict[str, dict[str, Any]] = {}
    pending = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        source = _identify(path, cache.get(path.name))
        fresh_cache[source.name] = source.cache_entry
        if (source.name, source.sha256) not in known:
            pending.append(source)
    if fresh_cache != cache:
        atomic_write_json(cache_path, fresh_cache)
    return pending


def _identify(path: Path, cached: dict[str, Any] | None) -> SourceFile:
    stat = path.stat()
    # ctime and inode too: `cp -p` or `rsync -t` can restore size and mtime on new content,
    # but nobody can set ctime, and rsync's write-then-rename changes the inode.
    signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    if cached and cached.get("signature") == signature:
        digest = cached["sha256"]
    else:
        digest = sha256_file(path)
    return SourceFile(path.name, path, stat.st_size, signature, digest)


def _read_stat_cache(cache_path: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(cache_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_ingested_names(config: Config) -> None:
    """Rewrite the classic ``ingestedfiles.txt`` (one file name a line) from the record."""
    names = [entry["name"] for entry in read_record(config) if entry["status"] == STATUS_INGESTED]
    atomic_write_text(config.output_folder / INGESTED_NAMES_FILE, "".join(f"{name}\n" for name in names))
