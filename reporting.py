"""Write the reports of a deployed version: confusion matrix, full model report (PDF) and its JSON.

``python reporting.py [--config PATH] [--version vN] [--refresh-diagnostics]`` writes them into
``<reports>/<version>/``. ``--outcomes`` instead writes ``<reports>/outcomes.pdf`` ("Outcomes over
time", risk/report/outcomesreport.py) and prints the last labelled batch's figures.

The work is done by ``risk/report/reports.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from risk.core.cli import print_json, run_script, script_parser
from risk.core.settings import Config
from risk.model import scoring
from risk.registry import versions
from risk.report.reports import write_reports

logger = logging.getLogger(__name__)


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--version", help="the deployed version to report on (default: the current one)")
    parser.add_argument(
        "--refresh-diagnostics", action="store_true", help="run diagnostics again instead of reusing the saved ones"
    )
    parser.add_argument(
        "--outcomes",
        action="store_true",
        help="write reports/outcomes.pdf (the realised figures and the call lists' back-test) and print the last figures",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.outcomes:
        return run_script(args, outcomes_report, print_json, logger=logger, errors=(OSError, ValueError))

    def report(config: Config) -> dict[str, str]:
        paths = write_reports(config, args.version, refresh_diagnostics=args.refresh_diagnostics)
        return {name: str(path) for name, path in paths.items()}

    return run_script(
        args,
        report,
        print_json,
        logger=logger,
        errors=(versions.DeploymentError, scoring.ScoringError, FileNotFoundError),
    )


def outcomes_report(config: Config) -> dict[str, Any]:
    """Write the outcomes report and return what the demo shows: the last realised figures and the
    last back-tested list (without its calibration bins, which the report draws)."""
    from risk.monitoring import outcomes
    from risk.report import outcomesreport

    figures = outcomes.summary(config)
    path = outcomesreport.write_outcomes_report(config, figures)
    last = figures["last_list"]
    shown = {k: v for k, v in last.items() if k != "calibration"} if last else None
    return {
        "report": str(path),
        "batches_back_tested": len(figures["backtests"]),
        "last_realised": figures["last_realised"],
        "last_list": shown,
        "notes": figures["notes"],
    }


if __name__ == "__main__":
    sys.exit(main())
