"""`flask db restore` does not undo security decisions taken since the backup.

A restore puts back every row of an older backup. Without care, an API key revoked since
(because it leaked) works again, a disabled dashboard user signs in again, and the audit
entries written since (the revocation among them) are gone. The restore re-applies
revocations (by key hash), disabled users and session versions (by email), puts back the
audit entries newer than the backup's, and is an audit entry itself. On both databases.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from kamiyo.api_keys import create_api_key
from kamiyo.audit import cli_actor
from kamiyo.extensions import db
from kamiyo.models import AuditEntry
from tests.support import DASHBOARD_PASSWORD, both_databases, csrf_token, make_user, sqlite_only

pytestmark = both_databases


def _backup(app) -> Path:
    result = app.test_cli_runner().invoke(args=["db", "backup"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("Backup:"))
    return Path(line.split(None, 1)[1])


def _restore(app, path: Path) -> str:
    result = app.test_cli_runner().invoke(args=["db", "restore", str(path), "--yes"])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_key_revoked_after_the_backup_stays_revoked_after_a_restore(app, client, database):
    with app.app_context():
        key, plaintext = create_api_key("leaked-later")
        key_id = key.id
    made = _backup(app)
    revoked = app.test_cli_runner().invoke(args=["api-keys", "revoke", str(key_id)])
    assert revoked.exit_code == 0, revoked.output
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/api/v1/payments/customers", headers=headers).status_code == 401
    output = _restore(app, made)
    assert "Carried over: 1 key revocation(s)" in output
    answer = client.get("/api/v1/payments/customers", headers=headers)
    assert answer.status_code == 401, f"the revoked key works again after the restore: {answer.status_code}"


def test_a_restore_is_an_audit_event_and_keeps_the_ones_written_since_the_backup(app, database):
    with app.app_context():
        create_api_key("before")
    assert app.test_cli_runner().invoke(args=["api-keys", "create", "in-the-backup"]).exit_code == 0
    made = _backup(app)
    with app.app_context():
        key, _ = create_api_key("audited")
        key_id = key.id
    assert app.test_cli_runner().invoke(args=["api-keys", "revoke", str(key_id)]).exit_code == 0
    output = _restore(app, made)
    assert "1 audit entry written since the backup" in output
    with app.app_context():
        db.session.remove()
        rows = list(db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert [row.action for row in rows] == ["create-api-key", "revoke-api-key", "restore-database"]
    restore_entry = rows[-1]
    assert restore_entry.actor == cli_actor() and restore_entry.outcome == "ok"
    assert restore_entry.target == made.name and "1 audit entry" in restore_entry.detail


def test_a_user_disabled_after_the_backup_stays_disabled(app, database):
    make_user(app, "gone@example.com", "admin")
    made = _backup(app)
    assert app.test_cli_runner().invoke(args=["users", "disable", "gone@example.com"]).exit_code == 0
    assert "1 disabled user(s)" in _restore(app, made)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    answer = client.post(
        "/login", data={"email": "gone@example.com", "password": DASHBOARD_PASSWORD, "csrf_token": csrf_token(page)}
    )
    assert answer.status_code == 401


def test_a_refused_restore_is_audited_too(app, database):
    made = _backup(app)
    result = app.test_cli_runner().invoke(args=["db", "restore", str(made)], input="n\n")
    assert result.exit_code == 1
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "restore-database"))
    assert entry is not None and entry.outcome == "refused"


@sqlite_only
def test_what_cannot_be_carried_over_is_said_and_saved(app, client, database):
    """A backup older than the audit log: the restored schema cannot take the entries. The
    revocation still holds; the command says so (exit 1) and saves the rest, 0600, without
    any key."""
    import json
    import stat

    from kamiyo.models import AuditEntry as Entry

    with app.app_context():
        key, plaintext = create_api_key("leaked-later")
        key_id = key.id
        Entry.__table__.drop(db.engine)
    made = _backup(app)
    with app.app_context():
        Entry.__table__.create(db.engine)
    assert app.test_cli_runner().invoke(args=["api-keys", "revoke", str(key_id)]).exit_code == 0
    result = app.test_cli_runner().invoke(args=["db", "restore", str(made), "--yes"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "re-applied 1 key revocation(s)" in result.output and "could not be put back" in result.output
    assert client.get("/api/v1/payments/customers", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 401
    saved = next(Path(app.instance_path).glob("restore-carry-over-*.json"))
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    content = saved.read_text()
    assert json.loads(content)["revoked_keys"][0]["id"] == key_id and plaintext[12:] not in content
