"""`flask --app wsgi verify-deploy --url URL` against the real thing: gunicorn (two workers,
Redis, localstripe behind the emulator proxy), its log file, and a URL where nothing answers."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kamiyo import create_app
from kamiyo.extensions import db
from tests.support import TEST_SECRETS, closed_port_url, gunicorn, make_key
from tests.travel.clock import Timeline

pytestmark = pytest.mark.slow

# The module's clock (gunicorn's and the tests') starts at noon 10 days after VERSION, far from
# midnight: the start-up line says "10 days old" however long the module takes.
START = dt.datetime(2026, 12, 10, 12, 0, tzinfo=dt.UTC)
VERSION = "2026-11-30"


@pytest.fixture(scope="module")
def timeline():
    return Timeline(START)


@pytest.fixture(autouse=True)
def on_the_timeline(timeline):
    with timeline.travel():
        yield


@pytest.fixture(scope="module")
def service(tmp_path_factory, stripe_proxy, redis_url, timeline):
    """One gunicorn for the module: (its URL, its log file, the CLI's app on the same database)."""
    instance = tmp_path_factory.mktemp("verify") / "instance"
    instance.mkdir()
    database = f"sqlite:///{instance}/kamiyo.db"
    settings = {"STRIPE_API_BASE": stripe_proxy.url, "REDIS_URL": redis_url, "LOG_LEVEL": "INFO",
                "STRIPE_API_VERSION": VERSION}
    clock = {k: v for k, v in timeline.child_env().items() if k in ("TEST_CLOCK_TRAVEL_SECONDS", "PYTHONPATH")}
    with gunicorn(instance, database, **settings, **clock) as url:
        app = create_app({"TESTING": True, **TEST_SECRETS, "SQLALCHEMY_DATABASE_URI": database, **settings})
        key = make_key(app)["Authorization"].removeprefix("Bearer ")
        yield url, instance / "gunicorn.log", app, key
        with app.app_context():
            db.engine.dispose()


def verify(app, *args: str):
    return app.test_cli_runner().invoke(args=["verify-deploy", *args])


def names(result) -> list[str]:
    return [line.split(":")[0] for line in result.output.splitlines()]


def line_of(result, name: str) -> str:
    [found] = [line for line in result.output.splitlines() if line.split("] ", 1)[-1].startswith(name + ":")]
    return found


def test_a_healthy_release_answers_0(service):
    url, log, app, key = service
    result = verify(app, "--url", url, "--api-key", key, "--log", str(log))
    assert result.exit_code == 0, result.output
    assert names(result) == ["[ok  ] health", "[ok  ] payments health", "[ok  ] idempotency probe",
                             "[ok  ] rate-limit probe", "[ok  ] start-up line", "[ok  ] log errors", "verify-deploy"]
    assert line_of(result, "idempotency probe").startswith(
        "[ok  ] idempotency probe: the same customer twice: 201 then 200, one customer (cus_")
    assert line_of(result, "idempotency probe").endswith("Idempotent-Replayed: true")
    assert line_of(result, "start-up line").startswith(
        f"[ok  ] start-up line: [STRIPE VERSION] Healthy: API version {VERSION} is 10 days old. (INFO, ")
    assert line_of(result, "rate-limit probe") == (
        "[ok  ] rate-limit probe: skipped (it adds violations): --probe-rate-limit runs it")
    assert key not in result.output


def test_the_rate_limit_probe_sees_the_31st_post_refused(service):
    url, log, app, key = service
    result = verify(app, "--url", url, "--api-key", key, "--log", str(log), "--probe-rate-limit", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    probe = {c["name"]: c for c in body["checks"]}["rate-limit probe"]
    assert probe["status"] == "ok"
    # Redis holds one count for both workers: the 31st is the first 429.
    assert probe["line"] == "30 unsigned posts refused (30 x 400), post 31: 429"
    assert (body["status"], body["exit_code"], body["url"]) == ("ok", 0, url)


def test_nothing_answering_is_a_failure(service):
    _, log, app, key = service
    nowhere = closed_port_url()
    result = verify(app, "--url", nowhere, "--api-key", key, "--log", str(log))
    assert result.exit_code == 2, result.output
    assert line_of(result, "health") == (
        f"[FAIL] health: no answer from {nowhere}/health (ConnectionError) -> is the service running? "
        "systemctl status kamiyo-web; journalctl -u kamiyo-web")
    assert "[FAIL] payments health: no answer from" in result.output
    assert "idempotency probe" not in result.output


def test_an_error_line_since_the_release_fails(service, tmp_path):
    url, log, app, key = service
    copy = tmp_path / "api.log"
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    error = {"timestamp": now, "level": "ERROR", "logger": "kamiyo", "message": "could not record a Stripe attempt"}
    copy.write_text(log.read_text() + json.dumps(error) + "\n")
    result = verify(app, "--url", url, "--api-key", key, "--log", str(copy))
    assert result.exit_code == 2, result.output
    assert line_of(result, "log errors").startswith(
        "[FAIL] log errors: 1 ERROR/CRITICAL line(s) since ")
    assert "last: could not record a Stripe attempt" in line_of(result, "log errors")
    # An error before the release time given does not count.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)).isoformat()
    result = verify(app, "--url", url, "--api-key", key, "--log", str(copy), "--since", later)
    assert result.exit_code == 0, result.output


def test_live_mode_skips_the_idempotency_probe_and_no_log_warns(service):
    url, _, _, key = service
    live = create_app({"TESTING": True, **TEST_SECRETS, "STRIPE_SECRET_KEY": "sk_live_kamiyo_tests",
                       "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    result = verify(live, "--url", url, "--api-key", key)
    assert result.exit_code == 1, result.output
    assert line_of(result, "idempotency probe") == (
        "[ok  ] idempotency probe: skipped: live mode (it would create a real Stripe customer)")
    assert line_of(result, "log") == (
        "[WARN] log: skipped: no log file known -> pass --log PATH or set LOG_FILE to the file the service logs to")


def test_no_api_key_warns(service, monkeypatch):
    url, log, app, _ = service
    monkeypatch.delenv("KAMIYO_API_KEY", raising=False)
    result = verify(app, "--url", url, "--log", str(log))
    assert result.exit_code == 1, result.output
    assert line_of(result, "idempotency probe") == (
        "[WARN] idempotency probe: skipped: no API key -> pass --api-key or set KAMIYO_API_KEY "
        "(a key that may create customers)")


def test_the_release_began_at_its_first_workers_start_up_line(tmp_path):
    """Each worker logs its own start-up line: an error between the first and the last is the
    release's; one before an earlier release's start-up is not."""
    from kamiyo.release.verify import check_log

    start = dt.datetime(2026, 12, 6, 5, 0, tzinfo=dt.UTC)

    def line(seconds: float, level: str, message: str) -> str:
        stamp = (start + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return json.dumps({"timestamp": stamp, "level": level, "logger": "kamiyo", "message": message})

    startup = "[STRIPE VERSION] Healthy: API version 2026-10-28.endive is 39 days old."
    log = tmp_path / "api.log"
    log.write_text("\n".join([
        line(-3600, "INFO", startup), line(-3000, "ERROR", "an earlier release's error"),
        line(0, "INFO", startup), line(1, "ERROR", "between the workers' start-ups"),
        "[2026-12-06 05:00:02 +0000] [42] [ERROR] Exception in worker process",
        line(2, "INFO", startup), line(3, "WARNING", "not an error"),
    ]) + "\n")
    startup_check, errors = check_log(log, None)
    assert (startup_check.status, errors.status) == ("ok", "fail")
    assert errors.line == ("2 ERROR/CRITICAL line(s) since 2026-12-06T05:00:00+00:00; last: "
                           "[2026-12-06 05:00:02 +0000] [42] [ERROR] Exception in worker process")
