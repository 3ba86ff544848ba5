"""The run lock: one pipeline step at a time per project (a second run is locked out, not queued).

Stdlib only, so that the cron fast path stays light.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from risk.core.files import before_change

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Iterator

logger = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    """Another process holds the run lock."""


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
