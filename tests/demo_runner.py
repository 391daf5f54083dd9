"""`make run`'s runner (devtools/run.py) started as a test's subprocess: demo mode on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def _as_from_a_terminal() -> None:
    # A test run started in the background (a CI step under `sh -c '... &'`) inherits SIGINT
    # and SIGQUIT ignored, and make then rightly leaves them alone: the demo is started here as
    # from a terminal, where Ctrl-C and `kill -INT` reach it.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def start_runner(instance: Path, port: int, stripe_port: int, proxy_port: int, workers: int = 1,
                 command: list[str] | None = None, settings: dict[str, str] | None = None) -> subprocess.Popen:
    """The runner in a session of its own; `command` starts it another way (`make run`);
    `settings` are environment variables added for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_"))}
    env.update(KAMIYO_INSTANCE_PATH=str(instance), PORT=str(port), DEMO_STRIPE_PORT=str(stripe_port),
               DEMO_STRIPE_PROXY_PORT=str(proxy_port), WEB_CONCURRENCY=str(workers), **(settings or {}))
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "devtools.run"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_as_from_a_terminal,
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


def session_processes(session: int) -> list[str]:
    """The processes still alive in the session a runner (or make) was started in, as
    'pid command' strings; the session's id is its leader's pid (start_new_session)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces, so split after its ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session and fields[0] != "Z":
            left.append(f"{entry.name} {stat[stat.index('(') + 1:stat.rindex(')')]}")
    return left


def listening(*ports: int) -> list[int]:
    """Those of `ports` on which something still accepts a connection on loopback."""
    found = []
    for port in ports:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                found.append(port)
    return found


def stop_and_time(proc: subprocess.Popen, pid: int, sig: int, limit: float = 10) -> float:
    """Send `sig` to `pid` alone (what kill, systemd or docker do; a negative pid: that process
    group, as a terminal does), wait for `proc` to end
    within `limit` seconds (killing its session if not) and return how long it took."""
    started = time.monotonic()
    os.kill(pid, sig)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError(f"still running {limit} s after signal {sig}:\n" + "".join(proc.lines)) from None
    took = time.monotonic() - started
    proc.reader.join(timeout=10)
    return took
