"""`make run`'s runner (devtools/run.py) started as a test's subprocess: demo mode on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def start_runner(instance: Path, port: int, stripe_port: int, proxy_port: int, workers: int = 1) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_"))}
    env.update(KAMIYO_INSTANCE_PATH=str(instance), PORT=str(port), DEMO_STRIPE_PORT=str(stripe_port),
               DEMO_STRIPE_PROXY_PORT=str(proxy_port), WEB_CONCURRENCY=str(workers))
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.run"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # Read as it comes: a full pipe would block the runner, and tests wait for lines.
    proc.lines = []
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True)
    proc.reader.start()
    return proc


def wait_for_output(proc: subprocess.Popen, text: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not any(text in line for line in list(proc.lines)):
        assert time.monotonic() < deadline, f"{text!r} not printed:\n" + "".join(proc.lines)
        assert proc.poll() is None, "".join(proc.lines)
        time.sleep(0.1)


def wait_healthy(port: int, proc: subprocess.Popen, limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, "".join(proc.lines)
        try:
            response = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            if response.status_code == 200:
                return response.json()
        except (requests.ConnectionError, requests.Timeout):
            pass  # gunicorn's socket accepts before a worker has booted: slow on a busy machine
        time.sleep(0.2)
    raise AssertionError("the service did not answer /health within a minute")


def ctrl_c(proc: subprocess.Popen) -> str:
    # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    proc.reader.join(timeout=10)
    return "".join(proc.lines)
