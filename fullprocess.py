"""The cron entry: ingest new data, check the deployed model for drift, retrain and redeploy.

The work is done by ``risk/pipeline/process.py``; its docstring says how.
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
from risk.pipeline.process import failure_summary, run_locked, run_summary, verify_audit

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
    logger.info("%s", run_summary(record))
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
