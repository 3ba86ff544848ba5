"""Merge new files from the input folder into the master dataset.

The work is done by ``risk/data/ingest.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import sys

from risk.core.cli import print_json, run_script, script_parser
from risk.core.locks import LockBusy
from risk.core.settings import Config
from risk.data import ledger
from risk.data.ingest import RetryRefused, ingest_new_files, retry_file
from risk.data.masterstore import (
    MasterMissing,
)
from risk.pipeline.rebuild import rebuild_master

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--rebuild", action="store_true", help="rebuild a missing or damaged master from the recorded source files"
    )
    action.add_argument(
        "--retry", metavar="NAME", help="read the file NAME of the input folder again now (one set aside, for example)"
    )
    args = parser.parse_args(argv)

    def ingest(config: Config) -> dict:
        with ledger.pipeline_lock(config):
            if args.rebuild:
                return rebuild_master(config)
            if args.retry is not None:
                return retry_file(config, args.retry).summary()
            return ingest_new_files(config).summary()

    return run_script(args, ingest, print_json, logger=logger, errors=(LockBusy, MasterMissing, RetryRefused))


if __name__ == "__main__":
    sys.exit(main())
