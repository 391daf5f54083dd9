"""Helpers for tests with several workers on one database: a worker that stalls, and looks
at what Stripe (localstripe, behind our back) really holds."""

from __future__ import annotations

import threading
from typing import Any

from kamiyo.models import LIVE_SUBSCRIPTION_STATUSES

API = "/api/v1/payments"


class Stall:
    """The worker stalls (a long GC pause, SIGSTOP, a swapped-out process) right after one of its
    calls through the gateway returns, until `resume()`. Our own code is paused, not Stripe."""

    def __init__(self, app, method: str) -> None:
        gateway = app.extensions["stripe_gateway"]
        original = getattr(gateway, method)
        self.reached, self._resume = threading.Event(), threading.Event()

        def stalled(*args: Any, **kwargs: Any):
            result = original(*args, **kwargs)
            if not self.reached.is_set():
                self.reached.set()
                assert self._resume.wait(60), "the stalled worker was never resumed"
            return result

        setattr(gateway, method, stalled)  # this worker's gateway only

    def resume(self) -> None:
        self._resume.set()


def in_thread(function, *args: Any) -> tuple[threading.Thread, list]:
    """Run function(*args) in a thread; the list receives its result (or exception)."""
    out: list = []

    def run() -> None:
        try:
            out.append(function(*args))
        except BaseException as exc:  # reported to the test through `out`
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def live_stripe_subscriptions(localstripe, stripe_customer_id: str) -> list[dict]:
    subscriptions = localstripe.v1.subscriptions.list(params={"customer": stripe_customer_id, "status": "all",
                                                              "limit": 100})
    return [s.to_dict() for s in subscriptions.data if s.status in LIVE_SUBSCRIPTION_STATUSES]


def new_customer(client, headers, user_id: str, card: bool = True) -> dict:
    """A customer through our API, with a default card on Stripe when `card`."""
    answer = client.post(f"{API}/customers", json={"user_id": user_id, "email": f"{user_id}@example.com"},
                         headers=headers)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()
