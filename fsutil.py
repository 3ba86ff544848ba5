"""Small file-system helpers: atomic writes, hashing, the run lock, log setup.

Stdlib only, so that the cron fast path stays light.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any, Iterator

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1024 * 1024


class LockBusy(RuntimeError):
    """Another process holds the run lock."""


def sha256_file(path: Path) -> str:
    import hashlib  # only when a file needs hashing: the cron fast path usually does not

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``
    with permissions ``mode``.

    Readers see the old file or the new one, never a half-written one. On error the
    temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / temp_name(target.name)
    before_change(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        before_change(target)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


# The longest file name (in bytes) that Linux file systems accept.
NAME_MAX_BYTES = 255


def temp_name(name: str) -> str:
    """A hidden temporary name ``.<name>.<pid>.<random>.tmp`` for a file about to be
    renamed onto ``name``, with ``name`` shortened so that the whole stays within
    NAME_MAX_BYTES: a long target name must not make its temporary name too long."""
    suffix = f".{os.getpid()}.{os.urandom(6).hex()}.tmp"
    room = NAME_MAX_BYTES - 1 - len(suffix)
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room])
    return f".{name}{suffix}"


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, payload: Any) -> None:
    atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


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
                    return number, f"{path} line {number}: has no {CHAIN_FIELD} although earlier lines are chained (inserted or edited)"
                unchained += 1
            elif record[CHAIN_FIELD] != expected:
                what = (f"line {previous_number} was edited, or a line was removed or inserted before this one" if previous is not None
                        else "the first line names a predecessor: lines before it were removed")
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


@contextlib.contextmanager
def run_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock for one pipeline run.

    flock is released by the kernel when the process dies, so a killed run never leaves
    a stale lock behind. Raises LockBusy at once if another process holds it.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise LockBusy(f"another run holds the lock {lock_path}") from exc
            raise
        before_change(lock_path)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def install_log_handlers(
    verbose: bool = False, log_file: Path | None = None, *, console: bool = True, console_tracebacks: bool = True
) -> None:
    """Send the root logger's records to stderr (cron mails it) and, when given, to a file that
    keeps the history, at INFO (DEBUG with ``verbose``). Handlers an earlier call installed are
    replaced; handlers installed by others (pytest's, gunicorn's) are left alone.

    ``console=False``: the file only (cron mails anything written to stderr).
    ``console_tracebacks=False``: stderr gets one line per message; the file keeps the traceback.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler()] if console else []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger()
    # Replace only the handlers an earlier call installed, so that calling main() twice in
    # one process does not log twice, and handlers installed by others stay.
    for old in [h for h in root.handlers if getattr(h, "_installed_by_fsutil", False)]:
        root.removeHandler(old)
        old.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler._installed_by_fsutil = True  # type: ignore[attr-defined]
        one_line = not console_tracebacks and not isinstance(handler, logging.FileHandler)
        handler.setFormatter(_OneLineFormatter(formatter._fmt) if one_line else formatter)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class _OneLineFormatter(logging.Formatter):
    """A message without its traceback: the log file keeps that."""

    def formatException(self, ei: Any) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


# --- leftovers of killed runs ---------------------------------------------------------------------

# Temporary names written beside their targets: atomic_path's ".<name>.<pid>.<hex>.tmp" and
# ingestion's hard-link staging ".<name>.<pid>.link".
_TEMPORARY_NAME = None


def temporary_file_pid(name: str) -> int | None:
    """The pid that wrote a temporary file named ``name``, or None if it is not one of ours."""
    global _TEMPORARY_NAME
    if _TEMPORARY_NAME is None:
        import re

        _TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)\.(?:[0-9a-f]+\.tmp|link)$")
    found = _TEMPORARY_NAME.match(name)
    return int(found.group(1)) if found else None


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(folders: list[Path]) -> list[Path]:
    """Remove temporary files in ``folders`` (not below them) left by processes that are gone.

    A writer still running keeps its file: scripts that do not take the run lock (the API,
    a report run by hand) may be writing one at this very moment.
    """
    removed = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            pid = temporary_file_pid(entry.name)
            if pid is None or pid == os.getpid() or process_is_alive(pid) or entry.is_dir(follow_symlinks=False):
                continue
            before_change(Path(entry.path))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


# --- fault injection (tests only) ---------------------------------------------------------------

# With RISK_TEST_KILL_AT set, a process kills itself with SIGKILL just before a file-system
# change: "N" the Nth change it makes, or a text the changed path contains (its first such
# change). The crash-point tests use it to stop a real run at every step; unset, it costs one
# dictionary look-up per change.
KILL_AT_ENV = "RISK_TEST_KILL_AT"
_changes_made = 0


def before_change(path: Path | str) -> None:
    """Called before every file-system change a pipeline step makes (the fault-injection point)."""
    kill_at = os.environ.get(KILL_AT_ENV)
    if not kill_at:
        return
    global _changes_made
    _changes_made += 1
    if kill_at.isdigit() and _changes_made == int(kill_at) or not kill_at.isdigit() and kill_at in str(path):
        import signal

        logger.debug("fault injection: killed before change %d (%s)", _changes_made, path)
        os.kill(os.getpid(), signal.SIGKILL)


# What a directory entry is, when it is not a regular file (``stat.S_IFMT`` of its mode).
_FILE_TYPES = {
    0o120000: "a symbolic link",
    0o010000: "a FIFO (named pipe)",
    0o040000: "a directory",
    0o020000: "a character device",
    0o060000: "a block device",
    0o140000: "a socket",
}


def non_regular_kind(mode: int) -> str | None:
    """``"a symbolic link"``, ``"a directory"`` ... for a stat mode; None for a regular file."""
    file_type = mode & 0o170000
    if file_type == 0o100000:
        return None
    return _FILE_TYPES.get(file_type, "not a regular file")


class NotRegularFile(OSError):
    """What was about to be read is not a regular file; ``kind`` says what it is."""

    def __init__(self, path: Path, kind: str):
        super().__init__(f"{path} is {kind}")
        self.kind = kind


def open_regular_file(path: Path) -> Any:
    """Open ``path`` for reading in binary only if it is a regular file, without following
    a symbolic link and without blocking (a FIFO swapped in after a listing would otherwise
    block the run for ever). What was opened is checked with fstat, so a file replaced
    between a check and the open cannot slip through. Raises NotRegularFile."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise NotRegularFile(path, "a symbolic link") from None
        raise
    try:
        kind = non_regular_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFile(path, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_regular_file(path: Path) -> tuple[str, os.stat_result]:
    """SHA-256 of a regular file read through :func:`open_regular_file`, and the stat of
    the very file hashed (its descriptor, not the name)."""
    import hashlib

    digest = hashlib.sha256()
    with open_regular_file(path) as handle:
        stat = os.fstat(handle.fileno())
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest(), stat
