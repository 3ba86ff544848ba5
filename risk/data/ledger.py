"""The record of what ingestion has read, and the cheap check for new source files.

Stdlib only: ``fullprocess.py`` calls :func:`pending_files` on every cron tick, and that
path must not import pandas or scikit-learn.

A source file is known by its name *and* its content hash. Size and modification time,
cached from earlier runs, tell which files need hashing at all.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path

from risk.core.artefacts import INGESTED_NAMES_FILE, LOCK_FILE, MASTER_STATE_FILE, RECORD_FILE, STAT_CACHE_FILE
from risk.core.files import NotRegularFile, atomic_write_json, atomic_write_text, non_regular_kind, sha256_regular_file
from risk.core.jsonfiles import read_json, read_json_lines, read_json_object
from risk.core.locks import run_lock
from risk.core.settings import Config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

logger = logging.getLogger(__name__)


STATUS_INGESTED = "ingested"
STATUS_SET_ASIDE = "set_aside"
# Recorded as ingested, but its rows are not in a master rebuilt by ``ingestion.py --rebuild``
# (the source file was gone or changed): read again if it comes back.
STATUS_LOST = "lost"

# The configuration values a file is judged under. A file set aside for a reason that
# depends on them (entry["judged_under"]) is read again when any of them changes.
JUDGING_KEYS = ("target", "positive_label", "id_columns", "categorical_columns", "max_field_bytes", "max_row_bytes")


class SourceFile:
    """An entry of the input folder, identified by name and content hash.

    ``problem`` is set when the entry is not read at all (a symbolic link, a FIFO, a
    directory, a file that cannot be opened): it is recorded as set aside with that reason,
    and its ``identity`` stands in for the content hash it does not have.
    """

    # A plain class, not a dataclass: dataclasses imports inspect, milliseconds the cron fast path need not pay.
    __slots__ = ("name", "path", "size", "signature", "sha256", "problem", "identity")

    def __init__(
        self,
        name: str,
        path: Path,
        size: int,
        signature: list[int],
        sha256: str | None,
        problem: str | None = None,
        identity: str | None = None,
    ):
        self.name, self.path, self.size, self.signature, self.sha256 = name, path, size, signature, sha256
        self.problem = problem
        self.identity = identity or sha256

    @classmethod
    def not_read(cls, name: str, path: Path, problem: str, identity: str) -> SourceFile:
        return cls(name, path, 0, [], None, problem=problem, identity=identity)

    @property
    def cache_entry(self) -> dict[str, Any]:
        return {"signature": self.signature, "sha256": self.sha256}

    def __repr__(self) -> str:
        return f"SourceFile({self.name!r}, {self.identity[:12]}…)"


def entry_identity(entry: dict[str, Any]) -> str:
    """What identifies a recorded file besides its name: its content hash, or for an entry
    that was never read, what it was (``not-regular:a symbolic link``)."""
    return entry.get("identity") or entry["sha256"]


def text_name(name: str) -> str:
    """A file name as it is written on one line of text: as is when it is printable, else
    as a JSON string (quoted, with escapes), so that a line break or an undecodable byte in
    a name can never split a line or fail a write. A name starting with a quote is quoted
    too, so a reader can always tell the two apart."""
    if name.isprintable() and not name.startswith('"'):
        return name
    return json.dumps(name)


def name_from_text(line: str) -> str:
    """The inverse of :func:`text_name`."""
    return json.loads(line) if line.startswith('"') else line


def lock_path(config: Config) -> Path:
    """The one lock every pipeline step that writes shared state takes."""
    return config.log_folder / LOCK_FILE


def pipeline_lock(config: Config) -> AbstractContextManager[None]:
    """That lock, with the config's bound: a holder older than ``max_run_minutes`` is reported as hung."""
    return run_lock(lock_path(config), max_held_seconds=config["max_run_minutes"] * 60)


