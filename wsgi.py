"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import sys

from kamiyo import create_app
from kamiyo.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    if "preflight" in sys.argv[1:]:
        # preflight reports it as a failed check (exit 2), with the secrets' own lines.
        from kamiyo.release.cli import config_error_app

        app = config_error_app(exc)
    else:
        # One clear line, no traceback: the operator only needs the variable's name.
        sys.exit(f"kamiyo: configuration error: {exc}")
