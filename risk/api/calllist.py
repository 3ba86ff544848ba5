"""``GET /calllist`` and ``GET /calllist.csv``: the newest call list as the run wrote it.

The list's files (``risk.registry.calllists``: ``latest.json`` naming a stamped CSV) are read once
per change, not per request: ``CallListCache`` keeps the first ``api_max_rows`` clients as answer
objects and looks at the files' state (two ``stat`` calls) on each request. A request asks for the
first ``top`` clients (default: the list's ``contact_budget``; at most ``api_max_rows``, the limit of
a prediction's rows).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from risk.api.answers import encode_json
from risk.core.settings import Config
from risk.registry import calllists

logger = logging.getLogger(__name__)

TOP_PARAMETER = "top"
MAX_TOP_DIGITS = 12  # more digits than any list can hold rows; refused before int() reads them
# The list's JSON fields an answer carries under their own names (version and written_at are renamed;
# ``book`` is left out: a database entry's URL may hold a password).
LIST_FIELDS = (
    "model",
    "threshold",
    "bands",
    "rows",
    "contact_budget",
    "flagged",
    "flagged_beyond_budget",
    "expected_positives",
    "expected_positives_reached",
    "warnings",
    "method",
    "book_hash",
    "book_checks",
    "previous",
    "id_columns",
)


class CallListMissing(LookupError):
    """No call list has been written yet; the message says how to get one."""


class CallListUnavailable(RuntimeError):
    """The list's files are damaged or do not match; the message says which and why."""


class BadTop(ValueError):
    """``?top=`` is not a whole number in range; the message names the problem."""


@dataclass(frozen=True)
class CallListSnapshot:
    """One list as read: its JSON, what an answer says of it, its first clients (each encoded as
    JSON once, here, not per request) and the CSV they came from."""

    info: dict[str, Any]
    facts: dict[str, Any]
    clients_json: list[bytes]
    csv_path: Path
    key: tuple[Any, ...]

    @property
    def version(self) -> str:
        return str(self.info.get("version", ""))


def missing_message(config: Config) -> str:
    if config["client_book"] is None:
        return (
            "no call list yet: set client_book in the config to the current clients (a CSV file, a folder of "
            "them or a database table; docs/pipeline.md, 'The call list'), then run `python fullprocess.py`"
        )
    return "no call list yet: client_book is set; the next run of `python fullprocess.py` writes the list"


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    """The file's state (None when absent); a folder that cannot be looked into is a list that cannot be read."""
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise CallListUnavailable(f"the call list cannot be read: {exc}") from None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class CallListCache:
    """The newest list, read again only when ``latest.json`` or the CSV it names has changed.

    ``relative`` rewrites the server's paths in a text (the service's ``project_relative``): applied
    to the list's facts and to the reasons a list cannot be read, once per change.
    """

    def __init__(self, config: Config, relative: Callable[[str], str] = str):
        self.config = config
        self.relative = relative
        self.max_rows = int(config["api_max_rows"])
        self._json_path = calllists.latest_json_path(config)
        self._snapshot: CallListSnapshot | None = None
        # A list that could not be read, by its files' state: not read again (a 1,000,000-row CSV is
        # seconds of work) until a run or a person changes them.
        self._failure: tuple[tuple[Any, ...], str] | None = None
        self._lock = threading.Lock()

    def get(self) -> CallListSnapshot:
        """The newest list; CallListMissing without one, CallListUnavailable when it cannot be read."""
        try:
            return self._get()
        except CallListUnavailable as exc:
            raise CallListUnavailable(self.relative(str(exc))) from None

    def _get(self) -> CallListSnapshot:
        snapshot = self._snapshot
        json_key = _stat_key(self._json_path)
        if json_key is None:
            raise CallListMissing(missing_message(self.config))
        if snapshot is not None and snapshot.key == (json_key, _stat_key(snapshot.csv_path)):
            return snapshot
        with self._lock:  # one thread reads a changed list; the others wait for it rather than read it too
            snapshot = self._snapshot
            if snapshot is not None and snapshot.key == (_stat_key(self._json_path), _stat_key(snapshot.csv_path)):
                return snapshot
            files = self._files_state()
            if self._failure is not None and self._failure[0] == files:
                raise CallListUnavailable(self._failure[1])
            try:
                self._snapshot = snapshot = self._read()
            except CallListUnavailable as exc:
                self._failure = (files, str(exc))
                raise
            self._failure = None
        return snapshot

    def _files_state(self) -> tuple[Any, ...]:
        """The state of latest.json, latest.csv and the stamped CSV latest.json names (the one read):
        a failure is remembered until one of them changes, say a damaged list put back by hand."""
        try:
            info = calllists.latest_list_info(self.config)
        except calllists.CallListError:
            info = None
        stamped = calllists.call_list_folder(self.config) / info["file"] if info is not None else None
        return (
            _stat_key(self._json_path),
            _stat_key(calllists.latest_csv_path(self.config)),
            _stat_key(stamped) if stamped is not None else None,
        )

    def _read(self) -> CallListSnapshot:
        json_key = _stat_key(self._json_path)
        try:
            found = calllists.latest_call_list(self.config, rows=self.max_rows)
            if found is None:
                raise CallListMissing(missing_message(self.config))
            info, frame = found
            csv_path = _read_path(self.config, info)
            clients = client_objects(frame.head(self.max_rows), list(info["id_columns"]))
            clients_json = [encode_json(client)[:-1] for client in clients]  # without the newline
            facts = list_facts(info, self.relative)
        # CallListError is a ValueError, as are pandas' own; the rest: values the reader let through
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.error("the call list cannot be read: %s", exc)
            raise CallListUnavailable(f"the call list cannot be read: {exc}") from None
        logger.info("call list of %s read: %d clients from %s", info.get("version"), len(frame), csv_path.name)
        return CallListSnapshot(info, facts, clients_json, csv_path, (json_key, _stat_key(csv_path)))


