"""Load and check ``config.json``, the one configuration every script reads.

Kept free of heavy imports: the cron fast path (``fullprocess.py`` with nothing new)
reads the config and must not pay for pandas or scikit-learn.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from risk.core.dburls import check_source, check_sources
from risk.core.jsonfiles import read_json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]  # risk/core/settings.py -> the project folder
DEFAULT_CONFIG_PATH = PROJECT_DIR / "config.json"

# Every key the system understands, with its default. A key not listed here is an error,
# so that a typo ("targt") fails loudly instead of silently using a default.
DEFAULTS: dict[str, Any] = {
    "input_folder_path": "sourcedata",
    "output_folder_path": "ingesteddata",
    "test_data_path": "testdata",
    "output_model_path": "models",
    "prod_deployment_path": "production_deployment",
    "reports_folder_path": "reports",
    "log_folder_path": "logs",
    "target": "exited",
    "positive_label": 1,
    "id_columns": ["corporation"],
    "drop_columns": [],
    "categorical_columns": None,
    # Ingestion reads a new file only once it has not changed for this many seconds (a copy
    # written in place is still growing); 0 reads it at once.
    "settle_seconds": 5.0,
    # A file holding a field or a row longer than these is set aside: the master is
    # append-only, so a runaway value could never be taken out of it again.
    "max_field_bytes": 1024 * 1024,
    "max_row_bytes": 4 * 1024 * 1024,
    "metric": "f1",
    "candidate_models": ["logistic_regression", "hist_gradient_boosting", "random_forest"],
    "cv_folds": 5,
    "random_seed": 42,
    # Above this many training rows the candidates are cross-validated and chosen on a seeded,
    # stratified sample of this many (0: every row); the chosen one is refitted on every row.
    "selection_sample_rows": 100000,
    "drift_tolerance": 0.0,
    # Fewer new rows than this are kept waiting, not judged: a score on a handful of rows is noise.
    "drift_min_rows": 50,
    # A retrained model that scores below the deployed one on the test data is not deployed.
    "block_worse_deployments": True,
    # A retrained model (challenger) replaces the deployed one (champion) only if better on the test
    # data by more than this (in the configured metric); negative accepts one up to that much worse.
    "promotion_margin": 0.0,
    # true: a model that passes the gate waits as a pending version until `deployment.py --approve`.
    "require_approval": False,
    "reference_sample_rows": 50000,
    # The report's permutation importance, calibration curve and figures use a seeded sample of at
    # most this many test rows (0: every row), so its cost stays bounded; its metrics use every row.
    "report_sample_rows": 20000,
    # Diagnostics ask the package index for the latest releases within this many seconds
    # (0: never ask), and reuse an answer for this many hours.
    "package_check_seconds": 5.0,
    "package_cache_hours": 12.0,
    "api_url": "http://127.0.0.1:8000",
    "api_max_rows": 10000,
    "api_max_body_bytes": 16 * 1024 * 1024,
    # A CSV header wider than this is refused (413) before its rows are read; models use far fewer.
    "api_max_columns": 2000,
    # null: bands derived from the deployed model's decision threshold (app.band_thresholds).
    "risk_band_thresholds": None,
    # Databases read for new rows beside the input folder (see dbsource.py); none by default.
    "database_sources": [],
    # A decision threshold flagging more than this share of the training rows (out of fold) is a warning.
    "max_flagged_share": 0.9,
    # A Dask scheduler ("tcp://host:8786") whose workers run the fits and the large scans; null: this machine.
    "dask_scheduler_address": None,
    # With the scheduler unreachable: true runs locally (saying so), false fails the run.
    "dask_fallback_local": False,
    # A Dask scheduler silent this long (connecting, or answering while work runs), or a cluster left
    # without workers this long, is given up: the run fails, or runs locally with dask_fallback_local.
    "dask_timeout_seconds": 10.0,
    # A run holding the run lock longer than this is taken as hung: every run locked out by it then
    # fails (exit 1, one line naming the holder) instead of exiting quietly; waits on a Dask cluster
    # give up after this long.
    "max_run_minutes": 120,
    # The cost of a missed risky client and of a false alarm, {"false_negative": 5, "false_positive": 1};
    # null: no cost. Needed by metric "cost"; when set, scores report the expected cost per client.
    "cost_matrix": None,
    # Columns whose groups the fairness checks compare (they stay in the test data); none by default.
    "protected_attributes": [],
    # true: the model does not see the protected attributes (the fairness checks still measure them).
    "exclude_protected_from_features": False,
    # Groups with fewer test rows are reported but not judged (their rates are too noisy to compare).
    "fairness_min_group_rows": 30,
    # What being flagged at risk means for a client: "adverse" (credit refused), "favourable" (a retention
    # offer) or null (not known: the fairness page says so and reads selection as favourable).
    "flagged_outcome": None,
    # Plain text for the model card; null: the card says it was not configured.
    "model_purpose": None,
    "intended_use": None,
    # The current clients, unlabelled, ranked into a call list after each change: a CSV file or a folder
    # of them (relative to the config's folder), or a database entry like database_sources' without a
    # watermark; null: no call list.
    "client_book": None,
    "call_list_path": "calllists",
    # How many clients the managers can call in one round (the call list says what it reaches).
    "contact_budget": 100,
    # true: /prediction answers that carry every id column are logged (ids, risk, flagged, version, time; no
    # feature values) to <log_folder_path>/predictions/YYYY-MM-DD.jsonl, for the back-test against outcomes.
    "log_predictions": False,
    # The run removes the prediction log's days older than this.
    "prediction_log_days": 400,
}

PATH_KEYS = (
    "input_folder_path",
    "output_folder_path",
    "test_data_path",
    "output_model_path",
    "prod_deployment_path",
    "reports_folder_path",
    "log_folder_path",
)
# What scoring reports for every model; the configured metric may also be the expected cost.
SCORE_METRICS = ("f1", "roc_auc", "average_precision", "precision", "recall", "accuracy", "balanced_accuracy")
METRICS = SCORE_METRICS + ("cost",)
CANDIDATE_MODELS = ("logistic_regression", "hist_gradient_boosting", "random_forest")
# Metrics where a lower value is better (an expected cost); every other metric is higher-is-better.
LOWER_IS_BETTER = ("cost",)


def metric_gain(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` on ``metric`` (positive: better), whichever way it points."""
    return old - new if metric in LOWER_IS_BETTER else new - old


