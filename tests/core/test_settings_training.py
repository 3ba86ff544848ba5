"""risk.core.settings: the configuration keys training and the Dask cluster add: defaults and refusals."""

from __future__ import annotations

import pytest

from risk.core.settings import ConfigError
from tests.conftest import write_config


def test_defaults_keep_everything_on_this_machine(tmp_path) -> None:
    config = write_config(tmp_path)
    assert config["dask_scheduler_address"] is None and config["dask_fallback_local"] is False
    assert config["max_flagged_share"] == 0.9


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("max_flagged_share", 0, "max_flagged_share"),
        ("max_flagged_share", 1.5, "max_flagged_share"),
        ("max_flagged_share", True, "max_flagged_share"),
        ("dask_scheduler_address", "", "dask_scheduler_address"),
        ("dask_scheduler_address", 8786, "dask_scheduler_address"),
        ("dask_fallback_local", "yes", "dask_fallback_local"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        write_config(tmp_path, **{key: value})
