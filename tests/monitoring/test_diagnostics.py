"""risk.monitoring.diagnostics (with drift and packages): PSI arithmetic, drift flags, data summaries,
timings, packages."""

from __future__ import annotations

import html
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import diagnostics as diagnostics_script
from risk.core import artefacts, logbook, tables
from risk.core.files import sha256_file
from risk.core.settings import Config
from risk.core.tables import read_typed_csv
from risk.data import ingest, ledger, masterstore, sample
from risk.model import scoring
from risk.monitoring import diagnostics, drift, packages
from risk.registry import deploy
from risk.registry import versions as registry_versions
from tests.conftest import rewrite_config as with_settings

TOP_LEVEL_KEYS = {
    "version",
    "generated_at",
    "summary_statistics",
    "missing_data",
    "execution_time",
    "outdated_packages",
    "data_drift",
    "fairness",
    "warnings",
}


@pytest.fixture
def offline_project(deployed_project: Config) -> Config:
    """The deployed project, told not to ask the package index (tests stay off the network)."""
    return with_settings(deployed_project, package_check_seconds=0)


def strict_json(document) -> str:
    """Serialise as the API will: NaN or infinity anywhere is an error."""
    return json.dumps(document, allow_nan=False)


# --- PSI ------------------------------------------------------------------------------------


def test_psi_of_identical_samples_is_zero():
    values = pd.Series(np.random.default_rng(1).lognormal(size=2000))
    assert drift.population_stability_index(values, values) == 0.0
    levels = pd.Series(list("aabbbc") * 50)
    assert drift.population_stability_index(levels, levels, tables.CATEGORICAL) == 0.0


def test_psi_of_a_known_shift():
    reference = pd.Series(np.arange(1000, dtype=float))  # deciles: 100 values a bin
    shares = [0.15, 0.15, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]
    batch = pd.Series(
        np.concatenate([np.arange(100 * i, 100 * i + round(1000 * s)) for i, s in enumerate(shares)]).astype(float)
    )
    # Two bins at 1.5x and two at 0.5x the reference share: 2 * 0.05 * ln 1.5 + 2 * 0.05 * ln 2.
    assert drift.population_stability_index(reference, batch) == pytest.approx(0.1 * math.log(3), abs=1e-12)


def test_levels_absent_from_one_sample_give_a_finite_psi():
    reference = pd.Series(["a", "b"] * 50)
    batch = pd.Series(["a", "c"] * 50)  # no "b", a new "c"
    psi = drift.population_stability_index(reference, batch, tables.CATEGORICAL)
    eps = drift.EPSILON
    assert math.isfinite(psi)
    assert psi == pytest.approx(2 * (0.5 - eps) * math.log(0.5 / eps))
    row = drift.compare_feature("level", reference, batch, tables.CATEGORICAL)
    assert row["band"] == "significant" and row["p_value"] is not None
    assert {b["bin"] for b in row["bins"]} == {"a", "b", "c", drift.MISSING_BIN}


def test_missing_values_are_a_bin_of_their_own():
    reference = pd.Series(np.arange(200, dtype=float))
    batch = pd.Series(np.where(np.arange(200) % 2 == 0, np.arange(200, dtype=float), np.nan))
    row = drift.compare_feature("x", reference, batch, tables.NUMERIC)
    assert row["batch_missing_share"] == 0.5 and row["reference_missing_share"] == 0.0
    assert row["band"] == "significant"
    assert row["bins"][-1] == {"bin": drift.MISSING_BIN, "reference_share": 0.0, "batch_share": 0.5}


@pytest.mark.parametrize(
    ("psi", "band"),
    [
        (0.0, "stable"),
        (0.0999, "stable"),
        (0.10, "moderate"),
        (0.25, "moderate"),
        (0.2501, "significant"),
        (None, None),
    ],
)
def test_psi_bands(psi, band):
    assert drift.psi_band(psi) == band


