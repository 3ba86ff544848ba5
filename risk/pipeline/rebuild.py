"""Rebuild a missing or damaged master dataset from the source files the ingestion record names.

``ingestion.py --rebuild``: the master is made again from the recorded files (those gone are
recorded as lost), and the drift checkpoint's offsets move with it, so rows judged before are
not judged again and the versions deployed before the rebuild no longer claim rows of it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from risk.core import logbook
from risk.core.artefacts import (
    DELTA_HASHES_FILE,
    HASHES_FILE,
    MASTER_STATE_FILE,
    utc_now,
    utc_stamp,
)
from risk.core.files import (
    sha256_regular_file,
)
from risk.core.jsonfiles import append_json_line
from risk.core.settings import Config
from risk.data import ledger
from risk.data.ingest import merge_files
from risk.data.masterstore import (
    MasterMissing,
    MasterStore,
    master_path,
    read_master_state,
    require_whole_master,
)
from risk.registry import versions

logger = logging.getLogger(__name__)


# --- rebuilding a missing or damaged master ---------------------------------------------------


def rebuild_master(config: Config) -> dict[str, Any]:
    """Make the master again from the recorded source files whose content still matches.

    For a master that is missing or shorter than recorded (MasterMissing). Files are read
    again in the order first ingested, so the rows come out as before. A recorded file
    that is gone, changed or no longer valid is named, and recorded as lost (read again if
    it comes back). A damaged master is kept beside the new one, never deleted.
    """
    started = time.perf_counter()
    if master_path(config).exists():
        try:
            require_whole_master(config, read_master_state(config))
        except MasterMissing:
            pass
        else:
            return {
                "rebuilt": False,
                "reason": f"the master dataset {config.display_path(master_path(config))} is whole: nothing to rebuild",
            }
    old_offsets = _drift_offsets(config)  # before the state they come from is removed
    sources, gone = _recorded_sources(config)
    # The lost ones are recorded first: a rebuild killed midway is run again, and must not
    # then count on files it already knows are gone.
    _record_lost(config, gone)
    kept_as = _move_damaged_master(config)
    for name in (MASTER_STATE_FILE, HASHES_FILE, DELTA_HASHES_FILE):
        (config.output_folder / name).unlink(missing_ok=True)
    store = MasterStore.empty(config)
    result = merge_files(config, sources, store, recording=False)
    invalid = [
        {"name": e["name"], "sha256": e["sha256"], "why": f"no longer valid: {e['reason']}"}
        for e in result.files_set_aside
    ]
    _record_lost(config, invalid)
    gone += invalid
    ledger.write_ingested_names(config)
    _move_drift_offsets(config, *old_offsets)
    state = read_master_state(config)
    return {
        "rebuilt": True,
        "files_read_again": [f["name"] for f in result.files_ingested],
        "files_gone": gone,
        "rows": state["rows"] if state else 0,
        "damaged_master_kept_as": kept_as,
        "seconds": round(time.perf_counter() - started, 4),
    }


def _drift_offsets(config: Config) -> tuple[int, int, int]:
    """(master size, judged, seen): the byte offsets the drift decisions recorded."""
    return ledger.master_bytes(config), versions.judged_offset(config), logbook.read_checkpoint(config)[1]


def _move_drift_offsets(config: Config, old_size: int, judged: int, seen: int) -> None:
    """Offsets into the old master mean nothing in a rebuilt (perhaps smaller) one: keep the
    rows not yet judged at the end as not judged, mark the deployed versions' recorded sizes
    void, so that no row added later is taken as already judged."""
    if not old_size:
        return
    new_size = ledger.master_bytes(config)

    def moved(offset: int) -> int:
        return _line_start_at_or_before(config, new_size - max(0, old_size - offset))

    names = versions.version_names(config)
    logbook.write_checkpoint(config, moved(judged), moved(seen), rebuilt_after_version=names[-1] if names else None)


def _line_start_at_or_before(config: Config, position: int) -> int:
    """The start of the master's line holding byte ``position`` (0 for the header)."""
    if position <= 0:
        return 0
    with open(master_path(config), "rb") as handle:
        end = position
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


def _record_lost(config: Config, gone: list[dict[str, Any]]) -> None:
    for entry in gone:
        logger.warning("not in the rebuilt master: %s (%s)", ledger.text_name(entry["name"]), entry["why"])
        append_json_line(
            ledger.record_path(config),
            {
                "name": entry["name"],
                "sha256": entry["sha256"],
                "status": ledger.STATUS_LOST,
                "reason": entry["why"],
                "ingested_at": utc_now(),
            },
        )


def _recorded_sources(config: Config) -> tuple[list[ledger.SourceFile], list[dict[str, Any]]]:
    """The files the record says were ingested, in order: those still present with the same
    content, and the others with why they cannot be read again."""
    available, gone = [], []
    for entry in ledger.latest_entries(config).values():
        if entry["status"] != ledger.STATUS_INGESTED:
            continue
        # A database pull lives in its immutable snapshot under the output folder, not in the input folder.
        path = config.output_folder / entry["snapshot"] if "snapshot" in entry else config.input_folder / entry["name"]
        try:
            digest, stat = sha256_regular_file(path)
        except FileNotFoundError:
            gone.append(
                {
                    "name": entry["name"],
                    "sha256": entry["sha256"],
                    "why": f"no longer in {config.display_path(config.input_folder)}",
                }
            )
            continue
        except OSError as exc:
            gone.append(
                {"name": entry["name"], "sha256": entry["sha256"], "why": f"cannot be read: {exc.strerror or exc}"}
            )
            continue
        if digest != entry["sha256"]:
            gone.append(
                {
                    "name": entry["name"],
                    "sha256": entry["sha256"],
                    "why": "its content has changed since it was ingested",
                }
            )
            continue
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        available.append(ledger.SourceFile(entry["name"], path, stat.st_size, signature, digest))
    return available, gone


def _move_damaged_master(config: Config) -> str | None:
    """Rename a damaged master out of the way (kept for inspection); its new name, or None."""
    master = master_path(config)
    if not master.exists():
        return None
    kept = master.with_name(f"{master.stem}.damaged-{utc_stamp()}.csv")
    os.replace(master, kept)
    logger.warning("kept the damaged master as %s", config.display_path(kept))
    return config.display_path(kept)
