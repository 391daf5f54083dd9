"""Two hosts: two gunicorn masters (each with its two workers, its own port and process group)
on one PostgreSQL database and one Redis, as a deploy behind a load balancer runs them.

The rate limit and the breaker are shared through Redis, a scheduled job runs once through
the database's claim, and a webhook delivered to both hosts at once is processed once.
The two-worker versions of these are in tests/webhooks/test_webhook_gunicorn.py,
tests/integration/test_breaker_answers.py and tests/integration/test_scheduler.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from sqlalchemy import create_engine, text

from devtools.stripe_proxy import Fault
from kamiyo import create_app
from kamiyo.scheduler import ALERT_EVALUATION_JOB, ALERT_EVALUATION_MINUTES
from tests.support import (
    DASHBOARD_PASSWORD,
    FAST_RETRIES,
    ROOT,
    TEST_SECRETS,
    closed_port_url,
    csrf_token,
    gunicorn_master,
    make_key,
    make_user,
)
from tests.travel.clock import child_env
from tests.webhooks.stripe_signing import URL, customer, make_event, signed

pytestmark = pytest.mark.slow

RATE_LIMIT = 20  # refused webhook posts per client IP, counted over both hosts
BREAKER_KEYS = [f"kamiyo:breaker:stripe:{key}" for key in ("failures", "opened_at", "probe", "alerted")]
REDIS_DB = 5  # a database of the session's Redis of its own: no other test's counts


@pytest.fixture(scope="module")
def shared(postgres, pg_template, redis_url):
    """One PostgreSQL database and one Redis database, for both hosts."""
    name = postgres.create_database(postgres.new_name("two_hosts"), template=pg_template)
    store_url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(store_url).flushdb()
    yield postgres.url(name), store_url
    postgres.drop_database(name)


@pytest.fixture(scope="module")
def hosts(shared, stripe_proxy, tmp_path_factory):
    """Host A and host B: two masters on the shared database and Redis."""
    database_url, store_url = shared
    settings = {"REDIS_URL": store_url, "STRIPE_API_BASE": stripe_proxy.url, "LOG_LEVEL": "INFO",
                "WEBHOOK_RATE_LIMIT": f"{RATE_LIMIT}/hour", "DASHBOARD_COOKIE_SECURE": "false",  # plain HTTP here
                # One failed Stripe call opens the breaker, for long enough to ask the other host.
                "BREAKER_FAIL_MAX": "1", "BREAKER_RESET_TIMEOUT": "300", "STRIPE_RETRY_ATTEMPTS": "1",
                **{name: str(value) for name, value in FAST_RETRIES.items()}}
    with gunicorn_master(tmp_path_factory.mktemp("host-a"), database_url, **settings) as a, \
            gunicorn_master(tmp_path_factory.mktemp("host-b"), database_url, migrate=False, **settings) as b:
        assert a.url != b.url and not a.worker_pids() & b.worker_pids()
        assert os.getpgid(a.proc.pid) != os.getpgid(b.proc.pid)
        yield a, b


def query(database_url: str, sql: str, **params) -> list[tuple]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params).all()]
    finally:
        engine.dispose()


def test_the_webhook_rate_limit_is_one_count_over_both_hosts(hosts, shared):
    a, b = hosts

    def unsigned(host) -> int:
        return requests.post(host.url + URL, data=b"{}", headers={"Connection": "close"}, timeout=10).status_code

    # Half the limit refused by each host: together, the limit.
    assert [unsigned(host) for _ in range(RATE_LIMIT // 2) for host in (a, b)] == [400] * RATE_LIMIT
    assert (unsigned(a), unsigned(b)) == (429, 429)
    [key] = redis.Redis.from_url(shared[1]).keys("*webhooks.stripe_webhook*")
    assert int(redis.Redis.from_url(shared[1]).get(key)) == RATE_LIMIT + 2
    # Stripe's deliveries from the blocked address still pass, on either host.
    for n, host in enumerate((a, b)):
        body, headers = signed(make_event("customer.created", customer(f"cus_limit_{n}", user_id=f"limit-{n}")))
        answer = requests.post(host.url + URL, data=body, headers={**headers, "Connection": "close"}, timeout=10)
        assert answer.json() == {"status": "processed"}


@pytest.fixture(scope="module")
def control_app(shared):
    """An app on the shared database, to make API keys and users in it."""
    return create_app({"TESTING": True, **TEST_SECRETS, "SQLALCHEMY_DATABASE_URI": shared[0],
                       "STRIPE_API_BASE": closed_port_url()})


@pytest.fixture(scope="module")
def api_key(control_app):
    return make_key(control_app)


@pytest.fixture
def create(api_key):
    """POST a customer for `user` to a host, on a new connection (either of its workers)."""

    def post(host, user: str) -> requests.Response:
        return requests.post(f"{host.url}/api/v1/payments/customers", headers={**api_key, "Connection": "close"},
                             json={"user_id": user, "email": f"{user}@example.com"}, timeout=30)

    return post


def test_the_breaker_opened_by_one_host_refuses_on_the_other(hosts, shared, proxy, create):
    a, b = hosts
    store = redis.Redis.from_url(shared[1])
    store.delete(*BREAKER_KEYS)
    try:
        proxy.add_faults(Fault("status", status=500))
        failed = create(a, "breaker-a")
        assert failed.status_code == 502 and failed.json()["error"]["code"] == "payment_service_error", failed.text
        sent = len(proxy.requests)
        # Host B never called Stripe and failed nothing: it reads the breaker host A opened.
        for n in range(4):  # a new connection each time: both of B's workers
            refused = create(b, f"breaker-b-{n}")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "payment_service_unavailable"
            assert 0 < int(refused.headers["Retry-After"]) <= 300
        assert len(proxy.requests) == sent, "host B sent nothing to Stripe while the breaker was open"
        assert store.get("kamiyo:breaker:stripe:opened_at") is not None
    finally:
        store.delete(*BREAKER_KEYS)
    # Closed again (the keys gone): host B reaches Stripe.
    assert create(b, "breaker-b-after").status_code == 201


def test_a_webhook_delivered_to_both_hosts_at_once_is_processed_once(hosts, shared):
    a, b = hosts
    event = make_event("customer.created", customer("cus_both_hosts", user_id="both-hosts"))
    body, headers = signed(event)
    start = threading.Barrier(10)

    def deliver(host) -> str:
        start.wait(timeout=10)
        answer = requests.post(host.url + URL, data=body, headers={**headers, "Connection": "close"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["status"]

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(deliver, [a, b] * 5))
    assert sorted(statuses) == ["duplicate"] * 9 + ["processed"]
    assert query(shared[0], "SELECT status, attempts FROM webhook_events WHERE event_id = :id",
                 id=event["id"]) == [("processed", 1)]
    assert query(shared[0], "SELECT count(*) FROM customers WHERE stripe_customer_id = 'cus_both_hosts'") == [(1,)]


def test_one_customer_created_on_both_hosts_at_once_is_one_stripe_customer(hosts, shared, proxy, create):
    a, b = hosts
    start = threading.Barrier(6)

    def send(host) -> int:
        start.wait(timeout=10)
        return create(host, "both-hosts-customer").status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(send, [a, b] * 3))
    # One creates; a twin waits for its answer (200), or is told to come back (409): never a second.
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, statuses
    assert len(proxy.requests_to("POST", r"^/v1/customers$")) == 1
    assert query(shared[0], "SELECT count(*) FROM customers WHERE user_id = 'both-hosts-customer'") == [(1,)]
    assert {create(host, "both-hosts-customer").status_code for host in (a, b)} == {200}


def test_a_dashboard_session_made_on_one_host_is_good_on_the_other(hosts, control_app):
    a, b = hosts
    make_user(control_app, "oncall@example.com")
    browser = requests.Session()  # one cookie jar for both: the balancer's two ends of one site
    form = browser.get(a.url + "/login", timeout=10)
    signed_in = browser.post(a.url + "/login", allow_redirects=False, timeout=10, data={
        "email": "oncall@example.com", "password": DASHBOARD_PASSWORD, "csrf_token": csrf_token(form.text)})
    assert signed_in.status_code == 302 and "/login" not in signed_in.headers["Location"]
    for host in (b, a, b):
        page = browser.get(host.url + "/dashboard/", allow_redirects=False, timeout=10)
        assert page.status_code == 200, (host.url, page.status_code, page.headers.get("Location"))


LEADS = (8.0, 30.0)  # seconds from the schedulers' start to the mark; the second if start-up was slower
# The five-minute marks the schedulers meet (one per attempt: a slow first attempt may have fired at
# its own), mid-day and far from an hour, so no hourly or daily job fires with them.
MARKS = (dt.datetime(2026, 12, 10, 12, 25, tzinfo=dt.UTC), dt.datetime(2026, 12, 10, 12, 40, tzinfo=dt.UTC))


def start_schedulers(shared, folder, lead: float, mark: dt.datetime):
    """`flask scheduler run` for hosts a and b, their clocks started `lead` seconds before the
    five-minute `mark`; the processes, the mark, and whether both will fire at it."""
    database_url, store_url = shared
    due = mark.timestamp()
    assert due % (ALERT_EVALUATION_MINUTES * 60) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_", "SCHEDULER"))}
    env.update(TEST_SECRETS, DATABASE_URL=database_url, REDIS_URL=store_url, STRIPE_API_BASE=closed_port_url(),
               LOG_LEVEL="DEBUG")
    env = child_env(due - lead, env)
    procs = []
    for host in ("a", "b"):
        instance = folder / host
        instance.mkdir(parents=True)
        with open(instance / "log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler", "run"],
                                          cwd=ROOT, env={**env, "KAMIYO_INSTANCE_PATH": str(instance)},
                                          stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True))
    fires = []
    for proc in procs:
        for line in proc.stdout:  # the job lines: "  alert-evaluation   next run 2026-...+00:00"
            if line.split()[:1] == [ALERT_EVALUATION_JOB]:
                fires.append(dt.datetime.fromisoformat(line.split()[-1]).timestamp())
                break
    return procs, due, fires == [due, due]


def stop_schedulers(procs, folder) -> list[str]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.communicate(timeout=20)
    return [(folder / host / "log").read_text() for host in ("a", "b")]


def test_a_job_due_on_both_hosts_runs_once(hosts, shared, tmp_path):
    """Each host runs its own `flask scheduler run` (kamiyo-scheduler.service): both fire the
    alert evaluation at the same five-minute mark; one run of it is recorded and made."""
    database_url = shared[0]
    for attempt, lead in enumerate(LEADS):
        folder = tmp_path / str(attempt)
        procs, _, on_time = start_schedulers(shared, folder, lead, MARKS[attempt])
        if on_time:
            break
        stop_schedulers(procs, folder)
    assert on_time, f"the schedulers did not start within {LEADS[-1]:g} s:\n" + "\n".join(stop_schedulers(procs, folder))
    period = MARKS[attempt].strftime("%Y-%m-%dT%H:%M")
    try:
        deadline = time.monotonic() + lead + 20
        while all(proc.poll() is None for proc in procs) and time.monotonic() < deadline:
            if query(database_url, "SELECT status FROM job_runs WHERE job = :job AND period = :period "
                     "AND status <> 'running'", job=ALERT_EVALUATION_JOB, period=period):
                time.sleep(1.0)  # the other scheduler's fire, had it run the job too
                break
            time.sleep(0.2)
    finally:
        logs = stop_schedulers(procs, folder)
    assert all(proc.returncode == 0 for proc in procs), [log[-2000:] for log in logs]
    runs = query(database_url, "SELECT status, pid FROM job_runs WHERE job = :job AND period = :period",
                 job=ALERT_EVALUATION_JOB, period=period)
    assert [status for status, _ in runs] == ["ok"]
    pids = [proc.pid for proc in procs]
    assert runs[0][1] in pids

    def said(log: str, message: str) -> bool:
        return any(json.loads(line).get("message") == message for line in log.splitlines() if line.startswith("{"))

    ran = [said(log, f"job {ALERT_EVALUATION_JOB} for {period}: ok") for log in logs]
    skipped = [said(log, f"job {ALERT_EVALUATION_JOB} for {period} already claimed by another process; skipped")
               for log in logs]
    # Both fired; the one that recorded the run made it, the other stood down.
    assert ran == [pid == runs[0][1] for pid in pids] and skipped == [not r for r in ran], (ran, skipped)
