"""Shared fixtures: an app on a temp SQLite (or a real PostgreSQL, for tests
marked `both_databases`), its client and CLI runner, and a real localstripe on
a free loopback port."""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import settings

from devtools.localstripe_server import LocalStripe
from kamiyo import create_app
from kamiyo.config import DEFAULTS
from kamiyo.extensions import db
from tests.support import FAST_RETRIES, TEST_SECRETS, assert_contract, closed_port_url, free_port, make_key


# No example database: a failure found once must not fail every later run in
# the same checkout. Hypothesis prints the seed and blob to replay it instead.
settings.register_profile("kamiyo", database=None, print_blob=True)
settings.load_profile("kamiyo")

DATABASES = ("sqlite", "postgresql")


def pytest_addoption(parser):
    parser.addoption("--travel", default=None, metavar="730d",
                     help="run every test (and the processes tests start) with the clock moved ahead")
    parser.addoption("--clock-at", default=None, metavar="2027-01-01T23:59:59.5",
                     help="start every test's clock (and its children's) at this UTC instant, ticking")


def pytest_configure(config):
    travel = config.getoption("--travel")
    if travel:
        from tests.travel import clock

        seconds = clock.start(travel)
        print(f"clock moved ahead by {seconds / 86400:g} days: now {time.strftime('%Y-%m-%d %H:%M:%S')}")
    clock_at = config.getoption("--clock-at")
    if clock_at:
        from tests.travel import clock

        clock.start_at(clock_at)
        print(f"every test's clock starts at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")


@pytest.fixture(autouse=True)
def clock_at_each_test(request):
    """`--clock-at=INSTANT`: each test starts on that instant, so one run shows every boundary racer."""
    clock_at = request.config.getoption("--clock-at")
    if not clock_at:
        yield
        return
    from tests.travel import clock

    with clock.each_test_at(clock.parse_instant(clock_at)):
        yield


def pytest_generate_tests(metafunc):
    """`@pytest.mark.both_databases`: run the test once on SQLite and once on PostgreSQL.

    On a module (`pytestmark`) the mark leaves alone the tests that use no
    database, and those that choose theirs (`@pytest.mark.parametrize("database",
    ["postgresql"], indirect=True)`, see tests.support.postgresql_only).
    """
    if metafunc.definition.get_closest_marker("both_databases") is None:
        return
    if "database" not in metafunc.fixturenames:
        if any(mark.name == "both_databases" for mark in metafunc.definition.own_markers):
            raise pytest.UsageError(f"{metafunc.definition.nodeid} is marked both_databases but uses no database")
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "database" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    metafunc.parametrize("database", DATABASES, indirect=True)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    """The developer's shell settings and instance/config.py never leak into a test."""
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"KAMIYO_{name}", raising=False)
    instance = tmp_path / "instance"
    instance.mkdir()
    monkeypatch.setenv("KAMIYO_INSTANCE_PATH", str(instance))
    return instance


@pytest.fixture(autouse=True)
def no_scheduler_left_running():
    """A test that turns SCHEDULER_ENABLED on must not leave its scheduler thread behind."""
    yield
    from kamiyo.scheduler import stop_scheduler

    stop_scheduler()


@pytest.fixture(scope="session")
def localstripe_url():
    """A real, stateful Stripe emulator on a free loopback port, empty at the start of the session
    (its store is the process's: a second session in one process, as mutmut runs, starts clean)."""
    LocalStripe.flush()
    emulator = LocalStripe()
    url = emulator.start()
    yield url
    emulator.stop()


@pytest.fixture
def localstripe(localstripe_url):
    """stripe-python talking straight to localstripe (to look behind our back)."""
    import stripe

    return stripe.StripeClient("sk_test_inspect", base_addresses={"api": localstripe_url}, max_network_retries=0)


