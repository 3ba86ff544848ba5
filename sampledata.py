"""Make the deterministic sample data: a company's 10,000 client corporations.

The work is done by ``risk/data/sample.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import sys

from risk.core.cli import run_script, script_parser
from risk.core.settings import Config
from risk.data.sample import SEED, stage_shifted_month, write_sample_data

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite files that already exist")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--shifted-month",
        action="store_true",
        help="then stage the shifted month into the input folder and its hold-out into the test folder (the drift demo)",
    )
    args = parser.parse_args(argv)

    def write(config: Config) -> int:  # run outside the error handling, as before: its errors are not the user's
        written = write_sample_data(config, force=args.force, seed=args.seed)
        print(f"{len(written)} sample file(s) written")
        if args.shifted_month:
            print(f"{len(stage_shifted_month(config))} shifted-month file(s) staged")
        return 0

    return run_script(args, lambda config: config, write, logger=logger)


if __name__ == "__main__":
    sys.exit(main())
