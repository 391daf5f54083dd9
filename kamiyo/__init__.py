"""Kamiyo Payments: the Flask application factory."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import config as config_module

log = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "migrations"))


def load_config(app: Flask, test_config: Mapping[str, Any] | None = None) -> None:
    """defaults → instance/config.py → environment → test mapping, then validate."""
    app.config.from_mapping(config_module.DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.update(config_module.from_environment(os.environ))
    if test_config:
        app.config.update(test_config)
    config_module.finalise(app.config, app.instance_path)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # sqlite3's own busy handler: writers wait instead of failing with "database is locked".
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault(
            "connect_args", {"timeout": app.config["SQLITE_BUSY_TIMEOUT_MS"] / 1000}
        )
    elif app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # Pooled connections that a restart or failover killed are replaced at checkout, not
        # found dead by a request (one ping a checkout).
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault("pool_pre_ping", True)


def _new_flask() -> Flask:
    return Flask(
        __name__,
        instance_path=os.environ.get("KAMIYO_INSTANCE_PATH") or None,
        instance_relative_config=True,
    )


def check_config() -> None:
    """Validate the configuration without building the app (gunicorn's master
    calls this so a missing secret stops start-up before any worker forks)."""
    load_config(_new_flask())


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = _new_flask()
    load_config(app, test_config)
    from . import service_lock

    serving = service_lock.serving(app)  # a server process, not a one-off command or a test
    if serving:
        service_lock.name_connections(app, "web")

    from .observability.logging import configure_logging, one_off_command

    # A one-off command (`flask api-keys list`, ...) shows warnings and errors only, unless
    # --verbose: its answer is on stdout, and the start-up lines would bury it.
    configure_logging(app.config["LOG_LEVEL"], one_off=one_off_command())
    # Alembic announces each of its plugins at INFO whenever it is imported.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    # Extensions, and every feature's tables on the metadata.
    from .extensions import db, migrate

    db.init_app(app)
    _postgres_lock_timeout(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    # Request plumbing, error handlers, the core routes and commands.
    from . import (
        backups,
        cli,
        health,
        http_errors,
        models,  # noqa: F401
        openapi,
        rate_limits,
        rollups,
        security_headers,
    )
    from .ids import IdConverter
    from .observability import metrics, request_context
    from .payments import models as payments_models  # noqa: F401
    from .scheduler import models as scheduler_models  # noqa: F401
    from .stripe_gateway import gateway
    from .stripe_gateway import models as stripe_gateway_models  # noqa: F401
    from .versioning import models as versioning_models  # noqa: F401
    from .webhooks import models as webhook_models  # noqa: F401

    proxies = int(app.config.get("TRUSTED_PROXY_COUNT") or 0)
    if proxies > 0:  # X-Forwarded-* believed for exactly this many proxies in front of us
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)  # type: ignore[method-assign]
    request_context.init_app(app)
    http_errors.init_app(app)
    security_headers.init_app(app)
    rate_limits.init_app(app)  # Flask-Limiter's storage and 429 answer, for every feature
    app.url_map.converters["id"] = IdConverter  # <id:...>: a row id in range, else 404
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    openapi.init_app(app)  # GET /api/v1/openapi.json; the features add their paths
    for group in (cli.api_keys_cli, cli.users_cli, cli.demo_cli):
        app.cli.add_command(group)
    backups.init_app(app)  # `db backup` and `db restore`, on Flask-Migrate's group
    gateway.init_app(app)  # the one place that talks to Stripe, before the features that use it

    # Features: each registers its blueprint, commands, jobs and health sections.
    from . import dashboard, payments, release, scheduler, versioning, webhooks

    scheduler.init_app(app)  # job registry and `flask scheduler run`, before the features add jobs
    rollups.init_app(app)  # per-minute counts of the sources the features register
    payments.init_app(app)
    webhooks.init_app(app)
    versioning.init_app(app)
    dashboard.init_app(app)  # reads the features above through their queries
    release.init_app(app)  # preflight, verify-deploy, report: also through their queries

    cli.add_verbose_option(app.cli)  # on every command the features registered
    _startup_checks(app)
    if serving:  # held for the process's life: `db restore` refuses while any server holds it
        service_lock.hold(app, "web")
    scheduler.start_in_process(app)  # only when SCHEDULER_ENABLED (see kamiyo/scheduler/)
    return app


def _postgres_lock_timeout(app: Flask) -> None:
    """PostgreSQL: a statement that waits POSTGRES_LOCK_TIMEOUT_MS for a lock (one held by a
    stuck session, say) fails instead of holding up every webhook behind it.

    Set on each new connection, so that the URL's own `options` (a search_path, say) stay.
    """
    timeout_ms = int(app.config["POSTGRES_LOCK_TIMEOUT_MS"])
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql") or not timeout_ms:
        return
    from sqlalchemy import event

    from .extensions import db

    with app.app_context():
        engine = db.engine

    @event.listens_for(engine, "connect")
    def _set_lock_timeout(dbapi_connection, connection_record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {timeout_ms}")  # an int: nothing to quote
        dbapi_connection.commit()


def _startup_checks(app: Flask) -> None:
    # Local checks only: start-up never waits on the network.
    log.info(
        "kamiyo configured",
        extra={
            "demo_mode": bool(app.config["DEMO_MODE"]),
            "database": app.config["SQLALCHEMY_DATABASE_URI"].split(":", 1)[0],
            "stripe_api_base": app.config["STRIPE_API_BASE"],
            "stripe_api_version": app.config["STRIPE_API_VERSION"],
            "webhook_secrets": len(app.config["STRIPE_WEBHOOK_SECRETS"]),
            "release": app.config["RELEASE_ID"],
        },
    )
