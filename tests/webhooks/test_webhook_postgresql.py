"""The inbox on PostgreSQL: what SQLite, one writer at a time behind the write
gate, cannot show. Several workers (apps with their own pools, as gunicorn
workers have) write to one database at once; rows are locked, not the database."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
import sqlalchemy as sa

from kamiyo.extensions import db
from kamiyo.models import Customer
from kamiyo.webhooks import handlers
from kamiyo.webhooks.models import WebhookEvent
from tests.support import postgresql_only, wait_until
from tests.webhooks.stripe_signing import URL, customer, make_event, post, signed

pytestmark = postgresql_only

T0 = 1_800_000_000


def stored(app):
    with app.app_context():
        return {r.event_id: (r.status, r.attempts) for r in db.session.scalars(db.select(WebhookEvent))}


def count_customers(app) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Customer.id)))


def lock_waiters(app) -> int:
    """Sessions of this test's database waiting for a lock another transaction holds."""
    with app.app_context():
        waiting = db.session.scalar(db.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))
        db.session.rollback()
        return waiting


def test_ten_copies_at_two_workers_at_once_are_processed_once(make_app, serve_app):
    urls = [serve_app(make_app()) + URL for _ in range(2)]
    event = make_event("customer.created", customer("cus_two_workers", user_id="user-two-workers"))
    body, headers = signed(event)
    start = threading.Barrier(10)

    def deliver(n: int):
        start.wait(10)
        return requests.post(urls[n % 2], data=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(deliver, range(10)))
    assert sorted(a.json()["status"] for a in answers) == ["duplicate"] * 9 + ["processed"]
    checker = make_app()
    assert stored(checker) == {event["id"]: ("processed", 1)}
    assert count_customers(checker) == 1


def test_a_copy_at_another_worker_waits_for_the_first_then_is_a_duplicate(make_app, monkeypatch):
    """The second worker's claim waits on the first's uncommitted row (a row lock, not a
    database lock), fails on the unique event id once that commits, and answers duplicate."""
    first, second = make_app(), make_app()
    event = make_event("customer.created", customer("cus_locked", user_id="user-locked"))
    handling, release = threading.Event(), threading.Event()
    calls = []
    real = handlers.HANDLERS["customer.created"]

    def held(e):
        calls.append(e["id"])
        handling.set()
        assert release.wait(10)
        return real(e)

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", held)
    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(post, first.test_client(), event)
        assert handling.wait(10)  # the first worker's claim is written, not committed
        other = pool.submit(post, second.test_client(), event)
        wait_until(lambda: lock_waiters(first) == 1)  # the second one's INSERT waits for it
        release.set()
        answers = [one.result(30).get_json(), other.result(30).get_json()]
    assert answers == [{"status": "processed"}, {"status": "duplicate"}]
    assert calls == [event["id"]]
    assert stored(first) == {event["id"]: ("processed", 1)}
    assert count_customers(first) == 1


def test_an_older_customer_event_at_another_worker_does_not_undo_a_newer_one(make_app, monkeypatch):
    """Out-of-order check across workers: the older event must not be written after a newer
    one it could not see yet (on SQLite the write gate serialises the two workers)."""
    older_worker, newer_worker = make_app(), make_app()
    with older_worker.app_context():
        db.session.add(Customer(user_id="user-1", email="ada@example.com", stripe_customer_id="cus_1"))
        db.session.commit()
    newer = make_event("customer.updated", customer("cus_1", email="newer@example.com"), created=T0 + 5)
    older = make_event("customer.updated", customer("cus_1", email="older@example.com"), created=T0 + 1)
    older_checked, go_on = threading.Event(), threading.Event()
    real = handlers.compare

    def paced(row, event):
        answer = real(row, event)
        if event["id"] == older["id"]:  # checked, not yet written: wait until the newer one is done or stuck
            older_checked.set()
            assert go_on.wait(10)
        return answer

    monkeypatch.setattr(handlers, "compare", paced)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, older_worker.test_client(), older, timestamp=None)
        assert older_checked.wait(10)
        second = pool.submit(post, newer_worker.test_client(), newer, timestamp=None)
        wait_until(lambda: second.done() or lock_waiters(older_worker) > 0)
        go_on.set()
        answers = [first.result(30).get_json(), second.result(30).get_json()]
    assert answers == [{"status": "processed"}, {"status": "processed"}]
    with older_worker.app_context():
        assert db.session.scalar(db.select(Customer.email)) == "newer@example.com"


