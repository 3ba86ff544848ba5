"""Set-up mistakes caught at the start of a run, before minutes of training, with the fix.

Checked: the test folder exists and holds labelled CSVs with the target and both classes, and
every column the config names (``target``, ``id_columns``, ``drop_columns``,
``categorical_columns``, ``protected_attributes``) is in at least one data file, else the close matches are named
("did you mean 'CustomerId'?").

Run before any work on new data, and by a run with nothing new when the config changed since the
checks last passed (its SHA-256 against the one recorded in ``logs/setup_check.json``): a wrong
``target`` fails the run after the edit, not the first one with new data.

Stdlib only, and cheap: data files are read for their first line, test files for their target
column until both classes have been seen. Files in the input folder that are not regular files
(links, FIFOs) are never opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from risk.core import artefacts
from risk.core.files import atomic_write_json, sha256_file
from risk.core.jsonfiles import read_json_object
from risk.core.names import close_names
from risk.core.settings import Config, ConfigError
from risk.data import dbpull, ledger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HEADER_BYTES = 64 * 1024


class SetupError(ConfigError):
    """A set-up mistake; the message names it and says how to fix it."""


def check_setup(config: Config, digest: str | None = None) -> None:
    """Every check: the test data, then the column names. Raises SetupError. Once they pass, the
    config's digest (``digest`` where the caller has it) is recorded, so that runs with nothing
    new check again only when it changes."""
    check_test_data(config)
    check_columns(config)
    atomic_write_json(_setup_check_path(config), {"config_sha256": digest or config_digest(config)})


def check_setup_if_config_changed(config: Config) -> bool:
    """check_setup, where the config changed since it last passed (a wrong target fails the run that
    follows the edit, not the first one with new data); True where it ran. Cheap enough for every cron
    run: one hash of the config file and one small JSON read."""
    digest = config_digest(config)
    if read_json_object(_setup_check_path(config)).get("config_sha256") == digest:
        return False
    check_setup(config, digest)
    return True


def config_digest(config: Config) -> str:
    """The SHA-256 of the config file as it is now."""
    return sha256_file(config.path)


def _setup_check_path(config: Config) -> Path:
    return config.log_folder / artefacts.SETUP_CHECK_FILE


def check_columns(config: Config) -> None:
    """Each column the config names must be in some data file (input, master or test data)."""
    headers = data_headers(config)
    known = {column for columns in headers.values() for column in columns}
    # A database source's watermark column is checked by its own query (dbsource), pulled or not.
    known |= {source["watermark_column"] for source in config["database_sources"]}
    # The target must be in the data trained on, not only in the test files.
    training = {c for where, columns in headers.items() if not _is_test_file(config, where) for c in columns}
    for key in ("target", "id_columns", "drop_columns", "categorical_columns", "protected_attributes"):
        names = [config[key]] if key == "target" else list(config[key] or [])
        pool, which = (training, "training data file") if key == "target" else (known, "data file")
        for name in names:
            if pool and name not in pool:
                raise SetupError(
                    f"{key} names the column {name!r}, which no {which} has{did_you_mean(name, pool)}; "
                    f"fix {key} in {config.path}"
                )


def _is_test_file(config: Config, where: str) -> bool:
    return Path(where).parent == config.test_data_folder


def check_test_data(config: Config) -> None:
    """The test folder holds CSVs with the target column and rows of both classes."""
    folder, target = config.test_data_folder, config.target
    if not folder.is_dir():
        raise SetupError(
            f"test_data_path: the folder {folder} does not exist: create it and put in a labelled CSV "
            f"with the target column {target!r} (the held-out rows every new model is scored on)"
        )
    files = [p for p in artefacts.csv_files(folder) if p.is_file()]
    if not files:
        raise SetupError(
            f"test_data_path: no CSV file in {folder}: put in a labelled CSV with the target column {target!r}"
        )
    seen, rows, values = set(), 0, set()
    for path in files:
        found, counted = _target_classes(path, config, stop_when_both=not seen, values=values)
        seen |= found
        rows += counted
    if True not in seen and len(values) > 1:  # both classes are there: the label is what is wrong
        raise SetupError(
            f"positive_label {config.positive_label!r} matches none of the values of {target!r} in the test data, "
            f"which are {sorted(values)[:10]}: set positive_label in {config.path} to the one that means the event"
        )
    if len(seen) < 2:
        which = "every" if True in seen else "no"
        raise SetupError(
            f"the test data in {folder} holds one class only: {which} one of its {rows} labelled row(s) has "
            f"{target} = {config.positive_label!r}, so no score on it says anything; add rows of both classes"
        )


def data_headers(config: Config) -> dict[str, list[str]]:
    """{where: columns} for the master dataset, each file in the input folder and each test file."""
    headers: dict[str, list[str]] = {}
    try:
        state = ledger.master_state(config)
    except (OSError, ValueError):  # unreadable or damaged: the master's columns are not counted
        state = None
    if state and isinstance(state.get("columns"), list):
        headers["master dataset"] = [str(c) for c in state["columns"]]
    # Database pulls land as snapshot files: their columns count too.
    for folder in (config.input_folder, config.test_data_folder, dbpull.snapshot_folder(config)):
        for path in _regular_files(folder):
            columns = read_header(path)
            if columns:
                headers[str(path)] = columns
    return headers


def did_you_mean(name: str, known: set[str] | list[str]) -> str:
    """' (did you mean 'CustomerId'?)', or the columns there are."""
    known = sorted(known)
    close = close_names(name, known)
    if not close:
        return f" (the columns are {', '.join(repr(k) for k in known[:20])}{', ...' if len(known) > 20 else ''})"
    return f" (did you mean {' or '.join(repr(k) for k in close)}?)"


def read_header(path: Path) -> list[str] | None:
    """The column names on a file's first line; None for anything but a readable regular file."""
    data = _read_start(path)
    if data is None:
        return None
    import csv  # imported where used: the cron fast path imports this module, rarely calls it

    first_line = data.decode("utf-8-sig", errors="replace").splitlines()[:1]
    if not first_line:
        return None
    return pandas_names(next(csv.reader(first_line), []))


