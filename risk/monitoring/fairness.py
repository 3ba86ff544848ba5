"""Fairness checks of a model on labelled data, for each configured protected attribute.

Per group of the attribute: size, base rate (share of actual positives), selection rate
(share flagged), true and false positive rates and ROC AUC (not measurable with one class in
the group). Between groups: demographic parity (selection rates) and equal opportunity (true
positive rates) as the lowest-to-highest ratio and the highest-minus-lowest difference. The
four-fifths rule (a group selected at under 80% of the rate of the most selected group) is a
screening flag for a closer look, not a verdict of discrimination.

The invariance check scores every row again with the attribute swapped to each other level
and reports the share of rows whose decision changes and the largest change in risk. A model
that does not see the attribute (``exclude_protected_from_features``) changes nothing; a
model that does may still be unfair through correlated features, which this check cannot see.

Numeric attributes with more than ``MAX_NUMERIC_LEVELS`` values are binned into (up to)
``NUMERIC_BINS`` groups at the quartiles of the data measured; swapped rows get the median
of the other group.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from risk.model import scoring
from risk.model.compute import single_threaded

logger = logging.getLogger(__name__)

FOUR_FIFTHS = 0.8
NUMERIC_BINS = 4
MAX_NUMERIC_LEVELS = 5  # a numeric column with at most this many values keeps each value as a group
MAX_SWAP_LEVELS = 20  # the invariance check swaps to at most this many other levels per row
_LEADING_NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")
MISSING = "(missing)"  # the group of rows without a value; renamed where a real value reads the same
SELECTED = (
    '"Selected" means flagged as at risk by the model (predicted {positive}); the selection rate is the share of a '
    "group flagged."
)
DIRECTIONS = {
    "adverse": (
        "Being flagged is adverse for a client here (flagged_outcome: adverse): a group flagged more often is the "
        "one disadvantaged, so the four-fifths rule compares the shares not flagged."
    ),
    "favourable": (
        "Being flagged is favourable for a client here (flagged_outcome: favourable): a group flagged less often is "
        "the one disadvantaged, so the four-fifths rule compares the selection rates."
    ),
    None: (
        "Whether being flagged helps a client (a retention offer) or harms them (credit refused) is not configured "
        "(flagged_outcome): the four-fifths rule below reads selection as favourable, so a group flagged less often "
        "is the one it marks; if being flagged is adverse, read it the other way round."
    ),
}
SCREENING_NOTE = (
    "The four-fifths rule is a screening flag: a group selected at under 80% of the rate of the most selected group "
    "deserves a closer look. It is not a verdict of discrimination; base rates, group sizes and the business reason "
    "for the decision all matter."
)


def assess(
    config: Any,
    model: Any,
    metadata: dict[str, Any],
    frame: pd.DataFrame,
    y: np.ndarray,
    risk: np.ndarray,
    predicted: np.ndarray,
) -> dict[str, Any]:
    """The fairness section: every protected attribute of ``config`` measured on ``frame``
    (single-threaded: the invariance check predicts once per level); see nothing_measured()
    where none is configured."""
    if not config["protected_attributes"]:
        return nothing_measured()
    attributes = {}
    used = set(metadata["features"]["numeric"]) | set(metadata["features"]["categorical"])
    least, outcome = config["fairness_min_group_rows"], config["flagged_outcome"]
    with single_threaded():
        for attribute in config["protected_attributes"]:
            if attribute not in frame.columns:
                attributes[attribute] = {
                    "measurable": False,
                    "note": f"not measurable: the column {attribute} is not in the data scored",
                }
                continue
            groups, binning = group_labels(frame[attribute])
            missing = missing_label(frame[attribute], groups)
            entry = measure_groups(groups, y, risk, predicted, least, outcome == "adverse", missing)
            entry.update(measurable=True, binning=binning, used_by_model=attribute in used)
            entry["invariance"] = invariance(model, metadata, frame, attribute, groups, missing)
            attributes[attribute] = entry
    return {
        "attributes": attributes,
        "four_fifths_threshold": FOUR_FIFTHS,
        "min_group_rows": least,
        "flagged_outcome": outcome,
        "selected_means": SELECTED.format(positive=f"{config.target} = {config.positive_label}"),
        "direction": DIRECTIONS[outcome],
        "note": SCREENING_NOTE
        + f" Groups with fewer than {least} test rows are reported but not judged: their rates are too noisy.",
        "rows": int(len(y)),
    }


def nothing_measured() -> dict[str, Any]:
    """The fairness section where no protected attribute is configured."""
    return {"attributes": {}, "note": "no protected_attributes configured: nothing measured"}


def group_labels(values: pd.Series) -> tuple[pd.Series, str]:
    """Each row's group (text), and how the groups were made."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique(dropna=True) > MAX_NUMERIC_LEVELS:
        codes, edges = pd.qcut(values, NUMERIC_BINS, labels=False, retbins=True, duplicates="drop")
        names = [f"{_edge(low)} to {_edge(high)}" for low, high in zip(edges[:-1], edges[1:])]
        groups = pd.Series([MISSING if pd.isna(code) else names[int(code)] for code in codes], index=values.index)
        return groups, (
            f"numeric: {len(names)} groups between the quartiles of the data measured (each group holds "
            "its upper edge, the first also its lower edge)"
        )
    present = values.dropna().map(lambda v: _edge(v) if isinstance(v, (int, float, np.number)) else str(v))
    label = _unused_label(set(present))
    groups = pd.Series(label, index=values.index, dtype=object)
    groups[present.index] = present
    return groups.astype(str), "each value is a group" + (
        f" (rows without a value as their own group, {label})" if values.isna().any() else ""
    )


