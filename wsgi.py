"""The WSGI entry for gunicorn (``make serve``): the app for $RISK_API_CONFIG or config.json."""
from app import create_app

app = create_app()
