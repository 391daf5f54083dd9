"""Stopping `make run`'s demo: every way a user or a supervisor does it leaves nothing behind."""

from __future__ import annotations

import pickle
import signal
import subprocess
import time

import pytest
import requests

from tests.demo_runner import (
    listening,
    session_processes,
    start_runner,
    stop_and_time,
    wait_for_output,
    wait_healthy,
)
from tests.support import free_port

pytestmark = pytest.mark.slow


def make_customer(port: int, proc) -> dict:
    wait_for_output(proc, "Ready:")  # the banner with the key comes once /health answers
    key = next(line for line in proc.lines if "API key:" in line).split()[-1]
    answer = requests.post(f"http://127.0.0.1:{port}/api/v1/payments/customers", timeout=30,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"user_id": "stop-u1", "email": "ada@example.com"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def saved_objects(instance) -> dict:
    with open(instance / "demo-localstripe.pickle", "rb") as fh:
        return pickle.load(fh)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_to_the_runner_alone_stops_everything_within_ten_seconds(tmp_path, sig):
    instance = tmp_path / "instance"
    ports = free_port(), free_port(), free_port()
    proc = start_runner(instance, *ports)
    try:
        wait_healthy(ports[0], proc)
        wait_for_output(proc, "Scheduler running (UTC)")
        customer = make_customer(ports[0], proc)
        # Saved as it was made, not only at exit: a runner killed outright loses nothing.
        assert saved_objects(instance).keys() >= {f"customer:{customer['stripe_customer_id']}"}
    finally:
        took = stop_and_time(proc, proc.pid, sig)
    output = "".join(proc.lines)
    assert took < 10, output
    assert proc.returncode == 128 + sig, output
    assert "Stopped." in output and "Scheduler stopped." in output and "Traceback" not in output
    assert session_processes(proc.pid) == [], output
    assert listening(*ports) == [], output
    assert f"customer:{customer['stripe_customer_id']}" in saved_objects(instance)


@pytest.mark.parametrize("how", ["kill -INT make", "Ctrl-C"])
def test_make_run_stops_on_its_own_sigint_and_on_ctrl_c(tmp_path, how):
    """GNU make waits for its children on a SIGINT meant for it alone: the runner notices and
    stops. Ctrl-C in a terminal signals make and the runner together."""
    instance = tmp_path / "instance"
    ports = free_port(), free_port(), free_port()
    # -o: the test's .venv is already set up; make must not reinstall it.
    proc = start_runner(instance, *ports, command=["make", "-s", "-o", ".venv/.runtime", "run"])
    try:
        wait_healthy(ports[0], proc)
    finally:
        # make leads its own session here, so its pid is also its process group's id.
        took = stop_and_time(proc, proc.pid if how == "kill -INT make" else -proc.pid, signal.SIGINT)
    output = "".join(proc.lines)
    assert took < 10, output
    assert "Stopped." in output and "Traceback" not in output
    assert session_processes(proc.pid) == [], output
    assert listening(*ports) == [], output


def test_the_stop_does_not_wait_for_a_hung_request(tmp_path):
    """A request gunicorn cannot finish is cut when its share of the ten seconds runs out."""
    instance = tmp_path / "instance"
    ports = free_port(), free_port(), free_port()
    proc = start_runner(instance, *ports)
    try:
        wait_for_output(proc, "Ready:")
        key = next(line for line in proc.lines if "API key:" in line).split()[-1]
        # The emulator proxy holds the next Stripe call for a minute.
        requests.post(f"http://127.0.0.1:{ports[2]}/_proxy/faults", timeout=5,
                      data='[{"kind": "delay", "delay": 60}]').raise_for_status()
        hung = subprocess.Popen(
            ["curl", "-s", "-m", "70", "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
             "-d", '{"user_id": "hung-u1", "email": "hung@example.com"}',
             f"http://127.0.0.1:{ports[0]}/api/v1/payments/customers"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    finally:
        took = stop_and_time(proc, proc.pid, signal.SIGTERM)
    hung.wait(timeout=10)
    output = "".join(proc.lines)
    assert took < 10, output
    assert session_processes(proc.pid) == [], output
    assert listening(*ports) == [], output


def test_ready_is_printed_only_once_health_answers(tmp_path):
    instance = tmp_path / "instance"
    ports = free_port(), free_port(), free_port()
    proc = start_runner(instance, *ports)
    try:
        wait_for_output(proc, "Ready:")
        # No retry here: the line itself promises that /health answers.
        assert requests.get(f"http://127.0.0.1:{ports[0]}/health", timeout=5).status_code == 200
        text = "".join(proc.lines)
        # The banner with the credentials comes with it, after gunicorn's start-up lines.
        assert text.index("Listening at:") < text.index("API key:") < text.index("Ready:")
    finally:
        stop_and_time(proc, proc.pid, signal.SIGTERM)


def test_a_database_the_emulator_does_not_match_is_named_and_demo_reset_starts_afresh(tmp_path):
    instance = tmp_path / "instance"
    ports = free_port(), free_port(), free_port()
    proc = start_runner(instance, *ports)
    try:
        wait_for_output(proc, "Ready:")
        customer = make_customer(ports[0], proc)
        first_key = next(line for line in proc.lines if "API key:" in line).split()[-1]
        # A second demo on the same folder is refused: it would share the emulator's state file.
        second = start_runner(instance, free_port(), free_port(), free_port(), command=["make", "-s", "-o",
                              ".venv/.runtime", "demo-reset"])
        assert second.wait(timeout=30) != 0
        second.reader.join(timeout=10)
        assert f"kamiyo: a demo already runs on {instance}: stop it first" in "".join(second.lines)
        assert instance.joinpath("kamiyo.db").exists()
    finally:
        stop_and_time(proc, proc.pid, signal.SIGTERM)
    assert customer["stripe_customer_id"]

    # The emulator's state is lost (an old checkout, a deleted file): the next start says so.
    (instance / "demo-localstripe.pickle").unlink()
    proc = start_runner(instance, *ports)
    try:
        wait_for_output(proc, "Ready:")
    finally:
        stop_and_time(proc, proc.pid, signal.SIGTERM)
    [line] = [line for line in proc.lines if "Stripe emulator does not know" in line]
    assert line.startswith("kamiyo: the demo database has 1 customer that the Stripe emulator does not know")
    assert line.rstrip().endswith("run `make demo-reset` to start the demo afresh")

    proc = start_runner(instance, *ports, command=["make", "-s", "-o", ".venv/.runtime", "demo-reset"])
    try:
        wait_for_output(proc, "Ready:")
        output = "".join(proc.lines)
        assert "Demo reset: removed kamiyo.db" in output
        assert "Stripe emulator does not know" not in output
        key = next(line for line in proc.lines if "API key:" in line).split()[-1]
        assert key != first_key
        # Afresh: the same user is a new customer, made on the emulator.
        again = make_customer(ports[0], proc)
        assert again["id"] == 1 and again["stripe_customer_id"] != customer["stripe_customer_id"]
    finally:
        stop_and_time(proc, proc.pid, signal.SIGTERM)
    assert session_processes(proc.pid) == [] and listening(*ports) == []
