"""The read API: customers and subscriptions listed in Stripe's manner (`data`, `has_more`,
`limit`, `starting_after`), newest first, with filters; through the emulator proxy."""

from __future__ import annotations

import uuid

from tests.support import both_databases


def new_customer(api, email: str = "list@example.com") -> dict:
    response = api.post("/customers", json={"user_id": f"l-{uuid.uuid4().hex[:10]}", "email": email})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def ids(response) -> list[int]:
    assert response.status_code == 200, response.get_json()
    return [row["id"] for row in response.get_json()["data"]]


@both_databases
def test_customers_empty_one_page_and_the_end(api):
    empty = api.get("/customers")
    assert empty.status_code == 200
    assert empty.get_json() == {"object": "list", "url": "/api/v1/payments/customers", "data": [], "has_more": False}

    a, b, c = (new_customer(api) for _ in range(3))
    whole = api.get("/customers?limit=3")
    assert ids(whole) == [c["id"], b["id"], a["id"]] and whole.get_json()["has_more"] is False
    assert whole.get_json()["data"][0] == c

    first = api.get("/customers?limit=2")
    assert ids(first) == [c["id"], b["id"]] and first.get_json()["has_more"] is True
    rest = api.get(f"/customers?limit=2&starting_after={b['id']}")
    assert ids(rest) == [a["id"]] and rest.get_json()["has_more"] is False
    end = api.get(f"/customers?starting_after={a['id']}")
    assert ids(end) == [] and end.get_json()["has_more"] is False


@both_databases
def test_customers_filtered(api):
    ada = new_customer(api, "ada@example.com")
    new_customer(api, "bob@example.com")
    assert ids(api.get(f"/customers?user_id={ada['user_id']}")) == [ada["id"]]
    assert ids(api.get("/customers?email=ada@example.com")) == [ada["id"]]
    assert ids(api.get(f"/customers?stripe_customer_id={ada['stripe_customer_id']}")) == [ada["id"]]
    assert ids(api.get("/customers?user_id=nobody")) == []


def test_listing_arguments_are_checked(api):
    for query, field in [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"),
                         ("limit=" + "9" * 5000, "limit"), ("limit=%D9%A3", "limit"),
                         ("customer_id=" + "9" * 5000, "customer_id"),
                         ("starting_after=0", "starting_after"), ("starting_after=abc", "starting_after"),
                         ("user_id=bad%20id", "user_id"), ("email=nope", "email")]:
        response = api.get(f"/{'subscriptions' if query.startswith('customer_id') else 'customers'}?{query}")
        assert response.status_code == 400, query
        error = response.get_json()["error"]
        assert (error["code"], error["fields"]) == ("validation_failed", [field]), query
    unknown = api.get("/customers?colour=red")
    assert unknown.status_code == 400
    assert (unknown.get_json()["error"]["code"], unknown.get_json()["error"]["fields"]) == ("unknown_fields", ["colour"])
    bad_status = api.get("/subscriptions?status=happy")
    assert bad_status.status_code == 400 and bad_status.get_json()["error"]["fields"] == ["status"]


def test_listings_need_an_api_key(payments_app):
    client = payments_app.test_client()
    for path in ("/customers", "/subscriptions", "/customers/1/subscriptions"):
        assert client.get(f"/api/v1/payments{path}").status_code == 401, path


@both_databases
def test_subscriptions_of_a_customer_and_filtered(api, plan_id, localstripe):
    product = localstripe.v1.products.create(params={"name": "Kamiyo Team"})
    team = localstripe.v1.plans.create(params={"product": product.id, "amount": 9900, "currency": "usd",
                                               "interval": "month"})
    ada, bob = new_customer(api), new_customer(api)
    assert api.get(f"/customers/{ada['id']}/subscriptions").get_json()["data"] == []

    def subscribe(customer, price, tier):
        response = api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": price, "tier": tier,
                                                    "payment_method": "pm_card_visa"})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    pro = subscribe(ada, plan_id, "pro")
    ada_team = subscribe(ada, team.id, "team")
    bob_pro = subscribe(bob, plan_id, "pro")
    assert api.post(f"/subscriptions/{ada_team['id']}/cancel").status_code == 200

    of_ada = api.get(f"/customers/{ada['id']}/subscriptions")
    assert ids(of_ada) == [ada_team["id"], pro["id"]]
    assert of_ada.get_json()["url"] == f"/api/v1/payments/customers/{ada['id']}/subscriptions"
    assert of_ada.get_json()["data"][1] == pro
    assert ids(api.get(f"/customers/{ada['id']}/subscriptions?status=active")) == [pro["id"]]
    first = api.get(f"/customers/{ada['id']}/subscriptions?limit=1")
    assert ids(first) == [ada_team["id"]] and first.get_json()["has_more"] is True

    assert ids(api.get("/subscriptions?status=canceled")) == [ada_team["id"]]
    assert ids(api.get(f"/subscriptions?customer_id={bob['id']}")) == [bob_pro["id"]]
    assert ids(api.get(f"/subscriptions?customer_id={ada['id']}&status=active")) == [pro["id"]]
    everything = api.get("/subscriptions?limit=3")
    assert ids(everything) == [bob_pro["id"], ada_team["id"], pro["id"]]
    assert everything.get_json()["has_more"] is False
    assert ids(api.get(f"/subscriptions?starting_after={pro['id']}")) == []

    missing = api.get("/customers/999999/subscriptions")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "customer_not_found"
