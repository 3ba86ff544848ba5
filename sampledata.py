"""Make the deterministic sample data: a company's 10,000 client corporations.

Writes three monthly files to the input folder, a labelled hold-out file to the test folder,
and a later month to ``sample_batches/`` whose relationship between features and attrition
has shifted (large clients start leaving, and there are more of them), with a labelled
hold-out of that month in ``sample_holdout/``, for the drift demo (``make demo-drift``): once
the pattern moves, a model can only be judged on test data that holds some of the new pattern.

The data is realistic in the ways that matter to the pipeline: skewed activity counts, a few
missing values, about one client in five leaving, and a signal that is learnable but noisy.
"""

from __future__ import annotations

import logging
import sys

from risk.core.cli import run_script, script_parser
from risk.core.settings import Config
from risk.data.sample import SEED, write_sample_data

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite files that already exist")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    def write(config: Config) -> int:  # run outside the error handling, as before: its errors are not the user's
        written = write_sample_data(config, force=args.force, seed=args.seed)
        print(f"{len(written)} sample file(s) written")
        return 0

    return run_script(args, lambda config: config, write, logger=logger)


if __name__ == "__main__":
    sys.exit(main())
