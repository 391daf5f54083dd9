"""What the dashboard and the ops API read of payment operations and flagged duplicates, the
daily clearing of finished operations' parameters, and the optional filters of the listings."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription, utcnow
from kamiyo.payments import queries
from kamiyo.payments.models import PaymentOperation
from kamiyo.payments.phases import FINISHED
from kamiyo.payments.retention import CLEARED_PARAMS, clear_finished_params
from tests.payments.workers import API
from tests.support import both_databases, make_key

pytestmark = both_databases


def _operation(n: int, operation: str, status: str, generation: int = 0, **values) -> PaymentOperation:
    row = PaymentOperation(operation=operation, scope=f"{operation}:u{n}", user_id=f"u{n}", params_json='{"n": 1}',
                           status=status, generation=generation, **values)
    db.session.add(row)
    return row


def test_operations_by_state_and_operation_and_their_counts(make_app):
    app = make_app()
    with app.app_context():
        pending = _operation(1, "customer.create", "pending")
        pending_sub = _operation(2, "subscription.create", "pending")
        failed = _operation(3, "customer.create", "failed")
        superseded = _operation(4, "subscription.create", "succeeded", generation=1)
        succeeded = _operation(5, "customer.create", "succeeded")
        db.session.commit()

        def ids(args: dict[str, str]) -> set[int]:
            return {row.id for row in queries.operations(args).rows}

        default = queries.operations({})
        assert default.filters == {"state": "in_flight"}
        assert {row.id for row in default.rows} == {pending.id, pending_sub.id}
        assert ids({"state": "failed"}) == {failed.id}
        assert ids({"state": "succeeded"}) == {superseded.id, succeeded.id}
        assert ids({"state": "superseded"}) == {superseded.id}
        assert ids({"operation": "customer.create"}) == {pending.id}
        assert ids({"state": "succeeded", "operation": "subscription.create"}) == {superseded.id}
        assert queries.operations({"operation": "customer.create"}).filters == {
            "state": "in_flight", "operation": "customer.create"}

        assert queries.operation_counts(utcnow() - dt.timedelta(hours=1)) == {
            "pending": 2, "failed": 1, "superseded": 1, "succeeded": 2}
        assert queries.operation_counts(utcnow() + dt.timedelta(hours=1))["succeeded"] == 0


def test_flagged_duplicates_are_listed_oldest_first(make_app):
    app = make_app()
    with app.app_context():
        customer = Customer(user_id="dup-user", email="dup@example.com", stripe_customer_id="cus_dup")
        db.session.add(customer)
        db.session.flush()
        originals = [Subscription(customer_id=customer.id, price_id=f"price_{n}", tier="pro", status="active",
                                  stripe_subscription_id=f"sub_orig_{n}") for n in range(3)]
        db.session.add_all(originals)
        db.session.flush()
        # The oldest flag points at the newest original: the flags' index and the table's own
        # order both differ from the ids' order.
        flagged = [Subscription(customer_id=customer.id, price_id=f"price_{n}", tier="pro", status="active",
                                stripe_subscription_id=f"sub_dup_{n}", duplicate_of=originals[2 - n].id)
                   for n in range(3)]
        for row in flagged:
            db.session.add(row)
            db.session.flush()
        db.session.commit()
        # Rewritten rows move to the end of a PostgreSQL table.
        db.session.execute(update(Subscription).where(Subscription.id == flagged[0].id).values(tier="team"))
        db.session.commit()
        assert [row.id for row in queries.duplicate_flags()] == [row.id for row in flagged]
        assert queries.duplicate_flag_count() == 3


def test_finished_parameters_are_cleared_once_and_counted_once(make_app):
    app = make_app()
    with app.app_context():
        old = utcnow() - dt.timedelta(days=30)
        done = _operation(1, "customer.create", "succeeded", recovery_point=FINISHED)
        failed = _operation(2, "customer.create", "failed")
        running = _operation(3, "customer.create", "pending")
        db.session.flush()
        db.session.execute(update(PaymentOperation).values(updated_at=old))
        db.session.commit()

        assert clear_finished_params(utcnow()) == 2
        db.session.commit()
        # Cleared already: nothing to clear, nothing counted, the next day and the one after.
        assert clear_finished_params(utcnow()) == 0
        db.session.commit()
        db.session.expire_all()
        assert [db.session.get_one(PaymentOperation, row.id).params_json for row in (done, failed, running)] == [
            CLEARED_PARAMS, CLEARED_PARAMS, '{"n": 1}']


def test_the_customer_listing_filters_are_optional(make_app):
    app = make_app()
    headers, client = make_key(app), app.test_client()
    for query in ("", "?limit=5", "?email=nobody@example.com", "?user_id=nobody"):
        answer = client.get(f"{API}/customers{query}", headers=headers)
        assert answer.status_code == 200, (query, answer.get_json())
        assert answer.get_json()["data"] == []
    refused = client.get(f"{API}/customers?email=not-an-address", headers=headers)
    assert refused.status_code == 400
    assert refused.get_json()["error"]["rules"] == {
        "email": "optional: an email address of at most 254 characters"}
