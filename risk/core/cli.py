"""What every top-level script does around its work: the ``--config`` option, the log handlers,
loading the config, and a known failure as one logged line and exit code 1.

Stdlib only: ``fullprocess.py`` imports this on every cron tick.
"""

from __future__ import annotations

import argparse
import json

from risk.core.logs import install_log_handlers
from risk.core.settings import Config, ConfigError, load_config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    import logging
    from collections.abc import Callable
    from typing import Any


def script_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--config`` option every script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="path to config.json (default: the one beside the scripts)")
    return parser


def run_script(
    args: argparse.Namespace,
    step: Callable[[Config], Any],
    then: Callable[[Any], int],
    *,
    logger: logging.Logger,
    errors: tuple[type[BaseException], ...] = (),
    console_tracebacks: bool = True,
) -> int:
    """Install the log handlers (DEBUG with ``args.verbose``, where the script has ``-v``), load
    ``args.config`` and run ``step`` on it; a ConfigError or one of ``errors`` is logged on
    ``logger`` (the script's, so the line names the script) and gives exit code 1. Otherwise
    ``then`` is given what ``step`` returned, outside the error handling (it prints the result),
    and returns the exit code.
    """
    install_log_handlers(getattr(args, "verbose", False), console_tracebacks=console_tracebacks)
    try:
        result = step(load_config(args.config))
    except (ConfigError, *errors) as exc:
        logger.error("%s", exc)
        return 1
    return then(result)


def print_json(result: Any) -> int:
    """Print ``result`` as indented JSON; exit code 0 (a ``then`` for :func:`run_script`)."""
    print(json.dumps(result, indent=2))
    return 0