def test_drift_flags_a_shifted_feature_and_leaves_an_unshifted_one_alone():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {
            "steady": rng.normal(50, 10, 5000),
            "moved": rng.lognormal(3, 1, 5000),
            "region": rng.choice(["north", "south", "east"], 5000, p=[0.5, 0.3, 0.2]),
            "segment": rng.choice(["retail", "corporate"], 5000, p=[0.7, 0.3]),
        }
    )
    batch = pd.DataFrame(
        {
            "steady": rng.normal(50, 10, 1500),
            "moved": rng.lognormal(3.6, 1, 1500),
            "region": rng.choice(["north", "south", "east"], 1500, p=[0.5, 0.3, 0.2]),
            "segment": rng.choice(["retail", "corporate"], 1500, p=[0.35, 0.65]),
        }
    )
    rows = drift.compare_frames(
        reference, batch, {"numeric": ["steady", "moved"], "categorical": ["region", "segment"]}
    )
    by_name = {row["feature"]: row for row in rows}
    assert [row["feature"] for row in rows] == ["steady", "moved", "region", "segment"]
    assert (
        by_name["moved"]["drifted"] and by_name["moved"]["band"] == "significant" and by_name["moved"]["p_value"] < 1e-6
    )
    assert by_name["segment"]["drifted"] and by_name["segment"]["test"] == "chi-squared"
    for name in ("steady", "region"):
        assert not by_name[name]["drifted"] and by_name[name]["band"] == "stable"
    strict_json(rows)


def test_noise_floor_matches_psi_of_resampled_data():
    """The reported noise floor is what PSI gives when nothing has changed."""
    rng = np.random.default_rng(3)
    psis = [
        drift.population_stability_index(pd.Series(rng.normal(size=2000)), pd.Series(rng.normal(size=300)))
        for _ in range(200)
    ]
    floor = drift.compare_feature(
        "x", pd.Series(rng.normal(size=2000)), pd.Series(rng.normal(size=300)), tables.NUMERIC
    )["noise_floor"]
    assert floor == pytest.approx(9 * (1 / 2000 + 1 / 300))
    assert np.mean(psis) == pytest.approx(floor, rel=0.25)


# --- drift on the deployed project ------------------------------------------------------------


def drop_and_ingest(config: Config, name: str, frame: pd.DataFrame) -> None:
    """Put ``frame`` in the input folder as a settled file (written an hour ago) and ingest it."""
    path = config.input_folder / name
    frame.to_csv(path, index=False)
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    ingest.ingest_new_files(config)


def test_data_drift_of_an_ingested_batch_flags_the_shifted_feature(offline_project: Config):
    config = offline_project
    batch = scoring.load_test_data(config)
    batch["number_of_employees"] = batch["number_of_employees"] * 6  # a feed now counts in other units
    drop_and_ingest(config, "2026-12_clients.csv", batch)
    result = diagnostics.data_drift(config)
    assert result["comparison"] == diagnostics.NEWEST_BATCH and result["reference"]["version"] == "v1"
    assert result["batch"]["files"] == ["2026-12_clients.csv"] and result["batch"]["current_on_arrival"] == "v1"
    assert result["batch"]["rows"] == len(batch) and result["batch"]["rows_in_reference"] == 0
    assert result["drifted_features"] == ["number_of_employees"]
    prediction = result["prediction_psi"]
    assert prediction["feature"] == "predicted_risk" and prediction["psi"] > 0
    assert any("number_of_employees" in warning for warning in result["warnings"])
    strict_json(result)


def test_the_first_version_compares_the_test_data_with_its_training_data(offline_project: Config):
    """The newest batch is v1's own training data: comparing the two would always say "stable"."""
    result = diagnostics.data_drift(offline_project)
    assert result["comparison"] == diagnostics.TEST_DATA and result["title"] == "test data against v1's training data"
    assert result["batch"]["files"] == ["testdata.csv"] and result["batch"]["rows"] == 1000
    assert result["batch"]["rows_in_reference"] == 0
    assert result["batch"]["newest_batch"]["files"] == [
        "2026-08_clients.csv",
        "2026-09_clients.csv",
        "2026-10_clients.csv",
    ]
    assert result["reference"] == {
        "version": "v1",
        "file": "production_deployment/versions/v1/reference_data.csv",
        "rows": 7500,
    }
    assert result["drifted_features"] == []  # the test data comes from the same months
    assert all(row["psi"] > 0 for row in result["features"])  # two samples, not one compared with itself
    assert any("no version was current" in warning for warning in result["warnings"])
    assert not any("understated" in warning for warning in result["warnings"])


