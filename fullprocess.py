"""The cron entry: ingest new data, check the deployed model for drift, retrain and redeploy.

1. Take the run lock; if another run holds it, log that and exit 0. Remove temporary files
   that killed runs left behind.
2. Finish what an earlier run left undone for the current version: a deploy killed half-way,
   its diagnostics, its reports, its audit line (written then, marked ``recovered``).
3. Nothing new or changed in the input folder, nothing undone and nothing left undecided:
   log one line and exit 0. This path runs every few minutes, so only stdlib-light modules
   are imported before it is decided.
4. Check the set-up (test data, column names) before any work: a mistake is one line with the fix.
5. Ingest. 6. Score the deployed model on the rows not yet judged (those just ingested);
   model drift means that score is below the deployed one (by more than
   ``drift_tolerance``); no deployed model, or one that fails verification, counts as drift;
   fewer than ``drift_min_rows`` rows wait for more. 7. No drift: record the decision and
   stop. 8. Drift: retrain on the whole master dataset; score it (the challenger) and the
   deployed model (the champion) on the same test data, with a paired bootstrap interval of
   the difference; deploy unless it is not better by more than ``promotion_margin``
   (``block_worse_deployments``) or is no better than chance while a model is deployed, then
   diagnose and report. With ``require_approval`` the new version waits, pending, for
   ``deployment.py --approve``; it covers its rows meanwhile, so they are not judged again.
9. Every run appends one JSON line to ``<logs>/audit.jsonl``. Exit non-zero only on failure.
   Under cron (stderr not a terminal) nothing is printed unless the run fails: then one line.

Rows stay "not yet judged" until a decision is recorded: ``drift_checkpoint.json`` holds the
master's size at the last decision, and each version's manifest the master size it was
trained on, so rows a deployed version covers are never judged (nor deployed for) again. The
checkpoint also names the last version whose deployment was finished (reports and audit line
written): when ``current`` or the newest version differs, the run looks for undone work.
"""

from __future__ import annotations

import logging
import sys
import time

from risk.core import artefacts
from risk.core.artefacts import LOG_FILE
from risk.core.cli import script_parser
from risk.core.logs import install_log_handlers
from risk.core.settings import ConfigError, load_config
from risk.pipeline.process import failure_summary, run_locked, verify_audit

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--verify-audit",
        action="store_true",
        help="check the hash chains of the audit log and the deployment history; exit 1 naming the first broken line",
    )
    args = parser.parse_args(argv)
    if args.verify_audit:
        try:
            return verify_audit(load_config(args.config))
        except ConfigError as exc:
            return _fail_in_one_line(f"fullprocess: {exc}")
    started, clock = artefacts.utc_now(), time.perf_counter()
    # Under cron (no terminal) the console stays silent unless the run fails: cron mails output.
    interactive = args.verbose or sys.stderr.isatty()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail_in_one_line(f"fullprocess: {exc}")
    try:
        install_log_handlers(args.verbose, config.log_folder / LOG_FILE, console=interactive, console_tracebacks=False)
    except OSError as exc:
        return _fail_in_one_line(
            f"fullprocess: cannot write the log {config.log_folder / LOG_FILE}: {exc.strerror or exc}; "
            f"make {config.log_folder} writable by the user cron runs as"
        )
    logging.captureWarnings(True)  # library warnings go to the log file, not to cron's mail
    record = run_locked(config, started, clock)
    logger.info("%s: %s", record["decision"], record.get("reason", ""))
    if record["status"] != "ok":
        if not interactive:
            _fail_in_one_line(
                f"fullprocess failed: {failure_summary(record)} (details in {config.log_folder / LOG_FILE})"
            )
        return 1
    return 0


def _fail_in_one_line(message: str) -> int:
    """One line on stderr (cron mails it); no traceback."""
    sys.stderr.write(" ".join(message.split()) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
