"""The back-test in the cron run, on the sample data: `make demo-outcomes` as a test."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

import fullprocess
from risk.core import logbook
from risk.core.settings import Config, load_config
from risk.data import sample
from risk.monitoring import outcomes
from risk.registry import calllists, versions
from risk.report import outcomesreport
from tests.conftest import add_shifted_month, page_text, private_copy, rewrite_config


def run(config: Config) -> int:
    return fullprocess.main(["--config", str(config.path)])


@pytest.fixture(scope="module")
def outcomes_template(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployed sample project with its book: a v1 call list, then the shifted month's labelled
    clients (on that list) arrive, drift makes v2, and v2's list follows."""
    folder = tmp_path_factory.mktemp("outcomes") / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    config = rewrite_config(load_config(folder / "config.json"), client_book=sample.SAMPLE_BOOK)
    assert run(config) == 0
    # Times are kept to the second, and only a prediction made strictly before a batch arrives is
    # joined with it: the outcome comes in a later second than the list, as it does in life.
    time.sleep(1.1)
    add_shifted_month(config, holdout=True)
    assert run(config) == 0, logbook.read_audit(config)[-1]
    assert versions.current_version(config) == "v2"
    return folder


@pytest.fixture
def outcomes_project(outcomes_template: Path, tmp_path: Path) -> Config:
    return private_copy(outcomes_template, tmp_path)


@pytest.mark.slow
def test_the_run_back_tests_the_arriving_batch_against_the_list_made_before_it(outcomes_project: Config) -> None:
    config = outcomes_project
    [line] = outcomes.backtests(config)
    assert line["batch"]["file"] == f"{sample.SHIFTED_MONTH}_clients.csv"
    assert line["rows"] == line["rows_matched"] == sample.SHIFTED_BATCH_ROWS and line["rows_unmatched"] == 0
    [listed] = line["lists"]
    assert listed["version"] == "v1", "the v2 list was written after the batch arrived"
    assert listed["written_at"] < line["arrived_at"]
    assert listed["outcome_unknown"] == sample.CLIENTS - sample.SHIFTED_BATCH_ROWS
    assert listed["contacted"]["rows"] + listed["contacted_outcome_unknown"] == config["contact_budget"]
    # The shifted month reverses how size drives leaving: v1 ranks these clients worse than chance.
    assert 0 < listed["roc_auc"] < 0.5 and len(listed["calibration"]) == 10
    audit = logbook.read_audit(config)[-1]
    assert audit["outcomes"] == {
        "batches_back_tested": 1,
        "rows_matched": sample.SHIFTED_BATCH_ROWS,
        "rows_unmatched": 0,
    }
    assert audit["outcomes_report"] == "ok"

    [realised] = outcomes.realised_history(config)
    assert realised["version"] == "v1" and realised["rows"] == sample.SHIFTED_BATCH_ROWS
    assert realised["score"] == audit["new_score"] and realised["roc_auc"] is not None
    assert realised["batch"]["files"] == [f"{sample.SHIFTED_MONTH}_clients.csv"]
    info = calllists.latest_list_info(config)
    assert info["version"] == "v2" and info["written_at"] >= line["arrived_at"]


@pytest.mark.slow
def test_the_outcomes_report_shows_the_back_test(outcomes_project: Config) -> None:
    config = outcomes_project
    pdf = outcomesreport.pdf_path(config)
    text = page_text(pdf, 1)
    [line] = outcomes.backtests(config)
    [listed] = line["lists"]
    [realised] = outcomes.realised_history(config)
    assert "Outcomes over time" in text and "Realised score of each labelled batch" in text
    assert f"{100 * listed['contacted']['rate']:.1f}% of {listed['contacted']['rows']}" in text
    assert "Calibration of the last period" in text and "v1" in text
    assert f"{realised['roc_auc']:.4f}" in text
    before = pdf.read_bytes()
    assert outcomesreport.refresh_outcomes_report(config) is None, "unchanged figures: not written again"
    assert pdf.read_bytes() == before


