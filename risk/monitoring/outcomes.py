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
import os
from datetime import UTC, datetime
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
REPORT_DUE_FILE = "report-due"  # set before a record is appended, removed once the report shows it
BACKTEST_DUE_FILE = "backtest-due"  # set before an ingestion, removed once its batches are back-tested
PREDICTION_LOG = "prediction log"  # the source named for predictions from the API's log
MIN_ROWS_FOR_AUC = 10  # fewer labelled rows than this: no ROC AUC, said in words
DECILE_MIN_ROWS = 5  # each calibration bin holds at least this many rows (fewer bins than ten on a small batch)


def outcomes_folder(config: Config) -> Path:
    return config.log_folder / OUTCOMES_FOLDER


def backtest_path(config: Config) -> Path:
    return outcomes_folder(config) / BACKTEST_FILE


def realised_path(config: Config, version: str) -> Path:
    return outcomes_folder(config) / REALISED_FOLDER / f"{version}.jsonl"


def report_due_path(config: Config) -> Path:
    return outcomes_folder(config) / REPORT_DUE_FILE


def mark_report_due(config: Config) -> None:
    """Say the outcomes report must be written again, before a record changes: a run killed between
    the record and the report leaves this mark, and the next run (even one with nothing new) writes it."""
    _set_mark(report_due_path(config))


def report_due(config: Config) -> bool:
    """Whether a record changed since the report was last written (one stat: the cron fast path)."""
    return os.path.exists(report_due_path(config))


def clear_report_due(config: Config) -> None:
    _clear_mark(report_due_path(config))


def backtest_due_path(config: Config) -> Path:
    return outcomes_folder(config) / BACKTEST_DUE_FILE


def mark_backtest_due(config: Config) -> None:
    """Set before an ingestion: a run killed between ingesting a batch and back-testing it leaves
    this mark, and the next run back-tests the batch (``batches_left_untested``)."""
    _set_mark(backtest_due_path(config))


def backtest_due(config: Config) -> bool:
    return os.path.exists(backtest_due_path(config))


def clear_backtest_due(config: Config) -> None:
    _clear_mark(backtest_due_path(config))