def test_stored_events_replay_on_postgresql(app, runner):
    """The payload column round-trips through PostgreSQL's text type unchanged (replay reads it)."""
    event = make_event("customer.created", customer("cus_replay", user_id="user-replay", name="Zoë Ünïcode ✓"))
    assert post(app.test_client(), event).get_json() == {"status": "processed"}
    with app.app_context():
        payload = db.session.scalar(db.select(WebhookEvent.payload))
    assert json.loads(payload) == event
    result = runner.invoke(args=["webhooks", "replay", event["id"]])
    assert result.exit_code == 0 and f"{event['id']}: processed (attempt 2)" in result.output, result.output


def _backend_alive(pid: int) -> bool:
    # Each look in a transaction of its own: PostgreSQL keeps one snapshot of pg_stat_activity
    # for the whole of a transaction, so a second look in the same one never sees the backend go.
    try:
        return bool(db.session.scalar(db.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                      {"pid": pid}))
    finally:
        db.session.rollback()


def test_the_batch_connection_is_made_anew_when_the_database_drops_it(app, client):
    """A PostgreSQL connection can die under the app (server restart, failover, an idle
    timeout). The batches' own connection is then replaced by a new one, again outside the
    pool, and the intake goes on."""
    from kamiyo.webhooks import inbox

    assert post(client, make_event("customer.created", customer("cus_d0", user_id="u-d0"))).status_code == 200
    _, session = app.extensions[inbox._BATCH_SESSION]
    pid = session.bind.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    session.bind.rollback()
    with app.app_context():
        assert db.session.scalar(db.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}) is True
        wait_until(lambda: not _backend_alive(pid), timeout=60)
    events = [make_event("customer.created", customer(f"cus_d{n}", user_id=f"u-d{n}")) for n in (1, 2, 3)]
    assert [post(client, e).get_json() for e in events] == [{"status": "processed"}] * 3
    assert set(stored(app).values()) == {("processed", 1)} and count_customers(app) == 4
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # the new batch connection takes no pool slot either
    _, session = app.extensions[inbox._BATCH_SESSION]
    assert session.bind.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    session.bind.rollback()


def test_two_batches_about_the_same_customers_in_opposite_orders_queue_without_a_deadlock(make_app, monkeypatch):
    """Two workers' batches hold events about cus_a and cus_b, arriving in opposite orders.
    Were each handled in arrival order, each batch would lock one customer, then wait for the
    other's: a deadlock, which PostgreSQL breaks after a second by failing one batch. Handled
    in one global order, the second batch waits for the first at its first customer."""
    from kamiyo.webhooks import group_commit, inbox

    workers = make_app(), make_app()
    with workers[0].app_context():
        db.session.add_all([Customer(user_id=f"user-{c}", email="old@example.com", stripe_customer_id=f"cus_{c}")
                            for c in "ab"])
        db.session.commit()
    batches = [[make_event("customer.updated", customer(f"cus_{c}", email=f"{c}{n}@example.com"), created=T0 + n)
                for c in order] for n, order in ((1, "ab"), (2, "ba"))]
    first_done = [threading.Event(), threading.Event()]
    handled = threading.local()
    real = handlers.dispatch

    def paced(event):
        result = real(event)
        me = next(n for n, batch in enumerate(batches) if event in batch)
        if not getattr(handled, "once", False):
            # Holding the first customer's locks: go on once the other batch holds its first
            # too (the deadlock, in arrival order) or waits for ours (the global order).
            handled.once = True
            first_done[me].set()
            wait_until(lambda: first_done[1 - me].is_set() or lock_waiters(workers[me]) > 0)
        return result

    def write(n: int):
        with workers[n].app_context():
            return inbox._apply_batch([group_commit.Pending(e, json.dumps(e)) for e in batches[n]])

    monkeypatch.setattr(handlers, "dispatch", paced)
    with ThreadPoolExecutor(2) as pool:
        results = [f.result(30) for f in [pool.submit(write, n) for n in (0, 1)]]
    assert [[r.status for r in batch] for batch in results] == [["processed", "processed"]] * 2
    with workers[0].app_context():
        emails = dict(db.session.execute(db.select(Customer.stripe_customer_id, Customer.email)).all())
    assert emails == {"cus_a": "a2@example.com", "cus_b": "b2@example.com"}  # the newer batch's


