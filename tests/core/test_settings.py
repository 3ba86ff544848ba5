"""risk.core.settings: the config contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from risk.core.settings import DEFAULTS, ConfigError, load_config


def write_raw(folder: Path, values: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(values), encoding="utf-8")
    return path


def test_defaults_fill_absent_keys_and_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write_raw(tmp_path / "site", {"target": "Risk"}))

    assert config.target == "Risk"
    assert config["metric"] == DEFAULTS["metric"]
    assert config.input_folder == tmp_path / "site" / "sourcedata"
    assert config.deployment_folder == tmp_path / "site" / "production_deployment"


def test_paths_are_shown_relative_to_the_config_folder_where_they_can_be(tmp_path: Path) -> None:
    config = load_config(write_raw(tmp_path / "site", {}))

    assert config.display_path(config.output_folder / "finaldata.csv") == "ingesteddata/finaldata.csv"
    assert config.display_path(tmp_path / "elsewhere.csv") == str(tmp_path / "elsewhere.csv")


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="targt"):
        load_config(write_raw(tmp_path, {"targt": "exited"}))


def test_a_misspelt_key_names_its_close_match_instead_of_every_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write_raw(tmp_path, {"require_aproval": True}))
    assert "'require_aproval' (did you mean 'require_approval'?)" in str(raised.value)
    assert "known keys" not in str(raised.value), "the close match is the answer; the 41 keys bury it"
    with pytest.raises(ConfigError) as raised:
        load_config(write_raw(tmp_path, {"Target": "exited", "colour": "red"}))
    assert "'Target' (did you mean 'target'?)" in str(raised.value)
    assert "'colour'; known keys: [" in str(raised.value), "no key is close to colour: all are listed"


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.json"):
        load_config(tmp_path / "nowhere.json")


def test_invalid_json_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metric": "auc"}, "metric"),
        ({"candidate_models": ["svm"]}, "candidate_models"),
        ({"id_columns": "corporation"}, "id_columns"),
        ({"cv_folds": 1}, "cv_folds"),
        ({"selection_sample_rows": 500}, "selection_sample_rows must be 0 .every row. or at least 1,000"),
        ({"selection_sample_rows": -1}, "selection_sample_rows"),
        ({"drop_columns": ["exited"]}, "target"),
        ({"risk_band_thresholds": {"amber": 0.8, "red": 0.2}}, "risk_band_thresholds"),
        ({"input_folder_path": ""}, "input_folder_path"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_raw(tmp_path, values))


def test_missing_input_folder_names_key_and_path(tmp_path: Path) -> None:
    config = load_config(write_raw(tmp_path, {}))
    with pytest.raises(ConfigError, match=r"input_folder_path: folder .*sourcedata does not exist"):
        config.require_folder("input_folder_path")


def test_shipped_config_is_valid() -> None:
    config = load_config()
    assert config.target == "exited" and config.positive_label == 1


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # NaN passes every `<` check; Infinity and huge values crash or switch a check off later.
        ("drift_tolerance", NAN),
        ("drift_tolerance", INF),
        ("drift_tolerance", True),
        ("drift_tolerance", 5),
        ("drift_tolerance", -0.1),
        ("promotion_margin", 1e308),
        ("promotion_margin", NAN),
        ("cv_folds", 10**30),
        ("cv_folds", True),
        ("random_seed", 2**40),
        ("reference_sample_rows", 10**400),
        ("drift_min_rows", -1),
        ("api_max_rows", 1.5),
        ("api_max_body_bytes", True),
        ("settle_seconds", NAN),
        ("max_field_bytes", 2**70),
        ("package_check_seconds", NAN),
        ("package_check_seconds", INF),
        ("package_cache_hours", NAN),
        ("package_cache_hours", False),
        ("max_flagged_share", NAN),
        ("max_run_minutes", NAN),
        ("max_run_minutes", 0),
        ("max_run_minutes", True),
        ("max_run_minutes", INF),
        ("dask_timeout_seconds", NAN),
        ("dask_timeout_seconds", 0),
        ("positive_label", NAN),
        ("cost_matrix", {"false_negative": INF, "false_positive": 1}),
        ("cost_matrix", {"false_negative": 1e308, "false_positive": 1}),
        ("cost_matrix", {"false_negative": 5, "false_positive": NAN}),
        ("cost_matrix", {"false_negative": True, "false_positive": 1}),
        ("risk_band_thresholds", {"amber": False, "red": True}),
        ("risk_band_thresholds", {"amber": 0.2, "red": NAN}),
    ],
)
def test_numbers_must_be_finite_and_in_range_naming_the_key(tmp_path: Path, key: str, value) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({key: value}), encoding="utf-8")  # json writes NaN and Infinity as Python reads them

    with pytest.raises(ConfigError, match=key):
        load_config(path)


def test_numbers_in_range_are_accepted(tmp_path: Path) -> None:
    values = {
        "drift_tolerance": 0.05,
        "promotion_margin": -0.02,
        "cv_folds": 10,
        "random_seed": 2**32 - 1,
        "max_run_minutes": 90,
        "dask_timeout_seconds": 2.5,
        "package_check_seconds": 0,
        "cost_matrix": {"false_negative": 1e12, "false_positive": 0.5},
        "metric": "cost",
    }
    config = load_config(write_raw(tmp_path, values))

    assert {k: config[k] for k in values} == values


@pytest.mark.parametrize(
    "address", ["tls://127.0.0.1:8786", "inproc://x", "not a url", "tcp://localhost:99999", "tcp://host", "ucx://h:1"]
)
def test_an_odd_dask_address_is_refused_when_the_config_is_loaded(tmp_path: Path, address: str) -> None:
    """distributed answers these with a raw TypeError or ValueError (skipping dask_fallback_local), or waits 10 s."""
    with pytest.raises(ConfigError, match=r"dask_scheduler_address .*tcp://10\.0\.0\.5:8786"):
        load_config(write_raw(tmp_path, {"dask_scheduler_address": address, "dask_fallback_local": True}))


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "scheduler.example:8786", "tcp://[::1]:8786"])
def test_a_tcp_dask_address_is_accepted(tmp_path: Path, address: str) -> None:
    assert load_config(write_raw(tmp_path, {"dask_scheduler_address": address}))["dask_scheduler_address"] == address


@pytest.mark.parametrize("key", ["connect_timeout_seconds", "query_timeout_seconds"])
@pytest.mark.parametrize("value", [NAN, INF, 1e308])
def test_a_database_timeout_must_be_finite(tmp_path: Path, key: str, value: float) -> None:
    spec = {"name": "crm", "url": "sqlite:///clients.db", "table": "clients", "watermark_column": "row_id", key: value}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"database_sources": [spec], "drop_columns": ["row_id"]}), encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"database_sources\[0\] \(crm\): {key} must be a positive number"):
        load_config(path)