def _unused_label(literals: set[str]) -> str:
    """MISSING, or a variant of it that no real value of the column reads as: NA stays its own group."""
    label, number = MISSING, 1
    while label in literals:
        number += 1
        label = f"(missing {number})"
    return label


def missing_label(values: pd.Series, groups: pd.Series) -> str | None:
    """The group label of the rows without a value (None: every row has one)."""
    absent = values.isna().to_numpy()
    return str(groups[absent].iloc[0]) if absent.any() else None


def _edge(value: Any) -> str:
    number = float(value)
    return f"{number:g}" if number.is_integer() else f"{number:.2f}"


def measure_groups(
    groups: pd.Series,
    y: np.ndarray,
    risk: np.ndarray,
    predicted: np.ndarray,
    min_rows: int = 1,
    adverse: bool = False,
    missing: str | None = MISSING,
) -> dict[str, Any]:
    """Per-group rates, and the disparities between the groups with at least ``min_rows`` rows.

    A smaller group is reported with ``"judged": False``: one row flagged or not would swing its
    rates from 0 to 1 and flag a large group under the four-fifths rule.
    """
    labels = groups.to_numpy()
    per_group = {}
    for group in sorted(set(labels), key=lambda g: (g == missing, *_natural(g))):
        inside = labels == group
        per_group[group] = group_rates(y[inside], risk[inside], predicted[inside])
        per_group[group]["judged"] = bool(inside.sum() >= min_rows)
        if not per_group[group]["judged"]:
            per_group[group]["judged_note"] = f"not judged: {int(inside.sum())} row(s), fewer than {min_rows}"
    judged = {g: r for g, r in per_group.items() if r["judged"]}
    too_small = [g for g, r in per_group.items() if not r["judged"]]
    return {"groups": per_group, "groups_not_judged": too_small, **disparities(judged, adverse)}


def _natural(group: str) -> tuple[int, float, str]:
    """Groups in reading order: numbers and quartile bins ("1 to 18", "18 to 46", "108.75 to 5724") by value."""
    found = _LEADING_NUMBER.match(group)
    return (0, float(found.group()), group) if found else (1, 0.0, group)


