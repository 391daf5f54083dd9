"""Who may see and do what on the dashboard: sessions, roles, CSRF, `next`, headers."""

from __future__ import annotations

import re
import time

import pytest
import time_machine

from tests.support import csrf_token, login, make_key, make_user

PAGES = [
    "/dashboard/",
    "/dashboard/version",
    "/dashboard/stripe-calls",
    "/dashboard/rate-limits",
    "/dashboard/webhooks",
    "/dashboard/payments",
    "/dashboard/breaker",
    "/dashboard/jobs",
    "/dashboard/api-keys",
    "/dashboard/audit",
    "/dashboard/api",
]
OPS = ["summary", "version-health", "stripe-calls", "rate-limit-violations", "webhook-events", "jobs"]
ACTIONS = ["run-version-check", "run-reconcile", "reset-breaker", "run-job", "revoke-api-key", "replay-webhook"]


@pytest.fixture
def admin(app):
    make_user(app, "admin@example.com", "admin")
    return "admin@example.com"


@pytest.fixture
def viewer(app):
    make_user(app, "viewer@example.com", "viewer")
    return "viewer@example.com"


@pytest.mark.parametrize("path", [*PAGES, "/dashboard/webhooks/evt_1"])
def test_anonymous_visitors_are_sent_to_the_login_with_a_local_next(client, path):
    answer = client.get(path + "?range=7d")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/login?next=" + path + "?range%3D7d"


@pytest.mark.parametrize("name", ACTIONS)
def test_anonymous_actions_are_refused(client, name):
    assert client.get(f"/dashboard/confirm/{name}?target=1").status_code == 302
    assert client.post(f"/dashboard/actions/{name}", data={"target": "1"}).status_code == 302


@pytest.mark.parametrize("name", OPS)
def test_ops_json_needs_an_api_key(app, client, name):
    answer = client.get(f"/api/v1/ops/{name}")
    assert answer.status_code == 401
    assert answer.json["error"]["code"] == "unauthorized"
    key = make_key(app)
    assert client.get(f"/api/v1/ops/{name}", headers=key).status_code == 200


def test_root_leads_to_the_login_or_the_dashboard(client, admin):
    assert client.get("/").headers["Location"] == "/login"
    login(client, admin)
    assert client.get("/").headers["Location"] == "/dashboard/"


def test_a_login_lands_on_next_when_it_is_a_local_path(client, admin):
    answer = login(client, admin, next_url="/dashboard/jobs?x=1")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/dashboard/jobs?x=1"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example/x", "/\\evil.example", "http:/evil.example", "javascript:alert(1)",
     "/dash\nboard", "dashboard"],
)
def test_a_next_that_leaves_the_site_is_refused(client, admin, target):
    answer = login(client, admin, next_url=target)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/dashboard/"


def test_unknown_email_and_wrong_password_get_the_same_answer(client, admin):
    unknown = login(client, "nobody@example.com")
    wrong = login(client, admin, password="not the password at all")
    assert unknown.status_code == wrong.status_code == 401
    text = lambda answer: re.sub(r'value="[^"]*"', "", answer.get_data(as_text=True))  # noqa: E731
    assert text(unknown).replace("nobody@example.com", "EMAIL") == text(wrong).replace(admin, "EMAIL")
    assert "Email or password is wrong" in text(wrong)


def test_a_disabled_user_cannot_sign_in_and_loses_the_open_session(app, client, admin):
    login(client, admin)
    assert client.get("/dashboard/").status_code == 200
    result = app.test_cli_runner().invoke(args=["users", "disable", admin])
    assert result.exit_code == 0, result.output
    assert "Disabled admin@example.com" in result.output
    assert client.get("/dashboard/").status_code == 302
    assert login(client, admin).status_code == 401
    listed = app.test_cli_runner().invoke(args=["users", "list"])
    assert re.search(r"admin@example.com\s+admin\s+.*disabled", listed.output)


def test_logout_ends_the_session_even_for_a_copied_cookie(app, admin):
    first, copy = app.test_client(), app.test_client()
    login(first, admin)
    cookie = first.get_cookie("kamiyo_session")
    copy.set_cookie("kamiyo_session", cookie.value)
    assert copy.get("/dashboard/").status_code == 200
    page = first.get("/dashboard/").get_data(as_text=True)
    assert first.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert first.get("/dashboard/").status_code == 302
    assert copy.get("/dashboard/").status_code == 302


def test_a_session_ends_a_fixed_time_after_its_login_however_busy(client, admin):
    login(client, admin)
    start = time.time()
    for hours in (2, 4, 6, 7.9):  # in use all along: activity does not extend it
        with time_machine.travel(start + hours * 3600, tick=False):
            assert client.get("/dashboard/").status_code == 200, hours
    with time_machine.travel(start + 8 * 3600 + 60, tick=False):
        assert client.get("/dashboard/").status_code == 302


def test_the_session_cookie_carries_its_flags(client, admin):
    answer = login(client, admin)
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("kamiyo_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" in cookie
    assert "Expires=" in cookie


def test_the_cookie_is_not_secure_in_demo_mode(make_app, tmp_path):
    app = make_app(DEMO_MODE=True)
    make_user(app, "demo@example.com", "admin")
    answer = login(app.test_client(), "demo@example.com")
    assert "Secure" not in answer.headers["Set-Cookie"]


def test_a_form_post_without_a_csrf_token_is_refused(app, client, admin):
    page = client.get("/login").get_data(as_text=True)
    assert client.post("/login", data={"email": admin, "password": "correct horse battery staple"}).status_code == 400
    login(client, admin)
    for name in ACTIONS:
        assert client.post(f"/dashboard/actions/{name}", data={"target": "1"}).status_code == 400
    assert client.post("/logout").status_code == 400
    assert client.get("/dashboard/").status_code == 200  # still signed in
    assert csrf_token(page)


@pytest.mark.parametrize("name", ACTIONS)
def test_a_viewer_can_read_but_not_act(app, client, viewer, name):
    login(client, viewer)
    for path in PAGES:
        assert client.get(path).status_code == 200, path
    token = csrf_token(client.get("/dashboard/").get_data(as_text=True))
    assert client.get(f"/dashboard/confirm/{name}?target=1").status_code == 403
    assert client.post(f"/dashboard/actions/{name}", data={"target": "1", "csrf_token": token}).status_code == 403
    with app.app_context():
        from kamiyo.audit import entries

        (entry,) = entries({}).rows
    assert (entry.actor, entry.outcome) == ("viewer@example.com", "refused")


def test_a_viewer_sees_no_action_buttons(client, viewer):
    login(client, viewer)
    for path in PAGES:
        html = client.get(path).get_data(as_text=True)
        assert "/dashboard/confirm/" not in html, path
        assert "/dashboard/api-keys/new" not in html


@pytest.mark.parametrize("path", ["/login", "/dashboard/", "/dashboard/nope", "/dashboard/audit"])
def test_every_html_answer_has_the_security_headers(client, admin, path):
    if path != "/login":
        login(client, admin)
    answer = client.get(path)
    assert answer.mimetype == "text/html"
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" not in answer.get_data(as_text=True)
    assert ' style="' not in answer.get_data(as_text=True)
