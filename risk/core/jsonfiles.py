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
# removed or inserted line breaks the chain (``verify_json_line_chain`` finds where). Unkeyed, the
# chain cannot tell an edited *last* line, or a line appended by someone who recomputed the hash,
# from a genuine one: with RISK_AUDIT_KEY set, each new line also carries an HMAC-SHA256 of its
# own bytes under that key, which only a holder of the key can make.
CHAIN_FIELD = "prev_sha256"
CHAIN_GENESIS = "0" * 64  # what the first chained line of a file names as its predecessor
TAIL_CHUNK_BYTES = 4096
AUDIT_KEY_ENV = "RISK_AUDIT_KEY"
HMAC_FIELD = "hmac_sha256"
_HMAC_SUFFIX = None  # compiled on first use: the line's last field, ', "hmac_sha256": "<64 hex>"}'


def line_sha256(line: bytes) -> str:
    """The chain's hash of one line: its bytes without the newline."""
    import hashlib

    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def audit_key() -> bytes | None:
    """The key of the keyed chain, from RISK_AUDIT_KEY; None where it is unset or empty."""
    key = os.environ.get(AUDIT_KEY_ENV)
    return key.encode("utf-8") if key else None


def _line_hmac(key: bytes, body: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _keyed(body: bytes, key: bytes) -> bytes:
    """``body`` (a JSON object's bytes) with its HMAC added as its last field."""
    return body[:-1] + f', "{HMAC_FIELD}": "{_line_hmac(key, body)}"}}'.encode()


def _split_hmac(line: bytes) -> tuple[bytes, str] | None:
    """(the line as it was before its HMAC was added, the HMAC), or None for an unkeyed line."""
    global _HMAC_SUFFIX
    if _HMAC_SUFFIX is None:
        import re

        _HMAC_SUFFIX = re.compile(rb', "' + HMAC_FIELD.encode() + rb'": "([0-9a-f]{64})"\}$')
    found = _HMAC_SUFFIX.search(line)
    return (line[: found.start()] + b"}", found.group(1).decode()) if found else None


def append_json_line(target: Path, record: dict[str, Any]) -> None:
    """Append one JSON line, chained to the line before it (and keyed, with RISK_AUDIT_KEY set),
    with a single write.

    The file is locked (flock) while its last line is read and the new one written, so two
    writers never chain to the same line. Only the tail is read, backwards from the end: the
    cost grows with the last line, not with the file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    before_change(target)
    record = {k: v for k, v in record.items() if k != HMAC_FIELD}  # only this function keys a line
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last, ends_line = _last_line(fd)
        chained = {**record, CHAIN_FIELD: line_sha256(last) if last else CHAIN_GENESIS}
        body = json.dumps(chained, sort_keys=True, default=str).encode("utf-8")
        key = audit_key()
        line = (_keyed(body, key) if key else body) + b"\n"
        if not ends_line:
            line = b"\n" + line  # a torn line (a crash mid-write) ends here; the chain covers it
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the flock


def _last_line(fd: int) -> tuple[bytes, bool]:
    """(the file's last line that is not blank, without its newline; whether the file is empty or
    ends with a newline). Blank lines are skipped, as verification skips them. Read backwards in
    TAIL_CHUNK_BYTES blocks, each block once: linear in the bytes after the last line's start."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return b"", True
    ends_line = os.pread(fd, 1, end - 1) == b"\n"
    position, content_end, start = end, None, 0
    while position > 0:
        step = min(TAIL_CHUNK_BYTES, position)
        position -= step
        chunk = os.pread(fd, step, position)
        if content_end is None:
            chunk = chunk.rstrip()  # blank lines and trailing whitespace: not the line sought
            if not chunk:
                continue
            content_end = position + len(chunk)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            start = position + newline + 1
            break
    if content_end is None:
        return b"", ends_line
    tail = os.pread(fd, end - start, start)
    return tail.split(b"\n", 1)[0], ends_line


def _torn(line: bytes) -> bool:
    """Whether a line that is not JSON can be the start of one this system wrote, cut by a crash:
    every line it writes is ASCII (json.dumps escapes the rest) and starts with "{"."""
    return line.startswith(b"{") and line.isascii() and all(32 <= b < 127 or b == 9 for b in line)


def verify_json_line_chain(path: Path) -> tuple[int | None, str]:
    """(None, summary) when every chained line names its predecessor's hash; else (line, why).

    Lines written before the chain existed (no ``prev_sha256``) are accepted only as the
    file's start, before every chained line. A line that is not JSON but starts like one (torn
    by a crash) is accepted when the line after it chains to it; any other bytes are not.
    With RISK_AUDIT_KEY set, each keyed line's HMAC is checked, and once a keyed line has come,
    every later line must be keyed; unset, keyed lines are counted as not checked.
    """
    if not path.is_file():
        return None, f"{path}: absent (nothing to verify)"
    key = audit_key()
    previous: bytes | None = None
    previous_number = 0
    chained = unchained = torn = keyed = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if not _torn(line):
                    return (
                        number,
                        f"{path} line {number}: is neither JSON nor a line cut short by a crash (damaged or inserted)",
                    )
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
            problem = _key_problem(line, key, keyed)
            if problem:
                return number, f"{path} line {number}: {problem}"
            keyed += isinstance(record, dict) and HMAC_FIELD in record
            previous, previous_number = line, number
    notes = f"{chained} chained line(s)"
    if keyed:
        notes += f", {keyed} keyed line(s) " + (
            "whose HMAC holds" if key else f"NOT checked: {AUDIT_KEY_ENV} is not set, so their HMACs cannot be checked"
        )
    elif key:
        notes += f", no keyed line: none was written with {AUDIT_KEY_ENV} set"
    if unchained:
        notes += f", {unchained} earlier line(s) written before the chain existed"
    if torn:
        notes += f", {torn} torn line(s) (a crash mid-write) covered by the chain"
    return None, f"{path}: ok, {notes}"


def _key_problem(line: bytes, key: bytes | None, keyed_before: int) -> str | None:
    """Why a line fails the keyed chain, or None (always None without a key)."""
    if key is None:
        return None
    found = _split_hmac(line)
    if found is None:
        if keyed_before:
            return f"has no {HMAC_FIELD} although earlier lines are keyed (forged, or written without {AUDIT_KEY_ENV})"
        return None  # written before the key was turned on
    body, mac = found
    import hmac

    if not hmac.compare_digest(_line_hmac(key, body), mac):
        return f"its {HMAC_FIELD} does not match (the line was edited or forged, or written with another key)"
    return None


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every well-formed line of a JSON-lines file; a torn or damaged line (a crash, stray bytes
    that are not UTF-8) is skipped with a warning."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
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
