"""risk.report.reports: the reports of a deployed version: confusion matrix PNG, model report PDF and its JSON."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import fullprocess
import reporting
from risk.core import jsonfiles, logbook
from risk.core.files import sha256_file
from risk.core.settings import Config, load_config
from risk.model import scoring
from risk.monitoring import diagnostics
from risk.registry import deploy, versions
from risk.report import layout, reports
from risk.report import pages as report_pages
from tests.conftest import add_shifted_month, page_number, page_text, skip_or_fail_in_ci
from tests.conftest import rewrite_config as with_settings

REPORT_FILES = ("diagnostics.json", "confusionmatrix.png", "model_report.pdf", "model_report.json", "model_card.md")
A4_POINTS = (595.44, 841.68)


@pytest.fixture(scope="module")
def reported(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, Path]]:
    """One copy of the deployed project with its v1 reports written again; shared, read only."""
    folder = tmp_path_factory.mktemp("reported") / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    config = with_settings(load_config(folder / "config.json"), package_check_seconds=0)
    return config, reports.write_reports(config, refresh_diagnostics=True)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def pdf_pages(path: Path) -> list[bytes]:
    """The page objects of a PDF written by matplotlib (which leaves them uncompressed)."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    return re.findall(rb"/Type /Page\b.*?/MediaBox \[ ([\d. ]+) \]", data, flags=re.S)


def test_write_reports_returns_the_files_of_the_version(reported):
    config, paths = reported
    folder = config.reports_folder / "v1"
    assert paths == {
        "confusion_matrix": folder / "confusionmatrix.png",
        "report_pdf": folder / "model_report.pdf",
        "report_json": folder / "model_report.json",
        "diagnostics": folder / "diagnostics.json",
        "model_card": folder / "model_card.md",
    }
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # every write was atomic


def test_confusion_matrix_png_opens_at_the_expected_size(reported):
    _, paths = reported
    width, height = report_pages.PNG_SIZE
    assert png_size(paths["confusion_matrix"]) == (width * report_pages.PNG_DPI, height * report_pages.PNG_DPI)
    import matplotlib.image

    assert matplotlib.image.imread(paths["confusion_matrix"]).shape[:2] == (750, 900)


def test_pdf_has_the_pages_the_json_lists_all_a4(reported):
    _, paths = reported
    pages = pdf_pages(paths["report_pdf"])
    listed = json.loads(paths["report_json"].read_text())["pages"]
    assert len(pages) == len(listed) >= 8
    assert {tuple(float(v) for v in box.split()[2:]) for box in pages} == {A4_POINTS}
    titles = [page["title"] for page in listed]
    for expected in (
        "Model report: version v1",
        "Lineage: data, training and environment",
        "Performance on the test data",
        "Calibration and risk scores",
        "Permutation feature importance",
        "Data: summary and missing values",
        "Data drift of the test data",
        "Operations: timings and packages",
    ):
        assert expected in titles


def test_without_protected_attributes_the_report_and_diagnostics_say_fairness_was_not_measured(reported):
    config, paths = reported
    expected = {"attributes": {}, "note": "no protected_attributes configured: nothing measured"}
    report = json.loads(paths["report_json"].read_text())
    titles = [page["title"] for page in report["pages"]]
    assert report["fairness"] == expected and diagnostics.load_diagnostics(config, "v1")["fairness"] == expected
    assert "Fairness across protected groups" not in titles
    assert "no protected_attributes configured: nothing measured" in paths["model_card"].read_text()


def test_pdf_renders_with_poppler(reported, tmp_path: Path):
    if shutil.which("pdftoppm") is None:
        skip_or_fail_in_ci("pdftoppm is absent: apt-get install poppler-utils to render the report in this test")
    _, paths = reported
    subprocess.run(
        ["pdftoppm", "-r", "20", "-png", str(paths["report_pdf"]), str(tmp_path / "page")], check=True, timeout=60
    )
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == len(json.loads(paths["report_json"].read_text())["pages"])
    for image in images:
        width, height = png_size(image)
        assert abs(height / width - A4_POINTS[1] / A4_POINTS[0]) < 0.02


