"""gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app` (what `make run` starts)."""

import os
import subprocess
import sys

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
# gunicorn's control socket lives in $HOME and would clash between instances; we don't use it.
control_socket_disable = True


# The configuration check, run in a child process: a module the master imports stays in every
# worker it forks, so workers started by a HUP would run the old release's modules (those the
# check imports: the app factory, the configuration) next to the new release's others.
CHECK_CONFIG = """
import sys
from kamiyo import check_config
from kamiyo.config import ConfigError
try:
    check_config()
except ConfigError as exc:
    sys.exit(f"kamiyo: configuration error: {exc}")
"""


def on_starting(server):
    if subprocess.run([sys.executable, "-c", CHECK_CONFIG], cwd=server.cfg.chdir).returncode != 0:
        sys.exit(1)


def child_exit(server, worker):
    # Multi-process Prometheus: drop a dead worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
