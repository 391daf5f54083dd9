"""Two gunicorn workers with Redis share one rate-limit count (the production setup)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from tests.support import TEST_SECRETS, free_port
from tests.webhooks.stripe_signing import URL, customer, make_event, signed
from kamiyo.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory, redis_url):
    instance = tmp_path_factory.mktemp("gunicorn-instance")
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(instance), DATABASE_URL=f"sqlite:///{instance}/kamiyo.db",
               REDIS_URL=redis_url, PORT=str(free_port()), WEB_CONCURRENCY="2", LOG_LEVEL="WARNING")
    flask = Path(sys.executable).with_name("flask")
    subprocess.run([flask, "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(instance / "gunicorn.log", "w")
    proc = subprocess.Popen([Path(sys.executable).with_name("gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (instance / "gunicorn.log").read_text()
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_two_workers_share_one_count_in_redis(gunicorn_url, redis_url):
    body, headers = signed(make_event("customer.created", customer("cus_gunicorn")))
    assert requests.post(gunicorn_url + URL, data=body, headers=headers, timeout=10).json() == {"status": "processed"}

    def unsigned(_):
        # A new connection each time, so that both workers take their share.
        return requests.post(gunicorn_url + URL, data=b"{}", headers={"Connection": "close"}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(unsigned, range(30))) == [400] * 30
    assert unsigned(None) == 429
    store = redis.Redis.from_url(redis_url)
    [key] = [k for k in store.scan_iter("*webhooks.stripe_webhook*")]
    assert int(store.get(key)) == 30
