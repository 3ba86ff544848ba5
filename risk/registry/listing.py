"""The deployed versions as ``deployment.py --list``, ``--inventory`` and ``--current`` print them."""

from __future__ import annotations

import logging

from risk.core import logbook
from risk.core.settings import Config
from risk.model import modelfiles
from risk.registry.versions import (
    BrokenCurrentLink,
    current_since,
    current_version,
    pending_versions,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time; deployment.py --list should start at once
    from typing import Any

logger = logging.getLogger(__name__)


PICKLE_NOTE = "a pickle, saved before models were saved with skops: loaded once its hash matches, its types unchecked"


def print_versions(config: Config, rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no versions deployed")
        return
    metric = config["metric"]
    width = max(7, len(metric))
    print(
        f"{'':2}{'version':<8} {'deployed at':<26} {'model':<24} {metric:>{width}} {'roc_auc':>8} {'test rows':>9}  reason"
    )
    for row in rows:
        marker = "* " if row["current"] else "  "
        score = _score(row.get("score"))
        auc = _score(row["roc_auc"])
        tested = f"{row['test_rows']:,}" if isinstance(row.get("test_rows"), int) else "?"
        model = f"{row['model']} (no better than chance)" if row.get("uninformative") else row["model"]
        print(
            f"{marker}{row['version']:<8} {row['deployed_at']:<26} {model:<24} {score:>{width}} {auc:>8} {tested:>9}  {row['reason']}"
        )
        if row.get("status"):
            print(f"{'':11}status: {_status_text(row)}")
        if row.get("model_format") == modelfiles.PICKLE:
            print(f"{'':11}model file: {PICKLE_NOTE}")
        if row.get("champion_challenger"):
            from risk.registry import promotion

            print(f"{'':11}{promotion.describe(row['champion_challenger'])}")
        for warning in row.get("warnings", []):
            print(f"{'':11}warning: {warning}")
    note = other_test_data_note(rows)
    if note:
        print(f"\n{note}")
    print_current(config)


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def other_test_data_note(rows: list[dict[str, Any]]) -> str | None:
    """Why the scores above do not compare versions, when they came from different test data."""
    tested = {(row.get("test_rows"), row.get("test_positives")) for row in rows if row.get("test_rows") is not None}
    if len(tested) < 2:
        return None
    return (
        "The scores are each version's own, measured on the test data of the day it was scored, and the test data "
        "has changed between versions (see the test rows): they do not compare the versions. The champion line of "
        "a version compares it with the one before on the same rows."
    )


def _status_text(row: dict[str, Any]) -> str:
    text = row["status"]
    if row.get("decision") in ("approved", "rejected"):
        note = f": {row['decision_note']}" if row.get("decision_note") else ""
        text += f" ({row['decision']} by {row['decided_by']} at {row['decided_at']}{note})"
    elif row.get("decision") == "superseded":
        text += f" (at {row['decided_at']}: {row.get('decision_note') or ''})"
    if row["status"] == "pending":
        text += f" -- approve: python deployment.py --approve {row['version']} --by NAME"
    if row.get("problem"):
        text += f" -- {row['problem']}"
    return text


def print_inventory(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no versions deployed")
        return
    print(
        f"{'version':<8} {'status':<22} {'file':<6} {'deployed at':<26} {'current from':<26} {'until':<26} {'metric':<10} {'score':>7} {'roc_auc':>8}  approver"
    )
    for row in rows:
        score = f"{row['metric_score']:.4f}" if isinstance(row.get("metric_score"), (int, float)) else "n/a"
        auc = f"{row['roc_auc']:.4f}" if isinstance(row.get("roc_auc"), (int, float)) else "n/a"
        who = (
            f"{row['decision']} by {row['decided_by']} at {row['decided_at']}"
            if row.get("decided_by") and row.get("decision") != "superseded"
            else "-"
        )
        print(
            f"{row['version']:<8} {row['status']:<22} {row.get('model_format') or '?':<6} {row['deployed_at']:<26} {row['became_current_at'] or '-':<26} "
            f"{row['left_current_at'] or '-':<26} {row.get('metric') or '?':<10} {score:>7} {auc:>8}  {who}"
        )
        if row.get("decision_note"):
            print(f"{'':9}note: {row['decision_note']}")
        if row.get("problem"):
            print(f"{'':9}{row['problem']}")
        if row.get("model_format") == modelfiles.PICKLE:
            print(f"{'':9}model file: {PICKLE_NOTE}")


def print_current(config: Config) -> None:
    """Which version is current and since when, and every rollback or activation."""
    try:
        current_version(config)
    except BrokenCurrentLink as exc:
        print(f"\ncurrent: none usable: {exc}")
        return
    since = current_since(config)
    if since:
        how = {"deploy": "deployed", "rollback": "rolled back", "activate": "activated", "approve": "approved"}.get(
            since.get("action"), since.get("action")
        )
        came_from = (
            f" from {since['previous_version']}"
            if since.get("previous_version") and since.get("action") != "deploy"
            else ""
        )
        print(f"\ncurrent: {since['version']}, since {since.get('at')} ({how}{came_from})")
    waiting = pending_versions(config)
    if waiting:
        print(f"awaiting approval: {', '.join(waiting)} (python deployment.py --approve vN --by NAME [--note TEXT])")
    switches = [h for h in logbook.read_history(config) if h.get("action") in ("rollback", "activate")]
    if switches:
        print("rollbacks and activations:")
        for h in switches:
            print(f"  {h.get('at')}  {h.get('action')} {h.get('previous_version') or '-'} -> {h.get('version')}")
