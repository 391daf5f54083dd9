"""Started by every Python process the suite launches (gunicorn, `make run`'s runner, CLI children)
while `pytest --travel=...` runs: their clock is moved ahead as the suite's is.

On PYTHONPATH only during such a run (see tests/travel/clock.py).
"""

import os

_seconds = os.environ.get("TEST_CLOCK_TRAVEL_SECONDS")
if _seconds:
    import time

    import time_machine

    time_machine.travel(time.time() + float(_seconds), tick=True).start()
