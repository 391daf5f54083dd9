"""The insert-first claim (kamiyo/claims.py) on a real database: one winner per key, the
caller's transaction left to the caller, and contenders that race for one key."""

from __future__ import annotations

import threading
import time
from typing import cast

from sqlalchemy import Table, func, insert, select

from kamiyo.claims import claim
from kamiyo.extensions import db
from kamiyo.models import AlertSent, utcnow
from tests.support import both_databases

PERIOD = "2026-11-23T09"


def _alert(key: str) -> AlertSent:
    return AlertSent(dedup_key=key, period=PERIOD, sent_at=utcnow())


def _stored(key: str) -> int:
    """Committed rows for `key`, read in a transaction of its own."""
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(AlertSent).where(AlertSent.dedup_key == key))


@both_databases
def test_the_first_claim_wins_and_a_second_is_refused(app):
    with app.app_context():
        assert claim(_alert("first")) is True
        db.session.commit()
        assert claim(_alert("first")) is False
        assert claim(_alert("first-other-key")) is True  # the session is usable after a refusal
        db.session.commit()
        assert _stored("first") == 1 and _stored("first-other-key") == 1


@both_databases
def test_a_claim_is_not_committed_by_the_helper(app):
    with app.app_context():
        assert claim(_alert("uncommitted")) is True
        db.session.rollback()  # the caller's layer decides: here it gives the claim up
        assert _stored("uncommitted") == 0
        assert claim(_alert("uncommitted")) is True  # so the key is free again
        db.session.commit()
        assert _stored("uncommitted") == 1


@both_databases
def test_a_refused_claim_rolls_back_the_whole_transaction(app):
    with app.app_context():
        assert claim(_alert("taken")) is True
        db.session.commit()
        db.session.add(_alert("written-before"))
        db.session.flush()
        assert claim(_alert("taken")) is False
        db.session.commit()
        assert _stored("written-before") == 0


@both_databases
def test_a_claim_by_a_statement_of_the_callers_own(app):
    table = cast(Table, AlertSent.__table__)
    row = {"dedup_key": "core", "period": PERIOD, "sent_at": utcnow()}

    def insert_row() -> None:
        db.session.connection().execute(insert(table), row)

    with app.app_context():
        assert claim(insert_row) is True
        db.session.commit()
        assert claim(insert_row) is False
        assert _stored("core") == 1


def _race(app, key: str, contenders: int, hold: float, then_commit: bool) -> list[bool]:
    """`contenders` threads claim `key` at once, each in its own session; a winner holds its
    transaction open for `hold` seconds (the others' INSERTs wait on it), then commits or rolls back."""
    barrier = threading.Barrier(contenders)
    results: list[bool] = []
    errors: list[BaseException] = []

    def contend() -> None:
        try:
            with app.app_context():
                barrier.wait(10)
                won = claim(_alert(key))
                if won:
                    time.sleep(hold)
                    if then_commit:
                        db.session.commit()
                    else:
                        db.session.rollback()
                results.append(won)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(results) == contenders
    return results


@both_databases
def test_two_contenders_racing_for_one_claim_make_one_winner(app):
    for round_ in range(5):
        key = f"race-{round_}"
        results = _race(app, key, contenders=2, hold=0.2, then_commit=True)
        assert sorted(results) == [False, True]
        with app.app_context():
            assert _stored(key) == 1


@both_databases
def test_a_winner_that_rolls_back_leaves_the_key_to_the_contender_waiting_on_it(app):
    started = threading.Event()
    second: list[bool] = []

    with app.app_context():
        assert claim(_alert("given-up")) is True  # held, not committed

        def contend() -> None:
            with app.app_context():
                started.set()
                second.append(claim(_alert("given-up")))  # waits for the first transaction
                db.session.commit()

        thread = threading.Thread(target=contend)
        thread.start()
        assert started.wait(10)
        time.sleep(0.3)  # the contender's INSERT is now waiting on ours
        assert second == []
        db.session.rollback()
        thread.join(30)
        assert second == [True]
        assert _stored("given-up") == 1


@both_databases
def test_many_contenders_make_one_winner(app):
    results = _race(app, "crowd", contenders=6, hold=0.05, then_commit=True)
    assert results.count(True) == 1
    with app.app_context():
        assert _stored("crowd") == 1
