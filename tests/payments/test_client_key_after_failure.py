"""A request with an Idempotency-Key that fails leaves the key free: its retry runs at once."""

from __future__ import annotations

import uuid

from tests.support import both_databases


@both_databases
def test_the_retry_of_a_failed_request_runs_again_instead_of_409(api):
    key = str(uuid.uuid4())
    body = {"user_id": f"fails-{uuid.uuid4().hex[:8]}", "email": "not an email"}
    first = api.post("/customers", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 400
    again = api.post("/customers", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 400, again.get_json()  # 409 while a record stayed in flight
    assert "Idempotent-Replayed" not in again.headers
    fixed = api.post("/customers", json={**body, "email": "fixed@example.com"}, headers={"Idempotency-Key": key})
    assert fixed.status_code == 201
