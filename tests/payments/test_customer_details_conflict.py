"""A repeated POST /customers for a user_id whose customer holds other details answers 409
`customer_exists_with_different_details` with the stored values, and calls Stripe no more
(it used to answer 200 with the old email and say nothing)."""

from __future__ import annotations

import uuid

from tests.support import both_databases, stripe_customers_for


@both_databases
def test_other_email_or_name_is_a_409_showing_the_stored_values(api, proxy, localstripe):
    user = f"d-{uuid.uuid4().hex[:10]}"
    first = api.post("/customers", json={"user_id": user, "email": "ada@example.com", "name": "Ada"})
    assert first.status_code == 201
    proxy.clear_requests()

    other_email = api.post("/customers", json={"user_id": user, "email": "ada@other.example", "name": "Ada"})
    assert other_email.status_code == 409
    error = other_email.get_json()["error"]
    assert (error["code"], error["param"], error["fields"]) == ("customer_exists_with_different_details", "email",
                                                                ["email"])
    assert error["stored"] == {"id": first.get_json()["id"], "email": "ada@example.com", "name": "Ada"}

    both = api.post("/customers", json={"user_id": user, "email": "ada@other.example", "name": "Ada L."})
    assert both.status_code == 409 and both.get_json()["error"]["fields"] == ["email", "name"]
    null_name = api.post("/customers", json={"user_id": user, "email": "ada@example.com", "name": None})
    assert null_name.status_code == 200  # no name given: nothing to differ

    same = api.post("/customers", json={"user_id": user, "email": "ada@example.com"})
    assert same.status_code == 200 and same.get_json() == first.get_json()
    assert proxy.requests == []  # none of these reached Stripe
    assert [c.email for c in stripe_customers_for(localstripe, user)] == ["ada@example.com"]
