"""Shared bench plumbing: a migrated temp instance, gunicorn, and a bounded load loop."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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
    """Migrate, then serve `app_spec` (module:app) with gunicorn; yields the base URL."""
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
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextmanager
def temp_instance() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kamiyo-bench-") as tmp:
        yield Path(tmp)


def load(call: Callable[[requests.Session, int], requests.Response], total: int, concurrency: int,
         expect: Callable[[requests.Response], bool] = lambda r: r.ok) -> dict[str, float]:
    """Run `total` calls over `concurrency` threads (one Session each); rps and latency percentiles."""
    latencies: list[float] = []
    failures = 0
    per_thread = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]

    def worker(thread_index: int) -> tuple[list[float], int]:
        session, own, bad = requests.Session(), [], 0
        base = sum(per_thread[:thread_index])
        for i in range(per_thread[thread_index]):
            started = time.perf_counter()
            response = call(session, base + i)
            own.append(time.perf_counter() - started)
            bad += 0 if expect(response) else 1
        return own, bad

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for own, bad in pool.map(worker, range(concurrency)):
            latencies.extend(own)
            failures += bad
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "failures": failures,
    }


def report(name: str, stats: dict[str, float], baseline: dict[str, float] | None = None) -> None:
    ratio = f"  ratio {stats['rps'] / baseline['rps']:.2f}x" if baseline else ""
    print(f"  {name:<34} {stats['rps']:8.0f} req/s  p50 {stats['p50_ms']:6.1f} ms  p99 {stats['p99_ms']:6.1f} ms"
          f"  failures {int(stats['failures'])}{ratio}", flush=True)
