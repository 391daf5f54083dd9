"""API keys: the CLI and the Bearer guard."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kamiyo.api_keys import hash_key, require_api_key
from kamiyo.extensions import db
from kamiyo.models import ApiKey, DashboardUser
from tests.support import both_databases


@pytest.fixture
def app(make_app):
    app = make_app()

    @app.get("/api/v1/test/protected")
    @require_api_key
    def protected():
        return {"ok": True}

    return app


def create_key(runner, name="billing-service") -> str:
    result = runner.invoke(args=["api-keys", "create", name])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_create_prints_the_key_alone_on_the_last_line_and_stores_only_a_hash(app, runner):
    key = create_key(runner)
    assert key.startswith("kmy_") and " " not in key and len(key) > 40
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.key_hash == hash_key(key)
        assert row.prefix == key[:12]
        stored = [str(v) for v in (row.name, row.key_hash, row.prefix)]
    assert all(key not in value for value in stored)


def test_list_shows_prefix_never_the_key(runner):
    key = create_key(runner)
    result = runner.invoke(args=["api-keys", "list"])
    assert result.exit_code == 0
    assert key[:12] in result.output and key not in result.output
    assert "active" in result.output


def test_list_when_empty_says_how_to_create(runner):
    result = runner.invoke(args=["api-keys", "list"])
    assert "api-keys create" in result.output


@both_databases
def test_bearer_guard(client, runner):
    url = "/api/v1/test/protected"
    missing = client.get(url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.get_json()["error"]["code"] == "unauthorized"

    wrong = client.get(url, headers={"Authorization": "Bearer kmy_not-a-real-key"})
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"]
    assert client.get(url, headers={"Authorization": "Basic abc"}).status_code == 401

    key = create_key(runner)
    ok = client.get(url, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.get_json() == {"ok": True}
    assert client.get(url, headers={"Authorization": f"bearer  {key}"}).status_code == 200

    result = runner.invoke(args=["api-keys", "revoke", key[:12]])
    assert result.exit_code == 0 and "Revoked" in result.output
    revoked = client.get(url, headers={"Authorization": f"Bearer {key}"})
    assert revoked.status_code == 401


@both_databases
def test_last_used_is_recorded(app, client, runner):
    key = create_key(runner)
    client.get("/api/v1/test/protected", headers={"Authorization": f"Bearer {key}"})
    with app.app_context():
        assert db.session.scalar(select(ApiKey)).last_used_at is not None


def test_revoke_by_id_and_unknown_key(runner):
    create_key(runner)
    assert runner.invoke(args=["api-keys", "revoke", "1"]).exit_code == 0
    result = runner.invoke(args=["api-keys", "revoke", "kmy_nothing"])
    assert result.exit_code == 1 and "no API key" in result.output


def test_revoking_a_revoked_key_says_so_and_keeps_its_date(app, runner):
    import time_machine

    key = create_key(runner)
    with time_machine.travel("2026-12-01 10:15:00+00:00", tick=False):
        first = runner.invoke(args=["api-keys", "revoke", "1"])
    assert first.exit_code == 0 and first.output == f"Revoked API key #1 'billing-service' ({key[:12]}...).\n"
    again = runner.invoke(args=["api-keys", "revoke", key[:12]])
    assert again.exit_code == 0
    assert again.output == (
        f"API key #1 'billing-service' ({key[:12]}...) was already revoked on 2026-12-01 10:15 UTC; nothing to do.\n"
    )
    with app.app_context():
        assert db.session.scalar(select(ApiKey)).revoked_at.isoformat() == "2026-12-01T10:15:00+00:00"


def test_create_rejects_an_empty_name(runner):
    result = runner.invoke(args=["api-keys", "create", "  "])
    assert result.exit_code == 2 and "name" in result.output


def test_users_create(app, runner):
    result = runner.invoke(args=["users", "create", "Ops@Example.com", "--role", "admin", "--password-stdin"],
                           input="correct horse battery\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        user = db.session.scalar(select(DashboardUser))
        assert user.email == "ops@example.com" and user.role == "admin"
        assert "correct horse" not in user.password_hash

    again = runner.invoke(args=["users", "create", "ops@example.com", "--password-stdin"], input="another long password\n")
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(args=["users", "create", "x@example.com", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least" in short.output
    for control in ("\x00", "\x1b", "\x7f"):
        odd = runner.invoke(args=["users", "create", f"x{control}y@example.com", "--password-stdin"],
                            input="correct horse battery\n")
        assert odd.exit_code == 1 and "email address" in odd.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count(DashboardUser.id))) == 1
