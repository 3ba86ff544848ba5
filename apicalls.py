"""Call every endpoint of a running risk API and write every answer to ``apireturns.txt``.

``python apicalls.py [--config PATH] [--url URL] [--output FILE]``: the URL defaults to the
config's ``api_url``, the output to ``apireturns.txt`` beside the config. With ``API_TOKEN`` set
in the environment, every call sends it as a Bearer token. Of each batch answer the file keeps
the first few predictions and says how many it left out, so that it stays small and readable. Exits 1 if any call failed: no
answer, or a status other than 2xx. ``/summarystats`` and ``/diagnostics`` answer 503 until
``python diagnostics.py`` has run for the served version, and that counts as a failure: the
system is not fully up. ``/calllist`` answers 404 until a client book is configured and a list
written; that is not a failure, and the output says so.

The work is done by ``risk/api/client.py``; its docstring says how.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from risk.api.client import render, run_calls
from risk.core.artefacts import API_RETURNS_FILE
from risk.core.cli import script_parser
from risk.core.files import atomic_write_text
from risk.core.logs import install_log_handlers
from risk.core.settings import ConfigError, load_config

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--url", help="the API's base URL (default: api_url from the config)")
    parser.add_argument("--output", help=f"where to write the answers (default: {API_RETURNS_FILE} beside the config)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)
    install_log_handlers()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 1
    base_url = (args.url or config["api_url"]).rstrip("/")
    output = Path(args.output) if args.output else config.root / API_RETURNS_FILE
    answers = run_calls(base_url, config, os.environ.get("API_TOKEN") or None, args.timeout)
    atomic_write_text(output, render(answers, base_url))
    for answer in answers:
        level = logging.INFO if answer.ok else logging.ERROR
        logger.log(
            level,
            "%s %s -> %s",
            answer.call.method,
            answer.call.path,
            answer.status if answer.status is not None else answer.body,
        )
    failed = [a for a in answers if not a.ok]
    print(f"{len(answers) - len(failed)} of {len(answers)} calls succeeded; answers written to {output}")
    missing: dict[str, list[str]] = {}  # the same sentence once, with every path that answered it
    for answer in answers:
        if answer.missing:
            missing.setdefault(answer.message, []).append(answer.call.path)
    for message, paths in missing.items():
        print(f"{' and '.join(paths)} answered 404, not a failure: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