@pytest.mark.slow
def test_a_retrained_versions_drift_shows_the_batch_that_made_it(v2_project: Config):
    """v2's batch against v1's training data: v1 was serving when it arrived. Not against v2's own, which holds it."""
    saved = diagnostics.load_diagnostics(v2_project, "v2")["data_drift"]  # as fullprocess wrote it when deploying v2
    for result in (saved, diagnostics.data_drift(v2_project, "v2")):
        assert (
            result["comparison"] == diagnostics.NEWEST_BATCH
            and result["title"] == "newest batch against v1's training data"
        )
        assert (
            result["reference"]["version"] == "v1"
            and result["reference"]["rows"] == 7500
            and result["model_version"] == "v1"
        )
        assert result["batch"]["files"] == ["2026-11_clients.csv"] and result["batch"]["current_on_arrival"] == "v1"
        assert result["batch"]["rows"] == sample.SHIFTED_BATCH_ROWS and result["batch"]["rows_in_reference"] == 0
        employees = {row["feature"]: row for row in result["features"]}["number_of_employees"]
        assert 0.10 <= employees["psi"] <= 0.20 and employees["band"] == "moderate" and employees["drifted"]
        assert result["drifted_features"] == ["number_of_employees"]


@pytest.mark.slow
def test_the_version_current_on_arrival_follows_rollbacks(v2_project: Config):
    config = v2_project
    batch = scoring.load_test_data(config)
    drop_and_ingest(config, "2026-12_clients.csv", batch.iloc[:300])
    december = ledger.read_record(config)[-1]
    assert diagnostics.version_current_on_arrival(config, december["run_id"], december["ingested_at"]) == "v2"
    time.sleep(1.1)  # history and record times are to the second
    deploy.rollback(config)
    time.sleep(1.1)
    drop_and_ingest(config, "2027-01_clients.csv", batch.iloc[300:600])
    january = ledger.read_record(config)[-1]
    assert diagnostics.version_current_on_arrival(config, january["run_id"], january["ingested_at"]) == "v1"
    assert diagnostics.version_current_on_arrival(config, december["run_id"], december["ingested_at"]) == "v2"
    first = ledger.read_record(config)[0]
    assert diagnostics.version_current_on_arrival(config, first["run_id"], first["ingested_at"]) is None
    assert diagnostics.data_drift(config, "v2")["reference"]["version"] == "v1"


def test_drift_on_a_single_row_batch_warns_and_does_not_crash(offline_project: Config):
    batch = scoring.load_test_data(offline_project).iloc[[0]]
    result = diagnostics.data_drift(offline_project, batch=batch)
    assert result["comparison"] == diagnostics.GIVEN_BATCH and result["reference"]["version"] == "v1"
    assert result["batch"] == {
        "source": "the batch given",
        "files": [],
        "ingested_at": None,
        "rows": 1,
        "rows_in_reference": 0,
    }
    assert any("too small" in warning for warning in result["warnings"])
    assert not any(row["drifted"] for row in result["features"])  # one row proves nothing
    strict_json(result)


def test_drift_with_no_batch_yet(offline_project: Config):
    (offline_project.output_folder / artefacts.LATEST_BATCH_FILE).unlink()
    result = diagnostics.data_drift(offline_project)
    assert result["batch"] is None and result["features"] == [] and result["prediction_psi"] is None
    assert "no ingested batch" in result["warnings"][0]


# --- summaries ----------------------------------------------------------------------------


def test_summary_of_the_master_dataset(offline_project: Config):
    master = masterstore.load_master(offline_project)
    summary = diagnostics.dataframe_summary(offline_project)
    assert summary["rows"] == len(master) == 7500
    stats = summary["numeric"]["number_of_employees"]
    column = master["number_of_employees"]
    assert stats == {
        "count": int(column.count()),
        "mean": float(column.mean()),
        "median": float(column.median()),
        "std": float(column.std()),
        "min": float(column.min()),
        "max": float(column.max()),
    }
    assert set(summary["numeric"]) == {"lastmonth_activity", "lastyear_activity", "number_of_employees", "exited"}
    assert summary["identifiers"] == {"corporation": {"count": 7500, "unique": 7500}}


def test_diagnostics_on_a_dataset_with_no_missing_values(project: Config):
    data = pd.DataFrame(
        {"corporation": ["a", "b", "c"], "size": [1.0, 2.0, 4.0], "sector": ["x", "y", "x"], "exited": [0, 1, 0]}
    )
    missing = diagnostics.missing_data(project, data)
    assert missing == {"rows": 3, "columns": {c: {"missing": 0, "share": 0.0} for c in data.columns}}
    summary = diagnostics.dataframe_summary(project, data)
    assert summary["categorical"]["sector"] == {
        "count": 3,
        "unique": 2,
        "levels": {"x": 2, "y": 1},
        "other_levels_count": 0,
    }
    assert summary["numeric"]["size"]["median"] == 2.0


