"""Red-team tests of the ops dashboard: what an attacker or a careless click can do.

Two kinds of test live here:

- FINDING tests reproduced a problem a review found; each failed against the first
  dashboard and passes since its fix. The docstring says what happened and what must.
- HOLDS tests pin an attack that was tried and did not work.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

import pytest
import time_machine
from sqlalchemy import event, select

from kamiyo.extensions import db
from kamiyo.models import AuditEntry, Customer, Subscription, utcnow
from kamiyo.payments.models import PaymentOperation
from kamiyo.scheduler.models import JobRun
from kamiyo.stripe_gateway.models import StripeCall
from kamiyo.versioning.models import VersionCheck
from kamiyo.webhooks.models import RateLimitViolation, WebhookEvent
from tests.support import DASHBOARD_PASSWORD, csrf_token, login, make_key, make_user, postgresql_only

# Alerts go out once per calendar hour, blocks are counted per minute: each test stays in one of each.
pytestmark = pytest.mark.usefixtures("mid_minute")

ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
EVIL = "<svg/onload=alert(1)>"


@pytest.fixture
def admin_client(app):
    make_user(app, ADMIN, "admin")
    client = app.test_client()
    login(client, ADMIN)
    return client


@pytest.fixture
def viewer_client(app):
    make_user(app, VIEWER, "viewer")
    client = app.test_client()
    login(client, VIEWER)
    return client


def _token(client, path: str = "/dashboard/") -> str:
    return csrf_token(client.get(path).get_data(as_text=True))


def _confirm_and_post(client, name: str, target: str = ""):
    page = client.get(f"/dashboard/confirm/{name}" + (f"?target={target}" if target else ""))
    assert page.status_code == 200
    return client.post(
        f"/dashboard/actions/{name}", data={"target": target, "csrf_token": csrf_token(page.get_data(as_text=True))}
    )


def _event(event_id: str, status: str, received_at: dt.datetime, payload: dict | None = None, **kw) -> WebhookEvent:
    body = payload or {"id": event_id, "type": "kamiyo.unknown_type", "data": {"object": {"id": "obj_1"}}}
    return WebhookEvent(
        event_id=event_id,
        type=kw.pop("type", "kamiyo.unknown_type"),
        created=received_at,
        received_at=received_at,
        status=status,
        attempts=1,
        payload=json.dumps(body),
        **kw,
    )


# =====================================================================================
# FINDINGS: these fail now
# =====================================================================================

# --- query strings that crash a page -------------------------------------------------


def test_filtering_rate_limits_by_endpoint_does_not_crash_the_page(admin_client):
    """FINDING (medium). An operator uses the rate-limit page's own filter form,
    which has an "Endpoint" box: `GET /dashboard/rate-limits?endpoint=/api/v1/webhooks/stripe`.

    Was: 500. The range selector and the pager pass the whole query string to
    `url_for(endpoint, **args)`, and a query parameter named `endpoint` collides with
    url_for's own first argument (TypeError). The filter the page offers can never work.
    Should: 200, the list filtered by endpoint.
    """
    answer = admin_client.get("/dashboard/rate-limits?endpoint=/api/v1/webhooks/stripe")
    assert answer.status_code == 200


def test_the_rate_limit_json_pages_through_an_endpoint_filter(app, client):
    """FINDING (medium). A monitoring script reads
    `GET /api/v1/ops/rate-limit-violations?endpoint=...` while there are more than one page
    of violations (a flood: exactly when someone looks).

    Was: 500 (the `next` link is built with `url_for(request.endpoint, **args)`, and `args`
    holds `endpoint`). Should: 200 with a `next` link that keeps the filter.
    """
    with app.app_context():
        db.session.add_all(
            [
                RateLimitViolation(client_ip="203.0.113.9", endpoint="/api/v1/webhooks/stripe", limit="30 per 1 minute",
                                   user_agent=f"agent-{n}")  # one counter row per IP, minute and agent
                for n in range(60)
            ]
        )
        db.session.commit()
    answer = client.get("/api/v1/ops/rate-limit-violations?endpoint=/api/v1/webhooks/stripe", headers=make_key(app))
    assert answer.status_code == 200
    assert "endpoint=" in answer.json["next"]


@pytest.mark.parametrize("query", ["_method=POST", "_external=&_scheme=https", "endpoint=x"])
def test_reserved_url_for_names_in_the_query_string_do_not_crash_a_page(app, admin_client, query):
    """FINDING (low-medium). Anyone who can get an operator to click a link (or a
    signed-in operator with a typo) adds `_method=POST`, `_external=&_scheme=https` or
    `endpoint=x` to any page with a range selector or a pager.

    Was: 500. The query string is splatted into `url_for(endpoint, **args)`: `endpoint`
    collides with its first argument, and `_method`, `_scheme`, `_external`, `_anchor`
    override its keyword-only options (Werkzeug refuses to build). Same for the JSON twins
    when there is a next page. Should: such names are not filters: 200 (or a 400), never a
    500 and never a change of how links are built.
    """
    for path in ("/dashboard/stripe-calls", "/dashboard/webhooks", "/dashboard/rate-limits"):
        answer = admin_client.get(f"{path}?{query}")
        assert answer.status_code in (200, 400), (path, answer.status_code)


def test_reserved_url_for_names_do_not_turn_the_page_links_absolute(admin_client):
    """FINDING (low). A link to `/dashboard/webhooks?_external=1` makes every
    range and pager link on the page absolute, built from the request's Host header
    (`http://<Host>/dashboard/...`), and `_anchor=` appends a fragment of the attacker's
    choosing. The page's links should always be local paths built from the filters only.
    """
    html = admin_client.get("/dashboard/webhooks?_external=1&_anchor=x").get_data(as_text=True)
    links = re.findall(r'<a href="([^"]*range=[^"]*)"', html)
    assert links
    assert all(link.startswith("/dashboard/webhooks?") and "#" not in link for link in links), links


@pytest.mark.parametrize("cursor", ["before=%C2%B2", "after=%C2%B3", "before=%E2%91%A0"])
def test_a_cursor_of_non_ascii_digits_answers_400_not_500(app, admin_client, cursor):
    """FINDING (low). A client sends `?before=²` (superscript two, or ①).

    Was: 500 on every paginated page and JSON twin: `id_arg` checks `str.isdigit()`, which
    is true for '²', then `int('²')` raises ValueError. Should: 400 invalid_cursor, like
    `before=abc`.
    """
    assert admin_client.get(f"/dashboard/stripe-calls?{cursor}").status_code == 400
    assert admin_client.get(f"/dashboard/audit?{cursor}").status_code == 400
    answer = admin_client.get(f"/api/v1/ops/webhook-events?{cursor}", headers=make_key(app))
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "invalid_cursor"


@postgresql_only
def test_an_event_id_with_a_nul_answers_404_on_postgresql(admin_client):
    """FINDING (PostgreSQL; low). A visitor opens `/dashboard/webhooks/%00`
    (or any event id with a NUL in it).

    Was: 500 on PostgreSQL (psycopg refuses NUL in a text parameter), 404 on SQLite. Should:
    404 on both: no stored event id holds a NUL.
    """
    assert admin_client.get("/dashboard/webhooks/evt_%00").status_code == 404


# --- pages that break on real data ---------------------------------------------------


def test_the_payments_page_survives_a_truncated_reconcile_report(app, admin_client):
    """FINDING (medium). The nightly reconcile finds a lot of drift, so its JSON
    report is longer than SUMMARY_LIMIT and the scheduler stores `{"truncated": true,
    "characters": N}` instead (kamiyo/scheduler/runner.py `_summary`).

    Was: /dashboard/payments answers 500 (the template calls `r.customers.items()` on a
    report that has no `customers`) until the next reconcile run; the page breaks exactly
    when the drift is large. Should: 200, saying the report was too long to keep.
    """
    with app.app_context():
        now = utcnow()
        db.session.add(
            JobRun(
                job="payments-reconcile",
                period="2026-12-01",
                started_at=now,
                finished_at=now,
                status="ok",
                host="web-1",
                pid=1,
                summary=json.dumps({"truncated": True, "characters": 25_000}),
            )
        )
        db.session.commit()
    assert admin_client.get("/dashboard/payments").status_code == 200


def test_the_version_health_json_next_link_keeps_the_filter(app, client):
    """FINDING (low-medium). A script reads the critical version checks:
    `GET /api/v1/ops/version-health?status=critical` and follows `next`.

    Was: `next` is `/api/v1/ops/version-health?before=N`, without `status`: the second page
    silently mixes in ok checks. Should: `next` keeps the filter, as the other twins do.
    """
    with app.app_context():
        db.session.add_all(
            [
                VersionCheck(
                    source="cli",
                    configured_version="2026-10-28.endive",
                    library_version="x",
                    age_status="ok",
                    status="critical" if i % 2 else "ok",
                    message="m",
                )
                for i in range(120)
            ]
        )
        db.session.commit()
    key = make_key(app)
    first = client.get("/api/v1/ops/version-health?status=critical", headers=key).json
    assert {row["status"] for row in first["history"]} == {"critical"}
    second = client.get(first["next"], headers=key).json
    assert {row["status"] for row in second["history"]} == {"critical"}


# --- the login -----------------------------------------------------------------------


def test_a_json_login_counts_against_the_account_it_names(app, client):
    """FINDING (medium). A password guesser spends the account's 5 tries a
    minute with the form, then goes on with `POST /login` and a JSON body
    `{"email", "password", "csrf_token"}`.

    Was: Flask-WTF reads JSON bodies, so the login works with JSON, but the per-account
    limit's key reads `request.form` only: every JSON attempt counts against the empty
    email's bucket, not the account's; the sixth guess in the minute gets through (and the
    right password logs in). Should: 429 for the account, however the body is encoded (or
    the login refuses anything but a form).
    """
    make_user(app, ADMIN, "admin")
    for _ in range(5):
        token = csrf_token(client.get("/login").get_data(as_text=True))
        assert (
            client.post(
                "/login", data={"email": ADMIN, "password": "guess guess guess", "csrf_token": token}
            ).status_code
            == 401
        )
    token = csrf_token(client.get("/login").get_data(as_text=True))
    answer = client.post("/login", json={"email": ADMIN, "password": DASHBOARD_PASSWORD, "csrf_token": token})
    assert answer.status_code == 429


@pytest.mark.parametrize("email", [5, {"a": 1}, ["admin@example.com", 1]])
def test_a_login_with_a_non_string_email_answers_400(app, client, email):
    """FINDING (low). An anonymous visitor posts a JSON body
    whose email is a number or an object.

    Was: 500 (WTForms' Length validator calls len() on an int). Should: 400, as for any
    incomplete form. Anonymous users should never be able to raise 500s on the login.
    """
    make_user(app, ADMIN, "admin")
    token = csrf_token(client.get("/login").get_data(as_text=True))
    answer = client.post("/login", json={"email": email, "password": "x", "csrf_token": token})
    assert answer.status_code in (400, 401)


def test_tokenless_junk_posts_do_not_lock_the_owner_out(app):
    """FINDING (medium: availability of the dashboard during an incident).
    An attacker who knows an admin's email sends 5 `POST /login` a minute from rotating
    addresses, without even a CSRF token (so no password is ever checked).

    Was: each junk POST counts against the account's limit (5/minute; 20/hour), so the
    admin's own correct login is answered 429 for as long as the attacker keeps going.
    Should: only real password failures count against the account (Flask-Limiter's
    `deduct_when`, or a limit keyed on account and client), so junk cannot lock anyone out.
    """
    make_user(app, ADMIN, "admin")
    attacker = app.test_client()
    for i in range(5):
        answer = attacker.post(
            "/login", data={"email": ADMIN, "password": "x"}, environ_base={"REMOTE_ADDR": f"198.51.100.{i + 1}"}
        )
        assert answer.status_code == 400  # refused for the missing token: no password checked
    owner = app.test_client()
    assert login(owner, ADMIN).status_code == 302


# --- what pages show -----------------------------------------------------------------


def test_the_payload_view_hides_payment_intent_client_secrets(app, viewer_client):
    """FINDING (low-medium). A viewer opens a `payment_intent.succeeded` event.

    Was: the "sanitised" payload shows `client_secret` (pi_..._secret_...), which Stripe
    says must not be logged or shown to anyone but the paying customer (it confirms the
    payment with the publishable key). Same for setup intents. Should: replaced like the
    other secrets; the page says "secrets ... replaced".
    """
    now = utcnow()
    payload = {
        "id": "evt_pi",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {"id": "pi_3Abc", "object": "payment_intent", "client_secret": "pi_3Abc_secret_Zx9QwErTyUiOp"}
        },
    }
    with app.app_context():
        db.session.add(_event("evt_pi", "processed", now, payload, type="payment_intent.succeeded"))
        db.session.commit()
    html = viewer_client.get("/dashboard/webhooks/evt_pi").get_data(as_text=True)
    assert "pi_3Abc" in html
    assert "_secret_Zx9QwErTyUiOp" not in html


def test_the_overview_and_the_page_it_links_to_count_the_same_24_hours(app, client):
    """FINDING (low). At 12:10 UTC an operator reads "Rate-limit violations (24 h):
    1" on the overview (and `rate_limit_violations_24h: 1` in /api/v1/ops/summary), clicks
    the card and reads "Last 24h: 0 blocked requests".

    Was: the overview counts since now-24h; the pages (and their JSON twins) count since
    their range's start, which is the end rounded up to the next half hour minus 24h: up
    to 30 minutes later. Same for Stripe calls and webhook counts. Should: one window.
    """
    make_user(app, ADMIN, "admin")
    key = make_key(app)
    with time_machine.travel(dt.datetime(2026, 12, 6, 12, 10, tzinfo=dt.UTC), tick=False):
        with app.app_context():
            db.session.add(
                RateLimitViolation(
                    client_ip="203.0.113.9",
                    endpoint="/api/v1/webhooks/stripe",
                    limit="30 per 1 minute",
                    occurred_at=dt.datetime(2026, 12, 5, 12, 20, tzinfo=dt.UTC),
                )
            )
            db.session.commit()
        login(client, ADMIN)
        summary = client.get("/api/v1/ops/summary", headers=key).json["rate_limit_violations_24h"]
        page = client.get("/dashboard/rate-limits").get_data(as_text=True)
        total = int(re.search(r'id="violations-total">(\d+)<', page).group(1))
        listed = len(client.get("/api/v1/ops/rate-limit-violations", headers=key).json["data"])
    assert summary == total == listed


def test_the_failed_webhooks_card_counts_what_its_link_shows(app, admin_client):
    """FINDING (low). An event failed 10 days ago (kept for 30). The overview's
    "Failed webhooks" card says 1 and links to `/dashboard/webhooks?status=failed&range=7d`,
    which lists nothing: the operator cannot find the event to replay it from the card.

    Should: the card's link shows the events it counts (or the card counts what it links to).
    """
    with app.app_context():
        db.session.add(_event("evt_old_fail", "failed", utcnow() - dt.timedelta(days=10), last_error="boom"))
        db.session.commit()
    overview = admin_client.get("/dashboard/").get_data(as_text=True)
    card = re.search(
        r'<a class="card[^"]*" href="([^"]+)">\s*<span class="card-title">Failed webhooks</span>\s*'
        r'<span class="card-value">(\d+)</span>',
        overview,
    )
    assert card and card.group(2) == "1"
    linked = admin_client.get(card.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "evt_old_fail" in linked


# --- cost on big tables --------------------------------------------------------------

GROWING_TABLES = (
    "payment_operations",
    "subscriptions",
    "customers",
    "webhook_events",
    "stripe_calls",
    "rate_limit_violations",
    "payment_outcomes",
    "audit_events",
)


@postgresql_only
def test_overview_and_payments_queries_do_not_scan_whole_tables_on_postgresql(app, admin_client):
    """FINDING (medium at scale). Every load of the overview (and of
    /api/v1/ops/summary, which monitoring polls) and of the payments page runs, on
    PostgreSQL with sequential scans disabled so that any usable index is taken:

    - `SELECT status, count(*) FROM payment_operations GROUP BY status` and
      `count(*) ... WHERE generation > 0`: full scans of a table that is never purged
      ("operation claims stay");
    - `count(*) FROM webhook_events WHERE status = 'failed'`: no index on status;
    - `count(*) FROM subscriptions WHERE duplicate_of IS NOT NULL`: no index.

    listing.py promises "an index range scan, never a full count". Should: every query on
    a growing table is bounded by an index (a time range, a partial index, or a counter).
    """
    key = make_key(app)
    seen: list[tuple[str, object]] = []
    with app.app_context():
        engine = db.engine

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        for path in (
            "/dashboard/",
            "/dashboard/payments",
            "/dashboard/webhooks",
            "/dashboard/stripe-calls",
            "/dashboard/rate-limits",
            "/dashboard/audit",
        ):
            assert admin_client.get(path).status_code == 200, path
        assert admin_client.get("/api/v1/ops/summary", headers=key).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    full_scans = []
    with app.app_context(), db.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in seen:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            for table in GROWING_TABLES:
                if f"Seq Scan on {table}" in plan:
                    full_scans.append(" ".join(statement.split())[:160])
    assert not sorted(set(full_scans)), "full-table scans:\n" + "\n".join(sorted(set(full_scans)))


def test_the_duplicate_subscriptions_list_is_bounded(app, admin_client):
    """FINDING (low). A bug or a Stripe incident leaves 300 subscriptions flagged
    as duplicates. The payments page lists every one of them (no LIMIT, no pager): the page
    grows with the table. Should: at most a page (MAX_PAGE_SIZE) with a count and a pager.
    """
    from kamiyo.listing import MAX_PAGE_SIZE

    with app.app_context():
        customer = Customer(user_id="u1", email="u1@example.com", stripe_customer_id="cus_1")
        db.session.add(customer)
        db.session.flush()
        original = Subscription(
            customer_id=customer.id, price_id="price_1", tier="pro", status="active", stripe_subscription_id="sub_orig"
        )
        db.session.add(original)
        db.session.flush()
        db.session.add_all(
            [
                Subscription(
                    customer_id=customer.id,
                    price_id="price_1",
                    tier="pro",
                    status="active",
                    stripe_subscription_id=f"sub_dup_{i:04}",
                    duplicate_of=original.id,
                )
                for i in range(300)
            ]
        )
        db.session.commit()
    html = admin_client.get("/dashboard/payments").get_data(as_text=True)
    assert html.count("<code>sub_dup_") <= MAX_PAGE_SIZE


# --- the audit log and the actions ---------------------------------------------------


def test_an_action_that_fails_in_the_database_is_still_audited(app, admin_client, monkeypatch):
    """FINDING (medium). An admin revokes a key while the database refuses the
    write (a lock timeout on PostgreSQL, a constraint, a failover): the action's commit
    raises.

    Was: `perform` catches the exception but does not roll the session back, so the audit
    entry's own commit raises PendingRollbackError: the admin gets a 500 and the audit log
    has no entry for the attempt. Should: a "failed" audit entry and the usual redirect.
    """
    from kamiyo import api_keys
    from kamiyo.models import ApiKey

    with app.app_context():
        key, _ = api_keys.create_api_key("billing")
        key_id, key_hash = key.id, key.key_hash

    def revoke_failing_in_the_database(ident: str):
        db.session.add(ApiKey(name="clash", key_hash=key_hash, prefix="kmy_clash"))  # unique key_hash: the commit fails
        db.session.commit()

    monkeypatch.setattr(api_keys, "revoke_api_key", revoke_failing_in_the_database)
    answer = _confirm_and_post(admin_client, "revoke-api-key", str(key_id))
    assert answer.status_code == 302
    with app.app_context():
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "revoke-api-key")).all()
    assert [(e.target, e.outcome) for e in entries] == [(str(key_id), "failed")]


def test_a_refused_viewer_attempt_is_filed_under_the_action_name(app, viewer_client):
    """FINDING (low). A viewer posts `/dashboard/actions/reset-breaker` with a
    valid CSRF token. It is refused (403) and audited, but under the action
    "actions.perform" (the Flask endpoint), not "reset-breaker": filtering the audit log by
    `action=reset-breaker` does not show who tried. Should: the action's own name.
    """
    token = _token(viewer_client)
    assert viewer_client.post("/dashboard/actions/reset-breaker", data={"csrf_token": token}).status_code == 403
    with app.app_context():
        from kamiyo.audit import entries

        found = [(e.actor, e.outcome) for e in entries({"action": "reset-breaker"}).rows]
    assert found == [(VIEWER, "refused")]


def test_a_resubmitted_create_key_confirmation_does_not_make_a_second_key(app, admin_client):
    """FINDING (low). An admin creates a key, then presses reload (or the
    browser retries the POST after a network blip): the same confirmation form is posted
    again with the same, still valid, CSRF token.

    Was: a second key is created (and shown), leaving a live credential nobody copied.
    Should: one confirmation makes at most one key (a one-time nonce in the confirmation).
    """
    from kamiyo.api_keys import list_api_keys

    page = admin_client.get("/dashboard/api-keys").get_data(as_text=True)
    confirm = admin_client.post("/dashboard/api-keys/new", data={"name": "billing", "csrf_token": csrf_token(page)})
    form = {"name": "billing", "csrf_token": csrf_token(confirm.get_data(as_text=True))}
    assert admin_client.post("/dashboard/actions/create-api-key", data=form).status_code == 200
    admin_client.post("/dashboard/actions/create-api-key", data=form)
    with app.app_context():
        assert len(list_api_keys()) == 1


def test_the_revoke_confirmation_names_the_key(app, admin_client):
    """FINDING (low). The "Revoke this API key?" page shows only "Target: 2",
    the row id. An admin who clicked the wrong row cannot tell that they are about to cut
    off the production payments key. Should: the confirmation shows the key's name and prefix.
    """
    from kamiyo import api_keys

    with app.app_context():
        api_keys.create_api_key("staging")
        key, _ = api_keys.create_api_key("production-payments")
        key_id, prefix = key.id, key.prefix
    html = admin_client.get(f"/dashboard/confirm/revoke-api-key?target={key_id}").get_data(as_text=True)
    assert "production-payments" in html and prefix in html


def test_every_signed_in_dashboard_answer_is_no_store(app, admin_client):
    """FINDING (low). The dashboard pages say `Cache-Control: no-store`
    (operational data stays out of shared caches), but the answers of the actions
    blueprint do not: the confirmation pages (which show the status strip, the target and
    a CSRF token) and the API key confirmation. Should: every answer under /dashboard/ to
    a signed-in user is no-store.
    """
    page = admin_client.get("/dashboard/api-keys").get_data(as_text=True)
    answers = {
        "confirm": admin_client.get("/dashboard/confirm/reset-breaker"),
        "key confirm": admin_client.post("/dashboard/api-keys/new", data={"name": "x", "csrf_token": csrf_token(page)}),
    }
    missing = [name for name, answer in answers.items() if answer.headers.get("Cache-Control") != "no-store"]
    assert not missing, missing


@pytest.mark.both_databases
@pytest.mark.parametrize("range_name", ["1h", "24h", "7d"])
def test_bucket_edges_agree_on_sqlite_and_postgresql(app, database, range_name):
    """FINDING (SQLite; low). A row stamped exactly on a bucket's edge (a whole
    minute, a whole half hour) must count in the bucket that starts there, as it does on
    PostgreSQL (epoch arithmetic).

    Now, on SQLite: `CAST((julianday(t) - julianday(start)) * 86400 / width AS INTEGER)`
    truncates 0.99999999 to 0: many edge rows land one bucket early (a chart's spike moves
    a minute back, the first bucket of 1h counts double). Should: the same buckets on both
    databases (round to milliseconds, or compare with the edges themselves).
    """
    from kamiyo.listing import RANGES, series, time_range

    with time_machine.travel(dt.datetime(2026, 12, 6, 3, 10, tzinfo=dt.UTC), tick=False), app.app_context():
        window = time_range(range_name)
        count = window.buckets
        db.session.add_all(
            [
                StripeCall(
                    operation="edge",
                    attempt=1,
                    outcome="success",
                    created_at=window.start + index * RANGES[range_name][1],
                )
                for index in range(count)
            ]
        )
        db.session.commit()
        assert series(StripeCall.created_at, window)["all"] == [1] * count


# =====================================================================================
# HOLDS: attacks tried that did not work (these pass)
# =====================================================================================

NEXT_PAYLOADS = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "https:evil.example",
    "HTTPS://evil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "%2F%2Fevil.example",
    "/\u3002evil.example",
    "/\uff0fevil.example",
    "//evil.example%2F..",
    "/..//evil.example",
    "java\tscript:alert(1)",
    "data:text/html,x",
    "\x00//evil.example",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("target", NEXT_PAYLOADS)
def test_holds_next_never_leaves_the_site(app, client, target):
    """HOLDS. An attacker sends `/login?next=<payload>` (encodings, backslashes, tabs,
    newlines, full-width slashes, ideographic dots, schemes). After the login the browser is
    sent to a path on this site: a Location that starts with one "/" and no second "/" or
    "\\", with no control character, or the overview."""
    make_user(app, ADMIN, "admin")
    page = client.get("/login", query_string={"next": target})
    assert page.status_code == 200
    data = {
        "email": ADMIN,
        "password": DASHBOARD_PASSWORD,
        "next": target,
        "csrf_token": csrf_token(page.get_data(as_text=True)),
    }
    location = client.post("/login", data=data).headers["Location"]
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert not re.search(r"[\x00-\x20\x7f\\]", location), location
    assert "evil.example" not in location or location.startswith(("/%2F", "/%5C", "/..//")), location
    # Already signed in, the GET form of the same redirect behaves alike.
    again = client.get("/login", query_string={"next": target}).headers["Location"]
    assert again.startswith("/") and again[1:2] not in ("/", "\\"), again


def test_holds_the_session_is_new_after_login_and_ends_with_a_role_change(app):
    """HOLDS. Fixation: the cookie an attacker planted before the login is not the signed-in
    session (the session is cleared, and a copy of the anonymous cookie stays anonymous).
    Role change: an admin demoted to viewer in the database is refused the next action
    at once, with the same cookie."""
    make_user(app, ADMIN, "admin")
    victim = app.test_client()
    victim.get("/login")
    planted = victim.get_cookie("kamiyo_session").value
    login(victim, ADMIN)
    assert victim.get_cookie("kamiyo_session").value != planted
    attacker = app.test_client()
    attacker.set_cookie("kamiyo_session", planted)
    assert attacker.get("/dashboard/").status_code == 302
    token = _token(victim)
    with app.app_context():
        from kamiyo.models import DashboardUser

        db.session.execute(db.update(DashboardUser).values(role="viewer"))
        db.session.commit()
    assert victim.post("/dashboard/actions/reset-breaker", data={"csrf_token": token}).status_code == 403
    assert victim.get("/dashboard/confirm/reset-breaker").status_code == 403


def test_holds_a_viewer_reaches_no_admin_action_by_any_route_or_method(app, viewer_client):
    """HOLDS. A viewer tries every admin door with a valid CSRF token: the key creation
    steps, each action by POST, HEAD and PUT, an unknown action, and GETs of the POST
    routes. Nothing but 403/404/405, and no key is created."""
    token = _token(viewer_client)
    assert viewer_client.post("/dashboard/api-keys/new", data={"name": "x", "csrf_token": token}).status_code == 403
    assert (
        viewer_client.post("/dashboard/actions/create-api-key", data={"name": "x", "csrf_token": token}).status_code
        == 403
    )
    for name in ("reset-breaker", "run-reconcile", "run-job", "revoke-api-key", "replay-webhook", "nope"):
        assert (
            viewer_client.post(f"/dashboard/actions/{name}", data={"target": "1", "csrf_token": token}).status_code
            == 403
        )
        assert viewer_client.head(f"/dashboard/confirm/{name}").status_code == 403
        assert viewer_client.put(f"/dashboard/actions/{name}", data={"csrf_token": token}).status_code == 405
        assert viewer_client.get(f"/dashboard/actions/{name}").status_code == 405
    with app.app_context():
        from kamiyo.api_keys import list_api_keys

        assert list_api_keys() == []


def test_holds_stored_values_are_escaped_on_every_page(app, admin_client):
    """HOLDS. An attacker controls a user agent, an endpoint, a webhook event's type, id,
    object id and last error, a Stripe call's operation and error type, a job run's host,
    a version check's message and mismatch, an API key name, an audit detail and a filter
    value. Every page shows them escaped (autoescaping; the SVG chart escapes its labels)."""
    from kamiyo import api_keys, audit

    now = utcnow()
    with app.app_context():
        db.session.add(
            RateLimitViolation(client_ip=EVIL[:64], user_agent=EVIL, endpoint=EVIL, limit=EVIL[:64], occurred_at=now)
        )
        db.session.add(
            _event(
                "evt_evil",
                "failed",
                now,
                {"id": "evt_evil", "type": EVIL, "note": EVIL},
                type=EVIL,
                object_id=EVIL,
                last_error=EVIL,
            )
        )
        db.session.add(
            StripeCall(
                operation=EVIL[:64],
                attempt=1,
                outcome="error",
                error_type=EVIL[:64],
                request_id=EVIL[:64],
                created_at=now,
            )
        )
        db.session.add(JobRun(job="job-runs-prune", period=EVIL[:32], started_at=now, status="ok", host=EVIL, pid=1))
        db.session.add(
            VersionCheck(
                source=EVIL[:32],
                configured_version=EVIL,
                library_version="x",
                age_status="ok",
                status="warning",
                message=EVIL,
                mismatches=[{"source": EVIL, "found": EVIL, "expected": EVIL, "action": EVIL}],
            )
        )
        db.session.add(
            PaymentOperation(operation=EVIL[:64], scope="s1", user_id=EVIL, params_json="{}", error_code=EVIL[:64])
        )
        db.session.commit()
        api_keys.create_api_key(EVIL)
        with app.test_request_context():
            audit.record(EVIL, EVIL, EVIL, "failed", EVIL)
    pages = [
        "/dashboard/",
        "/dashboard/version",
        "/dashboard/stripe-calls",
        "/dashboard/rate-limits",
        "/dashboard/webhooks",
        "/dashboard/webhooks/evt_evil",
        "/dashboard/payments",
        "/dashboard/jobs",
        "/dashboard/api-keys",
        "/dashboard/audit",
        "/dashboard/confirm/run-job?target=" + EVIL,
        "/dashboard/audit?actor=" + EVIL,
        "/dashboard/stripe-calls?operation=%22%3E" + EVIL,
    ]
    for path in pages:
        html = admin_client.get(path).get_data(as_text=True)
        assert "<svg/onload" not in html and '">' + "<svg" not in html, path
    assert "&lt;svg/onload=alert(1)&gt;" in admin_client.get("/dashboard/rate-limits").get_data(as_text=True)


def test_holds_no_state_change_on_get_and_logout_needs_post_and_token(app, admin_client):
    """HOLDS. A cross-site page makes the admin's browser GET the confirmation URLs and
    /logout: nothing changes (no audit entry, the breaker is untouched, the session lives);
    a POST /logout without a token is 400."""
    for name in ("reset-breaker", "run-reconcile", "revoke-api-key", "run-job", "replay-webhook"):
        assert admin_client.get(f"/dashboard/confirm/{name}?target=1").status_code == 200
    assert admin_client.get("/logout").status_code == 405
    assert admin_client.post("/logout").status_code == 400
    assert admin_client.get("/dashboard/").status_code == 200
    with app.app_context():
        assert db.session.scalars(select(AuditEntry)).all() == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/nope", 404),
        ("get", "/dashboard/nope", 404),
        ("get", "/logout", 405),
        ("post", "/dashboard/", 405),
        ("post", "/dashboard/actions/reset-breaker", 400),
        ("get", "/dashboard/stripe-calls?range=2y", 400),
        ("get", "/dashboard/stripe-calls?before=%C2%B2", None),
    ],
)
def test_holds_every_html_error_carries_the_security_headers(admin_client, method, path, status):
    """HOLDS. 404, 405, 400 (CSRF, bad filter) and 500 answers in HTML carry the CSP,
    nosniff and DENY framing, and show no traceback."""
    answer = getattr(admin_client, method)(path)
    if status is not None:
        assert answer.status_code == status
    assert answer.mimetype == "text/html"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "Traceback" not in answer.get_data(as_text=True)


def test_holds_the_login_429_is_html_with_headers_and_x_forwarded_for_is_not_believed(app, client):
    """HOLDS. Without a trusted proxy, an attacker rotating X-Forwarded-For and the email's
    case and spaces stays in one per-IP bucket (20/minute) and one per-account bucket
    (5/minute); the 429 is an HTML page with the CSP and a Retry-After."""
    make_user(app, ADMIN, "admin")
    token = csrf_token(client.get("/login").get_data(as_text=True))
    variants = [ADMIN, ADMIN.upper(), f"  {ADMIN} ", "Admin@Example.COM", f"\t{ADMIN}"]
    for i, email in enumerate(variants):  # refused passwords: each counts against the account
        answer = client.post(
            "/login", data={"email": email, "password": "x", "csrf_token": token},
            headers={"X-Forwarded-For": f"192.0.2.{i}"},
        )
        assert answer.status_code == 401
    blocked = client.post(
        "/login", data={"email": ADMIN.title(), "password": DASHBOARD_PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "192.0.2.99"},
    )
    assert blocked.status_code == 429
    for i in range(20):  # other accounts, same client: the per-IP limit (20/minute) still bites
        client.post(
            "/login",
            data={"email": f"u{i}@example.com", "password": "x"},
            headers={"X-Forwarded-For": f"192.0.2.{100 + i}"},
        )
    last = client.post(
        "/login", data={"email": "fresh@example.com", "password": "x"}, headers={"X-Forwarded-For": "192.0.2.250"}
    )
    assert last.status_code == 429
    assert last.mimetype == "text/html"
    assert "default-src 'self'" in last.headers["Content-Security-Policy"]
    assert int(last.headers["Retry-After"]) > 0


def test_holds_unknown_email_and_wrong_password_cost_one_hash_each(app, client, monkeypatch):
    """HOLDS. Timing: an unknown email, a wrong password and a disabled account each cost
    exactly one password hash check, and all three answer 401 with the same text."""
    from kamiyo import users

    make_user(app, ADMIN, "admin")
    make_user(app, "gone@example.com", "viewer")
    with app.app_context():
        users.disable_user("gone@example.com")
    calls = []
    real = users.check_password_hash
    monkeypatch.setattr(users, "check_password_hash", lambda h, p: calls.append(h) or real(h, p))
    bodies = set()
    for email in ("nobody@example.com", ADMIN, "gone@example.com"):
        answer = login(app.test_client(), email, password="wrong password here")
        assert answer.status_code == 401
        bodies.add(re.sub(r'value="[^"]*"', "", answer.get_data(as_text=True)))
    assert len(calls) == 3
    assert len(bodies) == 1


@pytest.mark.parametrize(
    ("cursor", "status"),
    [("999999999999999999", 200), ("9223372036854775808", 400), ("-1", 400), ("1e9", 400), ("0x10", 400), ("", 200)],
)
def test_holds_cursor_bounds(admin_client, cursor, status):
    """HOLDS. Cursors up to 18 digits work, anything past 2**63, negative, or not a row id
    answers 400, never 500."""
    assert admin_client.get(f"/dashboard/stripe-calls?before={cursor}").status_code == status
    assert admin_client.get(f"/dashboard/webhooks?after={cursor}").status_code == status


def test_holds_the_created_key_is_shown_once_and_never_logged_or_audited(app, admin_client, caplog):
    """HOLDS. The plaintext key appears on the creation answer only: not on the key list,
    the audit page, the confirmation, a flash, or any log record."""
    caplog.set_level(logging.DEBUG)
    page = admin_client.get("/dashboard/api-keys").get_data(as_text=True)
    confirm = admin_client.post("/dashboard/api-keys/new", data={"name": "billing", "csrf_token": csrf_token(page)})
    created = admin_client.post(
        "/dashboard/actions/create-api-key",
        data={"name": "billing", "csrf_token": csrf_token(confirm.get_data(as_text=True))},
    )
    plaintext = re.search(r'id="new-key" tabindex="0">(kmy_[^<]+)<', created.get_data(as_text=True)).group(1)
    secret_part = plaintext[12:]
    for path in ("/dashboard/api-keys", "/dashboard/audit", "/dashboard/"):
        assert secret_part not in admin_client.get(path).get_data(as_text=True), path
    for record in caplog.records:
        assert secret_part not in json.dumps(vars(record), default=str)


def test_holds_deeply_nested_payload_secrets_are_replaced(app, admin_client):
    """HOLDS. A payload hides a card number, a CVC, an Authorization value and a secret
    key ten levels deep: the detail page shows none of them (past depth 8 the redaction
    works on the text)."""
    inner = {
        "number": 4242424242424242,
        "cvc": "123",
        "Authorization": "Bearer tok_abcdef",
        "k": "sk_live_abcdefgh12345678",
        "w": "whsec_abcdef",
        "text": "card 4000-0566-5566-5556",
    }
    for level in "abcdefghij":
        inner = {level: inner}
    now = utcnow()
    with app.app_context():
        db.session.add(_event("evt_deep", "processed", now, {"id": "evt_deep", "data": {"object": inner}}))
        db.session.commit()
    html = admin_client.get("/dashboard/webhooks/evt_deep").get_data(as_text=True)
    for secret in (
        "4242424242424242",
        "123&#39;",
        "tok_abcdef",
        "abcdefgh12345678",
        "whsec_abcdef",
        "4000-0566-5566-5556",
    ):
        assert secret not in html, secret


def test_holds_replay_redirect_cannot_inject_headers_or_leave_the_site(app, admin_client):
    """HOLDS. An admin is tricked into confirming a replay whose target holds CR/LF or a
    scheme-relative URL: the answer is a redirect to a local, percent-encoded path and no
    injected header."""
    for target in ("evt\r\nSet-Cookie: pwned=1", "//evil.example", "../../logout"):
        page = admin_client.get("/dashboard/confirm/replay-webhook", query_string={"target": target})
        answer = admin_client.post(
            "/dashboard/actions/replay-webhook",
            data={"target": target, "csrf_token": csrf_token(page.get_data(as_text=True))},
        )
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/dashboard/webhooks/")
        assert "pwned" not in answer.headers.get("Set-Cookie", "")
        assert "\n" not in answer.headers["Location"]
