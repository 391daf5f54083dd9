"""Shared bench plumbing: a migrated temp instance, gunicorn, and a bounded load loop."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


def bench_env(instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_"))}
    env.update(
        KAMIYO_INSTANCE_PATH=str(instance), SECRET_KEY="bench", STRIPE_SECRET_KEY="sk_test_bench",
        STRIPE_WEBHOOK_SECRET="whsec_bench", LOG_LEVEL="WARNING", DATABASE_URL=f"sqlite:///{instance}/bench.db",
    )
    env.update(extra)
    return env


@contextmanager
def gunicorn(app_spec: str, env: dict[str, str], workers: int = 2) -> Iterator[str]:
    """Migrate, then serve `app_spec` (module:app) with gunicorn; yields the port."""
    subprocess.run([sys.executable, "-m", "flask", "--app", app_spec.split(":")[0], "db", "upgrade"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    env = {**env, "PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py", app_spec],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextmanager
def temp_instance() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kamiyo-bench-") as tmp:
        yield Path(tmp)


Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


def load(port: int, make_request: Callable[[int], Request] | None, *, seconds: float = 3.0, processes: int = 4,
         threads: int = 8, ok: Callable[[int, bytes], bool] = lambda status, body: status < 300,
         call: Callable[[int], None] | None = None) -> dict[str, float]:
    """Drive the server from `processes` forked client processes x `threads` keep-alive
    connections for `seconds` (after a short warm-up): a load generator that is not
    itself the bottleneck. `call(n)`, when given, replaces the HTTP request (e.g. a
    direct stripe-python call). Returns req/s and latency percentiles."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()

    def client(index: int) -> None:
        warm_until = time.monotonic() + 0.5
        stop_at = warm_until + seconds
        counter = iter(range(index * 10_000_000, (index + 1) * 10_000_000))
        lock = threading.Lock()
        latencies: list[float] = []
        failures = [0]

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while (now := time.monotonic()) < stop_at:
                with lock:
                    n = next(counter)
                started = time.perf_counter()
                if call is not None:
                    call(n)
                    good = True
                else:
                    method, path, body, headers = make_request(n)
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                    good = ok(response.status, response.read())
                elapsed = time.perf_counter() - started
                with lock:
                    failures[0] += 0 if good else 1
                    if now >= warm_until:
                        latencies.append(elapsed)
            conn.close()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        out.put((latencies, failures[0]))

    procs = [ctx.Process(target=client, args=(i,)) for i in range(processes)]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    failures = 0
    for _ in procs:
        got, failed = out.get(timeout=seconds * 20 + 60)
        latencies += got
        failures += failed
    for proc in procs:
        proc.join()
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "failures": failures,
    }


def report(name: str, stats: dict[str, float], baseline: dict[str, float] | None = None) -> None:
    ratio = f"  ratio {stats['rps'] / baseline['rps']:.2f}x" if baseline else ""
    print(f"  {name:<34} {stats['rps']:8.0f} req/s  p50 {stats['p50_ms']:6.1f} ms  p99 {stats['p99_ms']:6.1f} ms"
          f"  failures {int(stats['failures'])}{ratio}", flush=True)
