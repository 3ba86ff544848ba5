"""JSON files every step shares: strict JSON values, hash-chained JSON lines, reading a JSON document.

Stdlib only: ``fullprocess.py`` reads these on every cron tick before it knows whether there
is work, and that path must not import pandas or scikit-learn.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from pathlib import Path

from risk.core.files import before_change

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

logger = logging.getLogger(__name__)

# --- strict JSON ----------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON takes it: NaN and infinities as None, numpy scalars as Python
    ones, tuples as lists, keys as strings. The one sanitiser for every JSON the system writes."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar; duck-typed so that this module stays stdlib only
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Each line of an appended JSON-lines log carries the SHA-256 of the line before it, so an edited,
# removed or inserted line breaks the chain (``verify_json_line_chain`` finds where).
CHAIN_FIELD = "prev_sha256"
CHAIN_GENESIS = "0" * 64  # what the first chained line of a file names as its predecessor
TAIL_CHUNK_BYTES = 4096


def line_sha256(line: bytes) -> str:
    """The chain's hash of one line: its bytes without the newline."""
    import hashlib

    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def append_json_line(target: Path, record: dict[str, Any]) -> None:
    """Append one JSON line, chained to the line before it, with a single write.

    The file is locked (flock) while its last line is read and the new one written, so two
    writers never chain to the same line. Only the tail is read (a seek from the end): the
    cost does not grow with the file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    before_change(target)
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        chained = {**record, CHAIN_FIELD: line_sha256(last) if last else CHAIN_GENESIS}
        line = (json.dumps(chained, sort_keys=True, default=str) + "\n").encode("utf-8")
        if last and not last.endswith(b"\n"):
            line = b"\n" + line  # a torn line (a crash mid-write) ends here; the chain covers it
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the flock


def _last_line(fd: int) -> bytes:
    """The file's last non-empty line, with its newline if it has one; b"" for an empty file."""
    end = os.lseek(fd, 0, os.SEEK_END)
    tail = b""
    position = end
    while position > 0:
        step = min(TAIL_CHUNK_BYTES, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
        body = tail.rstrip(b"\n")
        if b"\n" in body:
            start = body.rindex(b"\n") + 1
            return tail[start:].rstrip(b"\n") + (b"\n" if tail.endswith(b"\n") else b"")
    stripped = tail.rstrip(b"\n")
    return stripped + (b"\n" if tail.endswith(b"\n") else b"") if stripped else b""


def verify_json_line_chain(path: Path) -> tuple[int | None, str]:
    """(None, summary) when every chained line names its predecessor's hash; else (line, why).

    Lines written before the chain existed (no ``prev_sha256``) are accepted only as the
    file's start, before every chained line. A line that is not JSON (torn by a crash) is
    accepted when the line after it chains to it.
    """
    if not path.is_file():
        return None, f"{path}: absent (nothing to verify)"
    previous: bytes | None = None
    previous_number = 0
    chained = unchained = torn = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                torn += 1
                previous, previous_number = line, number
                continue
            expected = line_sha256(previous) if previous is not None else CHAIN_GENESIS
            if not isinstance(record, dict) or CHAIN_FIELD not in record:
                if chained:
                    return (
                        number,
                        f"{path} line {number}: has no {CHAIN_FIELD} although earlier lines are chained (inserted or edited)",
                    )
                unchained += 1
            elif record[CHAIN_FIELD] != expected:
                what = (
                    f"line {previous_number} was edited, or a line was removed or inserted before this one"
                    if previous is not None
                    else "the first line names a predecessor: lines before it were removed"
                )
                return number, f"{path} line {number}: {CHAIN_FIELD} does not match the line before it ({what})"
            else:
                chained += 1
            previous, previous_number = line, number
    notes = f"{chained} chained line(s)"
    if unchained:
        notes += f", {unchained} earlier line(s) written before the chain existed"
    if torn:
        notes += f", {torn} torn line(s) (a crash mid-write) covered by the chain"
    return None, f"{path}: ok, {notes}"


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every well-formed line of a JSON-lines file; a torn last line (a crash) is skipped."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):  # every reader takes a line for an object
            records.append(record)
        else:
            logger.warning("skipping malformed line %d of %s", number, path)
    return records


# What reading a JSON file can raise besides a missing file: the bytes are not UTF-8 or not JSON
# (both ValueErrors), or the file cannot be read (OSError, FileNotFoundError among them).
JSON_READ_ERRORS = (OSError, ValueError)


def read_json(path: Path) -> Any:
    """The JSON document in ``path`` (UTF-8). Raises JSON_READ_ERRORS: FileNotFoundError where it is
    absent, another OSError where it cannot be read, ValueError where it is not UTF-8 JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in a file this system wrote; {} where it is absent, damaged or not an object."""
    found = read_json_or_none(path)
    return found if isinstance(found, dict) else {}


def read_json_or_none(path: Path) -> Any:
    """A JSON file this system wrote, or None where it is absent or damaged (so it is made again)."""
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None