def _read_path(config: Config, info: dict[str, Any]) -> Path:
    """The CSV ``latest_call_list`` read: the stamped file ``latest.json`` names, else ``latest.csv``."""
    folder = calllists.call_list_folder(config)
    stamped = folder / os.path.basename(str(info["file"]))
    return stamped if stamped.is_file() else calllists.latest_csv_path(config)


def client_objects(frame: Any, id_columns: list[str]) -> list[dict[str, Any]]:
    """Each row as ``{<ids>, rank, risk, band, flagged, reasons, change, previous_rank}``; blank reasons dropped."""
    import pandas as pd

    columns = {name: frame[name].tolist() for name in frame.columns}
    reasons = list(zip(*(columns[name] for name in calllists.REASON_COLUMNS)))
    previous = [None if pd.isna(value) else int(value) for value in columns["previous_rank"]]
    clients = []
    for i in range(len(frame)):
        client: dict[str, Any] = {name: columns[name][i] for name in id_columns}
        client.update(
            rank=int(columns["rank"][i]),
            risk=float(columns["risk"][i]),
            band=columns["band"][i],
            flagged=bool(columns["flagged"][i]),
            reasons=[text for text in reasons[i] if isinstance(text, str) and text.strip()],
            change=columns["change"][i],
            previous_rank=previous[i],
        )
        clients.append(client)
    return clients


def parse_top(values: list[str], default: int, maximum: int) -> int:
    """``?top=``: absent, the default (the list's budget, at most ``maximum``); else a whole number from 1 to ``maximum``."""
    if not values:
        return max(1, min(default, maximum))
    if len(values) > 1:
        raise BadTop(f"give top once, not {len(values)} times")
    text = values[0]
    rule = f"top must be a whole number from 1 to {maximum} (api_max_rows)"
    if not text.isascii() or not text.isdigit() or len(text) > MAX_TOP_DIGITS:
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise BadTop(f"{rule}, not {shown!r}")
    top = int(text)
    if not 1 <= top <= maximum:
        raise BadTop(f"{rule}, not {top}")
    return top


def list_facts(info: dict[str, Any], relative: Callable[[str], str]) -> dict[str, Any]:
    """What an answer says of the list, its paths (in warnings or the book's checks) made relative."""
    facts = {
        "model_version": info.get("version"),
        "scored_at": info.get("written_at"),
        **{key: info.get(key) for key in LIST_FIELDS},
    }
    return json.loads(relative(json.dumps(facts, default=str)))


def answer(snapshot: CallListSnapshot, top: int, current_version: str | None) -> bytes:
    """The JSON of ``GET /calllist``: the list's facts, then its first ``top`` clients (``clients``, last)."""
    clients = snapshot.clients_json[:top]
    head = encode_json(
        {
            **snapshot.facts,
            "current_version": current_version,
            "top": top,
            "shown": len(clients),
            "download": "/calllist.csv",
        }
    )  # "{...}\n"
    return b"".join((head[:-2], b',"clients":[', b",".join(clients), b"]}\n"))


def download_name(snapshot: CallListSnapshot) -> str:
    """``calllist_<stamp>_<version>.csv``: the name says which list it is once saved among others."""
    stem = snapshot.csv_path.stem
    return f"calllist_{stem if stem != 'latest' else snapshot.version or 'latest'}.csv"
