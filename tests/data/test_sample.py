"""risk.data.sample: deterministic, realistic sample data."""

from __future__ import annotations

import pandas as pd

from risk.core.files import sha256_file
from risk.core.settings import Config
from risk.data import sample


def test_sample_is_deterministic_and_realistic(project: Config) -> None:
    first = {p.name: sha256_file(p) for p in project.input_folder.iterdir()}
    sample.write_sample_data(project, force=True)
    assert {p.name: sha256_file(p) for p in project.input_folder.iterdir()} == first

    frames = [pd.read_csv(p) for p in sorted(project.input_folder.iterdir())]
    data = pd.concat(frames)
    assert len(frames) == 3 and len(data) == 7500
    assert list(data.columns) == [
        "corporation",
        "lastmonth_activity",
        "lastyear_activity",
        "number_of_employees",
        "exited",
    ]
    assert 0.1 < data["exited"].mean() < 0.3, "a minority positive class"
    assert data["lastyear_activity"].skew() > 1, "skewed activity counts"
    assert 0 < data["lastmonth_activity"].isna().mean() < 0.1, "some missing values"
    test = pd.read_csv(next(project.test_data_folder.iterdir()))
    shifted = pd.read_csv(next((project.root / sample.SAMPLE_BATCH_FOLDER).iterdir()))
    holdout = pd.read_csv(next((project.root / sample.SAMPLE_HOLDOUT_FOLDER).iterdir()))
    assert len(holdout) == sample.SHIFTED_HOLDOUT_ROWS
    every_client = pd.concat([data, test, shifted, holdout])["corporation"]
    assert len(every_client) == sample.CLIENTS and every_client.is_unique


def test_existing_files_are_kept_unless_forced(project: Config) -> None:
    assert sample.write_sample_data(project) == []


def test_shifted_month_is_staged_beside_the_config_wherever_it_lives(project: Config) -> None:
    staged = sample.stage_shifted_month(project)
    batch = next((project.root / sample.SAMPLE_BATCH_FOLDER).iterdir())
    holdout = next((project.root / sample.SAMPLE_HOLDOUT_FOLDER).iterdir())
    assert sorted(staged) == sorted([project.input_folder / batch.name, project.test_data_folder / holdout.name])
    assert sha256_file(project.input_folder / batch.name) == sha256_file(batch)
    assert sample.stage_shifted_month(project) == [], "files already staged are kept"
