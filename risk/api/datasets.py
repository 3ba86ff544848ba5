"""Data files a prediction request names: a CSV directly inside the test data or ingested data folder.

``{"dataset": "testdata.csv"}`` names one by file name; the classic course's clients name one by
its path relative to the project folder (``testdata/testdata.csv``). Either way only a file
directly inside those two folders is read, after symbolic links are followed; any other path is
refused with an ``InputError`` that lists what is there.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from risk.core import artefacts
from risk.core.settings import Config
from risk.core.tables import CSV_ERRORS, read_typed_csv
from risk.model.batches import InputError


def dataset_frame(config: Config, name: Any, metadata: dict[str, Any], max_rows: int) -> pd.DataFrame:
    """A CSV named by file name inside the test data or ingested data folder; any other path is refused."""
    folders = [config.test_data_folder, config.output_folder]
    if not isinstance(name, str) or not _plain_csv_name(name):
        raise InputError(
            "dataset must be the name of a .csv file in the test data or ingested data folder (a plain file name: no folders, no '..')"
        )
    for folder in folders:
        root = folder.resolve()
        path = (root / name).resolve()  # follows symlinks, so a link out of the folder is refused below
        if path.parent == root and path.is_file():
            return _read_dataset(path, metadata, max_rows)
    available = sorted({p.name for folder in folders for p in artefacts.csv_files(folder)})
    raise InputError(f"dataset: no such CSV file in the test data or ingested data folder; available: {available}")


def project_path_frame(config: Config, field: str, path: Any, metadata: dict[str, Any], max_rows: int) -> pd.DataFrame:
    """A CSV named by its path relative to the project folder (``testdata/testdata.csv``), with the
    same containment as ``dataset``: only a file directly inside the test data or ingested data
    folder, after symlinks are resolved; a bare file name is looked up as ``dataset`` does."""
    if not isinstance(path, str) or not _relative_csv_path(path):
        raise InputError(
            f"{field} must be the path of a .csv file in the test data or ingested data folder, relative to the "
            "project folder (for example 'testdata/testdata.csv'; no absolute paths, no '..')"
        )
    parts = PurePosixPath(path).parts
    if len(parts) == 1:
        return dataset_frame(config, parts[0], metadata, max_rows)
    root = config.root.resolve()
    folders = [config.test_data_folder, config.output_folder]
    # The folder as written must be a data folder as configured (no detour through a link), and
    # the file, its links followed, must still lie directly inside it.
    named_folder = os.path.normpath(root / PurePosixPath(*parts[:-1]))
    for key, folder in (("test_data_path", config.test_data_folder), ("output_folder_path", config.output_folder)):
        if named_folder == os.path.normpath(root / config[key]):
            resolved = (root / PurePosixPath(*parts)).resolve()
            if resolved.parent == folder and resolved.is_file():
                return _read_dataset(resolved, metadata, max_rows)
    available = sorted(os.path.relpath(p, root) for folder in folders for p in artefacts.csv_files(folder))
    raise InputError(f"{field}: no such CSV file in the test data or ingested data folder; available: {available}")


def _relative_csv_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not path.startswith("/")
        and "\\" not in path
        and "\x00" not in path
        and all(part != ".." and not part.startswith(".") for part in parts)
        and PurePosixPath(path).suffix.lower() == ".csv"
        and len(path) <= 1024
    )


def _plain_csv_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (
        len(path.parts) == 1
        and not name.startswith(".")
        and "\\" not in name
        and "\x00" not in name
        and path.suffix.lower() == ".csv"
        and len(name) <= 255
    )


def _read_dataset(path: Path, metadata: dict[str, Any], max_rows: int) -> pd.DataFrame:
    try:
        return read_typed_csv(path, metadata.get("column_kinds", {}), nrows=max_rows + 1 if max_rows else None)
    except CSV_ERRORS:
        raise InputError("dataset: the file is not a readable CSV") from None