def master_state(config: Config) -> dict[str, Any] | None:
    """``master_state.json`` as ingestion last committed it (masterstore.py writes it); None
    before any data. The one reader of that file.

    Raises ValueError where it is damaged (not UTF-8 JSON, not an object, a byte size that is
    not an integer): it is derived from the master, and ingestion makes it again from it.
    Raises another OSError where it cannot be read.
    """
    try:
        state = read_json(config.output_folder / MASTER_STATE_FILE)
    except FileNotFoundError:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("bytes", 0), int):
        raise ValueError(f"{MASTER_STATE_FILE} is not a master state (a JSON object with an integer byte size)")
    return state


def master_bytes(config: Config) -> int:
    """Size of the master dataset as ingestion last committed it (0 before any data)."""
    try:
        state = master_state(config)
    except ValueError:  # damaged: ingestion remakes it
        return 0
    return state.get("bytes", 0) if state else 0


def record_path(config: Config) -> Path:
    return config.output_folder / RECORD_FILE


def read_record(config: Config) -> list[dict[str, Any]]:
    """Every per-file entry ingestion has written, oldest first (an entry without a name and
    a status, which every reader indexes, is damaged: skipped)."""
    entries = read_json_lines(record_path(config))
    whole = [e for e in entries if isinstance(e.get("name"), str) and isinstance(e.get("status"), str)]
    if len(whole) < len(entries):
        logger.warning(
            "skipping %d entries of %s without a name and a status", len(entries) - len(whole), record_path(config)
        )
    return whole


def latest_entries(config: Config) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest record entry of each (name, identity), in the order first recorded."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in read_record(config):
        latest[(entry["name"], entry_identity(entry))] = entry
    return latest


def judging_context(config: Config) -> dict[str, Any]:
    """What a file is judged under: the configuration values validation reads, and the
    master's columns (a file missing a column is judged against them)."""
    try:
        state = master_state(config)
    except ValueError:  # damaged: ingestion remakes it
        state = None
    columns = state.get("columns") if state else None
    return {**{key: config[key] for key in JUDGING_KEYS}, "master_columns": columns}


def known_files(config: Config) -> set[tuple[str, str]]:
    """(name, identity) of every file already ingested or set aside, except those to read
    again: set aside for a reason that depends on a configuration that has changed since,
    or lost from a rebuilt master."""
    known = set()
    context = None
    for key, entry in latest_entries(config).items():
        if entry["status"] == STATUS_LOST:
            continue
        if entry["status"] == STATUS_SET_ASIDE and "judged_under" in entry:
            context = context or judging_context(config)
            if entry["judged_under"] != context:
                continue
        known.add(key)
    return known


def pending_files(config: Config, still_written: list[str] | None = None) -> list[SourceFile]:
    """Files in the input folder whose (name, content) has not been seen, sorted by name.

    Hidden files (a leading dot, as editors and partial copies use) are ignored. Entries
    that are not regular files are returned with a ``problem`` and never opened. A file
    changed within the last ``settle_seconds`` is watched that long; if it changes meanwhile
    it is still being written and waits for a later run; its name is added to ``still_written``.
    """
    folder = config.require_folder("input_folder_path")
    cache_path = config.output_folder / STAT_CACHE_FILE
    cache = read_json_object(cache_path)  # absent or damaged: every file is hashed again
    known = known_files(config)
    fresh_cache: dict[str, dict[str, Any]] = {}
    pending, to_hash = [], []
    with os.scandir(folder) as listing:
        entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        path = folder / entry.name
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed since the listing
            continue
        source = _unread_entry(entry.name, path, stat) or _cached(entry.name, path, stat, cache.get(entry.name))
        if source is None:
            to_hash.append((entry.name, path, stat))
            continue
        if source.sha256:
            fresh_cache[source.name] = source.cache_entry
        if (source.name, source.identity) not in known:
            pending.append(source)
    for source in _settled(to_hash, config["settle_seconds"], still_written):
        fresh_cache[source.name] = source.cache_entry
        if (source.name, source.identity) not in known:
            pending.append(source)
    if fresh_cache != cache:
        atomic_write_json(cache_path, fresh_cache)
    return sorted(pending, key=lambda s: s.name)


def source_file(config: Config, name: str) -> SourceFile | None:
    """One entry of the input folder, identified as :func:`pending_files` would (None if it
    is absent or still being written)."""
    path = config.require_folder("input_folder_path") / name
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    return _unread_entry(name, path, stat) or next(iter(_settled([(name, path, stat)], config["settle_seconds"])), None)


