"""Write the reports of a deployed version: confusion matrix, full model report (PDF) and its JSON.

``python reporting.py [--config PATH] [--version vN] [--refresh-diagnostics]`` writes them into
``<reports>/<version>/``.

The work is done by ``risk/report/reports.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import sys

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
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
