"""Where a deployed version's reports are, and reading back what earlier runs wrote.

Shared by diagnostics, reporting and the package check: the name of the version a report
describes, its folder under ``<reports>/``, paths as the people reading a report know them,
and a tolerant read of the JSON files the system itself wrote.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import versionstore
from settings import Config


def resolve_version(config: Config, version: str | None = None) -> str:
    """The name of ``version``, or of the current one; DeploymentError if there is none."""
    return versionstore.version_path(config, version).name


def report_folder(config: Config, version: str) -> Path:
    """``<reports>/<version>/``: every version keeps its own reports."""
    return config.reports_folder / version


def read_json_or_none(path: Path) -> Any:
    """A JSON file this system wrote, or None where it is absent or damaged (so it is made again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
