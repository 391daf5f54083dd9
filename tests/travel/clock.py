"""`pytest --travel=730d`: every test, and every Python process a test starts, runs with the clock
moved ahead. A test that holds only on today's date fails such a run.

`pytest --clock-at=2027-01-01T23:59:59.5`: the same, but the clock starts at that instant (and
ticks), so a test that races a second, minute or day boundary shows itself.

`child_env(at)`: the environment for a process a test starts whose clock must begin at a fixed
instant the test chose (TEST_CLOCK_START_AT, read by this directory's sitecustomize.py).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import time_machine

ENV = "TEST_CLOCK_TRAVEL_SECONDS"
START_AT = "TEST_CLOCK_START_AT"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HERE = str(Path(__file__).resolve().parent)  # its sitecustomize moves children's clocks


def parse(text: str) -> float:
    """'730d', '12h', '90m', '30s' (a plain number is days) → seconds."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"--travel takes a number with s, m, h or d (e.g. 730d), not {text!r}")
    return float(match.group(1)) * UNITS[match.group(2) or "d"]


def parse_instant(text: str) -> float:
    """'2027-01-01T23:59:59.5' (UTC unless an offset is given) → epoch seconds."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--clock-at takes an ISO instant (e.g. 2027-01-01T23:59:59.5), not {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def real_time() -> float:
    """The machine's clock, whether or not a travel is under way."""
    hatch = time_machine.escape_hatch
    return hatch.time.time() if hatch.is_travelling() else time.time()


def _with_children_path(env: dict[str, str]) -> dict[str, str]:
    parts = [p for p in (env.get("PYTHONPATH") or "").split(os.pathsep) if p]
    if HERE not in parts:
        env["PYTHONPATH"] = os.pathsep.join([HERE, *parts])
    return env


def start(text: str) -> float:
    return _travel_by(parse(text))


def start_at(text: str) -> float:
    """Move this process's clock (and, by the same offset, its children's) to the instant."""
    return _travel_by(parse_instant(text) - time.time())


@contextmanager
def each_test_at(instant: float) -> Iterator[None]:
    """One test's clock (and its children's) starts at `instant` and ticks. Servers a module or the
    session started earlier keep their own clock, ahead of the test's by the time since they began."""
    offset = instant - real_time()
    before = os.environ.get(ENV)
    os.environ[ENV] = repr(offset)
    try:
        with time_machine.travel(instant, tick=True):
            time.time()  # ticking from now, not from the first read
            yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def _travel_by(seconds: float) -> float:
    os.environ[ENV] = repr(seconds)
    _with_children_path(os.environ)  # type: ignore[arg-type]
    time_machine.travel(time.time() + seconds, tick=True).start()
    time.time()  # a ticking travel starts ticking at its first read (see sitecustomize.py)
    return seconds


def child_env(at: dt.datetime | float, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of env (default os.environ) whose Python children start their clock at `at`, ticking."""
    out = dict(os.environ if env is None else env)
    out[START_AT] = repr(at.timestamp() if isinstance(at, dt.datetime) else float(at))
    return _with_children_path(out)


class Timeline:
    """A clock that began at `at` and ticks, shared by a module's server and its tests: the server
    starts with `child_env()`, each test runs inside `travel()`, and both read the same time."""

    def __init__(self, at: dt.datetime) -> None:
        self.offset = at.timestamp() - real_time()

    def now(self) -> float:
        return real_time() + self.offset

    def child_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every process started with it, however late, reads the timeline's time."""
        out = dict(os.environ if env is None else env)
        out.pop(START_AT, None)
        out[ENV] = repr(self.offset)
        return _with_children_path(out)

    @contextmanager
    def travel(self) -> Iterator[None]:
        with time_machine.travel(self.now(), tick=True):
            time.time()  # ticking from now, not from the first read
            yield
