"""Run the risk API on Flask's development server, for trying things out.

``python app.py [--config PATH] [--port N]`` serves the app of ``risk.api.service.create_app`` on
127.0.0.1 (port 8000 unless given); production is ``make serve`` (gunicorn, ``gunicorn.conf.py``,
``wsgi.py``). ``risk/api/service.py`` describes the endpoints.
"""

from __future__ import annotations

import logging
import sys

from risk.api.service import create_app
from risk.core.cli import script_parser
from risk.core.logs import install_log_handlers
from risk.core.settings import ConfigError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("Run the risk API on Flask's development server (production: make serve).")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    install_log_handlers()
    try:
        app = create_app(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 1
    app.run(host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
