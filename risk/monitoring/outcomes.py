"""Outcomes: what became of the clients a version scored, once their labels arrive.

Two records, both JSON lines appended whole (one write each, under a lock) in ``<logs>/outcomes/``:

- ``realised/<version>.jsonl``: each drift decision's figures for the deployed version on the rows it
  judged (the metric, ROC AUC, rows, positives, when, the batch); the run used to forget them after
  the audit line.
- ``backtest.jsonl``: one line per labelled batch that arrived through ingestion (a file or a database
  snapshot), joined by the id columns with the latest prediction made for each client *before* the
  batch arrived (``ingested_at`` in the ingestion record): the call lists by their ``written_at``, and
  the prediction log where there is one. Per list and per version: rows matched, the realised positive
  rate of the contacted (the list's top ``contact_budget``), of the rest, of the flagged and of the
  others; precision, recall and lift at the budget; ROC AUC of the risk; calibration per risk decile.

Rows that match no earlier prediction are counted, never guessed. Clients predicted but not labelled in
the batch are "outcome unknown", never negatives. Nothing here changes the drift decision or training.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from risk.core.jsonfiles import CHAIN_FIELD, HMAC_FIELD, append_json_line, read_json, read_json_lines
from risk.core.settings import Config
from risk.registry import calllists

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

OUTCOMES_FOLDER = "outcomes"
REALISED_FOLDER = "realised"
BACKTEST_FILE = "backtest.jsonl"
PREDICTION_LOG = "prediction log"  # the source named for predictions from the API's log
MIN_ROWS_FOR_AUC = 10  # fewer labelled rows than this: no ROC AUC, said in words
DECILE_MIN_ROWS = 5  # each calibration bin holds at least this many rows (fewer bins than ten on a small batch)


def outcomes_folder(config: Config) -> Path:
    return config.log_folder / OUTCOMES_FOLDER


def backtest_path(config: Config) -> Path:
    return outcomes_folder(config) / BACKTEST_FILE


def realised_path(config: Config, version: str) -> Path:
    return outcomes_folder(config) / REALISED_FOLDER / f"{version}.jsonl"


# ----------------------------------------------------------------------------- the realised history


def record_realised(config: Config, realised: dict[str, Any]) -> None:
    """Append one drift decision's figures to its version's history (``realised["version"]``)."""
    append_json_line(realised_path(config, realised["version"]), realised)


def realised_history(config: Config, version: str | None = None) -> list[dict[str, Any]]:
    """The realised figures of ``version`` (every version's when None), oldest first."""
    folder = outcomes_folder(config) / REALISED_FOLDER
    paths = [realised_path(config, version)] if version else sorted(folder.glob("*.jsonl"))
    lines = [_without_chain(line) for path in paths if path.is_file() for line in read_json_lines(path)]
    return sorted(lines, key=lambda line: str(line.get("at", "")))


def backtests(config: Config) -> list[dict[str, Any]]:
    """Every back-tested batch, oldest first."""
    path = backtest_path(config)
    return [_without_chain(line) for line in read_json_lines(path)] if path.is_file() else []


def _without_chain(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in (CHAIN_FIELD, HMAC_FIELD)}


# ----------------------------------------------------------------------------- the predictions


def parse_time(text: str) -> datetime:
    """An ISO time as every record writes it (``2026-12-07T15:17:16+00:00``, or with ``Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def call_list_predictions(config: Config) -> pd.DataFrame:
    """Every stamped call list's clients: the id columns (text), ``risk``, ``flagged``, ``rank``,
    ``version``, ``source`` (the list's file), ``time`` (its ``written_at``) and ``budget``.
    A list made with other id columns, or that cannot be read, is skipped with a warning."""
    import pandas as pd

    ids = config["id_columns"]
    folder = calllists.call_list_folder(config)
    frames = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == calllists.LATEST_JSON:
            continue
        try:
            info = read_json(path)
            if info.get("id_columns") != ids or not info.get("written_at"):
                continue
            frame = calllists.read_call_list(folder / info["file"], ids, [*ids, "rank", "risk", "flagged"])
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            logger.warning("call list %s left out of the back-test: %s", path.name, exc)
            continue
        frame["version"] = info.get("version")
        frame["source"] = info["file"]
        frame["time"] = parse_time(info["written_at"])
        frame["budget"] = int(info.get("contact_budget") or config["contact_budget"])
        frames.append(frame)
    columns = [*ids, "rank", "risk", "flagged", "version", "source", "time", "budget"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def logged_predictions(config: Config) -> pd.DataFrame:
    """The API's logged predictions (predlog.py) in the same columns; no rank and no budget: a logged
    answer is a prediction, not a call."""
    from risk.monitoring import predlog

    frame = predlog.logged_predictions(config)
    frame["source"] = PREDICTION_LOG
    frame["rank"] = float("nan")
    frame["budget"] = float("nan")
    return frame


def latest_before(predictions: pd.DataFrame, arrived: datetime, ids: list[str]) -> pd.DataFrame:
    """For each client, the latest prediction made strictly before ``arrived`` (never one made after)."""
    earlier = predictions[predictions["time"] < arrived]
    order = earlier.sort_values("time", kind="mergesort")
    return order.drop_duplicates(ids, keep="last").reset_index(drop=True)


# ----------------------------------------------------------------------------- the back-test


def backtest_batch(
    config: Config, labelled: pd.DataFrame, arrived_at: str, batch: dict[str, Any], predictions: pd.DataFrame
) -> dict[str, Any]:
    """The back-test line of one labelled batch (not written: see record_backtests)."""
    from risk.model.scoring import binary_target

    ids = config["id_columns"]
    line: dict[str, Any] = {"arrived_at": arrived_at, "batch": batch, "rows": len(labelled)}
    if not ids or any(column not in labelled.columns for column in ids):
        line["note"] = f"the batch has not the id columns {ids}: no row can be joined with a prediction"
        return line
    labelled = labelled[[*ids, config.target]].copy()
    for column in ids:
        labelled[column] = labelled[column].astype("string")
    known = labelled[ids].notna().all(axis=1)
    line["rows_without_id"] = int((~known).sum())
    labelled = labelled[known].drop_duplicates(ids, keep="last")
    labelled["outcome"] = binary_target(labelled[config.target], config.positive_label)
    earlier = latest_before(predictions, parse_time(arrived_at), ids)
    for column in ids:
        earlier[column] = earlier[column].astype("string")
    matched = labelled.merge(earlier, on=ids, how="inner", validate="one_to_one")
    line["rows_matched"] = len(matched)
    line["rows_unmatched"] = len(labelled) - len(matched)
    line["lists"] = [
        {
            "list": source,
            "version": group["version"].iloc[0],
            "written_at": group["time"].iloc[0].isoformat(),
            "clients_on_list": int((predictions["source"] == source).sum()),
            **list_figures(group, int(group["budget"].iloc[0]), int((predictions["source"] == source).sum())),
        }
        for source, group in matched.groupby("source", sort=True)
        if source != PREDICTION_LOG
    ]
    line["versions"] = [
        {"version": version, **figures(group["outcome"].to_numpy(), group["risk"].to_numpy(), group["flagged"])}
        for version, group in matched.groupby("version", sort=True)
    ]
    return line


def list_figures(matched: pd.DataFrame, budget: int, on_list: int) -> dict[str, Any]:
    """One list's figures on its clients labelled in the batch; ``on_list``: the clients it held."""
    import numpy as np

    outcome, risk = matched["outcome"].to_numpy(), matched["risk"].to_numpy()
    contacted = (matched["rank"] <= budget).to_numpy()
    result = figures(outcome, risk, matched["flagged"])
    positives = int(outcome.sum())
    reached = int(outcome[contacted].sum())
    result.update(
        contact_budget=budget,
        outcome_unknown=on_list - len(matched),
        contacted=share(outcome[contacted]),
        contacted_outcome_unknown=int(min(budget, on_list) - contacted.sum()),
        rest=share(outcome[~contacted]),
        expected_rate_at_budget=round(float(np.mean(risk[contacted])), 6) if contacted.any() else None,
        precision_at_budget=share(outcome[contacted])["rate"],
        recall_at_budget=round(reached / positives, 6) if positives else None,
    )
    rate, overall = result["precision_at_budget"], result["realised_rate"]
    result["lift_at_budget"] = round(rate / overall, 4) if rate is not None and overall else None
    if not contacted.any():
        result["notes"].append("no contacted client (the list's top budget) is labelled in this batch")
    elif positives == 0:
        result["notes"].append("no labelled client left: recall and lift at the budget cannot be told")
    return result


def share(outcome: np.ndarray) -> dict[str, Any]:
    """Rows, positives and their rate (None when there are no rows)."""
    rows, positives = int(len(outcome)), int(outcome.sum())
    return {"rows": rows, "positives": positives, "rate": round(positives / rows, 6) if rows else None}


def figures(outcome: np.ndarray, risk: np.ndarray, flagged: pd.Series) -> dict[str, Any]:
    """Rows matched, realised rate overall, of the flagged and of the others, ROC AUC, calibration."""
    import numpy as np

    flags = flagged.astype(bool).to_numpy()
    overall = share(outcome)
    result: dict[str, Any] = {
        "rows_matched": overall["rows"],
        "positives": overall["positives"],
        "realised_rate": overall["rate"],
        "mean_risk": round(float(np.mean(risk)), 6) if len(risk) else None,
        "flagged": share(outcome[flags]),
        "not_flagged": share(outcome[~flags]),
        "notes": [],
    }
    result["roc_auc"], why = roc_auc(outcome, risk)
    if why:
        result["notes"].append(why)
    result["calibration"], why = calibration(outcome, risk)
    if why:
        result["notes"].append(why)
    return result


def roc_auc(outcome: np.ndarray, risk: np.ndarray) -> tuple[float | None, str | None]:
    """(ROC AUC of the risk, None) or (None, why it cannot be told)."""
    from sklearn.metrics import roc_auc_score

    if len(outcome) < MIN_ROWS_FOR_AUC:
        return None, f"only {len(outcome)} labelled row(s): ROC AUC needs {MIN_ROWS_FOR_AUC} or more"
    if len(set(outcome.tolist())) < 2:
        which = "left" if outcome[0] else "stayed"
        return None, f"every one of the {len(outcome)} labelled clients {which}: ROC AUC needs both outcomes"
    return round(float(roc_auc_score(outcome, risk)), 6), None


def calibration(outcome: np.ndarray, risk: np.ndarray) -> tuple[list[dict[str, Any]], str | None]:
    """Mean predicted risk against realised rate per risk decile (fewer, equal-sized bins when there
    are fewer than ten times DECILE_MIN_ROWS rows), lowest risk first."""
    import numpy as np

    bins = min(10, len(outcome) // DECILE_MIN_ROWS)
    if bins < 2:
        return [], f"only {len(outcome)} labelled row(s): too few for a calibration by risk bins"
    order = np.argsort(risk, kind="mergesort")
    rows = []
    for number, part in enumerate(np.array_split(order, bins), start=1):
        rows.append(
            {
                "bin": number,
                "rows": int(len(part)),
                "mean_risk": round(float(np.mean(risk[part])), 6),
                "realised_rate": round(float(np.mean(outcome[part])), 6),
            }
        )
    return rows, None if bins == 10 else f"{bins} risk bins, not deciles: the batch has {len(outcome)} rows"


def all_predictions(config: Config) -> pd.DataFrame:
    """The call lists' and the prediction log's predictions, in one frame."""
    import pandas as pd

    lists, logged = call_list_predictions(config), logged_predictions(config)
    if logged.empty:
        return lists
    if lists.empty:
        return logged
    return pd.concat([lists, logged[lists.columns]], ignore_index=True)


def record_backtests(config: Config, batches: list[tuple[pd.DataFrame, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Back-test each labelled batch ``(rows, its ingestion record entry)`` and append its line.
    Returns the lines written (none when no prediction was ever made)."""
    predictions = all_predictions(config)
    if predictions.empty or not batches:
        return []
    written = []
    for rows, entry in batches:
        batch = {"file": entry["name"], "run_id": entry.get("run_id")}
        if entry.get("source"):
            batch["source"] = entry["source"]
        line = backtest_batch(config, rows, entry["ingested_at"], batch, predictions)
        append_json_line(backtest_path(config), line)
        written.append(line)
    return written


# ----------------------------------------------------------------------------- what people see


def summary(config: Config) -> dict[str, Any]:
    """The figures the page, ``/monitoring`` and the gauges show: the realised history of every
    version, the back-tested batches, and the last of each."""
    realised = realised_history(config)
    tested = backtests(config)
    last_list = next((item for line in reversed(tested) for item in reversed(line.get("lists", []))), None)
    return {
        "realised": realised,
        "last_realised": realised[-1] if realised else None,
        "backtests": tested,
        "last_list": last_list,
        "notes": _summary_notes(realised, tested),
    }


def _summary_notes(realised: list[dict[str, Any]], tested: list[dict[str, Any]]) -> list[str]:
    notes = []
    if not realised:
        notes.append("no labelled batch has been judged against a deployed version yet")
    if not tested:
        notes.append("no labelled batch has arrived after a call list or a logged prediction yet")
    return notes