class ConfigError(ValueError):
    """The configuration is unusable; the message names the key or path at fault."""


class Config:
    """The parsed configuration; folders are resolved against the config file's folder."""

    __slots__ = ("path", "values", "_folders")

    def __init__(self, path: Path, values: dict[str, Any]):
        self.path = path
        self.values = values
        # Resolved once: the API asks for the deployment folder on every request.
        self._folders = {key: (path.parent / values[key]).resolve() for key in PATH_KEYS}

    def __repr__(self) -> str:
        return f"Config(path={self.path!r})"

    @property
    def root(self) -> Path:
        return self.path.parent

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def display_path(self, path: Path) -> str:
        """A path as the project's users know it: relative to the config's folder where it can be."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def folder(self, key: str) -> Path:
        """A configured folder, resolved against the folder holding config.json."""
        return self._folders[key]

    # Named accessors for the folders every script uses.
    @property
    def input_folder(self) -> Path:
        return self.folder("input_folder_path")

    @property
    def output_folder(self) -> Path:
        return self.folder("output_folder_path")

    @property
    def test_data_folder(self) -> Path:
        return self.folder("test_data_path")

    @property
    def model_folder(self) -> Path:
        return self.folder("output_model_path")

    @property
    def deployment_folder(self) -> Path:
        return self.folder("prod_deployment_path")

    @property
    def reports_folder(self) -> Path:
        return self.folder("reports_folder_path")

    @property
    def log_folder(self) -> Path:
        return self.folder("log_folder_path")

    @property
    def target(self) -> str:
        return self.values["target"]

    @property
    def positive_label(self) -> Any:
        return self.values["positive_label"]

    @property
    def excluded_columns(self) -> list[str]:
        """Columns kept in the data but never used as features."""
        return list(self.values["id_columns"]) + list(self.values["drop_columns"])

    def require_folder(self, key: str) -> Path:
        """The folder for ``key``; a clear error naming key and path if it is absent."""
        folder = self.folder(key)
        if not folder.is_dir():
            raise ConfigError(f"{key}: folder {folder} does not exist")
        return folder


def load_config(path: str | Path | None = None) -> Config:
    """Read, default and validate a config file. Raises ConfigError naming the problem."""
    config_path = Path(path).expanduser().resolve() if path else DEFAULT_CONFIG_PATH
    if not config_path.is_file():
        raise ConfigError(f"config file {config_path} does not exist")
    try:
        raw = read_json(config_path)
    except ValueError as exc:
        raise ConfigError(f"config file {config_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {config_path} must hold a JSON object")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(_unknown_keys_message(unknown, config_path))
    values = {**DEFAULTS, **raw}
    _validate(values)
    return Config(path=config_path, values=values)


def _unknown_keys_message(unknown: list[str], config_path: Path) -> str:
    """Each unknown key with the known key it was probably meant to be; every known key only where none is close."""
    from risk.core.names import close_names

    guesses = {key: close_names(key, DEFAULTS) for key in unknown}
    named = ", ".join(
        f"{key!r}" + (f" (did you mean {' or '.join(repr(k) for k in close)}?)" if close else "")
        for key, close in guesses.items()
    )
    known = f"; known keys: {sorted(DEFAULTS)}" if not all(guesses.values()) else ""
    return f"unknown config key(s) in {config_path}: {named}{known}"


def _validate(values: dict[str, Any]) -> None:
    """Raise ConfigError naming the first value that is wrong (checked in this order)."""
    _validate_columns(values)
    _validate_governance(values)
    _validate_models(values)
    _validate_counts(values)
    _validate_ingestion_limits(values)
    _validate_services(values)
    _validate_call_list(values)
    _validate_prediction_log(values)


def _validate_prediction_log(values: dict[str, Any]) -> None:
    if not isinstance(values["log_predictions"], bool):
        raise ConfigError("log_predictions must be true or false")
    _require_number(values, "prediction_log_days", 1, 100 * 366, "days", integer=True)


def _validate_call_list(values: dict[str, Any]) -> None:
    """The client book (null, a path, or a database entry without a watermark), its list's folder and the budget."""
    book = values["client_book"]
    if isinstance(book, dict):
        try:
            check_source(book, "client_book", values, watermark=False)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    elif book is not None and (not isinstance(book, str) or not book.strip()):
        raise ConfigError(
            "client_book must be null, a CSV file or folder (relative to the config's folder), "
            'or a database entry such as {"name": "book", "url": "sqlite:///crm.db", "table": "clients"}'
        )
    if not isinstance(values["call_list_path"], str) or not values["call_list_path"].strip():
        raise ConfigError("call_list_path must be a non-empty path string")
    if isinstance(book, str):  # a list written into a folder book would be read as part of the book next run
        lists, book_folder = os.path.normpath(values["call_list_path"]), os.path.normpath(book)
        if lists == book_folder or lists.startswith(book_folder + os.sep):
            raise ConfigError(f"call_list_path must not be the client book's folder or inside it ({book!r})")
    _require_number(values, "contact_budget", 1, MAX_COUNT, "clients called in one round", integer=True)