def test_diagnostics_on_a_dataset_with_a_column_entirely_missing(project: Config):
    data = pd.DataFrame({"size": [np.nan, np.nan], "sector": [None, None], "exited": [0, 1]})
    missing = diagnostics.missing_data(project, data)
    assert missing["columns"]["size"] == {"missing": 2, "share": 1.0}
    assert missing["columns"]["sector"] == {"missing": 2, "share": 1.0}
    summary = diagnostics.dataframe_summary(project, data)
    assert summary["numeric"]["size"] == {
        "count": 0,
        "mean": None,
        "median": None,
        "std": None,
        "min": None,
        "max": None,
    }
    assert summary["categorical"]["sector"]["count"] == 0 and summary["categorical"]["sector"]["levels"] == {}
    strict_json([missing, summary])


def test_diagnostics_on_a_single_row(project: Config):
    data = pd.DataFrame({"size": [3.0], "exited": [1]})
    summary = diagnostics.dataframe_summary(project, data)
    assert summary["numeric"]["size"] == {"count": 1, "mean": 3.0, "median": 3.0, "std": None, "min": 3.0, "max": 3.0}
    assert diagnostics.missing_data(project, data)["columns"]["size"]["share"] == 0.0
    assert diagnostics.missing_data(project, data.iloc[:0])["columns"]["size"]["share"] is None
    strict_json(summary)


def test_model_predictions_follow_the_rows(offline_project: Config):
    test = scoring.load_test_data(offline_project)
    predictions = diagnostics.model_predictions(offline_project)
    deployed = registry_versions.load_deployed_model(offline_project)
    assert len(predictions) == len(test)
    assert [p["prediction"] for p in predictions] == deployed.model.predict(
        scoring.feature_frame(test, deployed.metadata["features"])
    ).tolist()
    assert all((p["risk"] >= deployed.metadata["threshold"]) == bool(p["prediction"]) for p in predictions)
    reversed_rows = diagnostics.model_predictions(offline_project, test.iloc[::-1].reset_index(drop=True))
    assert reversed_rows == predictions[::-1]


# --- timings ------------------------------------------------------------------------------


def test_execution_time_comes_from_recorded_runs(offline_project: Config):
    config = offline_project
    timings = diagnostics.execution_time(config)
    last = json.loads((config.output_folder / artefacts.LAST_RUN_FILE).read_text())
    trained = registry_versions.load_deployed_model(config).metadata
    assert timings["ingestion_seconds"] == last["seconds"]
    assert timings["training_seconds"] == trained["training_seconds"]
    assert timings["recent_runs"][-1]["version_deployed"] == "v1"
    assert timings["measured"] is None


@pytest.mark.slow
def test_measuring_execution_time_leaves_live_data_alone(offline_project: Config):
    config = offline_project
    watched = [
        masterstore.master_path(config),
        config.output_folder / artefacts.LAST_RUN_FILE,
        logbook.audit_path(config),
    ]
    before = {path: sha256_file(path) for path in watched}
    versions = registry_versions.version_names(config)
    measured = diagnostics.execution_time(config, measure=True)["measured"]
    assert measured["rows"] == 7500 and measured["files"] == 3
    assert measured["ingestion_seconds"] > 0 and measured["training_seconds"] > 0
    assert {path: sha256_file(path) for path in watched} == before
    assert registry_versions.version_names(config) == versions


# --- packages -----------------------------------------------------------------------------


def test_requirements_are_read_with_their_pins(tmp_path: Path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# pinned\nnumpy==2.3.5  # why\nrequests[socks]>=2.0 ; python_version > '3'\n-r other.txt\n\nflask\n"
    )
    assert packages.read_requirements(requirements) == [("numpy", "2.3.5"), ("requests", ">=2.0"), ("flask", None)]


def test_outdated_packages_answer_quickly_when_the_index_refuses(project: Config, monkeypatch: pytest.MonkeyPatch):
    # Port 9 (discard) refuses connections; no pip configuration or local wheel folders apply.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    config = with_settings(project, package_check_seconds=5)  # pip really is asked
    started = time.monotonic()
    result = packages.outdated_packages_list(config, use_cache=False)
    elapsed = time.monotonic() - started
    assert elapsed < 5 + 5  # generous: the budget plus process start-up
    names = [name for name, _ in packages.read_requirements()]
    assert [p["name"] for p in result["packages"]] == names and result["asked_index"] == names
    for package in result["packages"]:
        assert package["latest"] == "unknown" and package["status"] == "latest unknown"
        assert package["installed"] == package["pinned"]  # the venv holds the pinned versions
    assert not (config.reports_folder / artefacts.PACKAGE_CACHE_FILE).exists()  # nothing learnt, nothing cached


