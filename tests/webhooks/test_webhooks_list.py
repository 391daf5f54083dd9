"""flask --app wsgi webhooks list: the inbox, newest first, filtered and bounded."""

from __future__ import annotations

import datetime as dt

from kamiyo.extensions import db
from kamiyo.webhooks.models import WebhookEvent
from tests.support import both_databases

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


def store(app, rows) -> None:
    with app.app_context():
        for n, (type_, status, error) in enumerate(rows):
            db.session.add(WebhookEvent(
                event_id=f"evt_{n:03d}", type=type_, status=status, attempts=1 if status == "processed" else 2,
                last_error=error, object_id=f"obj_{n}", created=T0, received_at=T0 + dt.timedelta(minutes=n),
                payload="{}", api_version="2026-10-28.endive"))
        db.session.commit()


ROWS = [
    ("customer.created", "processed", None),
    ("invoice.paid", "failed", "RuntimeError: the handler broke"),
    ("customer.created", "processed", None),
    ("ping.unknown", "ignored", None),
    ("invoice.paid", "failed", "x" * 300),
]


@both_databases
def test_newest_first_with_filters_and_a_limit(make_app):
    app = make_app()
    store(app, ROWS)
    runner = app.test_cli_runner()

    everything = runner.invoke(args=["webhooks", "list"])
    assert everything.exit_code == 0, everything.output
    assert everything.output.splitlines() == [
        "RECEIVED             EVENT ID                         TYPE                             STATUS     ATTEMPTS  LAST ERROR",
        "2026-12-01 09:04:00  evt_004                          invoice.paid                     failed            2  " + "x" * 60 + "...",
        "2026-12-01 09:03:00  evt_003                          ping.unknown                     ignored           2  -",
        "2026-12-01 09:02:00  evt_002                          customer.created                 processed         1  -",
        "2026-12-01 09:01:00  evt_001                          invoice.paid                     failed            2  RuntimeError: the handler broke",
        "2026-12-01 09:00:00  evt_000                          customer.created                 processed         1  -",
    ]

    failed = runner.invoke(args=["webhooks", "list", "--status", "failed", "--limit", "1"])
    assert failed.exit_code == 0, failed.output
    assert [line.split()[2] for line in failed.output.splitlines()[1:2]] == ["evt_004"]
    assert failed.output.splitlines()[-1] == "(the newest 1 shown: --limit for more)"

    by_type = runner.invoke(args=["webhooks", "list", "--type", "customer.created"])
    assert [line.split()[2] for line in by_type.output.splitlines()[1:]] == ["evt_002", "evt_000"]

    both = runner.invoke(args=["webhooks", "list", "--status", "processed", "--type", "invoice.paid"])
    assert both.exit_code == 0 and both.output == "No webhook events with status processed and type invoice.paid.\n"


def test_the_limit_and_status_are_checked(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["webhooks", "list", "--limit", "0"]).exit_code == 2
    assert runner.invoke(args=["webhooks", "list", "--limit", "1001"]).exit_code == 2
    bad = runner.invoke(args=["webhooks", "list", "--status", "lost"])
    assert bad.exit_code == 2 and "'lost' is not one of 'processed', 'ignored', 'failed'" in bad.output
    assert runner.invoke(args=["webhooks", "list"]).output == "No webhook events.\n"
