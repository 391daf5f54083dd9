"""The Stripe emulator proxy, driven by stripe-python over real HTTP, in front of
the real localstripe."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stripe

from devtools.stripe_form import decode
from devtools.stripe_proxy import Fault, StripeProxy, translate_price_to_plan

API_KEY = "sk_test_proxy_tests"


def client_for(url: str, **kwargs) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=0,
                               http_client=stripe.RequestsClient(timeout=5), **kwargs)


@pytest.fixture
def sc(proxy):
    return client_for(proxy.url)


@pytest.fixture
def upstream(localstripe_url):
    """A client that talks to localstripe directly: what really exists there."""
    return client_for(localstripe_url)


def unique_email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


def customers_with(client: stripe.StripeClient, email: str) -> list:
    return [c for c in client.v1.customers.list(params={"limit": 100}).auto_paging_iter() if c.email == email]


def paying_customer(client: stripe.StripeClient) -> str:
    customer = client.v1.customers.create(params={"email": unique_email()})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    return customer.id


# -- faults --------------------------------------------------------------------

@pytest.mark.parametrize(("status", "exc_class"), [
    (500, stripe.APIError), (503, stripe.APIError), (502, stripe.APIError),
    (429, stripe.RateLimitError), (402, stripe.CardError),
])
def test_status_faults_raise_the_matching_stripe_error(proxy, sc, status, exc_class):
    proxy.add_faults(Fault("status", status=status))
    with pytest.raises(exc_class) as caught:
        sc.v1.customers.list()
    exc = caught.value
    assert exc.http_status == status
    assert exc.headers["Request-Id"].startswith("req_")
    assert "Stripe-Should-Retry" not in exc.headers
    assert proxy.pending_faults() == 0
    # Consumed once: the next request goes through.
    sc.v1.customers.list()
    assert [r.outcome for r in proxy.requests] == ["fault:status", "forwarded"]
    assert [r.status for r in proxy.requests] == [status, 200]


def test_status_fault_error_body_and_should_retry_header(proxy, sc):
    proxy.add_faults(Fault("status", status=429, should_retry=True),
                     Fault("status", status=503, should_retry=False, error_type="api_error"))
    with pytest.raises(stripe.RateLimitError) as first:
        sc.v1.customers.list()
    assert first.value.headers["Stripe-Should-Retry"] == "true"
    assert first.value.error.type == "rate_limit_error" and first.value.error.code == "rate_limit"
    with pytest.raises(stripe.APIError) as second:
        sc.v1.customers.list()
    assert second.value.headers["Stripe-Should-Retry"] == "false"
    assert second.value.error.type == "api_error"


def test_card_error_fault_carries_card_declined(proxy, sc):
    proxy.add_faults(Fault("status", status=402))
    with pytest.raises(stripe.CardError) as caught:
        sc.v1.customers.create(params={"email": unique_email()})
    assert caught.value.code == "card_declined"


def test_status_fault_is_not_stored_under_the_idempotency_key(proxy, sc, upstream):
    email = unique_email()
    proxy.add_faults(Fault("status", status=500))
    with pytest.raises(stripe.APIError):
        sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "fault-then-ok"})
    # Rejected before execution: the retry with the same key runs for real.
    customer = sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "fault-then-ok"})
    assert "Idempotent-Replayed" not in customer.last_response.headers
    assert [c.id for c in customers_with(upstream, email)] == [customer.id]


def test_drop_before_forwarding_creates_nothing(proxy, sc, upstream):
    email = unique_email()
    proxy.add_faults(Fault("drop_before"))
    with pytest.raises(stripe.APIConnectionError):
        sc.v1.customers.create(params={"email": email})
    assert customers_with(upstream, email) == []
    [record] = proxy.requests
    assert (record.status, record.outcome, record.reached_upstream) == (None, "fault:drop_before", False)


def test_drop_after_forwarding_creates_and_the_retry_replays(proxy, sc, upstream):
    email = unique_email()
    proxy.add_faults(Fault("drop_after"))
    with pytest.raises(stripe.APIConnectionError):
        sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "drop-after-1"})
    [created] = customers_with(upstream, email)

    retry = sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "drop-after-1"})
    assert retry.id == created.id
    headers = retry.last_response.headers
    assert headers["Idempotent-Replayed"] == "true"
    first, second = proxy.requests
    assert (first.outcome, first.status, first.reached_upstream) == ("fault:drop_after", None, True)
    assert (second.outcome, second.status, second.reached_upstream) == ("replayed", 200, False)
    # A replay gets a fresh Request-Id and names the original one.
    assert headers["Request-Id"] == second.request_id != first.request_id
    assert headers["Original-Request"] == first.request_id
    assert [c.id for c in customers_with(upstream, email)] == [created.id]


def test_delay_fault_slows_then_forwards(proxy, sc):
    proxy.add_faults(Fault("delay", delay=0.3))
    started = time.perf_counter()
    sc.v1.customers.list()
    assert time.perf_counter() - started >= 0.3
    [record] = proxy.requests
    assert (record.status, record.outcome, record.fault) == (200, "fault:delay", "delay")
    assert record.duration >= 0.3


def test_faults_match_method_and_path_and_are_consumed_in_order(proxy, sc):
    proxy.add_faults(
        Fault("status", status=503, method="POST", path=r"^/v1/customers$"),
        Fault("status", status=500, path=r"/v1/products"),
        Fault("status", status=429, method="POST", path=r"^/v1/customers$"),
    )
    sc.v1.customers.list()  # a GET: no fault matches it
    with pytest.raises(stripe.APIError) as first:
        sc.v1.customers.create(params={"email": unique_email()})
    assert first.value.http_status == 503
    with pytest.raises(stripe.RateLimitError):
        sc.v1.customers.create(params={"email": unique_email()})
    assert proxy.pending_faults() == 1
    with pytest.raises(stripe.APIError) as products:
        sc.v1.products.list()
    assert products.value.http_status == 500
    assert proxy.pending_faults() == 0


def test_fault_validation():
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("status", status=200)
    with pytest.raises(ValueError):
        Fault("drop_before", stored=True)
    with pytest.raises(ValueError):
        Fault("status", stored="yes")
    assert Fault("status", method="post").method == "POST"


def test_stored_status_fault_is_replayed_under_its_key(proxy, sc, upstream):
    email = unique_email()
    proxy.add_faults(Fault("status", status=500, stored=True, method="POST"))
    with pytest.raises(stripe.APIError) as first:
        sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "stored-500"})
    assert first.value.http_status == 500
    assert first.value.headers["Idempotency-Key"] == "stored-500"
    assert customers_with(upstream, email) == []

    # Stripe keeps the first result of a key, 500s included: the retry gets it again.
    with pytest.raises(stripe.APIError) as again:
        sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "stored-500"})
    assert again.value.http_status == 500
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert again.value.headers["Original-Request"] == proxy.requests[0].request_id
    assert again.value.error.type == first.value.error.type == "api_error"
    with pytest.raises(stripe.IdempotencyError):
        sc.v1.customers.create(params={"email": unique_email()}, options={"idempotency_key": "stored-500"})
    assert customers_with(upstream, email) == []

    created = sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "stored-500-new"})
    assert [c.id for c in customers_with(upstream, email)] == [created.id]
    assert [(r.outcome, r.status, r.reached_upstream) for r in proxy.requests] == [
        ("fault:status", 500, False), ("replayed", 500, False), ("idempotency_error", 400, False),
        ("forwarded", 200, True)]


def test_stored_status_fault_without_a_key_or_on_a_get_stores_nothing(proxy, sc):
    proxy.add_faults(Fault("status", status=500, stored=True), Fault("status", status=503, stored=True))
    with pytest.raises(stripe.APIError):
        sc.v1.customers.list()
    response = requests.post(f"{proxy.url}/v1/customers", auth=(API_KEY, ""), data={"email": unique_email()},
                             timeout=5)
    assert response.status_code == 503 and "Idempotency-Key" not in response.headers
    sc.v1.customers.list()
    sc.v1.customers.create(params={"email": unique_email()})
    assert [r.outcome for r in proxy.requests] == ["fault:status", "fault:status", "forwarded", "forwarded"]


def test_stored_status_fault_through_the_control_api(proxy, upstream):
    fault = {"kind": "status", "status": 500, "stored": True, "method": "POST", "path": "^/v1/customers$"}
    assert requests.post(f"{proxy.url}/_proxy/faults", json=fault, timeout=5).status_code == 201
    assert requests.get(f"{proxy.url}/_proxy/faults", timeout=5).json()[0]["stored"] is True
    bad = requests.post(f"{proxy.url}/_proxy/faults", json={"kind": "delay", "stored": True}, timeout=5)
    assert bad.status_code == 400 and proxy.pending_faults() == 1

    email = unique_email()

    def create(key: str, email: str) -> requests.Response:
        return requests.post(f"{proxy.url}/v1/customers", auth=(API_KEY, ""), data={"email": email},
                             headers={"Idempotency-Key": key}, timeout=5)

    first, second, other = create("ctl-500", email), create("ctl-500", email), create("ctl-500", unique_email())
    assert (first.status_code, second.status_code, other.status_code) == (500, 500, 400)
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert other.json()["error"]["type"] == "idempotency_error"
    assert create("ctl-500-new", email).status_code == 200
    assert len(customers_with(upstream, email)) == 1


# -- idempotency ---------------------------------------------------------------

def test_same_key_same_params_replays(proxy, sc, upstream):
    email = unique_email()
    first = sc.v1.customers.create(params={"email": email, "metadata": {"a": "1"}},
                                   options={"idempotency_key": "replay-1"})
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert first.last_response.headers["Idempotency-Key"] == "replay-1"
    again = sc.v1.customers.create(params={"email": email, "metadata": {"a": "1"}},
                                   options={"idempotency_key": "replay-1"})
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert [r.outcome for r in proxy.requests] == ["forwarded", "replayed"]
    assert len(customers_with(upstream, email)) == 1


def test_same_key_other_params_is_an_idempotency_error(proxy, sc):
    sc.v1.customers.create(params={"email": unique_email()}, options={"idempotency_key": "reuse-1"})
    with pytest.raises(stripe.IdempotencyError) as caught:
        sc.v1.customers.create(params={"email": unique_email()}, options={"idempotency_key": "reuse-1"})
    assert caught.value.http_status == 400
    assert caught.value.error.type == "idempotency_error"
    assert "reuse-1" in caught.value.user_message
    assert proxy.requests[-1].outcome == "idempotency_error"


def test_keys_are_scoped_by_api_key_and_ignored_on_get(proxy, sc):
    email = unique_email()
    first = sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "scoped-1"})
    other_account = stripe.StripeClient("sk_test_someone_else", base_addresses={"api": proxy.url},
                                        max_network_retries=0)
    second = other_account.v1.customers.create(params={"email": email}, options={"idempotency_key": "scoped-1"})
    assert second.id != first.id
    response = requests.get(f"{proxy.url}/v1/customers", auth=(API_KEY, ""),
                            headers={"Idempotency-Key": "scoped-1"}, timeout=5)
    assert response.status_code == 200 and "Idempotent-Replayed" not in response.headers


def test_in_flight_key_gets_409_then_the_replay(proxy, sc):
    email = unique_email()
    proxy.add_faults(Fault("delay", delay=1.0, method="POST"))
    results = {}

    def first():
        results["first"] = sc.v1.customers.create(params={"email": email},
                                                   options={"idempotency_key": "in-flight-1"})

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 5
    while not proxy.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(stripe.APIError) as caught:
        sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "in-flight-1"})
    thread.join(10)
    exc = caught.value
    assert type(exc) is stripe.APIError  # stripe-python maps every 409 to the generic APIError
    assert exc.http_status == 409 and exc.code is None  # APIError drops the code: read exc.error.code
    assert exc.error.code == "idempotency_key_in_use"
    assert exc.error.type == "invalid_request_error"
    assert [r.outcome for r in proxy.requests] == ["fault:delay", "in_flight_conflict"]
    # Once the first has finished, the same key replays its result.
    later = sc.v1.customers.create(params={"email": email}, options={"idempotency_key": "in-flight-1"})
    assert later.id == results["first"].id
    assert later.last_response.headers["Idempotent-Replayed"] == "true"


def test_twenty_concurrent_identical_creates_execute_once(proxy, upstream):
    email = unique_email()
    proxy.add_faults(Fault("delay", delay=0.3, method="POST"))

    def create(_):
        client = client_for(proxy.url)
        try:
            return client.v1.customers.create(params={"email": email}, options={"idempotency_key": "burst-1"}).id
        except stripe.APIError as exc:
            return exc.http_status

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(create, range(20)))
    outcomes = [r.outcome for r in proxy.requests]
    assert outcomes.count("fault:delay") == 1 and len(outcomes) == 20
    assert set(outcomes) <= {"fault:delay", "in_flight_conflict", "replayed"}
    [customer] = customers_with(upstream, email)
    assert set(results) <= {customer.id, 409} and customer.id in results


def test_upstream_client_errors_are_not_stored(proxy, sc):
    # A 400 means "rejected before execution": Stripe stores nothing, the retry runs again.
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.customers.create(params={"balance": "lots"}, options={"idempotency_key": "bad-1"})
    with pytest.raises(stripe.InvalidRequestError):
        sc.v1.customers.create(params={"balance": "lots"}, options={"idempotency_key": "bad-1"})
    assert [r.outcome for r in proxy.requests] == ["forwarded", "forwarded"]


# -- deleting a customer -------------------------------------------------------

def test_deleting_a_customer_cancels_its_subscriptions_first(proxy, sc, upstream, plan_id,
                                                             fast_webhooks, webhook_receiver):
    customer = paying_customer(sc)
    first, second, ended = (sc.v1.subscriptions.create(params={"customer": customer, "items": [{"price": plan_id}]})
                            for _ in range(3))
    upstream.v1.subscriptions.cancel(ended.id)
    webhook_receiver.wait_for("customer.subscription.deleted", ended.id)
    proxy.clear_requests()

    assert sc.v1.customers.delete(customer).deleted is True
    for subscription in (first, second):
        assert upstream.v1.subscriptions.retrieve(subscription.id).status == "canceled"
        webhook_receiver.wait_for("customer.subscription.deleted", subscription.id)
    with pytest.raises(stripe.InvalidRequestError):
        upstream.v1.customers.retrieve(customer)
    # The customer was deleted after its subscriptions: none was live any more.
    gone = webhook_receiver.wait_for("customer.deleted", customer)
    assert gone.event["data"]["object"]["subscriptions"]["data"] == []
    time.sleep(0.3)
    assert len(webhook_receiver.events("customer.subscription.deleted", ended.id)) == 1  # not canceled twice
    # The cancellations are the proxy's own calls: the record is what the client sent.
    assert [(r.method, r.path, r.status) for r in proxy.requests] == [("DELETE", f"/v1/customers/{customer}", 200)]


def test_deleting_a_customer_without_subscriptions(proxy, sc, upstream):
    customer = sc.v1.customers.create(params={"email": unique_email()})
    deleted = sc.v1.customers.delete(customer.id)
    assert (deleted.id, deleted.deleted) == (customer.id, True)
    with pytest.raises(stripe.InvalidRequestError):
        upstream.v1.customers.retrieve(customer.id)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sc.v1.customers.delete(customer.id)
    assert missing.value.http_status == 404


def test_a_customer_deletion_dropped_before_forwarding_cancels_nothing(proxy, sc, upstream, plan_id):
    customer = paying_customer(sc)
    subscription = sc.v1.subscriptions.create(params={"customer": customer, "items": [{"price": plan_id}]})
    proxy.add_faults(Fault("drop_before", method="DELETE"))
    with pytest.raises(stripe.APIConnectionError):
        sc.v1.customers.delete(customer)
    assert upstream.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert upstream.v1.customers.retrieve(customer).id == customer


# -- headers and translation -------------------------------------------------

def test_request_id_and_stripe_version_on_every_response(proxy, sc):
    customer = sc.v1.customers.create(params={"email": unique_email()})
    assert customer.last_response.headers["Request-Id"].startswith("req_")
    assert len(customer.last_response.headers["Request-Id"]) == len("req_") + 14
    assert customer.last_response.headers["Stripe-Version"] == stripe.api_version

    pinned = client_for(proxy.url, stripe_version="2022-04-12")
    assert pinned.v1.customers.list().last_response.headers["Stripe-Version"] == "2022-04-12"

    bare = requests.get(f"{proxy.url}/v1/customers", auth=(API_KEY, ""), timeout=5)
    assert bare.headers["Stripe-Version"] == proxy.stripe_version
    missing = requests.get(f"{proxy.url}/v1/customers/cus_missing", auth=(API_KEY, ""), timeout=5)
    assert missing.status_code == 404 and missing.headers["Request-Id"].startswith("req_")
    ids = {r.request_id for r in proxy.requests}
    assert len(ids) == len(proxy.requests)


def test_configured_default_stripe_version(localstripe_url):
    proxy = StripeProxy(localstripe_url, stripe_version="2024-09-30.acacia")
    proxy.start()
    try:
        response = requests.get(f"{proxy.url}/v1/customers", auth=(API_KEY, ""), timeout=5)
        assert response.headers["Stripe-Version"] == "2024-09-30.acacia"
    finally:
        proxy.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proxy.url}/v1/customers", timeout=1)


def test_proxy_refuses_non_loopback_addresses(localstripe_url):
    with pytest.raises(ValueError):
        StripeProxy(localstripe_url, host="0.0.0.0")


def test_price_is_translated_to_plan_for_subscriptions(proxy, sc):
    product = sc.v1.products.create(params={"name": "Kamiyo Pro"})
    plan = sc.v1.plans.create(params={"amount": 1500, "currency": "usd", "interval": "month",
                                      "product": product.id})
    customer = sc.v1.customers.create(params={"email": unique_email()})
    pm = sc.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    sc.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})

    subscription = sc.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": plan.id}]})
    assert subscription.status == "active"
    assert subscription["items"].data[0].plan.id == plan.id
    # The record keeps what the client sent, for contract checks.
    [record] = proxy.requests_to("POST", r"^/v1/subscriptions$")
    assert record.form["items"] == [{"price": plan.id}]


def test_translate_price_to_plan_rules():
    body = b"customer=cus_1&items[0][price]=price_1&items[1][price]=price_2&metadata[price]=x"
    assert decode(translate_price_to_plan("POST", "/v1/subscriptions", body)) == {
        "customer": "cus_1", "items": [{"plan": "price_1"}, {"plan": "price_2"}], "metadata": {"price": "x"}}
    assert decode(translate_price_to_plan("POST", "/v1/subscription_items", b"price=p&subscription=s")) == {
        "plan": "p", "subscription": "s"}
    assert decode(translate_price_to_plan("POST", "/v1/subscriptions/sub_1", b"items[0][price]=p")) == {
        "items": [{"plan": "p"}]}
    assert translate_price_to_plan("POST", "/v1/invoices", b"price=p") == b"price=p"
    assert translate_price_to_plan("GET", "/v1/subscriptions", b"") == b""


# -- recording and the control API -------------------------------------------

def test_recording_requests_to_and_clear(proxy, sc):
    customer = sc.v1.customers.create(params={"email": "rec@example.com", "metadata": {"order": "42"},
                                              "preferred_locales": ["en", "fr"]})
    sc.v1.customers.retrieve(customer.id)
    sc.v1.customers.list(params={"limit": 3})
    posts = proxy.requests_to("POST", r"^/v1/customers$")
    assert len(posts) == 1
    record = posts[0]
    assert record.form == {"email": "rec@example.com", "metadata": {"order": "42"},
                           "preferred_locales": ["en", "fr"]}
    assert record.idempotency_key  # stripe-python sends one on every POST
    assert record.headers["Authorization"] == "Bearer sk_test_***"  # never the key itself
    assert record.started_at <= time.time() and record.duration > 0
    assert [r.path for r in proxy.requests_to("get", rf"^/v1/customers/{customer.id}$")] == [f"/v1/customers/{customer.id}"]
    [listing] = proxy.requests_to("GET", r"^/v1/customers$")
    assert listing.query == "limit=3" and listing.form == {"limit": "3"}

    snapshot = proxy.requests
    snapshot.clear()
    assert len(proxy.requests) == 3
    proxy.add_faults(Fault("delay"))
    proxy.clear()
    assert proxy.requests == [] and proxy.pending_faults() == 0


def test_control_api(proxy, sc):
    faults = [{"kind": "status", "status": 503, "should_retry": True, "path": "^/v1/customers$"},
              {"kind": "drop_before", "method": "POST"}]
    created = requests.post(f"{proxy.url}/_proxy/faults", json=faults, timeout=5)
    assert created.status_code == 201 and created.json() == {"queued": 2, "pending": 2}
    listed = requests.get(f"{proxy.url}/_proxy/faults", timeout=5).json()
    assert [(f["kind"], f["status"], f["method"]) for f in listed] == [("status", 503, None), ("drop_before", 500, "POST")]
    bad = requests.post(f"{proxy.url}/_proxy/faults", json=[{"kind": "meteor"}], timeout=5)
    assert bad.status_code == 400 and proxy.pending_faults() == 2

    with pytest.raises(stripe.APIError):
        sc.v1.customers.list()
    assert requests.delete(f"{proxy.url}/_proxy/faults", timeout=5).json() == {"pending": 0}
    sc.v1.customers.create(params={"email": unique_email()})

    recorded = requests.get(f"{proxy.url}/_proxy/requests", params={"limit": 1}, timeout=5).json()
    assert len(recorded) == 1
    assert recorded[0]["method"] == "POST" and recorded[0]["status"] == 200
    assert recorded[0]["headers"]["Authorization"] == "Bearer sk_test_***"
    assert API_KEY not in str(requests.get(f"{proxy.url}/_proxy/requests", timeout=5).json())
    assert len(requests.get(f"{proxy.url}/_proxy/requests", timeout=5).json()) == 2
    assert requests.delete(f"{proxy.url}/_proxy/requests", timeout=5).status_code == 200
    assert proxy.requests == []
    assert requests.get(f"{proxy.url}/_proxy/nothing", timeout=5).status_code == 404


def test_localstripe_config_paths_are_forwarded(proxy):
    response = requests.post(f"{proxy.url}/_config/webhooks/proxy_test",
                             data={"url": "http://127.0.0.1:9/hook", "secret": "whsec_x"}, timeout=5)
    assert response.status_code == 200
    assert proxy.requests[0].path == "/_config/webhooks/proxy_test"


def test_unreachable_upstream_is_a_502_api_error(proxy):
    from tests.support import closed_port_url

    dead = StripeProxy(closed_port_url())
    dead.start()
    try:
        with pytest.raises(stripe.APIError) as caught:
            client_for(dead.url).v1.customers.create(params={"email": unique_email()},
                                                     options={"idempotency_key": "dead-1"})
        assert caught.value.http_status == 502
        # Not stored: the same key with other parameters is no idempotency_error.
        with pytest.raises(stripe.APIError) as again:
            client_for(dead.url).v1.customers.create(params={"email": unique_email()},
                                                     options={"idempotency_key": "dead-1"})
        assert again.value.http_status == 502
        assert [r.outcome for r in dead.requests] == ["upstream_error", "upstream_error"]
    finally:
        dead.stop()


def test_stop_with_a_request_in_flight_closes_it(localstripe_url):
    proxy = StripeProxy(localstripe_url)
    proxy.start()
    proxy.add_faults(Fault("delay", delay=30))
    outcome = {}

    def slow():
        try:
            outcome["status"] = requests.get(f"{proxy.url}/v1/customers", auth=(API_KEY, ""), timeout=20).status_code
        except requests.ConnectionError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 5
    while not proxy.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.stop()
    thread.join(15)
    assert not thread.is_alive() and "error" in outcome, outcome


def test_form_decoding_follows_stripes_encoding():
    assert decode(b"a[b][0][c]=x&a[b][1][c]=y&e[]=1&e[]=2&m[k]=&n=") == {
        "a": {"b": [{"c": "x"}, {"c": "y"}]}, "e": ["1", "2"], "m": {"k": ""}, "n": ""}
    assert decode("metadata[2]=x") == {"metadata": {"2": "x"}}  # not 0..n-1: stays a dict
    assert decode(b"") == {}
