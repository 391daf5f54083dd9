"""Two gunicorn workers (the production setup): with Redis they share one rate-limit count;
on one PostgreSQL database they handle each event once."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import redis
import requests

from tests.support import TEST_SECRETS, free_port, wait_until
from tests.webhooks.stripe_signing import URL, customer, make_event, signed
from kamiyo.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@contextlib.contextmanager
def gunicorn(instance: Path, database_url: str, **settings: str) -> Iterator[str]:
    """The production server (gunicorn.conf.py, two workers) on `database_url`, migrated; its URL."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(instance), DATABASE_URL=database_url,
               PORT=str(free_port()), WEB_CONCURRENCY="2", LOG_LEVEL="WARNING")
    env.update(settings)
    flask = Path(sys.executable).with_name("flask")
    subprocess.run([flask, "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(instance / "gunicorn.log", "w")
    proc = subprocess.Popen([Path(sys.executable).with_name("gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (instance / "gunicorn.log").read_text()
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory, redis_url):
    instance = tmp_path_factory.mktemp("gunicorn-instance")
    with gunicorn(instance, f"sqlite:///{instance}/kamiyo.db", REDIS_URL=redis_url) as url:
        yield url


def test_two_workers_share_one_count_in_redis(gunicorn_url, redis_url):
    body, headers = signed(make_event("customer.created", customer("cus_gunicorn")))
    assert requests.post(gunicorn_url + URL, data=body, headers=headers, timeout=10).json() == {"status": "processed"}

    def unsigned(_):
        # A new connection each time, so that both workers take their share.
        return requests.post(gunicorn_url + URL, data=b"{}", headers={"Connection": "close"}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(unsigned, range(30))) == [400] * 30
    assert unsigned(None) == 429
    store = redis.Redis.from_url(redis_url)
    [key] = [k for k in store.scan_iter("*webhooks.stripe_webhook*")]
    assert int(store.get(key)) == 30


def logged(instance: Path) -> list[dict]:
    return [json.loads(line) for line in (instance / "gunicorn.log").read_text().splitlines() if line.startswith("{")]


def test_two_workers_on_one_postgresql_database_handle_each_event_once(pg_database, isolated_environment):
    """Copies of one event reach both workers at once (a new connection each), and so do
    new events. Every event is processed once, and only once."""
    from sqlalchemy import create_engine, text

    instance = isolated_environment  # this test's instance folder

    def pids(**match) -> set[int]:
        return {line["process"] for line in logged(instance) if match.items() <= line.items()}

    with gunicorn(instance, pg_database, LOG_LEVEL="INFO") as url:
        # /health answered: one worker is up. Both, once each has logged its start.
        wait_until(lambda: len(pids(message="kamiyo configured")) == 2, timeout=30)
        rounds = 0
        while len(pids(path=URL)) < 2 and rounds < 5:  # until both workers took deliveries
            rounds += 1
            copies = make_event("customer.created", customer(f"cus_pg_{rounds}", user_id=f"user-pg-{rounds}"))
            fresh = [make_event("customer.created", customer(f"cus_pg_{rounds}_{n}", user_id=f"user-pg-{rounds}-{n}"))
                     for n in range(10)]
            deliveries = [signed(copies)] * 10 + [signed(event) for event in fresh]
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda d: requests.post(
                    url + URL, data=d[0], headers={**d[1], "Connection": "close"}, timeout=30), deliveries))
            statuses = [a.json().get("status") for a in answers]
            assert sorted(statuses[:10]) == ["duplicate"] * 9 + ["processed"]
            assert statuses[10:] == ["processed"] * 10
    assert len(pids(path=URL)) == 2, "both workers took deliveries"
    engine = create_engine(pg_database)
    with engine.connect() as connection:
        events = connection.execute(text("SELECT status, attempts, count(*) FROM webhook_events GROUP BY 1, 2")).all()
        customers = connection.execute(text("SELECT count(DISTINCT stripe_customer_id), count(*) FROM customers")).one()
    engine.dispose()
    assert [tuple(row) for row in events] == [("processed", 1, 11 * rounds)]
    assert tuple(customers) == (11 * rounds, 11 * rounds)
