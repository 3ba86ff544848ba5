"""Small file-system helpers: atomic writes, hashing, regular files only, leftover temporaries.

Stdlib only, so that the cron fast path stays light.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Iterator
    from typing import Any

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1024 * 1024


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_of(handle)


def sha256_of(handle: Any) -> str:
    """SHA-256 of what is left to read in a binary file object, read in HASH_CHUNK_BYTES chunks:
    the one hashing loop of sha256_file and sha256_regular_file."""
    import hashlib  # only when a file needs hashing: the cron fast path usually does not

    digest = hashlib.sha256()
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
    with staged_path(target.parent / temp_name(target.name)) as tmp:
        yield tmp
        commit_path(tmp, target, mode)


@contextlib.contextmanager
def staged_path(tmp: Path) -> Iterator[Path]:
    """Create the empty file ``tmp`` (its folder too) and yield it; whatever happens, it is
    gone afterwards: renamed by :func:`commit_path` inside the block, or removed.

    :func:`atomic_path` names the temporary file itself; this is for a writer whose final
    name is known only once the content is written (a name made of its hash).
    """
    tmp.parent.mkdir(parents=True, exist_ok=True)
    before_change(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def commit_path(tmp: Path, target: Path, mode: int = 0o644) -> None:
    """Sync the written file ``tmp``, give it permissions ``mode`` and rename it onto ``target``, durably."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    before_change(target)
    os.replace(tmp, target)
    fsync_dir(target.parent)


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
    with open_regular_file(path) as handle:
        stat = os.fstat(handle.fileno())
        return sha256_of(handle), stat


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
