"""risk/registry/predictions.py: a deployed version's explainer, against its training data's typical client."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from risk.core.settings import Config
from risk.core.tables import read_typed_csv
from risk.data import masterstore
from risk.model import explain
from risk.registry import predictions, versions


def test_a_version_records_its_typical_client_and_its_explainer_uses_it(deployed_project: Config) -> None:
    deployed = versions.load_deployed_model(deployed_project)
    features = deployed.metadata["features"]
    master = masterstore.load_master(deployed_project)
    assert deployed.metadata["typical_client"] == explain.typical_client(master, features)
    explainer = predictions.explainer_for(deployed_project, deployed)
    assert explainer.typical == deployed.metadata["typical_client"]
    reasons = explainer.reasons(master.head(50))
    assert len(reasons) == 50 and any(reasons)


def test_an_older_version_gets_its_typical_client_from_the_rows_it_was_trained_on(
    deployed_project: Config, caplog: pytest.LogCaptureFixture
) -> None:
    deployed = versions.load_deployed_model(deployed_project)
    recorded = deployed.metadata.pop("typical_client")  # as a version trained before it was recorded
    # Rows ingested after the version was trained must not move its baseline.
    path = masterstore.master_path(deployed_project)
    later = read_typed_csv(path, masterstore.column_kinds(deployed_project)).head(500)
    for column in deployed.metadata["features"]["numeric"]:
        later[column] = later[column] * 100 + 1
    later.to_csv(path, mode="a", header=False, index=False)
    with caplog.at_level(logging.INFO, logger="risk.registry.predictions"):
        explainer = predictions.explainer_for(deployed_project, deployed)
    assert explainer.typical == recorded
    assert "records no typical client" in caplog.text
    rows = masterstore.load_master(deployed_project).head(20)
    expected = explain.Explainer(deployed.model, deployed.metadata["features"], recorded).contributions(rows)
    np.testing.assert_array_equal(explainer.contributions(rows), expected)
