"""The seed's P1-4: 30 requests per minute per IP, 429 with Retry-After, violations recorded."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import time_machine

from tests.support import both_databases, wait_until
from tests.webhooks.stripe_signing import URL, customer, make_event, post
from kamiyo.extensions import db
from kamiyo.webhooks import metrics
from kamiyo.webhooks.models import RateLimitViolation
from kamiyo.models import AlertSent


@pytest.fixture(autouse=True)
def mid_minute():
    """The limits count per calendar minute (a fixed window), blocks are written one row per IP
    and minute: each test starts 5 s into a minute, so all its requests share one."""
    with time_machine.travel(dt.datetime(2026, 12, 10, 12, 0, 5, tzinfo=dt.UTC), tick=True):
        yield


def unsigned(client, ip="203.0.113.7", **headers):
    return client.post(URL, data=b'{"id": "evt_test", "type": "customer.created"}',
                       headers={"Stripe-Signature": "test", **headers}, environ_base={"REMOTE_ADDR": ip})


def test_31_unsigned_posts_the_31st_is_429_json_with_retry_after(app, client, caplog):
    violations_before = metrics.RATE_LIMIT_VIOLATIONS._value.get()
    blocked_before = metrics.REQUESTS_BLOCKED._value.get()
    codes = [unsigned(client, **{"User-Agent": "curl/8.5\x00\x1b[31m" + "x" * 400}).status_code for _ in range(30)]
    assert codes == [400] * 30
    with caplog.at_level(logging.WARNING, logger="kamiyo.ratelimit"):
        response = unsigned(client, **{"User-Agent": "curl/8.5\x00\x1b[31m" + "x" * 400})
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "rate_limited" and error["support_id"] == response.headers["X-Request-ID"]
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    # Another client is not affected.
    assert unsigned(client, ip="198.51.100.2").status_code == 400

    assert metrics.RATE_LIMIT_VIOLATIONS._value.get() == violations_before + 1
    assert metrics.REQUESTS_BLOCKED._value.get() == blocked_before + 1
    [line] = [r for r in caplog.records if r.getMessage().startswith("RATE LIMIT")]
    assert line.client_ip == "203.0.113.7" and line.endpoint == URL and line.limit == "30 per 1 minute"
    assert line.violation_time.endswith("Z")
    with app.app_context():
        [row] = db.session.scalars(db.select(RateLimitViolation))
        assert (row.client_ip, row.endpoint, row.limit) == ("203.0.113.7", URL, "30 per 1 minute")
        assert row.user_agent.startswith("curl/8.5?[31m") and len(row.user_agent) == 256
        assert row.occurred_at.tzinfo is not None


def test_stripe_deliveries_do_not_count_by_default(make_app):
    client = make_app(WEBHOOK_RATE_LIMIT="5/minute").test_client()
    for n in range(12):
        assert post(client, make_event("customer.created", customer(f"cus_{n}", user_id=f"u{n}"))).status_code == 200
    codes = [unsigned(client, ip="127.0.0.1").status_code for _ in range(6)]
    assert codes == [400] * 5 + [429]


def test_a_verified_delivery_passes_from_an_ip_over_its_limit(make_app):
    """Stripe shares its addresses (and a proxy may share one with anybody): someone else's
    garbage from the same IP must not lock Stripe's deliveries out for the minute."""
    client = make_app(WEBHOOK_RATE_LIMIT="5/minute").test_client()
    assert [unsigned(client, ip="127.0.0.1").status_code for _ in range(6)] == [400] * 5 + [429]
    late = post(client, make_event("customer.created", customer("cus_late", user_id="late")))
    assert late.status_code == 200 and late.get_json() == {"status": "processed"}
    # The IP's own garbage stays blocked.
    assert unsigned(client, ip="127.0.0.1").status_code == 429


