"""The phase runner's fencing: a request whose lease ran out and whose operation was taken
over writes nothing, whatever it tries."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import update

from kamiyo.config import ConfigError
from kamiyo.extensions import db
from kamiyo.models import utcnow
from kamiyo.payments import phases
from kamiyo.payments.models import PaymentOperation
from tests.support import SHORT_LEASE, both_databases

pytestmark = both_databases

SCOPE = "customer.create:user-fenced"
PARAMS = {"email": "f@example.com", "metadata": {"kamiyo_user_id": "user-fenced"}}


@pytest.fixture
def fenced_app(make_app):
    return make_app(**SHORT_LEASE)


def _claim(token: str) -> phases.Run:
    claim = phases.acquire("customer.create", SCOPE, "user-fenced", PARAMS, token)
    assert claim.run is not None and claim.run.token == token
    return claim.run


def _expire_lease() -> None:
    db.session.execute(update(PaymentOperation).where(PaymentOperation.scope == SCOPE)
                       .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
    db.session.commit()


def _row() -> dict:
    db.session.expire_all()
    op = db.session.scalar(db.select(PaymentOperation).where(PaymentOperation.scope == SCOPE))
    values = {column.key: getattr(op, column.key) for column in PaymentOperation.__table__.columns}
    db.session.rollback()
    return values


def _superseded_pair() -> tuple[phases.Run, phases.Run]:
    """`stale` claimed the operation, ran out of lease, and `current` took it over."""
    stale = _claim("stale-owner")
    _expire_lease()
    current = _claim("new-owner")
    assert current.attempts == 2 and current.op_id == stale.op_id
    return stale, current


WRITES = {
    "release": lambda run: phases.release(run),
    "renew": lambda run: phases.renew(run),
    "atomic_phase": lambda run: phases.atomic_phase(run, "created", stripe_object_id="cus_stale"),
    "finish": lambda run: phases.finish(run, lambda: 424242),
    "fail_permanently": lambda run: phases.fail_permanently(run, "CardError"),
    "next_generation": lambda run: phases.next_generation(run, phases.CLAIMED),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_superseded_owner_changes_nothing(fenced_app, write):
    with fenced_app.app_context():
        stale, _ = _superseded_pair()
        before = _row()
        if write == "release":  # nothing to let go of: quietly nothing
            WRITES[write](stale)
        else:
            with pytest.raises(phases.Superseded):
                WRITES[write](stale)
        assert _row() == before
        assert before["owner_token"] == "new-owner" and before["status"] == "pending"


@pytest.mark.parametrize("write", list(WRITES))
def test_the_owner_writes_go_through(fenced_app, write):
    with fenced_app.app_context():
        _, current = _superseded_pair()
        before = _row()
        WRITES[write](current)
        assert _row() != before


def test_a_takeover_compares_status_generation_and_owner_token(fenced_app):
    with fenced_app.app_context():
        stale, current = _superseded_pair()
        phases.next_generation(current, phases.CLAIMED)  # the new owner moved on meanwhile
        _expire_lease()
        # A contender that read the row before those writes cannot take it over with that old view.
        snapshot = PaymentOperation(id=stale.op_id, status="pending", generation=stale.generation, attempts=2,
                                    owner_token="new-owner", lease_expires_at=utcnow() - dt.timedelta(seconds=5))
        assert phases._take_over(snapshot, "contender", stale.params_json, lambda op: False) is None
        assert _row()["owner_token"] == "new-owner"


def test_an_expired_claim_goes_to_exactly_one_of_three_contenders(fenced_app):
    with fenced_app.app_context():
        _claim("first-owner")
        _expire_lease()
    barrier, owners, errors = threading.Barrier(3), [], []

    def contend(token: str) -> None:
        with fenced_app.app_context():
            barrier.wait()
            try:
                claim = phases.acquire("customer.create", SCOPE, "user-fenced", PARAMS, token)
                owners.append(claim.run.token)
            except Exception as exc:  # the others wait, then hear 409
                errors.append(getattr(exc, "code", type(exc).__name__))

    threads = [threading.Thread(target=contend, args=(f"contender-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(owners) == 1 and errors == ["operation_in_progress"] * 2
    with fenced_app.app_context():
        assert _row()["owner_token"] == owners[0]


def test_a_lease_shorter_than_one_stripe_step_is_refused(make_app):
    # 3 attempts x 30 s + backoff (1 s, 2 s) = 93 s at worst: a 60 s lease would be lost mid-step.
    with pytest.raises(ConfigError, match=r"OPERATION_LEASE_SECONDS \(60\) is shorter than one Stripe step"):
        make_app(OPERATION_LEASE_SECONDS=60)
    assert make_app(OPERATION_LEASE_SECONDS=93).config["OPERATION_LEASE_SECONDS"] == 93


def test_a_new_generation_is_stored_as_its_run_holds_it(fenced_app):
    """A worker that dies right after a new key leaves the row a later worker resumes from: it
    must say what the run said (its recovery point, and since when), so that a key sent long
    ago is looked up on Stripe first."""
    with fenced_app.app_context():
        _, current = _superseded_pair()
        phases.atomic_phase(current, "created", stripe_object_id="cus_made")
        phases.next_generation(current, phases.CLAIMED)
        db.session.expire_all()
        resumed = phases.Run.of(db.session.get_one(PaymentOperation, current.op_id))
        db.session.rollback()
    assert current.recovery_point_at is not None
    assert (resumed.generation, resumed.recovery_point, resumed.recovery_point_at, resumed.stripe_object_id) == (
        current.generation, phases.CLAIMED, current.recovery_point_at, None)
