"""Fit candidate scikit-learn pipelines on the master dataset, pick the best, save it.

The work is done by ``risk/model/training.py``; its docstring says how.
"""

from __future__ import annotations

import json
import logging
import sys

from risk.core.cli import run_script, script_parser
from risk.core.locks import LockBusy
from risk.core.settings import Config
from risk.data import ledger, preflight
from risk.model import compute
from risk.model.training import TrainingError, save_model, train_model

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    return run_script(
        args,
        _train,
        _print_summary,
        logger=logger,
        errors=(TrainingError, LockBusy, FileNotFoundError, compute.ComputeUnavailable),
    )


def _train(config: Config) -> dict[str, Any]:
    preflight.check_columns(config)  # a misspelt column name fails now, naming the close matches
    with ledger.pipeline_lock(config):
        model, metadata = train_model(config)
        save_model(config, model, metadata)
    return metadata


def _print_summary(metadata: dict[str, Any]) -> int:
    summary = ("model", "metric", "threshold", "uninformative", "warnings", "candidates", "training_seconds")
    candidates = {
        name: {
            k: c[k]
            for k in (
                "mean",
                "std",
                "folds",
                "threshold",
                "oof_roc_auc",
                "flag_everyone_score",
                "informative",
                "fit_seconds",
            )
        }
        for name, c in metadata["candidates"].items()
    }
    print(json.dumps({**{k: metadata[k] for k in summary}, "candidates": candidates}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