def test_refused_requests_in_flight_together_cannot_pass_the_limit_together(make_app, serve_app):
    """Slow bodies: every request is past the limit's check before any has been refused. Each
    refusal takes its count atomically, so only the limit's worth of them answer 400."""
    import socket
    import time

    url = serve_app(make_app(WEBHOOK_RATE_LIMIT="5/minute"))
    host, port = url.removeprefix("http://").split(":")
    body = b'{"id": "evt_slow", "type": "customer.created"}'
    sockets = []
    for _ in range(12):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"POST {URL} HTTP/1.1\r\nHost: {host}\r\nStripe-Signature: t=1,v1=00\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body[:5])
        sockets.append(sock)
    time.sleep(0.5)  # every request is now waiting for the rest of its body
    for sock in sockets:
        sock.sendall(body[5:])
    codes = []
    for sock in sockets:
        with sock:
            codes.append(int(sock.makefile("rb").readline().split()[1]))
    assert sorted(codes) == [400] * 5 + [429] * 7


AGENT = "flood/1"


def _blocked_rows(app) -> list[tuple[str, str, int]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(db.select(
            RateLimitViolation.client_ip, RateLimitViolation.user_agent, RateLimitViolation.count
        ).order_by(RateLimitViolation.user_agent))]


def test_a_flood_is_one_counter_row_per_ip_and_minute_and_a_block_costs_no_sql(make_app, monkeypatch):
    """A row and a count query per 429 made a flood the database's busiest writer: 1,320 rows
    in 10 s, and signed deliveries from elsewhere slowed from p50 12 ms to 62 ms. Blocks are
    counted in memory and written together, one upserted row per IP, minute and agent."""
    from sqlalchemy import event
    from kamiyo.listing import time_range
    from kamiyo.webhooks import limiting, queries

    monkeypatch.setattr(limiting, "FLUSH_SECONDS", 60)  # nothing written by time alone here
    app = make_app(WEBHOOK_RATE_LIMIT="2/minute")
    client = app.test_client()
    assert [unsigned(client, **{"User-Agent": AGENT}).status_code for _ in range(3)] == [400, 400, 429]
    assert _blocked_rows(app) == [("203.0.113.7", AGENT, 1)]  # the first block is written at once
    with app.app_context():
        engine = db.engine
    statements: list[str] = []

    def executed(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", executed)
    try:
        codes = [unsigned(client, **{"User-Agent": AGENT}).status_code for _ in range(40)]
    finally:
        event.remove(engine, "before_cursor_execute", executed)
    assert codes == [429] * 40
    assert statements == []  # cheaper than a refusal's 400, which reads and verifies the body
    with app.app_context():
        limiting.flush()
        assert _blocked_rows(app) == [("203.0.113.7", AGENT, 41)]
        window = time_range("1h")
        assert queries.violation_count(window) == 41
        assert sum(queries.violation_series(window)["blocked"]) == 41
        assert queries.top_clients(window, "client_ip") == [("203.0.113.7", 41)]
        assert queries.top_clients(window, "user_agent") == [(AGENT, 41)]
        [latest] = queries.violations({}, window).rows
        assert queries.serialise_violation(latest)["count"] == 41


def test_an_ip_known_to_be_blocked_is_not_counted_in_the_store_again(make_app, monkeypatch):
    """A refusal takes a hit in the store (a Redis round trip in production); a block of an
    IP this worker already saw blocked takes none, until the window resets: a blocked request
    costs less than a refused one."""
    from kamiyo.webhooks import limiting

    hits = []
    counted = limiting.hit

    def counting(*args):
        hits.append(args)
        return counted(*args)

    monkeypatch.setattr(limiting, "hit", counting)
    client = make_app(WEBHOOK_RATE_LIMIT="2/minute").test_client()
    assert [unsigned(client).status_code for _ in range(3)] == [400, 400, 429]
    assert len(hits) == 3
    blocked = [unsigned(client) for _ in range(20)]
    assert [r.status_code for r in blocked] == [429] * 20 and len(hits) == 3
    assert all(1 <= int(r.headers["Retry-After"]) <= 61 for r in blocked)
    assert unsigned(client, ip="198.51.100.2").status_code == 400 and len(hits) == 4


def test_blocks_are_written_within_a_second_without_another_request(make_app):
    app = make_app(WEBHOOK_RATE_LIMIT="1/minute")
    client = app.test_client()
    assert [unsigned(client, **{"User-Agent": AGENT}).status_code for _ in range(5)] == [400] + [429] * 4
    wait_until(lambda: _blocked_rows(app) == [("203.0.113.7", AGENT, 4)], timeout=5)


def test_the_first_few_user_agents_of_an_ip_and_minute_are_kept_the_rest_counted_together(make_app, monkeypatch):
    """An attacker choosing a new User-Agent for each request still makes a bounded number of rows."""
    from kamiyo.webhooks import limiting

    monkeypatch.setattr(limiting, "FLUSH_SECONDS", 0)
    app = make_app(WEBHOOK_RATE_LIMIT="1/minute")
    client = app.test_client()
    codes = [unsigned(client, **{"User-Agent": f"agent-{n:02}"}).status_code for n in range(12)]
    codes += [unsigned(client, **{"User-Agent": "agent-01"}).status_code]
    assert codes == [400] + [429] * 12
    assert _blocked_rows(app) == [
        ("203.0.113.7", limiting.OTHER_AGENTS, 6),
        ("203.0.113.7", "agent-01", 2), ("203.0.113.7", "agent-02", 1), ("203.0.113.7", "agent-03", 1),
        ("203.0.113.7", "agent-04", 1), ("203.0.113.7", "agent-05", 1),
    ]


def test_count_all_counts_every_request(make_app):
    client = make_app(WEBHOOK_RATE_LIMIT="5/minute", WEBHOOK_RATE_LIMIT_COUNT="all").test_client()
    for n in range(5):
        assert post(client, make_event("customer.created", customer(f"cus_{n}", user_id=f"u{n}"))).status_code == 200
    assert post(client, make_event("customer.created", customer("cus_6", user_id="u6"))).status_code == 429


def test_forged_x_forwarded_for_does_not_pick_a_new_bucket(make_app):
    client = make_app(WEBHOOK_RATE_LIMIT="3/minute").test_client()
    codes = [unsigned(client, **{"X-Forwarded-For": f"10.0.0.{n}"}).status_code for n in range(4)]
    assert codes == [400, 400, 400, 429]


def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(make_app):
    app = make_app(WEBHOOK_RATE_LIMIT="3/minute", TRUSTED_PROXY_COUNT=1)
    client = app.test_client()
    first = [unsigned(client, ip="10.1.1.1", **{"X-Forwarded-For": "192.0.2.1"}).status_code for _ in range(4)]
    other = unsigned(client, ip="10.1.1.1", **{"X-Forwarded-For": "192.0.2.2"}).status_code
    assert first == [400, 400, 400, 429] and other == 400
    with app.app_context():
        assert db.session.scalar(db.select(RateLimitViolation.client_ip)) == "192.0.2.1"


@both_databases
def test_alert_once_per_ip_and_hour_past_the_threshold(make_app, slack, caplog, monkeypatch):
    from kamiyo.webhooks import limiting

    monkeypatch.setattr(limiting, "_alerted", set())  # the process remembers alerted IPs per hour
    monkeypatch.setattr(limiting, "FLUSH_SECONDS", 0)  # every block written at once: the 4th alerts
    url, received = slack
    app = make_app(WEBHOOK_RATE_LIMIT="2/minute", RATE_LIMIT_ALERT_PER_HOUR=3, ALERT_WEBHOOK_URL=url)
    client = app.test_client()
    with caplog.at_level(logging.WARNING):
        codes = [unsigned(client).status_code for _ in range(8)]
    assert codes == [400, 400] + [429] * 6
    # 6 violations, threshold 3: the 4th raises the alert, the next ones are de-duplicated.
    wait_until(lambda: received)  # posted off the request thread
    assert len(received) == 1
    assert received[0]["text"] == "[CRITICAL] Webhook rate limit"
    fields = {f["title"]: f["value"] for f in received[0]["attachments"][0]["fields"]}
    assert fields["client_ip"] == "203.0.113.7" and fields["violations"] == "4"
    assert [r.levelno for r in caplog.records if r.name == "kamiyo.alerts"] == [logging.CRITICAL]
    with app.app_context():
        assert db.session.scalar(db.select(AlertSent.dedup_key)) == "webhook-rate-limit:203.0.113.7"
        assert db.session.scalar(db.select(db.func.sum(RateLimitViolation.count))) == 6


def test_an_alert_is_de_duplicated_in_the_hour_its_violations_were_counted_in(make_app, monkeypatch):
    """Counted at 09:59:59.9, claimed at 10:00:00.1: claimed for 10:00, it would
    silence the alert that 10:00's own violations may call for."""
    from kamiyo.observability import alerts
    from kamiyo.webhooks import limiting

    monkeypatch.setattr(limiting, "_alerted", set())
    late = dt.datetime(2030, 1, 1, 9, 59, 59, 900_000, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(alerts, "utcnow", lambda: late + dt.timedelta(seconds=0.2))
    app = make_app(RATE_LIMIT_ALERT_PER_HOUR=1)
    with app.app_context():
        db.session.add(RateLimitViolation(client_ip="192.0.2.50", user_agent="x", endpoint=URL,
                                          limit="30 per 1 minute", occurred_at=late, count=2))
        db.session.commit()
        limiting._maybe_alert({"client_ip": "192.0.2.50", "endpoint": URL, "user_agent": "x"}, late)
        assert db.session.scalars(db.select(AlertSent.period)).all() == ["2030-01-01T09"]


@pytest.mark.parametrize("value", ["30 a minute", "", "thirty"])
def test_a_webhook_rate_limit_that_does_not_parse_stops_the_start(make_app, value):
    from kamiyo.config import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_RATE_LIMIT"):
        make_app(WEBHOOK_RATE_LIMIT=value)


def test_memory_storage_with_several_workers_warns(make_app, monkeypatch, caplog):
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    with caplog.at_level(logging.WARNING, logger="kamiyo.ratelimit"):
        app = make_app()
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert any("counted per worker" in r.getMessage() for r in caplog.records)
    # What `make run` (2 workers, no Redis) does to the README's "31st -> 429".
    assert any("the first 429 comes between the 31st and the 61st refused webhook from one IP" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kamiyo.ratelimit"):
        app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    assert app.config["RATELIMIT_STORAGE_URI"] == "redis://127.0.0.1:1/0"
    assert not [r for r in caplog.records if r.name == "kamiyo.ratelimit"]


def test_an_unreachable_rate_limit_store_does_not_turn_stripe_away(make_app):
    from tests.support import closed_port_url

    store = closed_port_url().replace("http://", "redis://") + "/0"
    client = make_app(RATELIMIT_STORAGE_URI=store).test_client()
    assert post(client, make_event("customer.created", customer("cus_open"))).get_json() == {"status": "processed"}
    assert unsigned(client).status_code == 400


def test_a_stalled_rate_limit_store_is_left_for_memory_instead_of_stalling_every_request(make_app):
    """A Redis that accepts connections and never answers (hung, or cut off by the network):
    waited for once, briefly, then the limit is counted in memory."""
    import socket
    import time

    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(16)  # connections complete in the kernel's backlog; nobody ever reads
    try:
        client = make_app(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{stalled.getsockname()[1]}/0",
                          WEBHOOK_RATE_LIMIT="2/minute").test_client()
        started = time.monotonic()
        codes = [unsigned(client).status_code for _ in range(3)]
        elapsed = time.monotonic() - started
    finally:
        stalled.close()
    assert codes == [400, 400, 429]  # still limited
    assert elapsed < 5, elapsed  # without the fallback: 2 x redis-py's timeout a request
