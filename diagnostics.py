"""Diagnose the deployed model and its data: summaries, missing values, timings, packages, drift, fairness.

``python diagnostics.py [--config PATH] [--version vN] [--measure]`` prints one JSON document
and saves it as ``<reports>/<version>/diagnostics.json``, beside the reports of the version it
describes. The API serves that file; it never computes it. Top-level keys: ``version``,
``generated_at``, ``summary_statistics``, ``missing_data``, ``execution_time``,
``outdated_packages`` (packages.py), ``data_drift``, ``fairness`` (fairness.py) and
``warnings``.

The work is done by ``risk/monitoring/diagnostics.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from risk.core.cli import run_script, script_parser
from risk.core.settings import Config
from risk.model import scoring
from risk.monitoring.diagnostics import save_diagnostics
from risk.registry import versions

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--version", help="the deployed version to diagnose (default: the current one)")
    parser.add_argument("--measure", action="store_true", help="also time ingestion and training on copies of the data")
    parser.add_argument(
        "--refresh-packages", action="store_true", help="ask the package index again, ignoring the cache"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    def diagnose(config: Config) -> Path:
        return save_diagnostics(config, args.version, measure=args.measure, refresh_packages=args.refresh_packages)

    return run_script(
        args,
        diagnose,
        _print_file,
        logger=logger,
        errors=(versions.DeploymentError, scoring.ScoringError, FileNotFoundError),
    )


def _print_file(path: Path) -> int:
    print(path.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
