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
