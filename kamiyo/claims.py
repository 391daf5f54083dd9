"""The insert-first claim: a row whose unique key says "this is mine".

Several processes may want the same thing at once (the run of a job for a
period, an alert for an hour, a payment operation, a caller's idempotency key,
a Stripe event). Each inserts the row that names it; the database's unique
constraint lets exactly one insert through, and every other contender gets an
IntegrityError, after waiting for the winner's transaction to end if it is
still open. No read comes first, so there is no window between "nobody has it"
and "I take it".

`claim` never commits: each caller's layer owns its commit. Most commit right
after a claim, so that the others see it at once; the webhook inbox commits it
with the handler's writes, so that an event is stored and applied together or
not at all. What a caller does when the row is taken (a conditional UPDATE
that retakes a stale one, a replay of the stored answer) is its own.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from .extensions import Model, db


def claim(row: Model | Callable[[], object]) -> bool:
    """Insert `row` in the session's current transaction; False when its unique key is taken.

    `row` is a mapped object (added and flushed), or a callable that runs the INSERT
    itself on the session's connection (a statement prepared once, say).

    When the key is taken the whole transaction is rolled back, not a savepoint: on
    PostgreSQL the failed INSERT has aborted it, and the caller's earlier writes in it
    go too, on both databases alike.
    """
    try:
        if callable(row):
            row()
        else:
            db.session.add(row)
            db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return False
    return True