def _signature(stat: os.stat_result) -> list[int]:
    # ctime and inode too: `cp -p` or `rsync -t` can restore size and mtime on new content,
    # but nobody can set ctime, and rsync's write-then-rename changes the inode.
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _unread_entry(name: str, path: Path, stat: os.stat_result) -> SourceFile | None:
    """A SourceFile never to be opened, for an entry that is not a regular file."""
    kind = non_regular_kind(stat.st_mode)
    if kind is None:
        return None
    return SourceFile.not_read(name, path, f"{kind}: not read", identity=f"not-regular:{kind}")


def _cached(name: str, path: Path, stat: os.stat_result, cached: dict[str, Any] | None) -> SourceFile | None:
    """The file as hashed by an earlier run, if it has not changed since; else None."""
    signature = _signature(stat)
    if cached and cached.get("signature") == signature and cached.get("sha256"):
        return SourceFile(name, path, stat.st_size, signature, cached["sha256"])
    return None


def _settled(
    candidates: list[tuple[str, Path, os.stat_result]], settle_seconds: float, still_written: list[str] | None = None
) -> list[SourceFile]:
    """The new or changed files that have not changed for ``settle_seconds``, hashed.

    A file modified longer ago than that is read at once. Otherwise it is watched until its
    modification time is that old (at most ``settle_seconds``, so a clock ahead of ours
    cannot hold a file for ever): unchanged, it is read; changed, it waits for a later run.
    """
    now = time.time()
    young = {name: stat for name, _, stat in candidates if now - stat.st_mtime < settle_seconds}
    if young:
        wait = max(min(settle_seconds, stat.st_mtime + settle_seconds - now) for stat in young.values())
        time.sleep(max(0.0, wait))
    sources = []
    for name, path, stat in candidates:
        if name in young and not _unchanged(path, stat):
            logger.info(
                "%s is still being written (changed within %s s): it waits for a later run",
                text_name(name),
                settle_seconds,
            )
            if still_written is not None:
                still_written.append(name)
            continue
        source = _identify(name, path)
        if source is not None:
            sources.append(source)
    return sources


def _unchanged(path: Path, stat: os.stat_result) -> bool:
    try:
        return _signature(os.lstat(path)) == _signature(stat)
    except FileNotFoundError:
        return False


def _identify(name: str, path: Path) -> SourceFile | None:
    """Hash a regular file through a descriptor that is checked to be one (None if gone)."""
    try:
        digest, stat = sha256_regular_file(path)
    except NotRegularFile as exc:  # swapped in since it was listed
        return SourceFile.not_read(name, path, f"{exc.kind}: not read", identity=f"not-regular:{exc.kind}")
    except FileNotFoundError:
        return None
    except OSError as exc:  # unreadable (permissions...): recorded; a chmod changes ctime, so it is tried again
        try:
            ctime = os.lstat(path).st_ctime_ns
        except FileNotFoundError:
            return None
        return SourceFile.not_read(name, path, f"cannot be read: {exc.strerror or exc}", identity=f"unreadable:{ctime}")
    return SourceFile(name, path, stat.st_size, _signature(stat), digest)


def write_ingested_names(config: Config) -> None:
    """Rewrite the classic ``ingestedfiles.txt`` (one file name a line) from the record.

    Files whose rows a rebuild lost are left out; a name that is not plain printable text
    is written as a JSON string (see :func:`text_name`).
    """
    lost = {key for key, entry in latest_entries(config).items() if entry["status"] == STATUS_LOST}
    names = [
        entry["name"]
        for entry in read_record(config)
        if entry["status"] == STATUS_INGESTED and (entry["name"], entry_identity(entry)) not in lost
    ]
    atomic_write_text(config.output_folder / INGESTED_NAMES_FILE, "".join(f"{text_name(name)}\n" for name in names))


def read_ingested_names(config: Config) -> list[str]:
    """The names in ``ingestedfiles.txt``, quoted ones decoded."""
    try:
        text = (config.output_folder / INGESTED_NAMES_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [name_from_text(line) for line in text.split("\n") if line]