@pytest.fixture(scope="session")
def stripe_proxy(localstripe_url):
    """The Stripe emulator proxy (faults, idempotency, recording) in front of localstripe."""
    from devtools.stripe_proxy import StripeProxy

    proxy = StripeProxy(localstripe_url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(stripe_proxy):
    """The session's proxy with no faults, recorded requests or idempotency keys left over."""
    stripe_proxy.clear()
    yield stripe_proxy
    stripe_proxy.clear()


@pytest.fixture(scope="session")
def stripe_contract():
    """Stripe's OpenAPI spec (../shared/stripe-openapi), parsed once per session."""
    from devtools.stripe_contract import StripeContract

    return StripeContract.load()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory):
    """Run the migrations once; each test gets a copy of the resulting file."""
    from flask_migrate import upgrade

    path = tmp_path_factory.mktemp("db") / "template.db"
    app = create_app({"TESTING": True, **TEST_SECRETS, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}"})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL cluster on a free loopback port, for the whole session (tests/postgres.py)."""
    from tests.postgres import PostgresCluster, PostgresUnavailable, cluster_parent, sweep_orphans

    parent = cluster_parent(tmp_path_factory.getbasetemp())
    sweep_orphans(parent)
    try:
        cluster, missing = PostgresCluster(parent), None
    except PostgresUnavailable as exc:
        cluster, missing = None, str(exc)
    if cluster is None:
        pytest.fail(f"{missing}: run `make test` (it installs the Debian package postgresql)", pytrace=False)
    atexit.register(cluster.stop)  # should the session end without its teardown
    try:
        cluster.init()
        for attempt in range(3):  # another process may take the free port before postgres binds it
            try:
                cluster.start(free_port())
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


@pytest.fixture(scope="session")
def pg_template(postgres):
    """A database migrated once (like migrated_template), then the template of every test's database."""
    from flask_migrate import upgrade

    name = postgres.create_database("kamiyo_template")
    app = create_app({"TESTING": True, **TEST_SECRETS, "SQLALCHEMY_DATABASE_URI": postgres.url(name)})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    postgres.mark_template(name)
    return name


@pytest.fixture
def pg_database(postgres, pg_template):
    """A fresh, migrated PostgreSQL database for one test (a copy of the template); its URL."""
    name = postgres.create_database(postgres.new_name(), template=pg_template)
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture
def database(request) -> str:
    """The database the test's app runs on: "sqlite", unless the test opts in to both."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_uri(database, request, tmp_path) -> str:
    """A fresh, migrated database of the test's kind. PostgreSQL starts only when a test needs it."""
    if database == "postgresql":
        return request.getfixturevalue("pg_database")
    assert database == "sqlite", database
    db_path = tmp_path / "kamiyo.db"
    shutil.copy(request.getfixturevalue("migrated_template"), db_path)
    return f"sqlite:///{db_path}"


@pytest.fixture
def app_config(database_uri):
    return {
        "TESTING": True,
        **TEST_SECRETS,
        "SQLALCHEMY_DATABASE_URI": database_uri,
        # Unreachable unless a test asks for localstripe: no test calls Stripe by accident.
        "STRIPE_API_BASE": closed_port_url(),
    }


@pytest.fixture
def make_app(app_config):
    apps = []

    def factory(**overrides):
        app = create_app({**app_config, **overrides})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        close_app_connections(app)


def close_app_connections(app) -> None:
    """Close every database connection the app holds, so its test database can go.

    dispose() closes the pool; the webhook batches' connection is detached
    from it (kamiyo/webhooks/inbox.py) and lives as long as the app, i.e. in
    production as long as the worker: it is closed here.
    """
    from kamiyo.webhooks import inbox

    found = app.extensions.pop(getattr(inbox, "_BATCH_SESSION", None), None)
    if found is not None:
        session = found[1]
        connection = session.bind
        session.close()
        connection.close()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def stripe_app(make_app, localstripe_url):
    """An app whose Stripe is the real localstripe emulator."""
    return make_app(STRIPE_API_BASE=localstripe_url)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port (installed by `make test`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs the Debian package)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def serve_app():
    """Serve an app over real HTTP (threaded WSGI server) on a free loopback port."""
    from werkzeug.serving import make_server

    servers = []

    def start(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def plan_id(localstripe_url):
    """A recurring plan in localstripe (its stand-in for a Price)."""
    import stripe

    client = stripe.StripeClient("sk_test_setup", base_addresses={"api": localstripe_url}, max_network_retries=0)
    product = client.v1.products.create(params={"name": "Kamiyo Pro"})
    plan = client.v1.plans.create(params={"product": product.id, "amount": 2900, "currency": "usd",
                                          "interval": "month", "id": "price_kamiyo_pro_monthly"})
    return plan.id


@pytest.fixture
def slack(serve_app):
    """A real HTTP receiver standing in for Slack's incoming webhook: (url, received payloads)."""
    from flask import Flask, request

    received = []
    receiver = Flask("slack")

    @receiver.post("/hook")
    def hook():
        received.append(request.get_json())
        return "ok"

    return serve_app(receiver) + "/hook", received


@pytest.fixture
def payments_app(make_app, proxy, stripe_contract):
    """The app, talking to localstripe through the emulator proxy (faults, Stripe's idempotency).

    Afterwards every request the gateway sent must validate against Stripe's
    published OpenAPI spec (the contract of what we send)."""
    yield make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    assert_contract(proxy, stripe_contract)


@pytest.fixture
def auth(payments_app):
    return make_key(payments_app)


@pytest.fixture
def api(payments_app, auth):
    """A test client of the payments API that sends the API key."""
    client = payments_app.test_client()

    class Api:
        def post(self, path, json=None, headers=None, **kw):
            return client.post(f"/api/v1/payments{path}", json=json, headers={**auth, **(headers or {})}, **kw)

        def get(self, path, headers=None):
            return client.get(f"/api/v1/payments{path}", headers={**auth, **(headers or {})})

    return Api()


MID_MINUTE = "2026-12-10T12:00:05+00:00"


@pytest.fixture
def mid_minute():
    """A test that counts in calendar windows (alerts once per hour, blocked requests one row
    per minute, job periods per day) runs on a clock that starts 5 s into a minute, an hour and a
    day, and ticks: all it does falls in one window. `pytestmark =
    pytest.mark.usefixtures("mid_minute")` puts a module on it."""
    import time_machine

    with time_machine.travel(MID_MINUTE, tick=True):
        yield
