"""Reconcile reads every page of Stripe's customer list, not only the first 100."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from kamiyo.extensions import db
from kamiyo.models import Customer
from kamiyo.payments.reconcile import reconcile_customers

ORPHANS = 105  # more than one page of 100


def test_reconcile_adopts_orphans_beyond_the_first_page(payments_app, localstripe):
    batch = uuid.uuid4().hex[:8]
    made = [
        localstripe.v1.customers.create(
            params={"email": f"page{n}@example.com", "metadata": {"kamiyo_user_id": f"page-{batch}-{n}"}}
        ).id
        for n in range(ORPHANS)
    ]
    with payments_app.app_context():
        summary = reconcile_customers()
        adopted = set(db.session.scalars(select(Customer.stripe_customer_id).where(
            Customer.user_id.like(f"page-{batch}-%"))))
        assert summary["scanned"] >= ORPHANS
        assert adopted == set(made)
        assert db.session.scalar(select(func.count()).select_from(Customer).where(
            Customer.user_id.like(f"page-{batch}-%"))) == ORPHANS