def _validate_columns(values: dict[str, Any]) -> None:
    """The folders, the target and its positive label, the named columns and the metric."""
    for key in PATH_KEYS:
        if not isinstance(values[key], str) or not values[key].strip():
            raise ConfigError(f"{key} must be a non-empty path string")
    if not isinstance(values["target"], str) or not values["target"]:
        raise ConfigError("target must be a column name")
    label = values["positive_label"]
    if not isinstance(label, (str, int, float, bool)) or (isinstance(label, float) and not math.isfinite(label)):
        raise ConfigError("positive_label must be a string or a finite number (NaN matches no row)")
    for key in ("id_columns", "drop_columns"):
        _require_names(values, key)
    if values["categorical_columns"] is not None:
        _require_names(values, "categorical_columns")
    if values["target"] in values["id_columns"] + values["drop_columns"]:
        raise ConfigError("target must not be listed in id_columns or drop_columns")
    if values["metric"] not in METRICS:
        raise ConfigError(f"metric {values['metric']!r} is not one of {list(METRICS)}")


def _validate_models(values: dict[str, Any]) -> None:
    """The candidate models and what a new one must do to be deployed."""
    models = values["candidate_models"]
    if not isinstance(models, list) or not models or any(m not in CANDIDATE_MODELS for m in models):
        raise ConfigError(f"candidate_models must be a non-empty list drawn from {list(CANDIDATE_MODELS)}")
    if not isinstance(values["block_worse_deployments"], bool):
        raise ConfigError("block_worse_deployments must be true or false")
    if not isinstance(values["require_approval"], bool):
        raise ConfigError("require_approval must be true or false")
    bound = _metric_bound(values)
    _require_number(
        values, "promotion_margin", -bound, bound, "in the configured metric; negative accepts a worse model"
    )


