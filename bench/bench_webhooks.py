"""Webhook intake throughput against a bare route on the same gunicorn.

2 workers (gthread, the production config), 32 concurrent keep-alive clients on
loopback, on SQLite (WAL) and on PostgreSQL (a throwaway cluster with durable
commits; BENCH_DATABASES=sqlite to skip it). Three phases of PHASE_SECONDS each:
  bare        GET /bench/bare (the same app, a route that does nothing)
  new         verified events never seen before, stored and handled
              (half customer.subscription.updated on known rows, half payment_intent.succeeded),
              made and signed by the clients before the phase starts
  duplicates  verified events already processed
Prints requests/s, p99 latency and the ratios to the bare route. Then the unkind case: 5,000
new events about one customer, then 2,000 more; the second batch's rate against the first's
shows whether an object's history slows its next event (target >= 0.9).

Each throughput piece of the intake (group commit, the SQLite write gate, prepared
statements) also runs switched off alone, on a server of its own, in the same rounds:
a piece stays only if switching it off costs at least 10% of the new-event ratio.
Run: make bench BENCH=webhooks (or python -m bench webhooks).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PROCESSES = 4
THREADS_PER_PROCESS = 8  # 32 concurrent clients
PHASE_SECONDS = float(os.environ.get("BENCH_PHASE_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
WARMUP_SECONDS = 0.5
SECRET = "whsec_bench_" + uuid.uuid4().hex
SUBSCRIPTIONS = 200
DUPLICATE_POOL = 200
TARGETS = {"new": 0.5, "duplicates": 0.6, "hot_object": 0.9}
HOT_FIRST, HOT_SECOND = 5000, 2000
# Signed ahead of each "new" phase by each client process; more than it can send in a phase.
NEW_EVENTS_PER_CLIENT = int(os.environ.get("BENCH_NEW_EVENTS_PER_CLIENT", "2500"))


def _event(n: int) -> dict:
    now = int(time.time())
    if n % 2:
        sub = n % SUBSCRIPTIONS
        obj = {"id": f"sub_bench_{sub}", "object": "subscription", "customer": f"cus_bench_{sub}",
               "status": "active", "items": {"data": [{"price": {"id": "price_bench"}, "current_period_end": now + 86400}]}}
        kind = "customer.subscription.updated"
    else:
        obj = {"id": f"pi_{uuid.uuid4().hex}", "object": "payment_intent", "customer": "cus_bench_1",
               "amount": 1900, "amount_received": 1900, "currency": "usd"}
        kind = "payment_intent.succeeded"
    # Real timestamps: updates within one second all apply (created < updated < deleted only).
    return {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind, "created": now,
            "api_version": "2026-10-28.endive", "livemode": False, "data": {"object": obj}}


def _signed(event: dict) -> tuple[bytes, dict]:
    body = json.dumps(event).encode()
    t = int(time.time())
    sig = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


def _client_process(port: int, phase: str, duplicates: list, seed: int, start, out) -> None:
    # New events are made and signed before the clock starts, as the duplicates are: the load
    # generator shares this machine's CPUs with the server and should not compete for them.
    fresh = [_signed(_event(n)) for n in range(seed * 10_000_000, seed * 10_000_000 + NEW_EVENTS_PER_CLIENT)] \
        if phase == "new" else []
    fresh.reverse()  # popped from the end: sent in the order made (subscription updates stay in order)
    start.wait()  # every client process ready: the phases measure the same 32 clients
    stop_at = time.monotonic() + WARMUP_SECONDS + PHASE_SECONDS
    measure_from = time.monotonic() + WARMUP_SECONDS
    results: list[list[float]] = []
    errors: list[str] = []
    counter = iter(range(seed * 10_000_000 + NEW_EVENTS_PER_CLIENT, (seed + 1) * 10_000_000))
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies: list[float] = []
        rnd = random.Random()
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            if phase == "bare":
                method, path, body, headers, expect = "GET", "/bench/bare", None, {}, b'"ok"'
            elif phase == "new":
                with lock:
                    prepared = fresh.pop() if fresh else None
                    n = next(counter)
                body, headers = prepared or _signed(_event(n))  # made here only if the pool ran dry
                method, path, expect = "POST", "/api/v1/webhooks/stripe", b'"processed"'
            else:
                body, headers = rnd.choice(duplicates)
                method, path, expect = "POST", "/api/v1/webhooks/stripe", b'"duplicate"'
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200 or expect not in data:
                errors.append(f"{response.status} {data[:120]!r}")
            if now >= measure_from:
                latencies.append(elapsed)
        conn.close()
        with lock:
            results.append(latencies)

    threads = [threading.Thread(target=worker) for _ in range(THREADS_PER_PROCESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(([x for r in results for x in r], errors[:5], len(errors)))


def _run_phase(port: int, phase: str, duplicates: list) -> dict:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = ctx.Barrier(CLIENT_PROCESSES)
    procs = [ctx.Process(target=_client_process, args=(port, phase, duplicates, i, start, out))
             for i in range(CLIENT_PROCESSES)]
    for proc in procs:
        proc.start()
    latencies, errors, error_count = [], [], 0
    for _ in procs:
        lat, errs, count = out.get(timeout=PHASE_SECONDS * 10)
        latencies += lat
        errors += errs
        error_count += count
    for proc in procs:
        proc.join()
    return {"latencies": latencies, "errors": error_count, "error_samples": errors[:3]}


def _hot_client(port: int, events: list, start, out) -> None:
    events = list(reversed(events))
    lock = threading.Lock()
    errors: list[str] = []
    start.wait()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if not events:
                    break
                body, headers = events.pop()
            conn.request("POST", "/api/v1/webhooks/stripe", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200 or b'"processed"' not in data:
                errors.append(f"{response.status} {data[:120]!r}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS_PER_PROCESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((time.monotonic(), len(errors), errors[:3]))


def _hot_batch(port: int, events: list) -> tuple[float, int]:
    """Send `events` with 32 concurrent clients; returns (events per second, unexpected answers)."""
    ctx = multiprocessing.get_context("fork")
    out, start = ctx.Queue(), ctx.Barrier(CLIENT_PROCESSES + 1)
    shares = [events[i::CLIENT_PROCESSES] for i in range(CLIENT_PROCESSES)]
    procs = [ctx.Process(target=_hot_client, args=(port, share, start, out)) for share in shares]
    for proc in procs:
        proc.start()
    start.wait()
    began = time.monotonic()
    finished = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return len(events) / (max(f[0] for f in finished) - began), sum(f[1] for f in finished)


def _hot_object(port: int) -> float:
    """The unkind case: every event about one customer. Its order is decided by one read of
    its row, so the 5,001st event costs what the first did; reading its history would not."""
    base = int(time.time()) - 1_000_000

    def event(n: int) -> tuple[bytes, dict]:
        obj = {"id": "cus_bench_hot", "object": "customer", "email": f"hot{n}@example.com", "name": "Hot",
               "metadata": {"kamiyo_user_id": "bench-hot"}}
        return _signed({"id": f"evt_hot_{uuid.uuid4().hex}", "object": "event", "type": "customer.created",
                        "created": base + n, "api_version": "2026-10-28.endive", "livemode": False,
                        "data": {"object": obj}})

    first, first_errors = _hot_batch(port, [event(n) for n in range(HOT_FIRST)])
    second, second_errors = _hot_batch(port, [event(n) for n in range(HOT_FIRST, HOT_FIRST + HOT_SECOND)])
    print(f"hot object (one customer, {CLIENT_PROCESSES * THREADS_PER_PROCESS} clients): first {HOT_FIRST} new "
          f"events {first:.0f}/s, the next {HOT_SECOND} {second:.0f}/s: ratio {second / first:.2f} "
          f"(target >= {TARGETS['hot_object']})")
    if first_errors or second_errors:
        print(f"  !! {first_errors + second_errors} unexpected answers")
    return second / first


def _server_cpu_seconds(master_pid: int) -> float:
    """User + system CPU of gunicorn's workers (from /proc), to report CPU per request."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:  # ppid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _combine(runs: list[dict]) -> dict:
    latencies = sorted(x for run in runs for x in run["latencies"])
    return {"rps": len(latencies) / (PHASE_SECONDS * len(runs)),
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
            "errors": sum(run["errors"] for run in runs),
            # CPU per answered request (warm-up requests included in both: a slight overestimate).
            "cpu_us": sum(run["server_cpu"] for run in runs) / max(1, len(latencies)) * 1e6,
            "error_samples": [s for run in runs for s in run["error_samples"]][:3]}


