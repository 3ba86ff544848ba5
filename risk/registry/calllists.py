"""The call lists: every client of the book ranked by the current version's risk, riskiest first.

One home for the list's format: its folder, its columns, its JSON, the reader every reader uses
(the API, the page) and the writer the run uses. The files, in ``call_list_path``:

- ``<UTC stamp>_<version>.csv`` and ``.json`` beside it: one list, never rewritten;
- ``latest.csv`` and ``latest.json``: copies of the newest, written after it, ``latest.json`` last.

``latest.json`` names the stamped list it describes (``file``) and the reader reads that one, so a
reader never pairs one list's JSON with another's rows, even while a run is writing. A run killed
before ``latest.json`` leaves the previous list current and the next run writes the list again.

Stdlib only at import: fullprocess's cron fast path reads ``latest.json`` on every tick.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from risk.core.files import atomic_path, atomic_write_json
from risk.core.jsonfiles import read_json
from risk.core.settings import Config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

    import numpy as np
    import pandas as pd

LATEST_CSV = "latest.csv"
LATEST_JSON = "latest.json"
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")
# The columns after the id columns, in the file's order (``rank`` comes first, before the ids).
SCORE_COLUMNS = ("risk", "band", "flagged", *REASON_COLUMNS, "previous_rank", "change")
CHANGES = ("new", "up", "down", "same")


class CallListError(ValueError):
    """A call list's files are damaged or do not match; the message names the file."""


def call_list_folder(config: Config) -> Path:
    """Where the call lists go: ``call_list_path``, relative to the config's folder."""
    return (config.root / config["call_list_path"]).resolve()


def latest_csv_path(config: Config) -> Path:
    return call_list_folder(config) / LATEST_CSV


def latest_json_path(config: Config) -> Path:
    return call_list_folder(config) / LATEST_JSON


def list_columns(id_columns: list[str]) -> list[str]:
    """A list's columns in order: ``rank``, the id columns, then SCORE_COLUMNS."""
    return ["rank", *id_columns, *SCORE_COLUMNS]


def latest_list_info(config: Config) -> dict[str, Any] | None:
    """The newest list's JSON, or None when no list has been written (stdlib only: the cron fast path).

    Raises CallListError when ``latest.json`` exists but cannot be read as a list's JSON."""
    path = latest_json_path(config)
    try:
        info = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CallListError(f"{path} cannot be read: {exc}") from None
    if (
        not isinstance(info, dict)
        or not _is_list_name(info.get("file"))
        or not isinstance(info.get("id_columns"), list)
    ):
        raise CallListError(f"{path} is not a call list's JSON (no file in its folder, or no id_columns)")
    return info


def _is_list_name(name: Any) -> bool:
    """A CSV's bare name in the list's folder: a path elsewhere would be read (and served) in its place."""
    return isinstance(name, str) and name.endswith(".csv") and name == Path(name).name and name not in (".", "..")


def latest_call_list(
    config: Config, columns: list[str] | None = None, rows: int | None = None
) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """``(the newest list's JSON, the list)``, or None when no list has been written yet.

    The list is typed: ids as text, ``rank`` int, ``risk`` float, ``flagged`` bool, reasons as text
    ("" where a client has fewer), ``previous_rank`` a nullable int (<NA> when new), ``change`` text.
    ``columns``: only these (say the ids and ``rank``: a fraction of a large list's memory).
    ``rows``: only the first so many (the API answers at most its row limit: a million-row list parsed
    whole cost each worker seconds and hundreds of MiB); the file is still checked whole by its line count.
    Raises CallListError when the files are damaged."""
    info = latest_list_info(config)
    if info is None:
        return None
    folder = call_list_folder(config)
    path = folder / info["file"]
    if not path.is_file():  # the stamped list removed by hand: latest.csv is its copy
        path = folder / LATEST_CSV
    frame = read_call_list(path, info["id_columns"], columns, rows)
    if "rows" in info:
        held = len(frame) if rows is None else _rows_held(path, info["id_columns"], info["rows"])
        if held != info["rows"]:
            raise CallListError(f"{path} holds {held} rows but {LATEST_JSON} says {info['rows']}")
    return info, frame


def _rows_held(path: Path, id_columns: list[str], expected: int) -> int:
    """How many rows the list's file holds: its line count when that agrees with ``expected`` (a
    quoted value with a line break in it would not), else a full parse."""
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    if lines - 1 == expected:
        return expected
    return len(read_call_list(path, id_columns, ["rank"]))


def _holds_carriage_return(path: Path) -> bool:
    """Read a MiB at a time: a memory map's pages, once searched, counted as the process's own
    (a 1,000,000-client list's largest process went from 539 to 589 MiB)."""
    with open(path, "rb") as handle:
        return any(b"\r" in block for block in iter(lambda: handle.read(1 << 20), b""))