def _validate_counts(values: dict[str, Any]) -> None:
    """The counts and sizes (folds, seed, sample, API limits, drift rows) and the drift tolerance."""
    for key in (
        "reference_sample_rows",
        "report_sample_rows",
        "api_max_rows",
        "api_max_body_bytes",
        "api_max_columns",
        "drift_min_rows",
    ):
        _require_number(values, key, 0, MAX_COUNT, integer=True)
    _require_number(values, "cv_folds", 2, 100, integer=True)
    _require_number(values, "selection_sample_rows", 0, MAX_COUNT, integer=True)
    if 0 < values["selection_sample_rows"] < MIN_SELECTION_ROWS:
        raise ConfigError(
            f"selection_sample_rows must be 0 (every row) or at least {MIN_SELECTION_ROWS:,}: fewer leave each "
            f"cross-validation fold too few rows to choose a model on; got {values['selection_sample_rows']}"
        )
    _require_number(values, "random_seed", 0, 2**32 - 1, integer=True)  # numpy's seeds are 32-bit
    _require_number(values, "drift_tolerance", 0, _metric_bound(values), "in the configured metric")


def _metric_bound(values: dict[str, Any]) -> float:
    """The largest difference the configured metric can show: every score metric lies in [0, 1],
    an expected cost per client is at most the largest cost. A margin or tolerance beyond it decides nothing."""
    return MAX_COST if values["metric"] in LOWER_IS_BETTER else 1


MIN_SELECTION_ROWS = 1000  # the smallest selection sample: 200 rows a test fold at 5 folds
MAX_COUNT = 2**53  # above this a count is no longer exact as a float, and no limit anyone means


def _require_number(
    values: dict[str, Any], key: str, low: float, high: float, unit: str = "", *, integer: bool = False
) -> None:
    """Raise ConfigError naming ``key`` unless its value is a finite number (an integer with
    ``integer``) from ``low`` to ``high``. true/false, NaN and Infinity are refused: JSON readers
    accept them, and each would silently turn a check off or crash the run later."""
    value = values[key]
    kind = "an integer" if integer else "a finite number"
    fine = _finite(value) and (not integer or isinstance(value, int))
    if not fine or not low <= value <= high:
        limits = f"from {low:g} to {high:g}"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        unit = f" ({unit})" if unit else ""
        raise ConfigError(f"{key} must be {kind} {limits}{unit}; got {shown}")