def _seed(env: dict) -> None:
    """Migrate, then add the customers and subscriptions the update events refer to."""
    flask = Path(sys.executable).with_name("flask")
    subprocess.run([flask, "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code = (
        "from kamiyo import create_app\n"
        "from kamiyo.extensions import db\n"
        "from kamiyo.models import Customer, Subscription\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        f"    for n in range({SUBSCRIPTIONS}):\n"
        "        c = Customer(user_id=f'bench-{n}', email='b@example.com', stripe_customer_id=f'cus_bench_{n}')\n"
        "        db.session.add(Subscription(customer=c, price_id='price_bench', tier='pro', status='active',\n"
        "                                    stripe_subscription_id=f'sub_bench_{n}'))\n"
        "    db.session.commit()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited:\n" + log.read_text()[-2000:])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/bare")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


# Each throughput piece, switched off alone; the write gate queues SQLite's writers only.
PIECES = {
    "group commit": ("WEBHOOK_GROUP_COMMIT", ("sqlite", "postgresql")),
    "write gate": ("WEBHOOK_WRITE_GATE", ("sqlite",)),
    "prepared statements": ("PREPARED_STATEMENTS", ("sqlite", "postgresql")),
}
DATABASES = [d for d in os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",") if d]
KEEP_THRESHOLD = 0.10  # a piece stays if switching it off costs at least 10% of the new-event ratio


