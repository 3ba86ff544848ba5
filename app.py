"""The prediction API and the Risk-O-Meter page, served by gunicorn through ``wsgi.py``.

``create_app(config_path=None)`` builds the Flask app for one config (default: the
``RISK_API_CONFIG`` environment variable, else the ``config.json`` beside this file). The app
never trains and never runs pip: it serves the current deployment. Every request that needs
the model reads the ``current`` link once; when it points at a new version, that version is
loaded, verified (SHA-256 of every file before unpickling), compiled and self-checked, and only
then swapped in with one reference assignment. If loading fails, the old verified model keeps
serving and ``/readyz`` says why. Every model-dependent answer names the version that gave it.

Endpoints (JSON unless said): ``POST /prediction``, ``GET /scoring``, ``GET /summarystats``,
``GET /diagnostics``, ``GET /model``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
(Prometheus text) and ``GET /`` (the Risk-O-Meter page). With ``API_TOKEN`` set, everything
but ``/healthz`` and the page's static shell needs ``Authorization: Bearer <token>``.
Repeated slashes in a path are merged (``//prediction`` is ``/prediction``); answers show
paths relative to the project folder, never the server's absolute paths.

Every request enters through ``requestgate.RequestGate`` (the token, the body limit, the request
metrics), which answers JSON and CSV predictions itself through ``prediction_answer``; Flask
answers the rest. ``requestinput.py`` turns a request's rows into a checked batch,
``datafiles.py`` finds a data file a request names, ``compiledmodel.py`` scores the batch and
``apimetrics.py`` keeps the Prometheus metrics.

``python app.py [--config PATH] [--port N]`` runs Flask's development server on 127.0.0.1,
for trying things out; production is ``make serve`` (gunicorn, ``gunicorn.conf.py``).
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
