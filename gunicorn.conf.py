"""gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app` (what `make run` starts)."""

import importlib
import os
import sys

# Files the service creates (the SQLite database and its -wal/-shm, the demo's files) are its
# user's alone; the workers inherit it. `umask` below is gunicorn's own (its socket, temp files).
os.umask(0o077)
umask = 0o077

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# The app reads it too: with several workers and no Redis it warns that rate
# limits and the circuit breaker are counted per worker.
os.environ["WEB_CONCURRENCY"] = str(workers)
# Stripe calls are I/O bound and may wait through retries: threads keep a
# worker serving other requests meanwhile.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 20
# The app logs one JSON line per request, with its correlation id.
accesslog = None
errorlog = "-"
# gunicorn's own lines (worker boots, timeouts, an invalid request line or header name, which
# echo what a client sent) through the app's JSON formatter and redaction filter, on stderr.
# gunicorn.access would repeat the app's request line: off unless GUNICORN_ACCESS_LOG=1.
logconfig_dict = {
    "root": {"level": "INFO", "handlers": ["kamiyo_root"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["kamiyo"], "propagate": False, "qualname": "gunicorn.error"},
        "gunicorn.access": {
            "level": "INFO" if os.environ.get("GUNICORN_ACCESS_LOG") == "1" else "WARNING",
            "handlers": ["kamiyo"],
            "propagate": False,
            "qualname": "gunicorn.access",
        },
    },
    "handlers": {
        "kamiyo": {"()": "kamiyo.observability.logging.gunicorn_handler"},
        "kamiyo_root": {"()": "kamiyo.observability.logging.gunicorn_handler", "root": True},
    },
}
# gunicorn's control socket lives in $HOME and would clash between instances; we don't use it.
control_socket_disable = True


def on_starting(server):
    from kamiyo import check_config
    from kamiyo.config import ConfigError
    from kamiyo.hardening import server_start_checks

    try:
        app = check_config()
    except ConfigError as exc:
        print(f"kamiyo: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    # Once per start, here rather than in each worker.
    server_start_checks(app.config, app.instance_path)


def child_exit(server, worker):
    # Multi-process Prometheus: drop a dead worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_reload(server):
    """HUP: the new workers are forked next. The master imported the app's modules (the start-up
    checks, its logging handlers); workers inherit what the master has, so it forgets them, or the
    new workers would run the release the master started with instead of the one on disk."""
    for name in [name for name in sys.modules if name == "kamiyo" or name.startswith("kamiyo.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    # gunicorn set its logging up again before this hook, with handlers from the modules just
    # forgotten: once more, from the release's code.
    server.log.setup(server.cfg)
