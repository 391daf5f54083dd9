"""Circuit breaker in front of Stripe.

Opens after `fail_max` consecutive calls that failed transiently (after their
retries), answers fast while open, and after `reset_timeout` lets exactly one
probe through: its success closes the breaker, its failure re-opens it.

Written here rather than taken from pybreaker: pybreaker 1.4 holds one lock
across the protected call, which would serialise every Stripe request of a
worker, and its half-open state admits every concurrent caller instead of one
probe. The state lives in Redis when REDIS_URL is set, so all workers agree.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import redis

from ..redis_client import redis_client
from .errors import CircuitOpenError, is_transient

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
TRANSITIONS_KEPT = 50  # the dashboard shows recent ones; the log has them all
# While the probe is out its answer may close the breaker any moment: callers come back soon
# (a refusal costs us nothing) rather than wait out a probe's whole lease.
PROBE_IN_FLIGHT_RETRY = 1.0


class Transition(dict):
    """{"at": epoch seconds, "from": state, "to": state, "by": "stripe" or who reset it}."""


class MemoryState:
    """Per-process state (one worker: `make run`'s default, and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_until = 0.0
        self._alerted: str | None = None
        self._transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)

    def record(self, transition: Transition) -> None:
        self._transitions.appendleft(transition)

    def transitions(self) -> list[Transition]:
        return list(self._transitions)

    def add_failure(self) -> int:
        with self._lock:
            self.failures += 1
            return self.failures

    def clear_failures(self) -> None:
        with self._lock:
            self.failures = 0

    def reset(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.probe_until = 0, None, 0.0

    def open(self, now: float) -> None:
        with self._lock:
            self.opened_at, self.probe_until = now, 0.0

    def get_opened_at(self) -> float | None:
        return self.opened_at

    def get_failures(self) -> int:
        return self.failures

    def take_probe(self, now: float, lease: float) -> bool:
        with self._lock:
            if now < self.probe_until:
                return False
            self.probe_until = now + lease
            return True

    def swap_alerted(self, state: str) -> str | None:
        with self._lock:
            previous, self._alerted = self._alerted, state
            return previous


class RedisState:
    """Shared state: every worker and host sees the same breaker."""

    def __init__(self, url: str, name: str) -> None:
        self._redis = redis_client(url)
        self._failures = f"kamiyo:breaker:{name}:failures"
        self._opened = f"kamiyo:breaker:{name}:opened_at"
        self._probe = f"kamiyo:breaker:{name}:probe"
        self._transitions = f"kamiyo:breaker:{name}:transitions"
        # Not cleared by reset(): a reset must still be told apart from "closed already".
        self._alerted = f"kamiyo:breaker:{name}:alerted"

    def record(self, transition: Transition) -> None:
        pipe = self._redis.pipeline()
        pipe.lpush(self._transitions, json.dumps(transition))
        pipe.ltrim(self._transitions, 0, TRANSITIONS_KEPT - 1)
        pipe.execute()

    def transitions(self) -> list[Transition]:
        return [Transition(json.loads(item)) for item in self._redis.lrange(self._transitions, 0, -1)]

    def add_failure(self) -> int:
        return int(self._redis.incr(self._failures))

    def clear_failures(self) -> None:
        self._redis.delete(self._failures)

    def reset(self) -> None:
        self._redis.delete(self._failures, self._opened, self._probe)

    def open(self, now: float) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._opened, repr(now))
        pipe.delete(self._probe)
        pipe.execute()

    def get_opened_at(self) -> float | None:
        value = self._redis.get(self._opened)
        return float(value) if value is not None else None

    def get_failures(self) -> int:
        return int(self._redis.get(self._failures) or 0)

    def take_probe(self, now: float, lease: float) -> bool:
        return bool(self._redis.set(self._probe, "1", nx=True, px=max(1, int(lease * 1000))))

    def swap_alerted(self, state: str) -> str | None:
        previous = self._redis.set(self._alerted, state, get=True)
        if isinstance(previous, bytes):
            return previous.decode()
        return previous if isinstance(previous, str) else None


class CircuitBreaker:
    def __init__(
        self,
        state,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        probe_lease: float = 60.0,
        on_change: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.probe_lease = probe_lease
        self._on_change = on_change or (lambda old, new: None)
        self._clock = clock

    @property
    def current_state(self) -> str:
        try:
            opened_at = self._state.get_opened_at()
        except redis.RedisError:
            return CLOSED
        if opened_at is None:
            return CLOSED
        return OPEN if self._clock() < opened_at + self.reset_timeout else HALF_OPEN

    def failures(self) -> int:
        try:
            return self._state.get_failures()
        except redis.RedisError:
            return 0

    def call(self, func: Callable[[], object]):
        """Run func under the breaker; raise CircuitOpenError without calling it while open."""
        probe = self._admit()
        try:
            result = func()
        except Exception as exc:
            self._record(success=not is_transient(exc), probe=probe)
            raise
        self._record(success=True, probe=probe)
        return result

    def _admit(self) -> bool:
        """True when this call is the half-open probe; raises while open."""
        try:
            opened_at = self._state.get_opened_at()
            if opened_at is None:
                return False
            now = self._clock()
            if now < opened_at + self.reset_timeout:
                raise CircuitOpenError("circuit open", retry_after=opened_at + self.reset_timeout - now)
            if self._state.take_probe(now, self.probe_lease):
                self._changed(OPEN, HALF_OPEN)
                return True
            raise CircuitOpenError("circuit half-open, probe in flight", retry_after=PROBE_IN_FLIGHT_RETRY)
        except redis.RedisError as exc:
            # Fail open: an unreachable breaker store must not stop payments.
            log.error("circuit breaker store unreachable: %s", type(exc).__name__)
            return False

    def _record(self, success: bool, probe: bool) -> None:
        try:
            if success:
                # Stripe answered (a card or request error also proves it is up).
                if probe:
                    self._state.reset()
                    self._changed(HALF_OPEN, CLOSED)
                elif self._state.get_failures():
                    self._state.clear_failures()
                return
            if probe:
                self._state.open(self._clock())
                self._changed(HALF_OPEN, OPEN)
                return
            if self._state.add_failure() >= self.fail_max and self._state.get_opened_at() is None:
                self._state.open(self._clock())
                self._changed(CLOSED, OPEN)
        except redis.RedisError as exc:
            log.error("circuit breaker store unreachable: %s", type(exc).__name__)

    def _changed(self, old: str, new: str, by: str = "stripe") -> None:
        try:
            self._state.record(Transition({"at": self._clock(), "from": old, "to": new, "by": by}))
        except redis.RedisError as exc:
            log.error("circuit breaker store unreachable: %s", type(exc).__name__)
        self._on_change(old, new)

    def claim_alert(self, state: str) -> bool:
        """Whether the team must hear that the breaker is now `state` (open or closed): yes
        when the last alert said otherwise. With a shared store one worker tells, whichever
        moved it; a close thus always follows an open, and a re-open after a failed probe
        (the same outage) says nothing."""
        try:
            previous = self._state.swap_alerted(state)
        except redis.RedisError as exc:
            log.error("circuit breaker store unreachable: %s", type(exc).__name__)
            return True  # a repeated alert rather than a missing one
        return (previous or CLOSED) != state

    def transitions(self) -> list[Transition]:
        """The most recent first."""
        try:
            return self._state.transitions()
        except redis.RedisError:
            return []

    def reset(self, by: str | None = None) -> None:
        """Close the breaker now. `by` names a person who did it (recorded as a transition)."""
        old = self.current_state
        self._state.reset()
        if by is not None:
            self._changed(old, CLOSED, by=by)
