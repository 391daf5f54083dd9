"""audit_events never holds a secret, and names the operator behind sudo.

An operator holding a leaked key pastes the key itself to `api-keys revoke`: the key is found
by its hash and revoked, and the entry names its id and prefix only. Whatever else is typed
(a Stripe key by mistake) is redacted before it is stored, as in the logs.
"""

from __future__ import annotations

from sqlalchemy import select

from kamiyo.api_keys import create_api_key
from kamiyo.extensions import db
from kamiyo.models import AuditEntry


def test_revoking_by_pasting_the_whole_key_does_not_store_the_key_in_audit_events(app, runner):
    with app.app_context():
        _, plaintext = create_api_key("leaked")
    result = runner.invoke(args=["api-keys", "revoke", plaintext])
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "revoke-api-key")).all()
        stored = [(row.target, row.detail) for row in rows]
    assert rows, result.output
    secret_part = plaintext[12:]  # what follows the public prefix
    leaked = [pair for pair in stored if any(secret_part in (value or "") for value in pair)]
    assert not leaked, f"audit_events holds the whole API key: {leaked}"


def test_a_mistyped_stripe_key_given_as_a_key_to_revoke_is_not_stored(app, runner):
    secret = "sk_live_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    runner.invoke(args=["api-keys", "revoke", secret])
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry)).all()
        stored = " ".join(f"{row.target} {row.detail}" for row in rows)
    assert rows
    assert secret not in stored, f"audit_events holds a Stripe secret key: {stored!r}"


def test_a_command_run_through_sudo_names_the_operator_not_the_service_user(app, runner):
    """The database is 0600, owned by the service's user: operators run commands as that user
    (`sudo -u kamiyo flask --app wsgi ...`). The actor is taken from the process's uid alone,
    so every operator's entry reads cli:<service user>: no one is accountable (PCI DSS 10.2.1
    asks for the individual). sudo says who ran it, in SUDO_USER / SUDO_UID."""
    import pwd

    service_user = pwd.getpwuid(__import__("os").getuid()).pw_name
    result = runner.invoke(
        args=["api-keys", "create", "via-sudo"],
        env={"SUDO_USER": "alice", "SUDO_UID": "4242", "SUDO_COMMAND": "/usr/bin/flask"},
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        actor = db.session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "create-api-key"))
    assert actor == f"cli:alice (as {service_user})", f"the entry names {actor!r}, not the operator"


def test_a_pasted_whole_key_is_revoked(app, runner, client):
    with app.app_context():
        key, plaintext = create_api_key("pasted")
        key_id = key.id
    result = runner.invoke(args=["api-keys", "revoke", plaintext])
    assert result.exit_code == 0, result.output
    assert f"#{key_id}" in result.output and plaintext[12:] not in result.output
    assert client.get("/api/v1/payments/customers", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 401
    with app.app_context():
        target = db.session.scalar(select(AuditEntry.target).where(AuditEntry.action == "revoke-api-key"))
    assert target == f"pasted ({plaintext[:12]}...)"


def test_an_unknown_pasted_key_is_refused_without_echoing_it(app, runner):
    unknown = "kmy_" + "Z" * 43
    result = runner.invoke(args=["api-keys", "revoke", unknown])
    assert result.exit_code == 1 and "no API key" in result.output
    assert unknown[12:] not in result.output