def pandas_names(header: list[str]) -> list[str]:
    """Column names as ingestion (pandas) reads them: an empty name is "Unnamed: <position>"."""
    return [column.strip() or f"Unnamed: {position}" for position, column in enumerate(header)]


def _target_classes(path: Path, config: Config, stop_when_both: bool, values: set[str]) -> tuple[set[bool], int]:
    """Which classes (positive or not) a test file's target holds, and its labelled row count;
    adds the first few distinct labels to ``values``."""
    import csv

    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = pandas_names(next(reader, []))
        if config.target not in header:
            raise SetupError(
                f"the test file {path} has no target column {config.target!r}{did_you_mean(config.target, header)}: "
                f'add the column, or fix "target" in {config.path}'
            )
        index, seen, rows = header.index(config.target), set(), 0
        for row in reader:
            if index >= len(row) or not row[index].strip():
                continue
            rows += 1
            seen.add(is_positive(row[index], config.positive_label))
            if len(values) < 11:
                values.add(row[index].strip())
            if stop_when_both and len(seen) == 2:
                break
    return seen, rows


def is_positive(value: str, positive_label: Any) -> bool:
    """Whether a label as written in a CSV is the configured positive label (1, 1.0 and "1" alike)."""
    value = value.strip()
    if value == str(positive_label).strip():
        return True
    if isinstance(positive_label, (int, float)):
        try:
            return float(value) == float(positive_label)
        except ValueError:
            return False
    return False


def _regular_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]


def _read_start(path: Path) -> bytes | None:
    """The first bytes of a regular file, never blocking on a FIFO nor following a link."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, HEADER_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
