"""The WSGI entry for gunicorn (``make serve``): the app for $RISK_API_CONFIG or config.json."""

from risk.api.service import create_app

app = create_app()
