"""The installed version of a package, as the metadata of a model and the package check state it."""

from __future__ import annotations

import logging
from importlib import metadata as package_metadata

logger = logging.getLogger(__name__)


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None
