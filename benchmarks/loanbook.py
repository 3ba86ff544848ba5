"""A seeded synthetic vehicle-loan book, shaped like a public book of 233,154 vehicle loans.

Columns: ``loan_id`` (the id), ``ltv`` (loan to value, per cent), ``manufacturer``,
``employment_type`` (3.3% missing), ``state``, ``credit_score`` (55.7% missing: no bureau
history), ``age_months``, ``days_since_disbursement`` and ``default`` (1 for about 21.7% of the
loans). Default follows the features through a noisy logistic relation a model can learn (a
test-set ROC AUC near 0.7, as on the public book), not pure noise.

:func:`write_project` writes a project: 70% of the rows in three source files in
``sourcedata/``, 30% in ``testdata/``, and a ``config.json`` naming the target and the id.
``python benchmarks/loanbook.py FOLDER [--rows N] [--seed S]`` does the same from a shell.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PUBLIC_BOOK_ROWS = 233_154
DEFAULT_SHARE = 0.217
EMPLOYMENT_MISSING_SHARE = 0.033
CREDIT_SCORE_MISSING_SHARE = 0.557
TRAINING_SHARE = 0.7
SOURCE_FILES = 3
TARGET = "default"
ID_COLUMN = "loan_id"

MANUFACTURERS = {  # name: (share of the loans, default log-odds shift)
    "maruti": (0.47, -0.10),
    "hero": (0.21, 0.05),
    "mahindra": (0.12, 0.25),
    "tata": (0.06, 0.20),
    "honda": (0.05, -0.05),
    "hyundai": (0.04, -0.20),
    "toyota": (0.02, -0.30),
    "renault": (0.015, 0.10),
    "ford": (0.01, 0.00),
    "other": (0.015, 0.30),
}
EMPLOYMENT = {"Self employed": (0.55, 0.15), "Salaried": (0.45, -0.15)}
STATES = 22


def make_loans(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` loans drawn with ``seed``: the same seed gives the same frame."""
    rng = np.random.default_rng(seed)
    ltv = np.clip(rng.normal(75.0, 11.0, rows), 10.0, 95.0).round(2)
    manufacturer, manufacturer_shift = _draw_category(rng, MANUFACTURERS, rows)
    employment, employment_shift = _draw_category(rng, EMPLOYMENT, rows)
    employment_missing = rng.random(rows) < EMPLOYMENT_MISSING_SHARE
    employment = employment.astype(object)
    employment[employment_missing] = None
    employment_shift = np.where(employment_missing, 0.3, employment_shift)
    state_shift_table = rng.normal(0.0, 0.3, STATES)
    state_index = rng.choice(STATES, rows, p=_state_shares(rng))
    score_missing = rng.random(rows) < CREDIT_SCORE_MISSING_SHARE
    credit_score = np.clip(rng.normal(600.0, 150.0, rows), 11, 890).round()
    age_months = rng.integers(18 * 12, 70 * 12, rows)
    days = rng.integers(0, 92, rows)
    log_odds = (
        0.045 * (ltv - 75.0)
        + manufacturer_shift
        + employment_shift
        + state_shift_table[state_index]
        + np.where(score_missing, 0.2, -0.004 * (credit_score - 600.0))
        - 0.012 * (age_months / 12 - 35.0)
        - 0.004 * (days - 45)
        + rng.normal(0.0, 0.8, rows)  # what no column explains
    )
    default = (rng.random(rows) < _probabilities_with_share(log_odds, DEFAULT_SHARE)).astype(np.int8)
    return pd.DataFrame(
        {
            ID_COLUMN: [f"L{i:08d}" for i in range(rows)],
            "ltv": ltv,
            "manufacturer": manufacturer,
            "employment_type": employment,
            "state": [f"S{i + 1:02d}" for i in state_index],
            "credit_score": pd.array(np.where(score_missing, np.nan, credit_score), dtype="Int64"),
            "age_months": age_months,
            "days_since_disbursement": days,
            TARGET: default,
        }
    )


def _draw_category(rng: np.random.Generator, table: dict[str, tuple[float, float]], rows: int):
    names = np.array(list(table))
    shares = np.array([share for share, _ in table.values()])
    picked = rng.choice(len(names), rows, p=shares / shares.sum())
    shifts = np.array([shift for _, shift in table.values()])
    return names[picked], shifts[picked]


def _state_shares(rng: np.random.Generator) -> np.ndarray:
    weights = rng.gamma(1.5, 1.0, STATES)
    return weights / weights.sum()


def _probabilities_with_share(log_odds: np.ndarray, share: float) -> np.ndarray:
    """Probabilities from ``log_odds`` plus the one intercept (found by bisection) whose mean is ``share``."""
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if (1 / (1 + np.exp(-(log_odds + middle)))).mean() < share:
            low = middle
        else:
            high = middle
    return 1 / (1 + np.exp(-(log_odds + low)))


def project_config(**overrides: Any) -> dict[str, Any]:
    """The config of a loan-book project: its target and id; package checks off (no network in a benchmark)."""
    return {
        "target": TARGET,
        "positive_label": 1,
        "id_columns": [ID_COLUMN],
        "settle_seconds": 0,
        "package_check_seconds": 0,
        **overrides,
    }


def write_project(folder: Path, rows: int = PUBLIC_BOOK_ROWS, seed: int = 0, **config: Any) -> Path:
    """A project in ``folder``: 70% of ``rows`` loans in three source files, 30% as test data; its config path."""
    loans = make_loans(rows, seed)
    training_rows = int(round(rows * TRAINING_SHARE))
    source, test = folder / "sourcedata", folder / "testdata"
    source.mkdir(parents=True, exist_ok=True)
    test.mkdir(parents=True, exist_ok=True)
    for number, part in enumerate(np.array_split(np.arange(training_rows), SOURCE_FILES), start=1):
        loans.iloc[part].to_csv(source / f"loans_{number}.csv", index=False)
    loans.iloc[training_rows:].to_csv(test / "loans_test.csv", index=False)
    path = folder / "config.json"
    path.write_text(json.dumps(project_config(**config), indent=2), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=PUBLIC_BOOK_ROWS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_project(args.folder, args.rows, args.seed))


if __name__ == "__main__":
    main()
