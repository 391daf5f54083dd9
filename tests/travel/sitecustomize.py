"""Started by every Python process the suite launches (gunicorn, `make run`'s runner, CLI children)
while `pytest --travel=...`/`--clock-at=...` runs, or when a test starts a process with
tests.travel.clock.child_env(): their clock is moved as the suite's is, or starts at the instant the
test chose.

On PYTHONPATH only during such a run or for such a child (see tests/travel/clock.py).
"""

import os

_start_at = os.environ.get("TEST_CLOCK_START_AT")
_seconds = os.environ.get("TEST_CLOCK_TRAVEL_SECONDS")
if _start_at or _seconds:
    import time

    import time_machine

    # A test's own fixed instant wins over the suite-wide offset: the test wrote its expectations for it.
    _destination = float(_start_at) if _start_at else time.time() + float(_seconds or 0)
    time_machine.travel(_destination, tick=True).start()
    # A ticking travel starts ticking at its first read, not at start(): read now, or the clock
    # stands still until then (in gunicorn, until each forked worker's first read) and two
    # processes moved by the same offset disagree.
    time.time()
    if _start_at:  # this process's own children go on from its clock, not back to the instant
        os.environ["TEST_CLOCK_TRAVEL_SECONDS"] = repr(_destination - time_machine.escape_hatch.time.time())
        del os.environ["TEST_CLOCK_START_AT"]
