"""benchmarks/loanbook.py: the seeded synthetic loan book the million-row benchmark runs on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from risk.core.settings import load_config
from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def loanbook():
    return benchmark_module("loanbook")


def test_the_same_seed_gives_the_same_book_and_another_seed_another(loanbook) -> None:
    first = loanbook.make_loans(5000, seed=7)
    pd.testing.assert_frame_equal(first, loanbook.make_loans(5000, seed=7))
    assert not first.equals(loanbook.make_loans(5000, seed=8))


@pytest.fixture(scope="module")
def loans(loanbook) -> pd.DataFrame:
    return loanbook.make_loans(60_000, seed=1)


def test_the_book_has_the_public_books_missing_shares_and_default_rate(loans: pd.DataFrame) -> None:
    assert list(loans.columns) == [
        "loan_id",
        "ltv",
        "manufacturer",
        "employment_type",
        "state",
        "credit_score",
        "age_months",
        "days_since_disbursement",
        "default",
    ]
    assert loans["employment_type"].isna().mean() == pytest.approx(0.033, abs=0.004)
    assert loans["credit_score"].isna().mean() == pytest.approx(0.557, abs=0.01)
    assert loans["default"].mean() == pytest.approx(0.217, abs=0.01)
    assert loans["loan_id"].is_unique and not loans.drop(columns=["employment_type", "credit_score"]).isna().any().any()


def test_default_follows_the_features(loans: pd.DataFrame) -> None:
    """A learnable relation, not noise: a high loan-to-value and a low credit score default more often."""
    high_ltv = loans["ltv"] > loans["ltv"].quantile(0.75)
    low_ltv = loans["ltv"] < loans["ltv"].quantile(0.25)
    assert loans.loc[high_ltv, "default"].mean() > loans.loc[low_ltv, "default"].mean() + 0.08
    assert (
        loans.loc[loans["credit_score"] < 450, "default"].mean()
        > loans.loc[loans["credit_score"] > 750, "default"].mean() + 0.1
    )


def test_a_project_holds_70_percent_in_three_source_files_and_30_as_test_data(loanbook, tmp_path: Path) -> None:
    config = load_config(loanbook.write_project(tmp_path / "book", rows=1000, seed=2))
    sources = sorted(config.input_folder.glob("*.csv"))
    assert len(sources) == 3
    training = pd.concat([pd.read_csv(p) for p in sources])
    test = pd.concat([pd.read_csv(p) for p in config.test_data_folder.glob("*.csv")])
    assert (len(training), len(test)) == (700, 300)
    assert set(training["loan_id"]).isdisjoint(test["loan_id"])
    assert (config.target, config["id_columns"]) == ("default", ["loan_id"])
