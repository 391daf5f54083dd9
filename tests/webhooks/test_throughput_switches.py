"""The intake with each throughput piece switched off stores the same as with all on.

`make bench` switches them off one at a time to weigh each; what it measures must be
the same intake, not a broken one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from kamiyo.webhooks.models import PaymentOutcome, WebhookEvent
from tests.webhooks.stripe_signing import URL, make_event, signed

pytestmark = pytest.mark.both_databases

T0 = 1_800_000_000
OFF = ["WEBHOOK_GROUP_COMMIT", "WEBHOOK_WRITE_GATE", "PREPARED_STATEMENTS"]


def subscription(n: int, status: str) -> dict:
    return {"id": f"sub_switch_{n % 3}", "object": "subscription", "customer": f"cus_switch_{n % 3}", "status": status,
            "items": {"data": [{"price": {"id": "price_switch"}}]}}


def payment(n: int) -> dict:
    return {"id": f"pi_switch_{n}", "object": "payment_intent", "customer": "cus_switch_0", "amount": 100 + n,
            "amount_received": 100 + n, "currency": "usd"}


def events() -> list[dict]:
    made = []
    for n in range(24):
        if n % 2:
            made.append(make_event("payment_intent.succeeded", payment(n), created=T0 + n))
        else:
            status = "active" if n < 20 else "past_due"
            made.append(make_event("customer.subscription.updated", subscription(n, status), created=T0 + n))
    return made


@pytest.mark.parametrize("off", [[], *([name] for name in OFF), OFF], ids=lambda off: "+".join(off) or "all_on")
def test_each_piece_off_stores_what_all_on_stores(make_app, serve_app, off):
    app = make_app(**{name: False for name in off})
    with app.app_context():
        for n in range(3):
            owner = Customer(user_id=f"switch-{n}", email="s@example.com", stripe_customer_id=f"cus_switch_{n}")
            db.session.add(Subscription(customer=owner, price_id="price_switch", tier="pro", status="active",
                                        stripe_subscription_id=f"sub_switch_{n}"))
        db.session.commit()
    url = serve_app(app) + URL
    sent = events()
    bodies = [signed(event) for event in sent] * 2  # each twice: the copies are duplicates

    def deliver(item):
        body, headers = item
        return requests.post(url, data=body, headers=headers, timeout=30).json()["status"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, bodies))
    assert sorted(answers) == ["duplicate"] * 24 + ["processed"] * 24
    with app.app_context():
        stored = {row.event_id: (row.status, row.attempts) for row in db.session.scalars(db.select(WebhookEvent))}
        assert stored == {event["id"]: ("processed", 1) for event in sent}
        assert db.session.scalar(db.select(db.func.count(PaymentOutcome.id))) == 12
        statuses = {s.stripe_subscription_id: s.status for s in db.session.scalars(db.select(Subscription))}
        # Each subscription's newest event wins: n = 20 and 22 set past_due (sub 2 and sub 1).
        assert statuses == {"sub_switch_0": "active", "sub_switch_1": "past_due", "sub_switch_2": "past_due"}
