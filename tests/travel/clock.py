"""`pytest --travel=730d`: every test, and every Python process a test starts, runs with the clock
moved ahead. A test that holds only on today's date fails such a run."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import time_machine

ENV = "TEST_CLOCK_TRAVEL_SECONDS"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse(text: str) -> float:
    """'730d', '12h', '90m', '30s' (a plain number is days) → seconds."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"--travel takes a number with s, m, h or d (e.g. 730d), not {text!r}")
    return float(match.group(1)) * UNITS[match.group(2) or "d"]


def start(text: str) -> float:
    seconds = parse(text)
    os.environ[ENV] = repr(seconds)
    here = str(Path(__file__).resolve().parent)  # its sitecustomize moves children's clocks
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    time_machine.travel(time.time() + seconds, tick=True).start()
    return seconds