class _Server:
    """One gunicorn serving the bench app on its own database, with some settings."""

    def __init__(self, tmp: Path, name: str, database_url: str, settings: dict[str, str]) -> None:
        self.port = free_port()
        instance = tmp / name
        instance.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KAMIYO_", "STRIPE_", "DATABASE_", "REDIS_"))}
        self.env.update(KAMIYO_INSTANCE_PATH=str(instance), DATABASE_URL=database_url, SECRET_KEY="bench",
                        STRIPE_SECRET_KEY="sk_test_bench", STRIPE_WEBHOOK_SECRET=SECRET, PORT=str(self.port),
                        WEB_CONCURRENCY="2", LOG_LEVEL="INFO", **settings)
        _seed(self.env)
        self.log = instance / "gunicorn.log"
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(
            [Path(sys.executable).with_name("gunicorn"), "-c", "gunicorn.conf.py", "bench.bare_wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT)
        _wait_ready(self.port, self.proc, self.log)
        self.duplicates = []
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        for n in range(DUPLICATE_POOL):
            body, headers = _signed(_event(n))
            conn.request("POST", "/api/v1/webhooks/stripe", body=body, headers=headers)
            assert b'"processed"' in conn.getresponse().read()
            self.duplicates.append((body, headers))
        conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log_file.close()


def _measure(servers: dict[str, _Server]) -> dict[str, dict[str, dict]]:
    """Rounds of short phases, interleaved across phases and servers: load from elsewhere on
    the machine hits every variant alike."""
    totals = {name: {phase: [] for phase in ("bare", "new", "duplicates")} for name in servers}
    for _ in range(ROUNDS):
        for name, server in servers.items():
            for phase in totals[name]:
                cpu_before = _server_cpu_seconds(server.proc.pid)
                run = _run_phase(server.port, phase, server.duplicates)
                run["server_cpu"] = _server_cpu_seconds(server.proc.pid) - cpu_before
                totals[name][phase].append(run)
    return {name: {phase: _combine(runs) for phase, runs in phases.items()} for name, phases in totals.items()}


def _print_results(database: str, results: dict[str, dict[str, dict]]) -> None:
    base = results["all on"]["bare"]["rps"]
    print(f"{'phase (all pieces on)':<38}{'req/s':>8}{'p99 ms':>9}{'ratio':>7}{'server CPU/req':>16}  target")
    labels = {"bare": "bare route", "new": "verified new events (stored+handled)",
              "duplicates": "verified duplicates"}
    for phase, result in results["all on"].items():
        target = f">= {TARGETS[phase]}" if phase in TARGETS else ""
        print(f"{labels[phase]:<38}{result['rps']:>8.0f}{result['p99_ms']:>9.1f}{result['rps'] / base:>7.2f}"
              f"{result['cpu_us']:>13.0f} us  {target}")
    # Every server's bare route runs the same code: their mean is a steadier baseline than each alone.
    bare = statistics.mean(result["bare"]["rps"] for result in results.values())
    print(f"\neach piece off alone ({database}): ratios against the bare route ({bare:.0f}/s, mean of the servers)")
    print(f"{'variant':<28}{'new/s':>8}{'new ratio':>11}{'dup ratio':>11}{'piece gives':>13}  verdict")
    on = results["all on"]["new"]["rps"] / bare
    for name, result in results.items():
        ratio = result["new"]["rps"] / bare
        dup = result["duplicates"]["rps"] / bare
        if name == "all on":
            print(f"{name:<28}{result['new']['rps']:>8.0f}{ratio:>11.2f}{dup:>11.2f}")
            continue
        gain = on / ratio - 1
        verdict = "keep" if gain >= KEEP_THRESHOLD else "does not pay"
        print(f"{name:<28}{result['new']['rps']:>8.0f}{ratio:>11.2f}{dup:>11.2f}{gain:>+12.0%}  {verdict}")
    for name, result in results.items():
        for phase, run in result.items():
            if run["errors"]:
                print(f"  !! {name}, {phase}: {run['errors']} unexpected answers, e.g. {run['error_samples']}")


@contextlib.contextmanager
def _database_urls(database: str, tmp: Path, names: list[str]):
    if database == "sqlite":
        yield {name: f"sqlite:///{tmp}/{name.replace(' ', '_')}.db" for name in names}
        return
    from tests import postgres

    # Durable commits, as in production: group commit is about the cost of each commit.
    postgres.SETTINGS.update(fsync="on", synchronous_commit="on", full_page_writes="on")
    cluster = postgres.PostgresCluster(postgres.cluster_parent(tmp))
    try:
        cluster.init()
        cluster.start(free_port())
        yield {name: cluster.url(cluster.create_database(cluster.new_name("bench"))) for name in names}
    finally:
        cluster.stop()


def main() -> None:
    print(f"gunicorn: 2 workers x {os.environ.get('GUNICORN_THREADS', '8')} threads; "
          f"{CLIENT_PROCESSES * THREADS_PER_PROCESS} keep-alive clients; {ROUNDS} rounds of {PHASE_SECONDS:.0f} s "
          f"per phase and variant", flush=True)
    for database in DATABASES:
        variants = {"all on": {}} | {f"{piece} off": {setting: "false"} for piece, (setting, where) in PIECES.items()
                                      if database in where}
        print(f"\n-- {database} --", flush=True)
        with tempfile.TemporaryDirectory(prefix="kamiyo-bench-") as tmp, \
                _database_urls(database, Path(tmp), list(variants)) as urls:
            servers: dict[str, _Server] = {}
            try:
                for name, settings in variants.items():
                    servers[name] = _Server(Path(tmp), name.replace(" ", "_"), urls[name], settings)
                results = _measure(servers)
                hot_ratio = _hot_object(servers["all on"].port)
            finally:
                for server in servers.values():
                    server.stop()
        _print_results(database, results)
        on = results["all on"]
        print(f"ratios ({database}): new {on['new']['rps'] / on['bare']['rps']:.2f}, "
              f"duplicates {on['duplicates']['rps'] / on['bare']['rps']:.2f}, "
              f"hot object second batch / first {hot_ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
