"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import sys

from kamiyo import create_app
from kamiyo.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One clear line, no traceback: the operator only needs the variable's name.
    sys.exit(f"kamiyo: configuration error: {exc}")
