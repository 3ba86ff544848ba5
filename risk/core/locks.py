"""The run lock: one pipeline step at a time per project (a second run is locked out, not queued).

The lock file names its holder: its process id and the UTC time it took the lock. A run
locked out by a holder that has held it longer than the configured bound (``max_run_minutes``)
is told so (``LockBusy.overdue``): whatever hung that run, the runs after it must not go on
exiting quietly for ever.

Stdlib only, so that the cron fast path stays light.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from pathlib import Path

from risk.core.files import before_change, process_is_alive

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class LockBusy(RuntimeError):
    """Another process holds the run lock; the message names it, when it started and for how long."""

    def __init__(
        self, message: str, pid: int | None, started_at: str | None, held_seconds: float | None, overdue: bool
    ):
        super().__init__(message)
        self.pid, self.started_at, self.held_seconds, self.overdue = pid, started_at, held_seconds, overdue

    def holder(self) -> dict[str, object]:
        """The holder as recorded in the audit line."""
        held = None if self.held_seconds is None else round(self.held_seconds / 60, 1)
        return {"pid": self.pid, "started_at": self.started_at, "held_minutes": held, "overdue": self.overdue}


def flock_within(fd: int, seconds: float, retry_seconds: float) -> bool:
    """Take an exclusive flock on ``fd``, waiting at most ``seconds`` for its holder; False if it
    stayed held (the caller says what that means)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(retry_seconds)


@contextlib.contextmanager
def run_lock(lock_path: Path, max_held_seconds: float | None = None) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock for one pipeline run.

    flock is released by the kernel when the process dies, so a killed run never leaves
    a stale lock behind. Raises LockBusy at once if another process holds it; with
    ``max_held_seconds``, the exception says whether the holder has held it longer (``overdue``).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise lock_busy(lock_path, fd, max_held_seconds) from exc
            raise
        before_change(lock_path)
        os.ftruncate(fd, 0)
        now = time.time()
        os.write(fd, f"{os.getpid()}\n{time.strftime(TIME_FORMAT, time.gmtime(now))}\n".encode())
        yield
    finally:
        os.close(fd)


def lock_busy(lock_path: Path, fd: int, max_held_seconds: float | None) -> LockBusy:
    """The LockBusy for a lock another process holds, from what its holder wrote in the file."""
    pid, started = _read_holder(fd)
    if started is None:  # the holder is between taking the lock and writing it, or an older file: its time
        with contextlib.suppress(OSError):
            started = os.fstat(fd).st_mtime
    held = None if started is None else max(0.0, time.time() - started)
    since = None if started is None else time.strftime(TIME_FORMAT, time.gmtime(started))
    who = f"pid {pid}" if pid is not None else "a process that has not written its id"
    if pid is not None and not process_is_alive(pid):
        who += " (no longer running: a process it started still holds the lock)"
    when = f"since {since}, {_duration(held)}" if since is not None else "since an unknown time"
    overdue = held is not None and max_held_seconds is not None and held > max_held_seconds
    if overdue:
        message = (
            f"the run lock {lock_path} has been held by {who} {when}, longer than max_run_minutes "
            f"({max_held_seconds / 60:g}): that run is probably hung; look at it (ps -p {pid}) and end it if so, "
            "or raise max_run_minutes if runs really take this long"
        )
    else:
        message = f"another run holds the lock {lock_path}: {who}, {when}"
    return LockBusy(message, pid, since, held, overdue)


def _read_holder(fd: int) -> tuple[int | None, float | None]:
    """(pid, start time) from the lock file; None for what it does not hold (yet)."""
    try:
        lines = os.pread(fd, 200, 0).decode("ascii", "replace").split()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].isdigit() else None
    import calendar  # only when locked out: every cron tick takes the lock, few read its holder

    try:
        started = float(calendar.timegm(time.strptime(lines[1], TIME_FORMAT)))
    except (IndexError, ValueError):
        started = None
    return pid, started


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{seconds:.0f} s ago"
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h {minutes % 60} min ago"
