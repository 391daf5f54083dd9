"""An API key's name cannot write escape sequences into an operator's terminal.

`flask api-keys list` prints each key's name; whoever names a key (a dashboard admin, or
someone holding an admin's session) could put escape sequences and carriage returns in it
and clear the operator's screen, rewrite the line above ("revoked") or set the window title.
Names with control characters are refused, on the dashboard and by the CLI (the one rule in
kamiyo/control_chars.py), and a name stored before that rule is printed with its control
characters replaced.

The red team's version of this test expected the dashboard to store the name and only the
listing to be clean; the name is now refused where it is entered, so the listing is checked
with a name written to the table directly.
"""

from __future__ import annotations

from kamiyo.extensions import db
from kamiyo.models import ApiKey
from tests.support import csrf_token, login, make_user

HOSTILE = "billing\x1b[2K\r\x1b[31mkmy_ALLREVOKED\x1b]0;pwned\x07"


def _controls(text: str) -> list[str]:
    return sorted({hex(ord(c)) for c in text if (ord(c) < 32 and c != "\n") or ord(c) == 0x7F})


def test_the_dashboard_refuses_a_key_name_with_control_characters(app):
    make_user(app, "admin@example.com", "admin")
    client = app.test_client()
    login(client, "admin@example.com")
    page = client.get("/dashboard/api-keys").get_data(as_text=True)
    confirm = client.post("/dashboard/api-keys/new", data={"name": HOSTILE, "csrf_token": csrf_token(page)},
                          follow_redirects=True)
    assert confirm.status_code == 200
    assert "must not contain control characters" in confirm.get_data(as_text=True)
    # Straight to the create action, past the confirmation page: refused there too.
    page = client.get("/dashboard/api-keys").get_data(as_text=True)
    client.post("/dashboard/actions/create-api-key", data={"name": HOSTILE, "csrf_token": csrf_token(page)})
    with app.app_context():
        assert db.session.query(ApiKey).count() == 0


def test_the_cli_refuses_a_key_name_with_control_characters(app):
    result = app.test_cli_runner().invoke(args=["api-keys", "create", HOSTILE])
    assert result.exit_code != 0
    assert "must not contain control characters" in result.output and "Traceback" not in result.output
    with app.app_context():
        assert db.session.query(ApiKey).count() == 0


def test_a_stored_key_name_is_listed_without_control_characters(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["api-keys", "create", "billing"]).exit_code == 0
    with app.app_context():  # a name stored before the rule, or written to the table by hand
        db.session.query(ApiKey).update({ApiKey.name: HOSTILE})
        db.session.commit()
    listed = runner.invoke(args=["api-keys", "list"], color=True).output  # raw, as a terminal gets it
    assert "billing" in listed, listed
    assert not _controls(listed), f"`api-keys list` prints control characters from a key's name: {_controls(listed)}"
    revoked = runner.invoke(args=["api-keys", "revoke", "1"], color=True).output
    assert "billing" in revoked and not _controls(revoked), revoked
