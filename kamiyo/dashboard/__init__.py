"""The ops dashboard: server-rendered pages for the payment team, behind a login.

Pages read each feature through its `queries.py` (the ops API reads the same functions);
admin actions go through the core (the scheduler, the gateway, API keys) or a feature's
registered ops action, and each writes the audit log.
"""

from __future__ import annotations

import datetime as dt

from flask import Flask

from ..config import ConfigError
from ..listing import same_page
from ..openapi import register_paths


def init_app(app: Flask) -> None:
    from . import actions, api, auth, views

    config = app.config
    config["SESSION_COOKIE_NAME"] = "kamiyo_session"
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    secure = str(config["DASHBOARD_COOKIE_SECURE"]).strip().lower()
    if secure not in ("auto", "true", "false", "1", "0"):
        raise ConfigError("DASHBOARD_COOKIE_SECURE must be auto, true or false")
    # Demo mode and debug serve plain http on loopback; anywhere else the cookie needs TLS.
    auto = not (app.debug or config.get("DEMO_MODE"))
    config["SESSION_COOKIE_SECURE"] = auto if secure == "auto" else secure in ("true", "1")
    # A fixed lifetime, counted from the login (auth.py checks it): activity does not extend it.
    config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(hours=float(config["DASHBOARD_SESSION_HOURS"]))
    config["SESSION_REFRESH_EACH_REQUEST"] = False
    auth.init_app(app)
    app.add_template_filter(_utc, "utc")
    app.add_template_global(same_page, "same_page")
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(actions.bp)
    app.register_blueprint(api.bp)
    register_paths(app, api.openapi_paths())


def _utc(epoch_seconds: float) -> str:
    return dt.datetime.fromtimestamp(float(epoch_seconds), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