def test_report_json_states_scoring_figures_exactly(reported):
    config, paths = reported
    report = json.loads(paths["report_json"].read_text())
    deployed = versions.load_deployed_model(config, "v1")
    expected = scoring.score_frame(deployed.model, scoring.load_test_data(config), deployed.metadata, config)
    assert report["metrics"] == expected
    not_metrics = (
        "model_trained_at",
        "metric",
        "warnings",
        "test_rows_in_training",
        "test_rows_in_training_share",
        "test_standard_error",
    )
    stored = {k: v for k, v in deployed.scores.items() if k not in not_metrics}
    assert report["metrics"] == stored and report["metrics_match_stored_scores"] is True
    assert report["stored_scores"] == deployed.scores
    assert report["previous_metrics"] is None  # v1 has no predecessor
    assert report["lineage"]["threshold"] == deployed.metadata["threshold"]
    assert report["lineage"]["training_files"] == deployed.metadata["training_files"]
    assert report["deployment"]["reason"] == deployed.manifest["reason"] == "no deployed model yet"
    assert report["deployment"]["audit"]["decision"] == "redeployed"


def test_report_json_restates_diagnostics(reported):
    _, paths = reported
    report = json.loads(paths["report_json"].read_text())
    document = json.loads(paths["diagnostics"].read_text())
    assert report["data"] == {
        "summary_statistics": document["summary_statistics"],
        "missing_data": document["missing_data"],
    }
    assert report["drift"]["features"] == [
        {k: v for k, v in row.items() if k != "bins"} for row in document["data_drift"]["features"]
    ]
    assert report["drift"]["prediction_psi"]["psi"] == document["data_drift"]["prediction_psi"]["psi"]
    assert report["outdated_packages"] == document["outdated_packages"]
    assert report["warnings"] == report["model_checks"]["warnings"] + document["warnings"]
    importance = report["permutation_importance"]
    assert {row["feature"] for row in importance["features"]} == {
        "lastmonth_activity",
        "lastyear_activity",
        "number_of_employees",
    }
    json.dumps(report, allow_nan=False)


@pytest.mark.slow
def test_a_new_deployment_keeps_the_older_reports(deployed_project: Config):
    config = with_settings(deployed_project, package_check_seconds=0)
    old = {name: sha256_file(config.reports_folder / "v1" / name) for name in REPORT_FILES}
    add_shifted_month(config)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert versions.current_version(config) == "v2", logbook.read_audit(config)[-1]
    assert {name: sha256_file(config.reports_folder / "v1" / name) for name in REPORT_FILES} == old
    assert all((config.reports_folder / "v2" / name).is_file() for name in REPORT_FILES)
    report = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    previous, stored = report["previous_metrics"], versions.load_deployed_model(config, "v1").scores
    assert previous["version"] == "v1" and previous["same_test_rows"] is True
    # The test data did not change: v1 scored again gives its stored scores.
    assert {k: previous[k] for k in ("f1", "roc_auc", "rows", "positives", "confusion")} == {
        k: stored[k] for k in ("f1", "roc_auc", "rows", "positives", "confusion")
    }
    assert report["deployment"]["reason"].startswith("model drift")
    assert report["drift"]["batch"]["files"] == ["2026-11_clients.csv"]
    assert (
        "1,000 test rows, 216 positive (exited = 1). Metrics match the version's scores.json: yes. v1 is scored again on these same rows"
        in page_text(config.reports_folder / "v2" / "model_report.pdf", 1)
    )


