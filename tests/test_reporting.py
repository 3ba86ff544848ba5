"""The reports of a deployed version: confusion matrix PNG, model report PDF and its JSON."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import deployment
import diagnostics
import fullprocess
import reporting
import scoring
from fsutil import sha256_file
from settings import Config, load_config
from tests.test_diagnostics import with_settings

REPORT_FILES = ("diagnostics.json", "confusionmatrix.png", "model_report.pdf", "model_report.json")
A4_POINTS = (595.44, 841.68)


@pytest.fixture(scope="module")
def reported(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, Path]]:
    """One copy of the deployed project with its v1 reports written again; shared, read only."""
    folder = tmp_path_factory.mktemp("reported") / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    config = with_settings(load_config(folder / "config.json"), package_check_seconds=0)
    return config, reporting.write_reports(config, refresh_diagnostics=True)


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
    }
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # every write was atomic


def test_confusion_matrix_png_opens_at_the_expected_size(reported):
    _, paths = reported
    width, height = reporting.PNG_SIZE
    assert png_size(paths["confusion_matrix"]) == (width * reporting.PNG_DPI, height * reporting.PNG_DPI)
    import matplotlib.image

    assert matplotlib.image.imread(paths["confusion_matrix"]).shape[:2] == (750, 900)


def test_pdf_has_the_pages_the_json_lists_all_a4(reported):
    _, paths = reported
    pages = pdf_pages(paths["report_pdf"])
    listed = json.loads(paths["report_json"].read_text())["pages"]
    assert len(pages) == len(listed) >= 8
    assert {tuple(float(v) for v in box.split()[2:]) for box in pages} == {A4_POINTS}
    titles = [page["title"] for page in listed]
    for expected in ("Model report: version v1", "Lineage: data, training and environment", "Performance on the test data",
                     "Calibration and risk scores", "Permutation feature importance", "Data: summary and missing values",
                     "Data drift of the newest batch", "Operations: timings and packages"):
        assert expected in titles


def test_pdf_renders_with_poppler(reported, tmp_path: Path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is absent: apt-get install poppler-utils to render the report in this test")
    _, paths = reported
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(paths["report_pdf"]), str(tmp_path / "page")], check=True, timeout=60)
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == len(json.loads(paths["report_json"].read_text())["pages"])
    for image in images:
        width, height = png_size(image)
        assert abs(height / width - A4_POINTS[1] / A4_POINTS[0]) < 0.02


def test_report_json_states_scoring_figures_exactly(reported):
    config, paths = reported
    report = json.loads(paths["report_json"].read_text())
    deployed = deployment.load_deployed_model(config, "v1")
    expected = scoring.score_frame(deployed.model, scoring.load_test_data(config), deployed.metadata, config)
    assert report["metrics"] == expected
    stored = {k: v for k, v in deployed.scores.items() if k not in ("model_trained_at", "metric", "warnings", "test_rows_in_training", "test_rows_in_training_share")}
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
    assert report["data"] == {"summary_statistics": document["summary_statistics"], "missing_data": document["missing_data"]}
    assert report["drift"]["features"] == [{k: v for k, v in row.items() if k != "bins"} for row in document["data_drift"]["features"]]
    assert report["drift"]["prediction_psi"]["psi"] == document["data_drift"]["prediction_psi"]["psi"]
    assert report["outdated_packages"] == document["outdated_packages"]
    assert report["warnings"] == document["warnings"]
    importance = report["permutation_importance"]
    assert {row["feature"] for row in importance["features"]} == {"lastmonth_activity", "lastyear_activity", "number_of_employees"}
    json.dumps(report, allow_nan=False)


def test_a_new_deployment_keeps_the_older_reports(deployed_project: Config):
    config = with_settings(deployed_project, package_check_seconds=0)
    old = {name: sha256_file(config.reports_folder / "v1" / name) for name in REPORT_FILES}
    for batch in (config.root / "sample_batches").glob("*.csv"):
        shutil.copy(batch, config.input_folder / batch.name)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert deployment.current_version(config) == "v2", fullprocess.read_audit(config)[-1]
    assert {name: sha256_file(config.reports_folder / "v1" / name) for name in REPORT_FILES} == old
    assert all((config.reports_folder / "v2" / name).is_file() for name in REPORT_FILES)
    report = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    assert report["previous_metrics"] == {"version": "v1", **deployment.load_deployed_model(config, "v1").scores}
    assert report["deployment"]["reason"].startswith("model drift")
    assert report["drift"]["batch"]["files"] == ["2026-11_clients.csv"]


def test_main_writes_an_older_version_and_rejects_an_unknown_one(deployed_project: Config, capsys: pytest.CaptureFixture[str]):
    config = with_settings(deployed_project, package_check_seconds=0)
    (config.reports_folder / "v1" / "model_report.pdf").unlink()
    assert reporting.main(["--config", str(config.path), "--version", "v1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["report_pdf"]) == config.reports_folder / "v1" / "model_report.pdf"
    assert Path(printed["report_pdf"]).is_file()
    assert reporting.main(["--config", str(config.path), "--version", "v9"]) == 1
    assert capsys.readouterr().out == ""
    assert not (config.reports_folder / "v9").exists()


def test_reports_reuse_the_saved_diagnostics_of_the_version(deployed_project: Config):
    config = with_settings(deployed_project, package_check_seconds=0)
    saved = diagnostics.load_diagnostics(config, "v1")
    report = json.loads(reporting.write_reports(config)["report_json"].read_text())
    assert report["diagnostics"]["generated_at"] == saved["generated_at"]


def test_long_tables_continue_on_new_pages(tmp_path: Path):
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "table.pdf"
    with PdfPages(path) as pdf:
        document = reporting.Document(pdf, "v1", "2026-01-01T00:00:00+00:00")
        page = document.page("Training data files")
        rows = [[f"{month:03d}_clients.csv", "0" * 64, 2500] for month in range(150)]  # years of monthly files
        page = reporting.long_table(document, page, "Training data files", ["File", "SHA-256", "Rows"], rows, [1.7, 4.5, 0.8], mono_columns=(1,))
        page.close()
    assert document.titles[0] == "Training data files" and len(document.titles) >= 3
    assert set(document.titles[1:]) == {"Training data files (continued)"}
    assert len(pdf_pages(path)) == len(document.titles)