def _validate_services(values: dict[str, Any]) -> None:
    """The package check, the flagged share, the Dask cluster, the risk bands and the databases."""
    _require_number(values, "package_check_seconds", 0, 300, "seconds")
    _require_number(values, "package_cache_hours", 0, 24 * 365, "hours")
    share = values["max_flagged_share"]
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
        raise ConfigError("max_flagged_share must be a number above 0 and at most 1")
    _validate_dask(values)
    _require_number(values, "max_run_minutes", 1, 30 * 24 * 60, "minutes")
    bands = values["risk_band_thresholds"]
    if bands is not None and (
        not isinstance(bands, dict)
        or set(bands) != {"amber", "red"}
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bands.values())
        or not 0 <= bands["amber"] <= bands["red"] <= 1
    ):
        raise ConfigError(
            'risk_band_thresholds must be null (derived from the model\'s threshold) or {"amber": a, "red": r} with 0 <= a <= r <= 1'
        )
    if values["database_sources"] != []:
        try:
            check_sources(values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


COST_KEYS = ("false_negative", "false_positive")
DASK_ADDRESS_EXAMPLE = '"tcp://10.0.0.5:8786"'
# Costs are summed over every row and bootstrap resample: far above any real price, far below
# where float sums overflow to Infinity (1e308 crashed training).
MAX_COST = 1e12


def _finite(value: Any) -> bool:
    """A number that is not true/false, NaN or Infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _validate_governance(values: dict[str, Any]) -> None:
    """The business cost, the protected attributes and the model card's text."""
    costs = values["cost_matrix"]
    if costs is not None:
        if (
            not isinstance(costs, dict)
            or set(costs) != set(COST_KEYS)
            or not all(_finite(v) and 0 <= v <= MAX_COST for v in costs.values())
            or not any(costs.values())
        ):
            raise ConfigError(
                'cost_matrix must be null or {"false_negative": a, "false_positive": b}: finite numbers from 0 '
                f"to {MAX_COST:g}, not both zero (the cost of a missed risky client and of a false alarm); got {costs!r}"
            )
    if values["metric"] == "cost" and costs is None:
        raise ConfigError('metric "cost" needs cost_matrix, e.g. {"false_negative": 5, "false_positive": 1}')
    _require_names(values, "protected_attributes")
    if values["target"] in values["protected_attributes"]:
        raise ConfigError("target must not be listed in protected_attributes")
    if len(set(values["protected_attributes"])) != len(values["protected_attributes"]):
        raise ConfigError("protected_attributes lists a column twice")
    if not isinstance(values["exclude_protected_from_features"], bool):
        raise ConfigError("exclude_protected_from_features must be true or false")
    least = values["fairness_min_group_rows"]
    if not isinstance(least, int) or isinstance(least, bool) or least < 1:
        raise ConfigError("fairness_min_group_rows must be a positive integer (test rows a group needs to be judged)")
    if values["flagged_outcome"] not in (None, "adverse", "favourable"):
        raise ConfigError('flagged_outcome must be "adverse", "favourable" or null')
    for key in ("model_purpose", "intended_use"):
        if values[key] is not None and (not isinstance(values[key], str) or not values[key].strip()):
            raise ConfigError(f"{key} must be null or a non-empty text")


def _validate_dask(values: dict[str, Any]) -> None:
    """The scheduler's address (plain TCP only), the fallback and the timeout."""
    address = values["dask_scheduler_address"]
    if address is not None:
        problem = dask_address_problem(address)
        if problem:
            raise ConfigError(f"dask_scheduler_address {problem}; null runs on this machine")
    if not isinstance(values["dask_fallback_local"], bool):
        raise ConfigError("dask_fallback_local must be true or false")
    _require_number(values, "dask_timeout_seconds", 1, 3600, "seconds")


def dask_address_problem(address: Any) -> str | None:
    """What is wrong with a Dask scheduler address, or None for ``tcp://host:port`` (or ``host:port``).

    Checked when the config is loaded: distributed answers other forms with a TypeError or a
    ValueError, or a 10-second wait, long after the config was read. tls:// needs certificates,
    which this project does not configure; inproc:// only reaches a scheduler in this process."""
    if not isinstance(address, str) or not address.strip():
        return f"must be null or an address such as {DASK_ADDRESS_EXAMPLE}"
    from urllib.parse import urlsplit  # only when a cluster is configured: the cron fast path stays light

    if any(c.isspace() for c in address):
        return f"{address!r} is not tcp://host:port, e.g. {DASK_ADDRESS_EXAMPLE}"
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme != "tcp":
        return (
            f"{address!r}: only tcp:// is supported ({scheme}:// needs set-up this project does not do), "
            f"e.g. {DASK_ADDRESS_EXAMPLE}"
        )
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        port = parts.port
    except ValueError as exc:
        return f"{address!r} is not a host and port ({exc}), e.g. {DASK_ADDRESS_EXAMPLE}"
    if not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        return f"{address!r} is not tcp://host:port, e.g. {DASK_ADDRESS_EXAMPLE}"
    if not port:
        return f"{address!r} needs a port from 1 to 65535 (the scheduler's is 8786 unless started with another), e.g. {DASK_ADDRESS_EXAMPLE}"
    return None


def _validate_ingestion_limits(values: dict[str, Any]) -> None:
    _require_number(values, "settle_seconds", 0, 600, "seconds")
    for key in ("max_field_bytes", "max_row_bytes"):
        _require_number(values, key, 1, 2**31 - 1, "bytes", integer=True)  # the csv module's limit is a C long
    if values["max_field_bytes"] > values["max_row_bytes"]:
        raise ConfigError("max_field_bytes must not exceed max_row_bytes (a row holds its fields)")


def _require_names(values: dict[str, Any], key: str) -> None:
    names = values[key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{key} must be a list of column names")