def group_rates(y: np.ndarray, risk: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    flagged = predicted.astype(bool)
    rates = {
        "rows": int(len(y)),
        "positives": positives,
        "base_rate": float(y.mean()) if len(y) else None,
        "selection_rate": float(flagged.mean()) if len(y) else None,
        "true_positive_rate": float(flagged[y == 1].mean()) if positives else None,
        "false_positive_rate": float(flagged[y == 0].mean()) if negatives else None,
        "roc_auc": float(metrics.roc_auc_score(y, risk)) if positives and negatives else None,
    }
    if not (positives and negatives):
        rates["roc_auc_note"] = "not measurable: the group holds one class only"
    return rates


def disparities(per_group: dict[str, dict[str, Any]], adverse: bool = False) -> dict[str, Any]:
    """Demographic parity, equal opportunity and the four-fifths screening flag.

    The four-fifths rule compares the favourable outcome's rates: being selected, or, where being
    flagged is ``adverse``, not being flagged.
    """
    selection = {g: r["selection_rate"] for g, r in per_group.items() if r["selection_rate"] is not None}
    opportunity = {g: r["true_positive_rate"] for g, r in per_group.items() if r["true_positive_rate"] is not None}
    parity = _spread(selection)
    favourable = {g: 1 - rate for g, rate in selection.items()} if adverse else selection
    outcome = "left unflagged" if adverse else "selected"
    top = max(favourable.values()) if favourable else 0.0
    ratios = {g: (rate / top if top > 0 else None) for g, rate in favourable.items()}
    below = sorted(g for g, ratio in ratios.items() if ratio is not None and ratio < FOUR_FIFTHS)
    if len(favourable) < 2:
        flag_text = "not measurable: fewer than two groups large enough to judge"
    elif top == 0:
        flag_text = f"not measurable: no group has anyone {outcome}"
    elif below:
        flag_text = f"flagged for review: {', '.join(below)} {outcome} at under 80% of the rate of the group most often {outcome} (a screening flag, not a verdict)"
    else:
        flag_text = f"not flagged: every group is {outcome} at 80% or more of the rate of the group most often {outcome} (a screening flag, not a verdict)"
    return {
        "demographic_parity": {**parity, "basis": "selection rate"},
        "equal_opportunity": {**_spread(opportunity), "basis": "true positive rate"},
        "four_fifths": {
            "basis": "share not flagged" if adverse else "selection rate",
            "flagged": bool(below),
            "measurable": len(favourable) >= 2 and top > 0,
            "ratios_to_most_selected": ratios,
            "groups_below": below,
            "statement": flag_text,
        },
    }


def _spread(rates: dict[str, float]) -> dict[str, Any]:
    if len(rates) < 2:
        return {
            "ratio": None,
            "difference": None,
            "lowest_group": None,
            "highest_group": None,
            "note": "not measurable: fewer than two groups with this rate defined",
        }
    lowest, highest = min(rates, key=rates.get), max(rates, key=rates.get)
    return {
        "ratio": rates[lowest] / rates[highest] if rates[highest] > 0 else None,
        "difference": rates[highest] - rates[lowest],
        "lowest_group": lowest,
        "highest_group": highest,
    }


def invariance(
    model: Any,
    metadata: dict[str, Any],
    frame: pd.DataFrame,
    attribute: str,
    groups: pd.Series,
    missing: str | None = MISSING,
) -> dict[str, Any]:
    """Score every row with ``attribute`` swapped to each other level; what changes."""
    values = frame[attribute]
    levels = _swap_values(values, groups, missing)
    if len(levels) < 2:
        return {"measurable": False, "note": "not measurable: the attribute has one level in the data"}
    kept = levels[: MAX_SWAP_LEVELS + 1]
    features = scoring.feature_frame(frame, metadata["features"])
    base_risk, base_decision = scoring.risk_and_decisions(model, features)
    changed = np.zeros(len(frame), dtype=bool)
    largest, swaps = 0.0, 0
    own = groups.to_numpy()
    for group, value in kept:
        rows = own != group
        if not rows.any():
            continue
        swapped = frame.loc[rows].copy()
        swapped[attribute] = value
        swapped_features = scoring.feature_frame(swapped, metadata["features"])
        risk, decision = scoring.risk_and_decisions(model, swapped_features)
        changed[rows] |= decision != base_decision[rows]
        largest = max(largest, float(np.max(np.abs(risk - base_risk[rows]))))
        swaps += int(rows.sum())
    result = {
        "measurable": True,
        "levels": [group for group, _ in kept],
        "swapped_rows": swaps,
        "share_of_rows_whose_decision_changes": float(changed.mean()),
        "rows_whose_decision_changes": int(changed.sum()),
        "largest_risk_change": largest,
    }
    if len(levels) > len(kept):
        result["note"] = f"swapped to the {MAX_SWAP_LEVELS + 1} most common levels only, of {len(levels)}"
    return result


def _swap_values(values: pd.Series, groups: pd.Series, missing: str | None = MISSING) -> list[tuple[str, Any]]:
    """(group, the value a swapped row gets) for each group, most common first; missing left out."""
    order = groups[groups != missing].value_counts().index.tolist()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    swaps = []
    for group in order:
        inside = values[groups == group]
        swaps.append((group, float(inside.median()) if numeric else inside.iloc[0]))
    return swaps


def summary_lines(section: dict[str, Any]) -> list[str]:
    """One plain sentence per attribute, for the model card and the report."""
    lines = []
    for attribute, entry in section["attributes"].items():
        if not entry.get("measurable"):
            lines.append(f"{attribute}: {entry['note']}.")
            continue
        parity, opportunity, flag = entry["demographic_parity"], entry["equal_opportunity"], entry["four_fifths"]
        check = entry["invariance"]
        invariance_text = (
            f"swapping it changes {check['share_of_rows_whose_decision_changes']:.1%} of decisions (largest risk change "
            f"{check['largest_risk_change']:.3f})"
            if check.get("measurable")
            else check["note"]
        )
        small = entry.get("groups_not_judged") or []
        not_judged = (
            f"; {', '.join(small)} reported but not judged (fewer than {section.get('min_group_rows')} test rows)"
            if small
            else ""
        )
        lines.append(
            f"{attribute} ({'used by the model' if entry['used_by_model'] else 'not used by the model'}): selection-rate ratio "
            f"{_ratio(parity['ratio'])}, difference {_ratio(parity['difference'])}; true-positive-rate ratio "
            f"{_ratio(opportunity['ratio'])}, difference {_ratio(opportunity['difference'])}; four-fifths rule "
            f"{flag['statement']}; {invariance_text}{not_judged}."
        )
    return lines


def _ratio(value: float | None) -> str:
    return "not measurable" if value is None else f"{value:.3f}"
