"""Pull new rows from the configured databases as snapshot files that ingestion reads like dropped files.

The work is done by ``risk/data/dbpull.py``; its docstring says how.
"""

from __future__ import annotations

import json
import logging
import sys

from risk.core.cli import run_script, script_parser
from risk.core.locks import LockBusy
from risk.core.settings import Config
from risk.data import ledger
from risk.data.dbpull import Pulled, pull_new_rows

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("Pull new rows from the configured databases and ingest them with any new files.")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    return run_script(args, _pull_and_ingest, _print_result, logger=logger, errors=(LockBusy,))


def _pull_and_ingest(config: Config) -> tuple[dict[str, Any], Pulled]:
    with ledger.pipeline_lock(config):
        pulled = pull_new_rows(config)
        pending = ledger.pending_files(config) + pulled.snapshots
        summary: dict[str, Any] = {"files_ingested": [], "rows_added": 0}
        if pending:
            from risk.data import ingest  # pandas: only when there is something to ingest

            summary = ingest.ingest_new_files(config, pending).summary()
    return summary, pulled


def _print_result(result: tuple[dict[str, Any], Pulled]) -> int:
    summary, pulled = result
    print(json.dumps({**summary, **pulled.audit()}, indent=2, default=str))
    return 1 if pulled.failures else 0


if __name__ == "__main__":
    sys.exit(main())
