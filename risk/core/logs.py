"""Logging set-up for the scripts (one line per record on the console), and warnings captured as text.

Stdlib only, so that the cron fast path stays light.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Iterator
    from typing import Any

logger = logging.getLogger(__name__)


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
    for old in [h for h in root.handlers if getattr(h, "_installed_by_risk_logs", False)]:
        root.removeHandler(old)
        old.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler._installed_by_risk_logs = True  # type: ignore[attr-defined]
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


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect the warnings raised inside (distinct messages) instead of letting them print.

    scipy and scikit-learn warn on stderr about details (an exact p-value replaced by its
    asymptotic formula, say) that belong in a report's notes, not in cron's mail. The list is
    filled when the block ends.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
