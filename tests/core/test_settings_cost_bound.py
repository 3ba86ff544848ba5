"""The largest cost_matrix the config accepts trains and scores: the bound refuses only what crashes."""

from __future__ import annotations

import math

from risk.core.settings import MAX_COST
from risk.data import ingest
from risk.model import training
from tests.conftest import write_config


def test_the_largest_accepted_costs_train_a_model(project) -> None:
    ingest.ingest_new_files(project)
    config = write_config(
        project.root, metric="cost", cost_matrix={"false_negative": MAX_COST, "false_positive": MAX_COST / 3}
    )

    _, metadata = training.train_model(config)

    assert math.isfinite(metadata["candidates"][metadata["model"]]["mean"])
