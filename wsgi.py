"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import sys

from kamiyo import create_app
from kamiyo.config import ConfigError
from kamiyo.hardening import set_umask

# Before anything is created: `flask --app wsgi db upgrade` may make the SQLite database.
set_umask()
try:
    app = create_app()
except ConfigError as exc:
    # One clear line, no traceback: the operator only needs the variable's name.
    sys.exit(f"kamiyo: configuration error: {exc}")