def test_outdated_packages_reuse_a_fresh_cache(project: Config):
    names = [name for name, _ in packages.read_requirements()]
    now = artefacts.utc_now()
    cache = {name: {"latest": "99.0", "checked_at": now} for name in names}
    cache["numpy"] = {"latest": "98.0", "checked_at": "2001-01-01T00:00:00+00:00"}  # too old to reuse
    path = project.reports_folder / artefacts.PACKAGE_CACHE_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(cache))
    config = with_settings(project, package_check_seconds=0)  # do not ask: numpy stays unknown
    result = packages.outdated_packages_list(config)
    assert result["asked_index"] == ["numpy"]
    rows = {p["name"]: p for p in result["packages"]}
    assert rows["numpy"]["latest"] == "unknown"
    assert rows["pandas"]["latest"] == "99.0" and rows["pandas"]["status"] == "outdated"


# --- the document -------------------------------------------------------------------------


def test_fullprocess_saved_diagnostics_beside_the_version(deployed_project: Config):
    path = deployed_project.reports_folder / "v1" / artefacts.DIAGNOSTICS_FILE
    document = json.loads(path.read_text())
    assert set(document) == TOP_LEVEL_KEYS and document["version"] == "v1"
    assert logbook.read_audit(deployed_project)[-1]["after_deployment"] == {"diagnostics": "ok", "reporting": "ok"}