def read_call_list(
    path: Path, id_columns: list[str], columns: list[str] | None = None, rows: int | None = None
) -> pd.DataFrame:
    """One list's CSV, typed (see latest_call_list); ``columns``: only these; ``rows``: only the first
    so many. Raises CallListError naming the file."""
    import pandas as pd

    from risk.core.tables import CSV_ERRORS

    text_columns = [*id_columns, "band", *REASON_COLUMNS, "change"]
    dtype: dict[str, Any] = {name: str for name in text_columns}
    dtype.update({"rank": "int64", "risk": "float64", "flagged": "int8", "previous_rank": "Int64"})
    expected = list_columns(id_columns)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != expected:
            raise CallListError(f"{path} has columns {header}, not {expected}")
        # keep_default_na=False: an id "NA" stays "NA" and a blank reason stays "".
        frame = pd.read_csv(
            path,
            dtype=dtype,
            keep_default_na=False,
            na_values={"previous_rank": [""]},
            encoding="utf-8",
            usecols=columns,
            nrows=rows,
        )
    except (OSError, *CSV_ERRORS) as exc:
        raise CallListError(f"{path} cannot be read as a call list: {exc}") from None
    if "flagged" in frame.columns:
        frame["flagged"] = frame["flagged"].astype(bool)
    return frame[columns] if columns is not None else frame


# ----------------------------------------------------------------------------- making a list


def ranked(frame: pd.DataFrame, id_columns: list[str]) -> pd.DataFrame:
    """``frame`` (id columns, ``risk``, ...) sorted riskiest first, ties by id (as text, so the order
    is stable whatever the book's row order), with ``rank`` from 1 in front."""
    order = frame.sort_values(["risk", *id_columns], ascending=[False] + [True] * len(id_columns), kind="mergesort")
    order = order.reset_index(drop=True)
    order.insert(0, "rank", range(1, len(order) + 1))
    return order


def with_changes(current: pd.DataFrame, previous: pd.DataFrame | None, id_columns: list[str]) -> pd.DataFrame:
    """``current`` (ranked) with ``previous_rank`` (<NA> for a client not on the previous list) and
    ``change``: new, up (a smaller rank than before), down or same."""
    import pandas as pd

    result = current.copy()
    if previous is None or previous.empty:
        result["previous_rank"] = pd.array([pd.NA] * len(result), dtype="Int64")
        result["change"] = "new"
        return result
    before = previous[[*id_columns, "rank"]].rename(columns={"rank": "previous_rank"})
    merged = result[id_columns].merge(before, on=id_columns, how="left", validate="one_to_one")
    result["previous_rank"] = merged["previous_rank"].astype("Int64").array  # .to_numpy() made it float: "2.0"
    now, then = result["rank"].to_numpy(), result["previous_rank"]
    change = pd.Series("same", index=result.index, dtype=object)
    change[then.isna().to_numpy()] = "new"
    known = then.notna().to_numpy()
    then_values = then.fillna(0).to_numpy(dtype="int64")
    change[known & (now < then_values)] = "up"
    change[known & (now > then_values)] = "down"
    result["change"] = change
    return result


def budget_summary(risk: np.ndarray, flagged: np.ndarray, budget: int) -> dict[str, Any]:
    """What one round of ``budget`` calls reaches, for risks sorted riskiest first.

    ``expected_positives_reached``: the share of the sum of the risks (the expected number of
    clients who leave, if the risks are calibrated) held by the first ``budget`` clients."""
    import numpy as np

    total = float(np.sum(risk))
    flagged_count = int(np.count_nonzero(flagged))
    return {
        "contact_budget": int(budget),
        "flagged": flagged_count,
        "flagged_beyond_budget": int(np.count_nonzero(flagged[budget:])),
        "expected_positives": round(total, 3),
        "expected_positives_reached": round(float(np.sum(risk[:budget])) / total, 6) if total > 0 else None,
    }


def stamped_name(stamp: str, version: str, folder: Path) -> str:
    """``<stamp>_<version>``, with ``-2``, ``-3``... when a list of that second already exists."""
    stem, n = f"{stamp}_{version}", 1
    while (folder / f"{stem}.csv").exists() or (folder / f"{stem}.json").exists():
        n += 1
        stem = f"{stamp}_{version}-{n}"
    return stem


def write_call_list(config: Config, info: dict[str, Any], frame: pd.DataFrame, stamp: str) -> Path:
    """Write one list (typed as list_columns(info["id_columns"])) and its JSON, then the latest copies,
    ``latest.json`` last; each file atomically. Returns the stamped CSV's path.

    ``info`` gets ``file`` (the stamped CSV's name) and ``rows``."""
    folder = call_list_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stamped_name(stamp, info["version"], folder)
    info = {**info, "file": f"{stem}.csv", "rows": len(frame)}
    columns = list_columns(info["id_columns"])
    if list(frame.columns) != columns:
        raise CallListError(f"a call list must have columns {columns}, not {list(frame.columns)}")
    out = frame.copy()
    out["flagged"] = out["flagged"].astype("int8")
    with atomic_path(folder / f"{stem}.csv") as tmp:
        out.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")  # streamed: a large list is not held twice
        if _holds_carriage_return(tmp):  # to_csv may have left one unquoted, where pandas ends a row
            from risk.core.tables import csv_bytes

            tmp.write_bytes(csv_bytes(out))
    with atomic_path(folder / LATEST_CSV) as tmp:
        shutil.copyfile(folder / f"{stem}.csv", tmp)  # a copy of the bytes: the frame is not written twice
    atomic_write_json(folder / f"{stem}.json", info)
    atomic_write_json(folder / LATEST_JSON, info)
    return folder / f"{stem}.csv"