def requests_in_context(app) -> None:
    """What a request does with the pool: check a connection out, use it, give it back."""
    with app.app_context():
        db.session.execute(db.text("SELECT pg_sleep(0.05)"))
        db.session.rollback()


def test_after_postgresql_drops_every_connection_the_next_deliveries_are_all_processed(app, client):
    """A restart or failover kills the pooled connections: found dead at checkout (pre-ping) or
    at the duplicate check, each is replaced; no delivery answers 500 for it."""
    events = [make_event("customer.created", customer(f"cus_gone{n}", user_id=f"u-gone{n}")) for n in range(6)]
    assert post(client, events[0]).get_json() == {"status": "processed"}
    with app.app_context():
        with ThreadPoolExecutor(4) as pool:  # several connections in the pool, all to be killed
            list(pool.map(lambda _: requests_in_context(app), range(8)))
        assert db.engine.pool.checkedin() > 1
        outside = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool)
        with outside.connect() as killer:
            killer.execute(db.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        outside.dispose()
    assert [post(client, e).get_json() for e in events[1:]] == [{"status": "processed"}] * 5
    assert set(stored(app).values()) == {("processed", 1)}


def test_a_lock_held_by_a_stuck_session_fails_the_delivery_instead_of_holding_it(make_app):
    """An operator's session left open on our customer's lock: the delivery about that customer
    answers 500 after POSTGRES_LOCK_TIMEOUT_MS (Stripe retries; the others are not held up
    behind it), and goes through once the lock is let go."""
    app = make_app(POSTGRES_LOCK_TIMEOUT_MS=300)
    event = make_event("customer.updated", customer("cus_stuck", user_id="user-stuck"))
    with app.app_context():
        db.session.add(Customer(user_id="user-stuck", email="old@example.com", stripe_customer_id="cus_stuck"))
        db.session.commit()
        stuck = db.engine.connect()
        stuck.execute(db.text("SELECT pg_advisory_xact_lock(:space, hashtext('cus_stuck'))"),
                      {"space": handlers._ORDER_LOCKS})
    try:
        response = post(app.test_client(), event)
        assert response.status_code == 500 and response.get_json()["error"]["code"] == "webhook_failed"
        assert stored(app)[event["id"]][0] == "failed"
    finally:
        stuck.rollback()
        stuck.close()
    assert post(app.test_client(), event).get_json() == {"status": "processed"}
    assert stored(app)[event["id"]] == ("processed", 2)


def test_the_lock_timeout_leaves_the_urls_own_options_alone(app, make_app):
    url = sa.engine.make_url(app.config["SQLALCHEMY_DATABASE_URI"]).update_query_dict(
        {"options": "-c statement_timeout=4321"})
    other = make_app(SQLALCHEMY_DATABASE_URI=url.render_as_string(hide_password=False), POSTGRES_LOCK_TIMEOUT_MS=1234)
    with other.app_context():
        assert db.session.scalar(db.text("SHOW statement_timeout")) == "4321ms"
        assert db.session.scalar(db.text("SHOW lock_timeout")) == "1234ms"
        db.session.rollback()
        db.engine.dispose()
