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
import string
from pathlib import Path

import numpy as np
import pandas as pd

from risk.core.files import atomic_write_bytes, atomic_write_text
from risk.core.settings import Config

logger = logging.getLogger(__name__)

SEED = 20261127
CLIENTS = 10_000
MONTHS = ("2026-08", "2026-09", "2026-10")
MONTH_ROWS = 2_500
TEST_ROWS = 1_000
SHIFTED_MONTH = "2026-11"  # the remaining 1,500 clients
SAMPLE_BATCH_FOLDER = "sample_batches"
SAMPLE_HOLDOUT_FOLDER = "sample_holdout"
SHIFTED_HOLDOUT_ROWS = 400  # of the shifted month's clients, kept out of its batch for testing
SHIFTED_BATCH_ROWS = CLIENTS - len(MONTHS) * MONTH_ROWS - TEST_ROWS - SHIFTED_HOLDOUT_ROWS
# The client book (config.json's client_book): every client as of the latest month, unlabelled.
SAMPLE_BOOK = "clientbook/clients.csv"


def corporation_codes(rng: np.random.Generator, count: int) -> np.ndarray:
    """Unique codes such as ``qxvb07``: four letters and two digits."""
    letters = np.array(list(string.ascii_lowercase))
    codes: set[str] = set()
    while len(codes) < count:
        codes.add("".join(rng.choice(letters, 4)) + f"{rng.integers(0, 100):02d}")
    return rng.permutation(sorted(codes))


def make_clients(rng: np.random.Generator, count: int, shifted: bool = False) -> pd.DataFrame:
    """Clients with activity, size and an attrition outcome drawn from a logistic model."""
    # In the shifted month the client mix also moves towards larger companies.
    employees = np.maximum(1, np.round(rng.lognormal(mean=4.1 if shifted else 3.6, sigma=1.3, size=count))).astype(int)
    yearly_rate = rng.lognormal(mean=4.5, sigma=0.9, size=count) * np.sqrt(employees) / 4
    lastyear = rng.poisson(yearly_rate)
    # Most clients keep their pace; some slow down sharply, which is what precedes leaving.
    slowdown = rng.beta(5, 2, size=count) * np.where(rng.random(count) < 0.25, 0.3, 1.0)
    lastmonth = rng.poisson(lastyear / 12 * slowdown * 1.2)
    trend = np.log1p(lastmonth * 12) - np.log1p(lastyear)
    size = (np.log(employees) - 3.6) / 1.3
    if shifted:
        # A competitor courts the large clients: size now drives attrition, activity less so.
        logit = -2.1 + 1.4 * size - 0.6 * trend
    else:
        logit = -2.65 - 1.6 * trend - 0.35 * size
    exited = (rng.random(count) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "lastmonth_activity": lastmonth.astype(float),
            "lastyear_activity": lastyear,
            "number_of_employees": employees.astype(float),
            "exited": exited,
        }
    )
    # A few values went missing upstream (a late feed, a form left blank).
    frame.loc[rng.random(count) < 0.03, "lastmonth_activity"] = np.nan
    frame.loc[rng.random(count) < 0.02, "number_of_employees"] = np.nan
    return frame


def build_sample(seed: int = SEED) -> dict[str, pd.DataFrame]:
    """The sample files by relative destination: ``input/…``, ``test/…``, ``batch/…``, ``holdout/…``."""
    rng = np.random.default_rng(seed)
    codes = corporation_codes(rng, CLIENTS)
    regular_rows = len(MONTHS) * MONTH_ROWS + TEST_ROWS
    regular = make_clients(rng, regular_rows)
    shifted = make_clients(rng, CLIENTS - regular_rows, shifted=True)
    regular.insert(0, "corporation", codes[:regular_rows])
    shifted.insert(0, "corporation", codes[regular_rows:])
    files = {}
    for index, month in enumerate(MONTHS):
        files[f"input/{month}_clients.csv"] = regular.iloc[index * MONTH_ROWS : (index + 1) * MONTH_ROWS]
    files["test/testdata.csv"] = regular.iloc[len(MONTHS) * MONTH_ROWS :]
    files[f"batch/{SHIFTED_MONTH}_clients.csv"] = shifted.iloc[:-SHIFTED_HOLDOUT_ROWS]
    files[f"holdout/{SHIFTED_MONTH}_holdout.csv"] = shifted.iloc[-SHIFTED_HOLDOUT_ROWS:]
    return files


def build_book(files: dict[str, pd.DataFrame], target: str = "exited") -> pd.DataFrame:
    """The client book: each of the sample's clients once (the month's rows and the hold-outs), without the label."""
    every_client = pd.concat(files.values(), ignore_index=True)
    return every_client.drop(columns=[target])


def destination(config: Config, relative: str) -> Path:
    kind, name = relative.split("/", 1)
    folder = {
        "input": config.input_folder,
        "test": config.test_data_folder,
        "batch": config.root / SAMPLE_BATCH_FOLDER,
        "holdout": config.root / SAMPLE_HOLDOUT_FOLDER,
    }[kind]
    return folder / name


def write_sample_data(config: Config, force: bool = False, seed: int = SEED) -> list[Path]:
    """Write the sample files that are absent (all of them with ``force``). Returns the paths written."""
    written = []
    files = build_sample(seed)
    for relative, frame in files.items():
        path = destination(config, relative)
        if path.exists() and not force:
            continue
        atomic_write_text(path, frame.to_csv(index=False, float_format="%.0f"))
        written.append(path)
        logger.info("wrote %s (%d rows, %.1f%% exited)", path, len(frame), 100 * frame["exited"].mean())
    book = config.root / SAMPLE_BOOK
    if force or not book.exists():
        clients = build_book(files)
        atomic_write_text(book, clients.to_csv(index=False, float_format="%.0f"))
        written.append(book)
        logger.info("wrote %s (%d clients, unlabelled: the client book)", book, len(clients))
    return written


def stage_shifted_month(config: Config) -> list[Path]:
    """Copy the shifted month into the config's input folder and its hold-out into its test folder.

    The drift demo's step: the folders are the config's, wherever it lives, so ``make demo-drift
    CONFIG=...`` stages beside that config. Files already there are kept. Returns the paths written.
    """
    staged = []
    for folder, target in (
        (config.root / SAMPLE_BATCH_FOLDER, config.input_folder),
        (config.root / SAMPLE_HOLDOUT_FOLDER, config.test_data_folder),
    ):
        sources = sorted(folder.glob("*.csv")) if folder.is_dir() else []
        if not sources:
            raise FileNotFoundError(f"no sample files in {folder}: run sampledata.py first")
        for source in sources:
            path = target / source.name
            if not path.exists():
                atomic_write_bytes(path, source.read_bytes())
                staged.append(path)
                logger.info("staged %s", path)
    return staged