def _set_mark(path: Path) -> None:
    """A mark helps a later run finish what a killed one left; one that cannot be set (the folder
    is not writable) is said, and never costs the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as exc:
        logger.warning("%s cannot be set (a killed run's outcomes would not be finished): %s", path.name, exc)


def _clear_mark(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("%s cannot be removed: %s", path.name, exc)


def batches_left_untested(config: Config) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
    """The batches a killed run ingested (entries since the mark, with new rows) and did not
    back-test, each with its rows from ``latest_batch.csv`` (that ingestion's new rows, file after
    file). None when the file does not hold exactly those rows: not guessed."""
    import pandas as pd

    from risk.core.artefacts import LATEST_BATCH_FILE
    from risk.data import ledger
    from risk.monitoring import predlog

    if not call_list_infos(config) and not predlog.day_files(config):
        return []  # no prediction to join: the killed run had nothing to back-test either
    marked = datetime.fromtimestamp(int(backtest_due_path(config).stat().st_mtime), UTC)
    entries = [
        e
        for e in ledger.read_record(config)
        if e.get("status") == ledger.STATUS_INGESTED
        and isinstance(e.get("ingested_at"), str)
        and parse_time(e["ingested_at"]) >= marked
    ]
    with_rows = [e for e in entries if isinstance(e.get("rows_added"), int) and e["rows_added"] > 0]
    tested = {(line.get("batch", {}).get("file"), line.get("batch", {}).get("run_id")) for line in backtests(config)}
    if not with_rows or all((e["name"], e.get("run_id")) in tested for e in with_rows):
        return []
    rows = pd.read_csv(
        config.output_folder / LATEST_BATCH_FILE, dtype={c: str for c in config["id_columns"]}, keep_default_na=False
    )
    if len(rows) != sum(e["rows_added"] for e in with_rows):
        logger.warning("the back-test of %s was lost with the run that ingested them", [e["name"] for e in with_rows])
        return []
    batches, start = [], 0
    for entry in with_rows:
        end = start + entry["rows_added"]
        if (entry["name"], entry.get("run_id")) not in tested:
            batches.append((rows.iloc[start:end].reset_index(drop=True), entry))
        start = end
    return batches


# ----------------------------------------------------------------------------- the realised history


def record_realised(config: Config, realised: dict[str, Any]) -> None:
    """Append one drift decision's figures to its version's history (``realised["version"]``)."""
    mark_report_due(config)
    append_json_line(realised_path(config, realised["version"]), realised)


def realised_history(config: Config, version: str | None = None) -> list[dict[str, Any]]:
    """The realised figures of ``version`` (every version's when None), oldest first."""
    folder = outcomes_folder(config) / REALISED_FOLDER
    paths = [realised_path(config, version)] if version else sorted(folder.glob("*.jsonl"))
    lines = [_without_chain(line) for path in paths for line in _records(path)]
    return sorted(lines, key=lambda line: str(line.get("at", "")))


def backtests(config: Config) -> list[dict[str, Any]]:
    """Every back-tested batch, oldest first."""
    return [_without_chain(line) for line in _records(backtest_path(config))]


def _records(path: Path) -> list[dict[str, Any]]:
    """The file's JSON lines; none when it is absent. Raises OSError when something else stands
    there (a folder): the figures are not "none yet" then, and the reader says so."""
    if path.exists() and not path.is_file():
        raise OSError(f"{path} is not a regular file")
    return read_json_lines(path)


def _without_chain(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in (CHAIN_FIELD, HMAC_FIELD)}


# ----------------------------------------------------------------------------- the predictions


def parse_time(text: str) -> datetime:
    """An ISO time as every record writes it (``2026-12-07T15:17:16+00:00``, or with ``Z``); one
    without a zone is taken as UTC (it could not be compared with the others)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def call_list_infos(config: Config) -> list[dict[str, Any]]:
    """The JSON of every stamped call list made with the configured id columns, newest first, each
    with ``time`` (its ``written_at``, parsed). A JSON that cannot be read is skipped with a warning."""
    ids = config["id_columns"]
    folder = calllists.call_list_folder(config)
    infos = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        if path.name == calllists.LATEST_JSON:
            continue
        try:
            info = read_json(path)
            if info.get("id_columns") != ids or not isinstance(info.get("file"), str):
                continue
            infos.append({**info, "time": parse_time(info["written_at"])})
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            logger.warning("call list %s left out of the back-test: %s", path.name, exc)
    return sorted(infos, key=lambda info: info["time"], reverse=True)


def from_call_lists(
    config: Config, clients: pd.DataFrame, arrived: datetime, infos: list[dict[str, Any]]
) -> pd.DataFrame:
    """For each of ``clients`` (the id columns, as text), the latest call list written strictly
    before ``arrived`` that holds them: the id columns, ``rank``, ``risk``, ``flagged``, ``version``,
    ``source``, ``time``, ``budget``. Lists are read newest first, and only until every client is
    found: a run does not read a year of lists when the newest holds the whole book."""
    import pandas as pd

    ids = config["id_columns"]
    folder = calllists.call_list_folder(config)
    remaining, found = clients[ids], []
    for info in (i for i in infos if i["time"] < arrived):
        if remaining.empty:
            break
        try:
            frame = calllists.read_call_list(folder / info["file"], ids, [*ids, "rank", "risk", "flagged"])
        except calllists.CallListError as exc:
            logger.warning("call list %s left out of the back-test: %s", info["file"], exc)
            continue
        frame = frame[
            frame[ids[0]].isin(remaining[ids[0]])
        ]  # a hash look-up first: the merge sees the batch's clients only
        hit = remaining.merge(frame.drop_duplicates(ids), on=ids, how="inner")
        if hit.empty:
            continue
        hit["version"], hit["source"], hit["time"] = info.get("version"), info["file"], info["time"]
        hit["budget"] = int(info.get("contact_budget") or config["contact_budget"])
        found.append(hit)
        left = remaining.merge(hit[ids], on=ids, how="left", indicator=True)
        remaining = left.loc[left["_merge"] == "left_only", ids]
    columns = [*ids, "rank", "risk", "flagged", "version", "source", "time", "budget"]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)


def from_prediction_log(config: Config, clients: pd.DataFrame, arrived: datetime) -> pd.DataFrame:
    """For each of ``clients``, the latest logged ``/prediction`` answer strictly before ``arrived``
    (predlog.py): the same columns, with no rank and no budget (an answer is a prediction, not a call)."""
    from risk.monitoring import predlog

    ids = config["id_columns"]
    if not predlog.day_files(config):
        return clients.iloc[0:0]
    wanted = set(clients[ids].itertuples(index=False, name=None))
    logged = predlog.logged_predictions(config, before=arrived, clients=wanted)
    logged = logged.drop_duplicates(ids, keep="last").merge(clients[ids], on=ids, how="inner")
    logged["source"], logged["rank"], logged["budget"] = PREDICTION_LOG, float("nan"), float("nan")
    return logged


def latest_predictions(
    config: Config, clients: pd.DataFrame, arrived: datetime, infos: list[dict[str, Any]]
) -> pd.DataFrame:
    """For each of ``clients``, the latest prediction made strictly before ``arrived`` (never one
    made after), from the call lists and the prediction log; a client with none is left out."""
    import pandas as pd

    ids = config["id_columns"]
    lists, logged = from_call_lists(config, clients, arrived, infos), from_prediction_log(config, clients, arrived)
    if logged.empty:
        return lists
    both = pd.concat([lists, logged[lists.columns]], ignore_index=True) if len(lists) else logged
    both["time"] = pd.to_datetime(both["time"], utc=True)
    order = both.sort_values("time", kind="mergesort")  # a list and an answer of the same second: the answer
    return order.drop_duplicates(ids, keep="last").reset_index(drop=True)


# ----------------------------------------------------------------------------- the back-test


def backtest_batch(
    config: Config, labelled: pd.DataFrame, arrived_at: str, batch: dict[str, Any], infos: list[dict[str, Any]]
) -> dict[str, Any]:
    """The back-test line of one labelled batch (not written: see record_backtests)."""
    import pandas as pd

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
    line["rows_repeated"] = int(known.sum()) - len(labelled)  # a client labelled twice: its last row judged
    labelled["outcome"] = binary_target(labelled[config.target], config.positive_label)
    labelled[ids] = labelled[ids].astype(object)  # the lists' and the log's ids are plain text
    earlier = latest_predictions(config, labelled[ids], parse_time(arrived_at), infos)
    matched = labelled.merge(earlier, on=ids, how="inner", validate="one_to_one")
    line["rows_matched"] = len(matched)
    line["rows_unmatched"] = len(labelled) - len(matched)
    sizes = {info["file"]: info.get("rows") for info in infos}
    line["lists"] = [
        {
            "list": source,
            "version": group["version"].iloc[0],
            "written_at": pd.Timestamp(group["time"].iloc[0]).isoformat(),
            "clients_on_list": sizes.get(source),
            **list_figures(group, int(group["budget"].iloc[0]), sizes.get(source)),
        }
        for source, group in matched.groupby("source", sort=True)
        if source != PREDICTION_LOG
    ]
    line["versions"] = [
        {"version": version, **figures(group["outcome"].to_numpy(), group["risk"].to_numpy(), group["flagged"])}
        for version, group in matched.groupby("version", sort=True)
    ]
    return line


def list_figures(matched: pd.DataFrame, budget: int, on_list: int | None) -> dict[str, Any]:
    """One list's figures on its clients labelled in the batch; ``on_list``: the clients it held
    (None when its JSON does not say: the unknown outcomes are then not counted)."""
    import numpy as np

    outcome, risk = matched["outcome"].to_numpy(), matched["risk"].to_numpy()
    contacted = (matched["rank"] <= budget).to_numpy()
    result = figures(outcome, risk, matched["flagged"])
    positives = int(outcome.sum())
    reached = int(outcome[contacted].sum())
    result.update(
        contact_budget=budget,
        outcome_unknown=None if on_list is None else on_list - len(matched),
        contacted=share(outcome[contacted]),
        contacted_outcome_unknown=None if on_list is None else int(min(budget, on_list) - contacted.sum()),
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


def record_backtests(config: Config, batches: list[tuple[pd.DataFrame, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Back-test each labelled batch ``(rows, its ingestion record entry)`` and append its line.
    Returns the lines written (none when no prediction was ever made)."""
    from risk.monitoring import predlog

    infos = call_list_infos(config)
    if not batches or (not infos and not predlog.day_files(config)):
        return []
    written = []
    for rows, entry in batches:
        batch = {"file": entry["name"], "run_id": entry.get("run_id")}
        # The file's rows already in the master arrived before: not back-tested again, but counted.
        batch.update({key: entry[key] for key in ("rows_read", "duplicates_dropped") if key in entry})
        if entry.get("source"):
            batch["source"] = entry["source"]
        line = backtest_batch(config, rows, entry["ingested_at"], batch, infos)
        mark_report_due(config)
        append_json_line(backtest_path(config), line)
        written.append(line)
    return written


# ----------------------------------------------------------------------------- what people see


def summary(config: Config) -> dict[str, Any]:
    """The figures the page, ``/monitoring`` and the gauges show: the realised history of every
    version, the back-tested batches, and the last of each."""
    realised = realised_history(config)
    tested = backtests(config)
    last_list = next((item for line in reversed(tested) for item in reversed(_entries(line.get("lists")))), None)
    return {
        "realised": realised,
        "last_realised": realised[-1] if realised else None,
        "backtests": tested,
        "last_list": last_list,
        "notes": _summary_notes(realised, tested),
    }


def _entries(value: Any) -> list[dict[str, Any]]:
    """The objects of a record's list field; none when a hand-edited line holds something else there."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _summary_notes(realised: list[dict[str, Any]], tested: list[dict[str, Any]]) -> list[str]:
    notes = []
    if not realised:
        notes.append("no labelled batch has been judged against a deployed version yet")
    if not tested:
        notes.append("no labelled batch has arrived after a call list or a logged prediction yet")
    return notes
