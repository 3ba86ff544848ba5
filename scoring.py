"""Score a trained model on the labelled hold-out data in the test folder.

The work is done by ``risk/model/scoring.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import sys

from risk.core.cli import print_json, run_script, script_parser
from risk.model import modelfiles
from risk.model.scoring import ScoringError, score_model

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    return run_script(
        args,
        score_model,
        print_json,
        logger=logger,
        errors=(ScoringError, FileNotFoundError, modelfiles.ModelFileError),
    )


if __name__ == "__main__":
    sys.exit(main())