@pytest.mark.slow
def test_main_writes_an_older_version_and_rejects_an_unknown_one(
    deployed_project: Config, capsys: pytest.CaptureFixture[str]
):
    config = with_settings(deployed_project, package_check_seconds=0)
    (config.reports_folder / "v1" / "model_report.pdf").unlink()
    assert reporting.main(["--config", str(config.path), "--version", "v1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["report_pdf"]) == config.reports_folder / "v1" / "model_report.pdf"
    assert Path(printed["report_pdf"]).is_file()
    assert reporting.main(["--config", str(config.path), "--version", "v9"]) == 1
    assert capsys.readouterr().out == ""
    assert not (config.reports_folder / "v9").exists()


@pytest.mark.slow
def test_reports_reuse_the_saved_diagnostics_of_the_version(deployed_project: Config):
    config = with_settings(deployed_project, package_check_seconds=0)
    saved = diagnostics.load_diagnostics(config, "v1")
    report = json.loads(reports.write_reports(config)["report_json"].read_text())
    assert report["diagnostics"]["generated_at"] == saved["generated_at"]


def test_long_tables_continue_on_new_pages(tmp_path: Path):
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "table.pdf"
    with PdfPages(path) as pdf:
        document = layout.Document(pdf, "v1", "2026-01-01T00:00:00+00:00")
        page = document.page("Training data files")
        rows = [[f"{month:03d}_clients.csv", "0" * 64, 2500] for month in range(150)]  # years of monthly files
        page = layout.long_table(
            document, page, "Training data files", ["File", "SHA-256", "Rows"], rows, [1.7, 4.5, 0.8], mono_columns=(1,)
        )
        page.close()
    assert document.titles[0] == "Training data files" and len(document.titles) >= 3
    assert set(document.titles[1:]) == {"Training data files (continued)"}
    assert len(pdf_pages(path)) == len(document.titles)


CHECK_KEYS = {
    "trainedmodel.json": ("uninformative", "warnings"),
    "scores.json": ("warnings", "test_rows_in_training", "test_rows_in_training_share"),
}


def deploy_with_checks(config: Config, reason: str, **changes: dict) -> str:
    """Deploy the trained model with its metadata and scores changed; ``{}`` strips the checks (an older version)."""
    for name, keys in CHECK_KEYS.items():
        path = config.model_folder / name
        document = {k: v for k, v in json.loads(path.read_text()).items() if k not in keys}
        path.write_text(json.dumps({**document, **changes[name.split(".")[0]]}))
    return deploy.deploy_model(config, reason=reason)


@pytest.mark.slow
def test_first_page_states_the_model_checks_and_the_performance_page_says_what_is_true(deployed_project: Config):
    """A model no better than chance, and test rows found in the training data, as training and scoring record them."""
    config = with_settings(deployed_project, package_check_seconds=0)
    chance = 'the model is no better than chance: no candidate beat chance and the rule "flag everyone" out of fold'
    training = {"uninformative": True, "warnings": [chance, "the threshold flags 97% of out-of-fold rows"]}
    found = "40 of the 1,000 test rows (4.0%) are also in the training data"
    scored = {"warnings": [found], "test_rows_in_training": 40, "test_rows_in_training_share": 0.04}
    assert deploy_with_checks(config, "checks recorded", trainedmodel=training, scores=scored) == "v2"

    paths = reports.write_reports(config, "v2")
    report = json.loads(paths["report_json"].read_text())
    assert report["model_checks"] == {
        "uninformative": True,
        "training_warnings": training["warnings"],
        "scoring_warnings": [found],
        "test_rows_in_training": 40,
        "test_rows_in_training_share": 0.04,
        "warnings": training["warnings"] + [found],
    }
    assert report["warnings"][:3] == training["warnings"] + [found]
    first = page_text(paths["report_pdf"], 1)
    assert "no better than chance" in first and "the threshold flags 97% of out-of-fold rows" in first
    assert "NO: 40 of the 1,000 test rows (4.0%) are also in the training data" in first
    performance = page_text(paths["report_pdf"], page_number(report, "Performance on the test data"))
    assert "never trained on" not in performance
    assert (
        "scores 1,000 labelled rows (testdata.csv), but 40 of them (4.0%) are also in its training data" in performance
    )

    # A version trained and scored before these checks existed: its report says so instead of guessing.
    assert deploy_with_checks(config, "an older version", trainedmodel={}, scores={}) == "v3"
    older = json.loads(reports.write_reports(config, "v3")["report_json"].read_text())
    assert older["model_checks"]["uninformative"] is None and older["model_checks"]["test_rows_in_training"] is None
    assert "not checked" in page_text(config.reports_folder / "v3" / "model_report.pdf", 1)
    performance = page_text(
        config.reports_folder / "v3" / "model_report.pdf", page_number(older, "Performance on the test data")
    )
    assert "never trained on" not in performance and "was not checked for this version" in performance


@pytest.mark.slow
def test_the_report_lists_the_run_that_deployed_the_version(v2_project: Config):
    config = v2_project
    deploying = logbook.read_audit(config)[-1]
    assert deploying["version_deployed"] == "v2"
    written_during_the_run = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    rows = [r for r in written_during_the_run["execution_time"]["recent_runs"] if r["version_deployed"] == "v2"]
    assert len(rows) == 1 and rows[0]["started_at"] == deploying["started_at"] and rows[0]["decision"] == "redeployed"
    assert rows[0]["deployed_this_version"] is True and rows[0]["in_progress"] is True

    for _ in range(12):  # more runs with work than the page lists: the deploying run stays on it
        jsonfiles.append_json_line(
            logbook.audit_path(config),
            {
                "started_at": "2027-01-01T00:00:00+00:00",
                "decision": "no_drift",
                "ingestion_seconds": 0.1,
                "version_deployed": None,
            },
        )
    report = json.loads(reports.write_reports(config, "v2")["report_json"].read_text())
    runs = report["execution_time"]["recent_runs"]
    assert len(runs) == diagnostics.RECENT_RUNS
    assert runs[0]["started_at"] == deploying["started_at"] and runs[0]["version_deployed"] == "v2"
    assert runs[0]["deployed_this_version"] and not runs[0]["in_progress"]
    operations = page_text(
        config.reports_folder / "v2" / "model_report.pdf", page_number(report, "Operations: timings and packages")
    )
    assert "v2 (this)" in operations


@pytest.mark.slow
def test_after_a_rollback_the_rolled_away_versions_first_page_does_not_say_current(v2_project: Config):
    config = v2_project
    pdf = config.reports_folder / "v2" / "model_report.pdf"
    assert deploy.rollback(config) == "v1"
    first = page_text(pdf, 1)  # the page written when v2 was deployed
    assert "(current)" not in first
    assert "the current version when this report was written" in first and "make versions" in first
    report = json.loads(reports.write_reports(config, "v2")["report_json"].read_text())
    assert report["current"] is False
    assert (
        report["status"].startswith("not current when this report was written")
        and "v1 was made current by the rollback at" in report["status"]
    )
    first = page_text(pdf, 1)
    assert "(current)" not in first and "not current when this report was written" in first


@pytest.mark.slow
def test_the_drift_page_of_a_retrained_version_shows_the_shift_that_made_it(v2_project: Config):
    report = json.loads((v2_project.reports_folder / "v2" / "model_report.json").read_text())
    assert report["drift"]["title"] == "newest batch against v1's training data"
    employees = {row["feature"]: row for row in report["drift"]["features"]}["number_of_employees"]
    assert employees["band"] == "moderate" and employees["drifted"]
    text = page_text(
        v2_project.reports_folder / "v2" / "model_report.pdf", page_number(report, "Data drift of the newest batch")
    )
    assert "Newest batch against v1's training data" in text and "2026-11_clients.csv" in text
    assert "v1 was current when the batch arrived" in text
    assert f"number_of_employees {employees['psi']:.4f} moderate" in text


@pytest.mark.slow
def test_page_one_compares_the_previous_version_on_the_same_test_rows(deployed_project: Config):
    """Once a hold-out of the new month joins testdata/, v1's stored scores are of other rows: page 1
    scores v1 again on today's test rows, so its Change column compares both on the same rows."""
    config = with_settings(deployed_project, package_check_seconds=0)
    add_shifted_month(config, holdout=True)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert versions.current_version(config) == "v2", logbook.read_audit(config)[-1]
    report = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    previous = report["previous_metrics"]
    assert previous["version"] == "v1" and previous["same_test_rows"] is True
    assert (previous["rows"], previous["positives"]) == (report["test_data"]["rows"], report["test_data"]["positives"])
    stored = versions.read_manifest(versions.versions_folder(config) / "v1")["scores"]
    assert stored["rows"] != previous["rows"], "v1's own scores were of the older test data"
    champion = report["champion_challenger"]["f1"]["champion_score"]
    assert previous["f1"] == pytest.approx(champion), "the same figure as the champion line, on the same rows"
    text = page_text(config.reports_folder / "v2" / "model_report.pdf", 1)
    assert f"{report['test_data']['rows']:,} test rows" in text and "v1 is scored again on these same rows" in text
    assert f"f1 (chosen on) {report['metrics']['f1']:.4f} {previous['f1']:.4f}" in text


@pytest.mark.slow
def test_page_one_lists_every_warning_it_counts_and_keeps_the_sign_off_whole(deployed_project: Config):
    """Many long warnings: none is replaced by "... and N more" while room is left, and the sign-off is never split."""
    config = with_settings(deployed_project, package_check_seconds=0)
    long_warnings = [
        f"warning number {i}: " + "a long explanation of what the validator should look at before approving " * 3
        for i in range(1, 9)
    ]
    training = {"uninformative": False, "warnings": long_warnings}
    scored = {"warnings": [], "test_rows_in_training": 0, "test_rows_in_training_share": 0.0}
    assert deploy_with_checks(config, "many warnings", trainedmodel=training, scores=scored) == "v2"

    pdf = reports.write_reports(config, "v2")["report_pdf"]
    report = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    cover = [page["page"] for page in report["pages"] if page["title"].startswith("Model report: version v2")]
    text = "\n".join(page_text(pdf, number) for number in cover)
    assert "more in model_report.json" not in text
    for i in range(1, 9):
        assert f"warning number {i}:" in text, f"warning {i} is counted on page 1 but not shown"
    sign_off = [page_text(pdf, number) for number in cover if "Validator sign-off" in page_text(pdf, number)]
    assert len(sign_off) == 1, "the sign-off is drawn once"
    assert "Approved / rejected:" in sign_off[0] and "Comments:" in sign_off[0], "its lines are on its page"


@pytest.mark.slow
def test_importance_calibration_and_curves_use_a_seeded_sample_the_report_states(deployed_project: Config):
    """Their cost stays bounded whatever the test data's size; the scores still use every row."""
    config = with_settings(deployed_project, package_check_seconds=0, report_sample_rows=60)
    paths = reports.write_reports(config)
    report = json.loads(paths["report_json"].read_text())
    rows = report["test_data"]["rows"]
    assert rows > 60 and report["metrics"]["rows"] == rows
    assert report["sample"] == {
        "rows": 60,
        "of_rows": rows,
        "whole": False,
        "seed": config["random_seed"],
        "words": f"on a seeded sample of 60 of the {rows:,} test rows (report_sample_rows, random_seed 42)",
    }
    assert report["permutation_importance"]["rows"] == 60
    assert sum(b["rows"] for b in report["calibration"]["bins"]) == 60
    for title in ("Permutation feature importance", "Calibration and risk scores", "Performance on the test data"):
        assert f"on a seeded sample of 60 of the {rows:,} test rows" in page_text(
            paths["report_pdf"], page_number(report, title)
        )
    again = json.loads(reports.write_reports(config)["report_json"].read_text())
    assert (again["permutation_importance"], again["calibration"]) == (
        report["permutation_importance"],
        report["calibration"],
    )


def test_a_test_set_within_the_cap_is_used_whole_and_said_so(reported):
    _, paths = reported
    report = json.loads(paths["report_json"].read_text())
    rows = report["test_data"]["rows"]
    assert report["sample"]["whole"] and report["permutation_importance"]["rows"] == rows
    text = page_text(paths["report_pdf"], page_number(report, "Permutation feature importance"))
    assert f"Measured on all {rows:,} test rows." in text


def test_the_report_sample_is_seeded_sorted_and_capped():
    drawn = reports.report_sample(1000, 50, seed=3)
    assert len(drawn) == len(set(drawn)) == 50 and list(drawn) == sorted(drawn)
    assert list(drawn) == list(reports.report_sample(1000, 50, seed=3))
    assert list(drawn) != list(reports.report_sample(1000, 50, seed=4))
    assert list(reports.report_sample(40, 50, seed=3)) == list(range(40))
    assert list(reports.report_sample(1000, 0, seed=3)) == list(range(1000))
