"""Two gunicorn workers (the production setup): with Redis they share one rate-limit count;
on one PostgreSQL database they handle each event once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from tests.support import gunicorn, logged, wait_until
from tests.webhooks.stripe_signing import URL, customer, make_event, signed

pytestmark = pytest.mark.slow


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
    assert int(store.get(key)) == 31  # the 31st was counted by its own atomic hit, then refused
    # Stripe's deliveries from that IP still pass, on either worker.
    for n in range(4):
        body, headers = signed(make_event("customer.created", customer(f"cus_after_{n}", user_id=f"after-{n}")))
        late = requests.post(gunicorn_url + URL, data=body, headers={**headers, "Connection": "close"}, timeout=10)
        assert late.json() == {"status": "processed"}


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


def test_two_workers_without_redis_count_apart_as_the_readme_says(tmp_path_factory):
    """`make run`'s setup (two workers, memory://): each worker counts on its own, so the first
    429 comes between the 31st and the 61st refused post; each worker says so at start-up;
    and Stripe's deliveries from the blocked IP still pass."""
    instance = tmp_path_factory.mktemp("gunicorn-memory")
    with gunicorn(instance, f"sqlite:///{instance}/kamiyo.db") as url:

        def unsigned() -> int:
            return requests.post(url + URL, data=b"{}", headers={"Connection": "close"}, timeout=10).status_code

        codes = [unsigned() for _ in range(61)]
        first = codes.index(429) + 1
        assert 31 <= first <= 61, codes
        assert codes[:30] == [400] * 30
        for n in range(4):
            body, headers = signed(make_event("customer.created", customer(f"cus_mem_{n}", user_id=f"mem-{n}")))
            late = requests.post(url + URL, data=body, headers={**headers, "Connection": "close"}, timeout=10)
            assert late.json() == {"status": "processed"}
        # Each worker says it as it boots; under load the second may still be booting (one
        # worker can answer every request above), so wait for it rather than read once.
        def said() -> list[str]:
            return [line["message"] for line in logged(instance)
                    if line["message"].startswith("webhook rate limit counted per worker: with 2 workers the first "
                                                  "429 comes between the 31st and the 61st")]

        wait_until(lambda: len(said()) >= 2, timeout=30, interval=0.2)
    assert len(said()) == 2, said()
