"""Fit candidate scikit-learn pipelines on the master dataset, pick the best, save it.

Every candidate is one ``Pipeline``: median imputation (with missing-value indicators) and
scaling for numeric features, imputation and one-hot encoding (``handle_unknown="ignore"``)
for categorical ones, then the classifier. Each model has a small fixed set of
hyper-parameter settings (``SEARCH_SPACE``): every setting is scored on the first two
cross-validation folds, the best of each model goes on to the remaining folds (successive
halving), and the soft-voting blend of those models (their averaged probabilities) is a
candidate of its own, judged on the same folds. The decision threshold is tuned on the
out-of-fold risk scores (F1 on the positive class by default; with metric ``cost``, the
lowest expected cost per client under ``cost_matrix``), because with a minority positive
class the default 0.5 misses most of the clients at risk. Lower is better for ``cost``
(settings.LOWER_IS_BETTER): every comparison goes through settings.metric_gain.

Each candidate is judged against chance (out-of-fold ROC AUC above 0.5 by more than
sampling noise: one-sided 5% under the null, Hanley-McNeil standard error) and against the
trivial rule "flag everyone" (the configured metric on the same folds; the candidate must
beat it by more than the standard error of the paired fold differences). A candidate that
does not beat both is *uninformative* and is never chosen over an informative one. Ties on
the configured metric (within the standard error of the best candidate's fold scores) go
to the higher out-of-fold ROC AUC, then to the simpler model (the order of SEARCH_SPACE).

The preprocessing has no seed, so every candidate of a fold gets the same encoding
(``encode_fold``). Fits run single-threaded, side by side: in worker processes when the data
is large enough (this process encodes each fold once and the workers memory-map it, one
copy for all of them; see ``FoldFiles``), or on the Dask cluster at
``dask_scheduler_address``, whose workers read the master from the shared file system and
encode their folds themselves (see compute.py). The result does not depend on where they ran.

Saves ``trainedmodel.skops`` (see modelfiles.py) and ``trainedmodel.json`` (parameters, the fold scores, time and
judgement of every candidate and setting, features and their types, data hash, package
versions, time taken, warnings).
"""

from __future__ import annotations

import json
import logging
import sys

from risk.core.cli import run_script, script_parser
from risk.core.locks import LockBusy, run_lock
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
    with run_lock(ledger.lock_path(config)):
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
