"""Promote the trained model into the production deployment, versioned, with rollback.

The work is done by ``risk/registry/deploy.py``; its docstring says how.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from risk.core.cli import run_script, script_parser
from risk.core.locks import LockBusy
from risk.core.settings import Config
from risk.data import ledger
from risk.registry.deploy import (
    activate,
    approve,
    complete_interrupted_switch,
    deploy_model,
    refuse_control_characters,
    reject,
    rollback,
    switch_left_unfinished,
)
from risk.registry.listing import print_inventory, print_versions
from risk.registry.versions import (
    DeploymentError,
    inventory,
)

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # An unset "$VERSION" gives an empty name: it must never fall through to deploying models/.
    for option in ("activate", "approve", "reject"):
        value = getattr(args, option)
        if value is not None and not value.strip():
            parser.error(f"--{option} needs a version name (vN): `make versions` lists them")
    try:  # people's text is shown by every listing: refused here, before anything is done
        refuse_control_characters(by=args.by, note=args.note, reason=args.reason)
    except DeploymentError as exc:
        parser.error(str(exc))
    return run_script(
        args,
        lambda config: _act(config, args, parser),
        _print_current,
        logger=logger,
        errors=(DeploymentError, LockBusy, OSError),
        console_tracebacks=False,
    )


def _parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="show versions with their scores (* marks current)")
    action.add_argument("--rollback", action="store_true", help="make the previous version current again")
    action.add_argument("--activate", metavar="VERSION", help="make any verified version (vN) current again")
    action.add_argument(
        "--approve", metavar="VERSION", help="make a version awaiting approval current (with --by NAME [--note TEXT])"
    )
    action.add_argument(
        "--reject", metavar="VERSION", help="retire a version awaiting approval (with --by NAME --note TEXT)"
    )
    action.add_argument(
        "--inventory", action="store_true", help="every version with its status, dates, scores and approver"
    )
    parser.add_argument("--by", metavar="NAME", help="who approves or rejects")
    parser.add_argument("--note", metavar="TEXT", help="why (required with --reject)")
    parser.add_argument("--json", action="store_true", help="with --inventory: print JSON")
    parser.add_argument("--reason", default="manual deployment", help="why this version is deployed")
    return parser


def _act(config: Config, args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """Do what the command line asks. Returns the version now current, or None when the
    answer is printed already (a listing, an approval, a version awaiting approval)."""
    if args.list or args.inventory:
        _finish_interrupted_switch_if_free(config)
    if args.list:
        print_versions(config, inventory(config, verify=False))
        return None
    if args.inventory:
        rows = inventory(config)
        print(json.dumps(rows, indent=2, default=str)) if args.json else print_inventory(rows)
        return None
    if (args.approve or args.reject) and not args.by:
        parser.error("--approve and --reject need --by NAME")
    if args.reject and not args.note:
        parser.error("--reject needs --note TEXT saying why")
    with ledger.pipeline_lock(config):
        complete_interrupted_switch(config)  # what a killed approval, rollback... left, before anything new
        if args.approve or args.reject:
            _decide(config, args)
            return None
        if args.rollback:
            return rollback(config)
        if args.activate:
            return activate(config, args.activate)
        version = deploy_model(config, reason=args.reason, pending=config["require_approval"])
        if config["require_approval"]:
            print(
                f"deployed {version}, awaiting approval (require_approval): python deployment.py --approve {version} --by NAME"
            )
            return None
        return version


def _finish_interrupted_switch_if_free(config: Config) -> None:
    """A listing finishes a killed approval, rollback... first, so that it tells one story; only
    when one was left (the lock is taken only then) and no other process holds the lock."""
    if not switch_left_unfinished(config):
        return
    try:
        with ledger.pipeline_lock(config):
            complete_interrupted_switch(config)
    except LockBusy:
        logger.warning("another process holds the lock: a change of the current version may be under way")


def _decide(config: Config, args: argparse.Namespace) -> None:
    """Approve or reject a version awaiting approval, and rewrite its reports."""
    version = (
        approve(config, args.approve, args.by, args.note)
        if args.approve
        else reject(config, args.reject, args.by, args.note)
    )
    # Imported here: pandas and matplotlib load only for an approval decision, so --list and
    # --rollback start at once and still work when the report libraries are broken.
    from risk.report.reports import refresh_reports

    refreshed = refresh_reports(config, version)
    print(f"{version} {'approved: now current' if args.approve else 'rejected'}; reports rewritten: {refreshed}")


def _print_current(version: str | None) -> int:
    if version is not None:
        print(f"current version: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