@pytest.mark.slow
def test_reporting_outcomes_writes_the_report_and_prints_the_last_figures(outcomes_project: Config, capsys) -> None:
    import json

    import reporting

    outcomesreport.pdf_path(outcomes_project).unlink()
    assert reporting.main(["--config", str(outcomes_project.path), "--outcomes"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["batches_back_tested"] == 1 and shown["last_list"]["version"] == "v1"
    assert "calibration" not in shown["last_list"] and shown["last_realised"]["version"] == "v1"
    assert outcomesreport.pdf_path(outcomes_project).is_file()


@pytest.mark.slow
def test_a_failed_back_test_fails_the_run_but_not_its_decision(deployed_project: Config) -> None:
    config = rewrite_config(deployed_project, client_book=sample.SAMPLE_BOOK)
    assert run(config) == 0
    time.sleep(1.1)
    folder = config.log_folder / outcomes.OUTCOMES_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # the first run's marks made it
    folder.write_text("not a folder")  # nothing can be appended there
    add_shifted_month(config, holdout=True)
    assert run(config) == 1
    audit = logbook.read_audit(config)[-1]
    assert audit["status"] == "failed" and audit["version_deployed"] == "v2", "the decision stands"
    assert "failed" in audit["outcomes"] and "failed" in audit["outcomes_realised"]
    assert versions.current_version(config) == "v2"


def drop_a_small_relabelled_batch(config: Config) -> Path:
    """20 of the shifted month's clients again, their features changed (so not duplicates), as
    relabelled.csv in a later second than v2's list: fewer rows than drift_min_rows, so the run only
    back-tests them. Returns the shifted month's file."""
    source = config.input_folder / f"{sample.SHIFTED_MONTH}_clients.csv"
    lines = source.read_text().splitlines()
    column = lines[0].split(",").index("number_of_employees")
    changed = []
    for line in lines[1:21]:
        cells = line.split(",")
        cells[column] = str(int(cells[column]) + 1000)
        changed.append(",".join(cells))
    time.sleep(1.1)  # after v2's list, in a later second
    (config.input_folder / "relabelled.csv").write_text("\n".join([lines[0], *changed]) + "\n")
    return source


@pytest.mark.slow
def test_a_run_killed_before_the_outcomes_report_is_written_leaves_it_to_the_next_run(
    outcomes_project: Config,
) -> None:
    """The back-test line is appended, then the run dies writing the report; the next run finds
    nothing new, and the report showed the figures of before the kill until another batch came."""
    from tests.pipeline.test_process import run_in_child

    config = outcomes_project
    drop_a_small_relabelled_batch(config)
    assert run_in_child(config, kill_at="outcomes.pdf") < 0
    assert len(outcomes.backtests(config)) == 2
    assert run_in_child(config) == 0
    assert logbook.read_audit(config)[-1]["decision"] == "no_new_data"
    written = json.loads(outcomesreport.json_path(config).read_text())
    assert written["figures_sha256"] == outcomesreport.figures_hash(outcomes.summary(config))
    assert not outcomes.report_due(config)


@pytest.mark.slow
def test_a_run_killed_before_its_back_test_leaves_it_to_the_next_run_once(outcomes_project: Config) -> None:
    """The batch is ingested, then the run dies before appending its back-test line: the next run
    finds the batch ingested (nothing new) and back-tested it never; now it does, once."""
    from tests.pipeline.test_process import run_in_child

    config = outcomes_project
    source = drop_a_small_relabelled_batch(config)
    assert run_in_child(config, kill_at="backtest.jsonl") < 0
    assert len(outcomes.backtests(config)) == 1
    assert run_in_child(config) == 0
    tested = outcomes.backtests(config)
    assert [line["batch"]["file"] for line in tested] == [source.name, "relabelled.csv"]
    assert tested[1]["rows"] == 20 and tested[1]["lists"][0]["version"] == "v2"
    assert logbook.read_audit(config)[-1]["outcomes_completed"] == {"batches_back_tested": 1}
    assert not outcomes.backtest_due(config)
    assert run_in_child(config) == 0 and len(outcomes.backtests(config)) == 2, "not again"
