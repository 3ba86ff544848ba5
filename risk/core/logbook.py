"""The records more than one step reads: the audit log, the drift checkpoint and the deployment history.

Stdlib only: ``fullprocess.py`` reads these on every cron tick before it knows whether there
is work, and that path must not import pandas or scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

from risk.core.artefacts import AUDIT_FILE, CHECKPOINT_FILE, HISTORY_FILE
from risk.core.files import atomic_write_json
from risk.core.jsonfiles import append_json_line, read_json_lines, read_json_object

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

    from risk.core.settings import Config


# --- the audit log --------------------------------------------------------------------------------


def audit_path(config: Config) -> Path:
    return config.log_folder / AUDIT_FILE


def read_audit(config: Config) -> list[dict[str, Any]]:
    """Every audit record, oldest first."""
    return read_json_lines(audit_path(config))


def append_audit(config: Config, record: dict[str, Any]) -> None:
    append_json_line(audit_path(config), record)


# --- the drift checkpoint -------------------------------------------------------------------------


def read_checkpoint_state(config: Config) -> dict[str, Any]:
    """The drift checkpoint's fields; {} where it is absent or damaged (as if no decision was made)."""
    return read_json_object(config.output_folder / CHECKPOINT_FILE)


def read_checkpoint(config: Config) -> tuple[int, int]:
    """(judged, seen): the master's size at the last decision, and at the last run that
    looked at the rows after it (rows kept waiting for more are seen, not judged)."""
    checkpoint = read_checkpoint_state(config)
    judged, seen = (checkpoint.get(key) for key in ("master_bytes", "seen_bytes"))
    judged = judged if isinstance(judged, int) and judged > 0 else 0  # damaged: unknown, as if absent
    return judged, max(judged, seen if isinstance(seen, int) else 0)


def write_checkpoint(config: Config, judged: int, seen: int, **finished: str | None) -> None:
    """Record a decision; ``finished``: completed_version / newest_version, kept unless given."""
    state = read_checkpoint_state(config)
    state.update(master_bytes=judged, seen_bytes=seen)
    state.update(finished)
    atomic_write_json(config.output_folder / CHECKPOINT_FILE, state)


# --- the deployment history -----------------------------------------------------------------------


def history_path(config: Config) -> Path:
    return config.deployment_folder / HISTORY_FILE


def read_history(config: Config) -> list[dict[str, Any]]:
    """Every deployment, rollback and approval line, oldest first, its text safe to print
    (see :func:`shown`): a name or note from a history written before control characters
    were refused can never clear a screen or forge a line of a listing."""
    return [shown(line) for line in read_json_lines(history_path(config))]


# --- people's text --------------------------------------------------------------------------------

# Control characters (C0, DEL, C1), format characters (bidirectional overrides among them) and
# line or paragraph separators: a terminal acts on them, or they split or reorder a line.
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def _escaped(character: str) -> str | None:
    """The escape to print for an unsafe character (``\\x1b``), None for one safe to print raw."""
    import unicodedata  # only for text that is not printable as it is: rare

    return ascii(character)[1:-1] if unicodedata.category(character) in _UNSAFE_CATEGORIES else None


def control_characters(text: str) -> list[str]:
    """The characters of ``text`` that must not be printed raw, each written as an escape
    (``\\x1b``, ``\\n``), once each in order; [] for text safe to print."""
    if text.isprintable():  # the usual case, and no unicodedata import
        return []
    return list(dict.fromkeys(e for e in map(_escaped, text) if e is not None))


def shown(value: Any) -> Any:
    """``value`` (a string, or a JSON-like structure of them) with each control character
    written as its escape, so that it prints on one line as text and nothing else."""
    if isinstance(value, str):
        if value.isprintable():
            return value
        return "".join(_escaped(c) or c for c in value)
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value
