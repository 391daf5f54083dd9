"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import sys

from kamiyo import create_app
from kamiyo.config import ConfigError
from kamiyo.hardening import set_umask
from kamiyo.release.cli import is_release_command, set_aside_absent_metrics_dir

# Before anything is created: `flask --app wsgi db upgrade` may make the SQLite database.
set_umask()
if is_release_command(sys.argv[1:]):
    set_aside_absent_metrics_dir()
try:
    app = create_app()
except ConfigError as exc:
    from kamiyo.release.cli import config_error_app

    if is_release_command(sys.argv[1:]):
        # preflight, verify-deploy and report say it as a failed check (exit 2).
        app = config_error_app(exc)
    else:
        # One clear line, no traceback: the operator only needs the variable's name.
        sys.exit(f"kamiyo: configuration error: {exc}")
