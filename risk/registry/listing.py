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
    print(f"{'':2}{'version':<8} {'deployed at':<26} {'model':<24} {'f1':>7} {'roc_auc':>8}  reason")
    for row in rows:
        marker = "* " if row["current"] else "  "
        f1 = f"{row['f1']:.4f}" if row["f1"] is not None else "n/a"
        auc = f"{row['roc_auc']:.4f}" if row["roc_auc"] is not None else "n/a"
        model = f"{row['model']} (no better than chance)" if row.get("uninformative") else row["model"]
        print(f"{marker}{row['version']:<8} {row['deployed_at']:<26} {model:<24} {f1:>7} {auc:>8}  {row['reason']}")
        if row.get("status"):
            print(f"{'':11}status: {_status_text(row)}")
        if row.get("model_format") == modelfiles.PICKLE:
            print(f"{'':11}model file: {PICKLE_NOTE}")
        if row.get("champion_challenger"):
            from risk.registry import promotion

            print(f"{'':11}{promotion.describe(row['champion_challenger'])}")
        for warning in row.get("warnings", []):
            print(f"{'':11}warning: {warning}")
    print_current(config)


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