def test_main_prints_and_saves_one_strict_json_document(offline_project: Config, capsys: pytest.CaptureFixture[str]):
    assert diagnostics_script.main(["--config", str(offline_project.path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((offline_project.reports_folder / "v1" / artefacts.DIAGNOSTICS_FILE).read_text())
    assert printed == saved and set(saved) == TOP_LEVEL_KEYS
    strict_json(saved)
    assert saved["summary_statistics"] == diagnostics.dataframe_summary(offline_project)
    assert saved["missing_data"] == diagnostics.missing_data(offline_project)
    assert [p["name"] for p in saved["outdated_packages"]["packages"]][:3] == ["numpy", "pandas", "scikit-learn"]
    assert all(isinstance(w, str) for w in saved["warnings"])


def test_main_fails_cleanly_without_a_deployment(project: Config, capsys: pytest.CaptureFixture[str]):
    assert diagnostics_script.main(["--config", str(project.path)]) == 1
    assert capsys.readouterr().out == ""


def test_diagnose_an_older_version_by_name(offline_project: Config):
    path = diagnostics.save_diagnostics(offline_project, "v1")
    assert path == offline_project.reports_folder / "v1" / "diagnostics.json"
    with pytest.raises(registry_versions.DeploymentError):
        diagnostics.save_diagnostics(offline_project, "v7")


def test_a_jump_in_missing_values_is_flagged_though_present_values_are_unchanged():
    rng = np.random.default_rng(11)
    reference = pd.Series(rng.normal(size=4000))
    batch = pd.Series(rng.normal(size=1500))
    batch[:400] = np.nan  # a feed started leaving a quarter of the values out
    row = drift.compare_feature("x", reference, batch, tables.NUMERIC)
    assert row["p_value"] > 0.01  # KS, on the present values, sees nothing
    assert row["missing_p_value"] < 1e-6 and row["band"] == "significant" and row["drifted"]
    assert any("missing share changed" in note for note in row["notes"])


def test_scipy_warnings_become_notes_not_console_noise(offline_project: Config, capfd: pytest.CaptureFixture[str]):
    """Two samples of 7,500 rows whose distributions differ by 3 rows: scipy's exact KS p-value fails
    ("ks_2samp: Exact calculation unsuccessful"). The diagnostics keep it as a note; nothing is printed."""
    config = offline_project
    deployed = registry_versions.load_deployed_model(config)
    reference = read_typed_csv(deployed.path / artefacts.REFERENCE_FILE, deployed.metadata["column_kinds"])
    batch = reference.copy()
    lowest = batch["lastyear_activity"].nsmallest(3).index  # the ECDFs now differ by 3/7500 at most
    batch.loc[lowest, "lastyear_activity"] = batch["lastyear_activity"].max() + 1
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        result = diagnostics.data_drift(config, batch=batch)
    assert [str(w.message) for w in escaped] == []
    assert "ks_2samp" not in capfd.readouterr().err
    activity = {row["feature"]: row for row in result["features"]}["lastyear_activity"]
    assert activity["p_value"] is not None and activity["p_value"] > 0.99  # scipy's asymptotic p-value stands in
    assert any(
        "KS test: RuntimeWarning: ks_2samp: Exact calculation unsuccessful" in note for note in activity["notes"]
    )
    strict_json(result)


def serve_index(files_for: Callable[[str], list[dict]], barrier: threading.Barrier) -> ThreadingHTTPServer:
    """A simple package index on a free port: JSON (PEP 691) when asked for it, HTML (PEP 503) otherwise.

    Every request waits at ``barrier`` before it is answered: the index answers only when all
    the lookups are in flight together (503 if they never are).
    """

    class Index(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                self.send_error(503)
                return
            name = self.path.strip("/").split("/")[-1]
            if "json" in self.headers.get("Accept", "") and len(name) % 2:  # some answers in each format
                body, kind = (
                    json.dumps({"meta": {"api-version": "1.0"}, "name": name, "files": files_for(name)}).encode(),
                    "application/vnd.pypi.simple.v1+json",
                )
            else:
                body, kind = index_page(files_for(name)).encode(), "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def index_page(files: list[dict]) -> str:
    """A PEP 503 project page listing ``files``."""
    links = "".join(
        f'<a href="../../files/{f["filename"]}#sha256=00"'
        + (f' data-requires-python="{html.escape(f["requires-python"])}"' if f.get("requires-python") else "")
        + (' data-yanked=""' if f.get("yanked") else "")
        + f">{f['filename']}</a>\n"
        for f in files
    )
    return f"<!DOCTYPE html><html><body>{links}</body></html>"


def release_files(name: str) -> list[dict]:
    """Releases 1.0 to 6.0 of which only 2.0 counts: pre-release, yanked, Python 4 only, Windows-only wheel."""
    wheel = name.replace("-", "_")
    return [
        {"filename": f"{wheel}-1.0-py3-none-any.whl"},
        {"filename": f"{wheel}-2.0.tar.gz"},
        {"filename": f"{wheel}-3.0rc1-py3-none-any.whl"},
        {"filename": f"{wheel}-4.0-py3-none-any.whl", "yanked": "broken"},
        {"filename": f"{wheel}-5.0-py3-none-any.whl", "requires-python": ">=4"},
        {"filename": f"{wheel}-6.0-cp27-cp27m-win32.whl"},
    ]


def only_this_index(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)


def test_packages_are_looked_up_all_at_once(project: Config, monkeypatch: pytest.MonkeyPatch):
    """The index answers only once every package is asked at the same time: one round trip, not one lookup after another."""
    names = [name for name, _ in packages.read_requirements()]
    barrier = threading.Barrier(len(names), timeout=10)
    server = serve_index(release_files, barrier)
    try:
        only_this_index(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}/simple")
        result = packages.outdated_packages_list(with_settings(project, package_check_seconds=20), use_cache=False)
    finally:
        server.shutdown()
        server.server_close()
    assert not barrier.broken
    assert {p["name"]: p["latest"] for p in result["packages"]} == dict.fromkeys(names, "2.0")
    rows = {p["name"]: p for p in result["packages"]}
    assert (
        rows["numpy"]["status"] == "up to date" and rows["prometheus-client"]["status"] == "outdated"
    )  # 2.3.5, 0.23.1 pinned


def test_packages_from_a_local_index_and_find_links_folder(
    project: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    index, wheels = tmp_path / "simple", tmp_path / "wheels"
    (index / "numpy").mkdir(parents=True)
    (index / "numpy" / "index.html").write_text(index_page(release_files("numpy")))
    wheels.mkdir()
    (wheels / "numpy-2.5-py3-none-any.whl").write_bytes(b"")
    (wheels / "pandas-9.1.tar.gz").write_bytes(b"")
    only_this_index(monkeypatch, index.as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    answers = packages.latest_versions(["numpy", "pandas", "flask"], 10)
    assert answers == {"numpy": "2.5", "pandas": "9.1", "flask": None}  # flask: on neither
