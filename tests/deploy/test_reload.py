"""A graceful reload (HUP to gunicorn's master) under a steady stream of API requests and
signed webhook deliveries: the new code is picked up, no request fails and no event is lost.

gunicorn runs from a release folder through a `current` symlink, as deploy/release.sh
installs it: the new release is a second folder whose code differs (its built-in
RELEASE_ID, in kamiyo/config.py, one of the modules the start-up configuration check
reads), the symlink is switched, and /health then reports the new release."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from kamiyo import create_app
from tests.support import FAST_RETRIES, ROOT, TEST_SECRETS, gunicorn_master, make_key, wait_until
from tests.webhooks.stripe_signing import URL, customer, make_event, signed

pytestmark = pytest.mark.slow

LOAD_SECONDS_BEFORE = 3.0
LOAD_SECONDS_AFTER = 3.0  # once every /health answer comes from the new release
RELOAD_SECONDS = 15.0  # the new workers answer within this after the HUP


def install_release(releases: Path, release_id: str) -> Path:
    """The code as a release folder holds it, with `release_id` as its built-in RELEASE_ID."""
    target = releases / release_id
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("kamiyo", "migrations"):
        shutil.copytree(ROOT / folder, target / folder, ignore=ignore)
    for name in ("wsgi.py", "gunicorn.conf.py"):
        shutil.copy(ROOT / name, target / name)
    config = target / "kamiyo" / "config.py"
    source = config.read_text()
    line = next(line for line in source.splitlines() if line.strip().startswith('"RELEASE_ID":'))
    config.write_text(source.replace(line, f'    "RELEASE_ID": "{release_id}",'))
    return target


def switch(current: Path, release: Path) -> None:
    """Point `current` at `release` in one step (rename over the old symlink)."""
    staged = current.with_name(current.name + ".new")
    staged.symlink_to(release)
    os.replace(staged, current)


class Load:
    """Client threads sending API requests and webhook deliveries until stopped; every answer
    and every failure is kept."""

    def __init__(self, url: str, api_key: dict[str, str]) -> None:
        self.url, self.api_key = url, api_key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.delivered: list[str] = []
        self.releases: list[tuple[float, str]] = []  # (when, release) from /health
        self.threads = [threading.Thread(target=target, args=(n,), daemon=True)
                        for n, target in enumerate([self.api_client] * 3 + [self.webhook_client] * 2
                                                   + [self.health_client])]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _record(self, what: str, expected: set[int], send, *args, **kwargs):
        try:
            answer = send(*args, timeout=30, **kwargs)
        except requests.RequestException as exc:
            with self.lock:
                self.failures.append(f"{what}: {type(exc).__name__}: {exc}")
            return None
        with self.lock:
            self.answers[f"{what} {answer.status_code}"] += 1
            if answer.status_code not in expected:
                self.failures.append(f"{what}: {answer.status_code} {answer.text[:200]}")
        return answer

    def api_client(self, n: int) -> None:
        # A kept-alive session, as a service calling us would hold.
        session = requests.Session()
        session.headers.update(self.api_key)
        i = 0
        while not self.stop.is_set():
            i += 1
            # A few users, asked for again and again: the first create is 201, the rest 200.
            user = f"reload-{n}-{i % 7}"
            self._record("create", {200, 201}, session.post, f"{self.url}/api/v1/payments/customers",
                         json={"user_id": user, "email": f"{user}@example.com"})
            self._record("list", {200}, session.get, f"{self.url}/api/v1/payments/customers?limit=5")
            time.sleep(0.02)

    def webhook_client(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            event = make_event("customer.created", customer(f"cus_reload_{n}_{i}", user_id=f"hook-{n}-{i}"))
            body, headers = signed(event)
            # Stripe opens a new connection per delivery.
            answer = self._record("webhook", {200}, requests.post, self.url + URL, data=body,
                                  headers={**headers, "Connection": "close"})
            if answer is not None and answer.status_code == 200:
                assert answer.json() == {"status": "processed"}, answer.text
                with self.lock:
                    self.delivered.append(event["id"])
            time.sleep(0.02)

    def health_client(self, n: int) -> None:
        while not self.stop.is_set():
            answer = self._record("health", {200}, requests.get, self.url + "/health")
            if answer is not None and answer.status_code == 200:
                with self.lock:
                    self.releases.append((time.monotonic(), answer.json().get("release")))
            time.sleep(0.05)


def test_hup_under_load_picks_up_the_new_code_and_fails_nothing(proxy, tmp_path, isolated_environment):
    instance = isolated_environment
    database_url = f"sqlite:///{tmp_path}/kamiyo.db"
    current = tmp_path / "current"
    switch(current, install_release(tmp_path / "releases", "release-1"))
    settings = {"STRIPE_API_BASE": proxy.url, "LOG_LEVEL": "INFO",
                **{name: str(value) for name, value in FAST_RETRIES.items()}}
    # --chdir through the symlink: gunicorn goes there again at each HUP (its working directory,
    # and any default, is the folder the symlink pointed at when it started).
    with gunicorn_master(instance, database_url, root=current, args=("--chdir", str(current)), **settings) as master:
        app = create_app({"TESTING": True, **TEST_SECRETS, "SQLALCHEMY_DATABASE_URI": database_url})
        api_key = make_key(app)
        old_workers = master.worker_pids()
        assert len(old_workers) == 2
        assert requests.get(master.url + "/health", timeout=5).json()["release"] == "release-1"

        with Load(master.url, api_key) as load:
            time.sleep(LOAD_SECONDS_BEFORE)
            switch(current, install_release(tmp_path / "releases", "release-2"))
            hup_at = time.monotonic()
            os.kill(master.proc.pid, signal.SIGHUP)
            deadline = hup_at + RELOAD_SECONDS
            while not (load.releases[-1][0] > hup_at and load.releases[-1][1] == "release-2"):
                assert time.monotonic() < deadline, (
                    f"still {load.releases[-1][1]} {RELOAD_SECONDS:g} s after the HUP; workers started: "
                    + str([(line["process"], line["release"]) for line in master.logged()
                           if line.get("message") == "kamiyo configured"]))
                time.sleep(0.05)
            switched_at = time.monotonic()
            time.sleep(LOAD_SECONDS_AFTER)
        new_workers = wait_until(lambda: len(master.worker_pids()) == 2 and master.worker_pids(), timeout=10)
        assert master.proc.poll() is None, "the master is still the same process"
        started = [line for line in master.logged() if line.get("message") == "kamiyo configured"]

    assert not load.failures, f"{len(load.failures)} failed requests:\n" + "\n".join(load.failures[:20])
    assert not new_workers & old_workers, "the old workers are gone, new ones took their place"
    after = [release for when, release in load.releases if when > switched_at]
    assert after and set(after) == {"release-2"}, Counter(after)
    assert {release for when, release in load.releases if when < hup_at} == {"release-1"}
    assert {(line["process"], line["release"]) for line in started} == (
        {(pid, "release-1") for pid in old_workers} | {(pid, "release-2") for pid in new_workers})
    # A steady stream of each kind, through the reload.
    for kind in ("create 200", "list 200", "webhook 200", "health 200"):
        assert load.answers[kind] >= 20, load.answers

    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = dict(connection.execute(text("SELECT event_id, status FROM webhook_events")).all())
    engine.dispose()
    lost = [event_id for event_id in load.delivered if stored.get(event_id) != "processed"]
    assert not lost, f"{len(lost)} of {len(load.delivered)} delivered events are not processed: {lost[:5]}"
