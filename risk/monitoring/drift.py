"""Data drift: how far a batch of data has moved from a reference sample, feature by feature.

The Population Stability Index (PSI), as used in credit-risk monitoring::

    PSI = sum over bins i of (a_i - e_i) * ln(a_i / e_i)

where ``e_i`` is the reference's share of rows in bin ``i`` and ``a_i`` the batch's. Shares are
floored at ``EPSILON`` (1e-4) so that a bin empty in one sample adds a large but finite term
instead of infinity. Bins come from the reference: its deciles for a numeric feature (unique
edges only, the outer bins open-ended, each bin closed on the right), every level for a
categorical one (a level only the batch has gets its own bin), and missing values always as a
bin of their own. Bands: below 0.10 stable, 0.10 to 0.25 moderate, above 0.25 significant.

Beside PSI, a two-sample test: Kolmogorov-Smirnov on the present values of a numeric feature
(with a chi-squared test of its missing share beside it, which KS cannot see), chi-squared on
the level counts (missing included) of a categorical one. A feature is *flagged* as drifted
when its PSI is 0.10 or more and a test that could run gives p < 0.05.

PSI carries sampling noise. With ``k`` occupied bins and samples of ``n`` and ``m`` rows its
expected value when nothing has changed is about ``(k - 1) * (1/n + 1/m)``: the *noise floor*
reported for every comparison. Where the noise floor reaches ``NOISE_FLOOR_WARNING`` the
figures say little, and a warning says so.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from risk.core.logs import captured_warnings
from risk.core.tables import CATEGORICAL, NUMERIC, as_text, read_typed_csv

logger = logging.getLogger(__name__)

EPSILON = 1e-4
STABLE_BELOW = 0.10
SIGNIFICANT_ABOVE = 0.25
DECILES = np.linspace(0.1, 0.9, 9)
MISSING_BIN = "(missing)"
P_VALUE_ALPHA = 0.05
NOISE_FLOOR_WARNING = 0.05  # half the "moderate" line: a larger floor drowns real drift
MIN_EXPECTED_COUNT = 5  # Cochran's rule for the chi-squared approximation


def psi_band(psi: float | None) -> str | None:
    """The credit-risk band of a PSI value: stable, moderate or significant."""
    if psi is None:
        return None
    if psi < STABLE_BELOW:
        return "stable"
    if psi <= SIGNIFICANT_ABOVE:
        return "moderate"
    return "significant"


def psi_from_counts(reference_counts: np.ndarray, batch_counts: np.ndarray) -> float | None:
    """PSI of two histograms over the same bins; None when either sample is empty."""
    reference_counts = np.asarray(reference_counts, dtype=float)
    batch_counts = np.asarray(batch_counts, dtype=float)
    if reference_counts.sum() == 0 or batch_counts.sum() == 0:
        return None
    expected = np.maximum(reference_counts / reference_counts.sum(), EPSILON)
    actual = np.maximum(batch_counts / batch_counts.sum(), EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_histograms(reference: pd.Series, batch: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels and counts of both samples on the reference's deciles, plus a missing bin."""
    reference_values = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float)
    batch_values = pd.to_numeric(batch, errors="coerce").to_numpy(dtype=float)
    present = reference_values[~np.isnan(reference_values)]
    edges = np.unique(np.quantile(present, DECILES)) if present.size else np.empty(0)
    labels = _interval_labels(edges) + [MISSING_BIN]
    return labels, _bin_counts(reference_values, edges), _bin_counts(batch_values, edges)


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    # side="left": a value equal to an edge falls in the bin that edge closes, (lo, edge].
    index = np.searchsorted(edges, values[~missing], side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return np.append(counts, missing.sum())


def _interval_labels(edges: np.ndarray) -> list[str]:
    if edges.size == 0:
        return ["(any value)"]
    shown = [f"{edge:.4g}" for edge in edges]
    labels = [f"<= {shown[0]}"]
    labels += [f"({low}, {high}]" for low, high in zip(shown[:-1], shown[1:])]
    return labels + [f"> {shown[-1]}"]


def categorical_histograms(reference: pd.Series, batch: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every level of either sample (reference levels first, most common first), plus missing."""
    reference_text = as_text(reference)
    batch_text = as_text(batch)
    reference_levels = reference_text.value_counts()
    batch_levels = batch_text.value_counts()
    levels = list(reference_levels.index) + [level for level in batch_levels.index if level not in reference_levels]
    reference_counts = np.array([reference_levels.get(level, 0) for level in levels] + [reference_text.isna().sum()])
    batch_counts = np.array([batch_levels.get(level, 0) for level in levels] + [batch_text.isna().sum()])
    return [str(level) for level in levels] + [MISSING_BIN], reference_counts, batch_counts


def population_stability_index(reference: pd.Series, batch: pd.Series, kind: str = NUMERIC) -> float | None:
    """PSI of ``batch`` against ``reference`` (see the module docstring for bins and smoothing)."""
    histograms = numeric_histograms if kind == NUMERIC else categorical_histograms
    _, reference_counts, batch_counts = histograms(pd.Series(reference), pd.Series(batch))
    return psi_from_counts(reference_counts, batch_counts)


def noise_floor(reference_counts: np.ndarray, batch_counts: np.ndarray) -> float | None:
    """PSI expected from sampling alone, about (occupied bins - 1) * (1/n + 1/m)."""
    n, m = int(np.sum(reference_counts)), int(np.sum(batch_counts))
    if n == 0 or m == 0:
        return None
    occupied = int(np.count_nonzero(np.asarray(reference_counts) + np.asarray(batch_counts)))
    return max(occupied - 1, 0) * (1 / n + 1 / m)


def compare_feature(name: str, reference: pd.Series, batch: pd.Series, kind: str) -> dict[str, Any]:
    """PSI, band, test and sample sizes for one feature; plain data, ready for JSON."""
    histograms = numeric_histograms if kind == NUMERIC else categorical_histograms
    labels, reference_counts, batch_counts = histograms(reference, batch)
    psi = psi_from_counts(reference_counts, batch_counts)
    notes: list[str] = []
    missing_p = None  # a categorical feature's chi-squared test counts missing values as a level
    if kind == NUMERIC:
        test = _ks_test(reference, batch, notes)
        # KS sees present values only: a feed that starts leaving values out needs its own test.
        missing_p = _chi_squared_test(_present_and_missing(reference_counts), _present_and_missing(batch_counts), [])[
            "p_value"
        ]
    else:
        test = _chi_squared_test(reference_counts, batch_counts, notes)
    reference_missing, batch_missing = (
        _share(reference_counts[-1], reference_counts.sum()),
        _share(batch_counts[-1], batch_counts.sum()),
    )
    if missing_p is not None and missing_p < P_VALUE_ALPHA:
        notes.append(
            f"the missing share changed from {reference_missing:.1%} to {batch_missing:.1%} (chi-squared p = {missing_p:.2g})"
        )
    floor = noise_floor(reference_counts, batch_counts)
    if psi is None:
        notes.append("PSI undefined: one of the samples has no rows")
    elif floor is not None and floor >= NOISE_FLOOR_WARNING:
        notes.append(
            f"sample too small: sampling alone gives a PSI of about {floor:.3f} "
            f"({len(batch)} batch rows, {len(reference)} reference rows)"
        )
    return {
        "feature": name,
        "kind": kind,
        "psi": psi,
        "band": psi_band(psi),
        "drifted": _drifted(psi, test["p_value"], missing_p),
        **test,
        "missing_p_value": missing_p,
        "reference_rows": int(len(reference)),
        "batch_rows": int(len(batch)),
        "reference_missing_share": reference_missing,
        "batch_missing_share": batch_missing,
        "noise_floor": floor,
        "bins": [
            {
                "bin": label,
                "reference_share": _share(r, reference_counts.sum()),
                "batch_share": _share(b, batch_counts.sum()),
            }
            for label, r, b in zip(labels, reference_counts, batch_counts)
        ],
        "notes": notes,
    }


def _drifted(psi: float | None, p_value: float | None, missing_p: float | None) -> bool:
    """Flagged: PSI at least moderate, and a test (where one can run) agrees it is no accident."""
    if psi is None or psi < STABLE_BELOW:
        return False
    return p_value is None or p_value < P_VALUE_ALPHA or (missing_p is not None and missing_p < P_VALUE_ALPHA)


def _present_and_missing(counts: np.ndarray) -> np.ndarray:
    """A histogram whose last bin is the missing values, folded to (present, missing)."""
    return np.array([counts[:-1].sum(), counts[-1]])


def _share(count: float, total: float) -> float | None:
    return float(count) / float(total) if total else None


def _ks_test(reference: pd.Series, batch: pd.Series, notes: list[str]) -> dict[str, Any]:
    reference_values = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    batch_values = pd.to_numeric(batch, errors="coerce").dropna().to_numpy(dtype=float)
    result: dict[str, Any] = {"test": "kolmogorov-smirnov", "statistic": None, "p_value": None}
    if reference_values.size == 0 or batch_values.size == 0:
        notes.append("KS test not run: no present values in one of the samples")
        return result
    with captured_warnings() as caught:
        outcome = stats.ks_2samp(reference_values, batch_values)
    _note_warnings("KS test", caught, notes)
    result.update(statistic=float(outcome.statistic), p_value=float(outcome.pvalue))
    return result


def _note_warnings(test: str, messages: list[str], notes: list[str]) -> None:
    """scipy's warnings about a test become notes on the feature (and debug lines in the log)."""
    for message in messages:
        logger.debug("%s: %s", test, message)
        notes.append(f"{test}: {message}")


def _chi_squared_test(reference_counts: np.ndarray, batch_counts: np.ndarray, notes: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"test": "chi-squared", "statistic": None, "p_value": None}
    table = np.vstack([reference_counts, batch_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]  # a level neither sample has says nothing
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        notes.append("chi-squared test not run: fewer than two levels, or an empty sample")
        return result
    with captured_warnings() as caught:
        outcome = stats.chi2_contingency(table, correction=False)
    _note_warnings("chi-squared test", caught, notes)
    result.update(statistic=float(outcome.statistic), p_value=float(outcome.pvalue))
    small = int((outcome.expected_freq < MIN_EXPECTED_COUNT).sum())
    if small > 0.2 * outcome.expected_freq.size:
        notes.append(
            f"chi-squared approximation is rough: {small} of {outcome.expected_freq.size} expected counts below {MIN_EXPECTED_COUNT}"
        )
    return result


def compare_frames(
    reference: pd.DataFrame, batch: pd.DataFrame, features: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """One comparison per model feature, numeric ones first, in the model's feature order."""
    rows = [compare_feature(name, reference[name], batch[name], NUMERIC) for name in features.get("numeric", [])]
    rows += [
        compare_feature(name, reference[name], batch[name], CATEGORICAL) for name in features.get("categorical", [])
    ]
    return rows


def compare_files(
    runner: Any, reference_path: str, batch_path: str, kinds: dict[str, str], features: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """``compare_frames`` for two CSV files, one task per feature on ``runner`` (compute.Runner).

    For a Dask cluster: each worker reads the files from the shared file system itself, so
    no rows travel through the scheduler.
    """
    names = [(name, NUMERIC) for name in features.get("numeric", [])] + [
        (name, CATEGORICAL) for name in features.get("categorical", [])
    ]
    tasks = [(reference_path, batch_path, kinds, name, kind) for name, kind in names]
    return runner.map(_compare_from_files, tasks, name="drift")


def _compare_from_files(
    reference_path: str, batch_path: str, kinds: dict[str, str], name: str, kind: str
) -> dict[str, Any]:
    # Read as ingestion reads them (text stays text), one column only.
    reference = read_typed_csv(reference_path, kinds, usecols=[name])[name]
    batch = read_typed_csv(batch_path, kinds, usecols=[name])[name]
    return compare_feature(name, reference, batch, kind)
