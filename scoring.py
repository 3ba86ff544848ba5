"""Score a trained model on the labelled hold-out data in the test folder.

Writes the classic ``latestscore.txt`` (the F1 score on the positive class) and
``scores.json`` (F1, ROC AUC, precision, recall, accuracy, the confusion counts and, with a
``cost_matrix``, ``cost``: the expected cost per client) beside
the model, with ``warnings`` where the score may mislead: test rows that are also in the
training data (the same id, feature values and label, found by ingestion's row hash; counted in
``test_rows_in_training`` and ``test_rows_in_training_share``), a test score more than three
fold standard errors above the cross-validated one, a test set holding one class.

With ``dask_scheduler_address`` set, a test set or batch of ``CLUSTER_MIN_ROWS`` rows or
more is scored in chunks on the cluster's workers (see compute.py).
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
