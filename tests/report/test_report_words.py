"""What the model report says, read from the PDF with pdftotext: the chosen metric's row, why the
candidate was chosen, classes and overlaps in words, figures with the same decimals, and what
"selected" means on the fairness page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from risk.core.jsonfiles import read_json
from risk.core.settings import Config, load_config
from risk.registry import versions
from risk.report import pages, reports
from tests.conftest import page_number, page_text
from tests.conftest import rewrite_config as with_settings


@pytest.fixture(scope="module")
def worded(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict, Path]:
    """v1's reports written again under metric "cost", with a cost matrix and a protected attribute."""
    folder = tmp_path_factory.mktemp("worded") / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    config = with_settings(
        load_config(folder / "config.json"),
        package_check_seconds=0,
        metric="cost",
        cost_matrix={"false_negative": 5, "false_positive": 1},
        protected_attributes=["number_of_employees"],
    )
    paths = reports.write_reports(config, refresh_diagnostics=True)
    return config, json.loads(paths["report_json"].read_text()), paths["report_pdf"]


def text_of(worded, title: str) -> str:
    _, report, pdf = worded
    return page_text(pdf, page_number(report, title))


def test_page_one_lists_the_cost_row(worded) -> None:
    _, report, pdf = worded
    first = page_text(pdf, 1)
    assert f"cost per client {report['metrics']['cost']:.4f}" in first, "trained on f1: the cost row, not chosen on"


def test_no_page_prints_a_backtick(worded) -> None:
    _, report, pdf = worded
    for page in range(1, len(report["pages"]) + 1):
        assert "`" not in page_text(pdf, page), f"page {page}"


def test_the_candidate_table_says_why_the_chosen_one_was_chosen(worded) -> None:
    config, report, _ = worded
    recorded = read_json(versions.versions_folder(config) / "v1" / "trainedmodel.json")["selection"]["reason"]
    lineage = text_of(worded, "Lineage: data, training and environment")
    assert f"Why {report['lineage']['model']}: {' '.join(recorded.split())[:60]}" in lineage


def test_the_candidate_table_shows_each_candidates_serving_cost_and_gap_error(worded) -> None:
    config, report, _ = worded
    trained = read_json(versions.versions_folder(config) / "v1" / "trainedmodel.json")
    lineage = text_of(worded, "Lineage: data, training and environment")
    assert "gap SE threshold serving µs" in lineage
    errors = trained["selection"]["standard_errors"]
    for name, candidate in trained["candidates"].items():
        gap = "best" if name == trained["selection"]["best_on_metric"] else f"{errors[name]:.4f}"  # all informative
        row = f"{name} {candidate['mean']:.4f} {candidate['std']:.4f} {gap} {candidate['threshold']:.2f} "
        assert row + f"{candidate['serving_us_per_row']:,.0f}" in lineage, row
    assert "on this machine at training time" in lineage and "does not say how fast another host serves" in lineage


def test_the_candidate_table_lists_the_simplest_first() -> None:
    candidates = {name: {} for name in ("soft_voting_blend", "hist_gradient_boosting", "logistic_regression")}
    selection = {"complexity": {"logistic_regression": 1, "hist_gradient_boosting": 2, "soft_voting_blend": 4}}
    assert [name for name, _ in pages.by_complexity(candidates, selection)] == [
        "logistic_regression",
        "hist_gradient_boosting",
        "soft_voting_blend",
    ]
    assert [name for name, _ in pages.by_complexity(candidates, {})] == list(candidates), "older versions: as stored"


def test_parameter_values_are_rounded_for_people(worded) -> None:
    lineage = text_of(worded, "Lineage: data, training and environment")
    assert not re.search(r"\d\.\d{7,}", lineage), re.findall(r"\S*\d\.\d{7,}\S*", lineage)


def test_classes_read_as_values_of_the_target(worded) -> None:
    calibration = text_of(worded, "Calibration and risk scores")
    assert "exited = 0" in calibration and "exited = 1" in calibration
    assert "≠" not in calibration and "!=" not in calibration


def test_the_overlap_with_the_reference_is_a_sentence(worded) -> None:
    _, report, _ = worded
    drift = text_of(worded, next(p["title"] for p in report["pages"] if p["title"].startswith("Data drift")))
    assert "rows in reference" not in drift.lower()
    assert re.search(r"Overlap (none of the|[\d,]+ of the) ", drift), drift[:600]


def test_the_cost_figures_share_their_decimals(worded) -> None:
    cost = text_of(worded, "Business cost and the decision threshold")
    figures = [
        re.search(rf"{label} ([\d.,]+) per client", cost).group(1)
        for label in ("Cost at the threshold", "Flag everyone", "Flag nobody")
    ]
    assert len({len(f.split(".")[1]) if "." in f else 0 for f in figures}) == 1, figures


def test_the_fairness_page_defines_selected_and_the_direction(worded) -> None:
    fairness = text_of(worded, "Fairness across protected groups")
    assert '"Selected" means flagged as at risk by the model (predicted exited = 1)' in fairness
    assert "flagged_outcome" in fairness


def test_a_parameter_value_is_printed_to_four_significant_digits() -> None:
    from risk.report import pages

    assert pages.parameter_text(0.26666666666666666) == "0.2667"
    assert pages.parameter_text({"C": 0.1 + 0.2, "l1_ratio": [1 / 3, None]}) == "{C: 0.3, l1_ratio: [0.3333, None]}"
    assert pages.parameter_text("balanced") == "'balanced'" and pages.parameter_text(200) == "200"


def test_the_drift_tables_missing_shares_share_their_decimals() -> None:
    from risk.report import pages

    entry = {
        "feature": "x",
        "psi": 0.0,
        "band": "stable",
        "test": "kolmogorov-smirnov",
        "p_value": 0.5,
        "reference_missing_share": 0.0,
        "batch_missing_share": 0.0312,
        "missing_p_value": None,
        "noise_floor": 0.01,
        "drifted": False,
    }
    [row], _ = pages._drift_table_rows([entry])
    assert row[1] == "0.0000" and row[5] == "0.00 → 0.03"


def test_the_recent_runs_seconds_share_their_decimals() -> None:
    from risk.report import pages

    runs = [
        {
            "started_at": "t1",
            "decision": "redeployed",
            "ingestion_seconds": 0.1234,
            "training_seconds": 12,
            "duration_seconds": 14.5,
            "version_deployed": "v2",
        },
        {
            "started_at": "t2",
            "decision": "no_drift",
            "ingestion_seconds": 1.5,
            "training_seconds": None,
            "duration_seconds": 2,
            "version_deployed": None,
            "in_progress": False,
        },
    ]
    rows, _ = pages._recent_run_rows(runs, "v2")
    assert [row[2:5] for row in rows] == [["0.12", "12.00", "14.50"], ["1.50", "n/a", "2.00"]]


def test_the_lineage_page_says_how_many_rows_the_choice_was_made_on(worded) -> None:
    _, report, _ = worded
    rows = report["lineage"]["training_rows"]
    lineage = " ".join(text_of(worded, "Lineage: data, training and environment").split())
    assert f"the candidates were compared on all {rows:,} training rows" in lineage
    sampled = {**report["lineage"], "selection_rows": 100_000, "training_rows": 700_000}
    assert pages.cross_validation_text(sampled).endswith(
        "the candidates were compared, and the threshold tuned, on a seeded stratified sample of 100,000 of the "
        "700,000 training rows; only the chosen model was refitted on all of them"
    )
