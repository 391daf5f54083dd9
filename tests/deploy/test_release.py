"""deploy/release.sh in a temporary root, in front of a real gunicorn started as
kamiyo-web.service starts it: a good release goes live (new workers serve its code after the
HUP, the master stays), and a release whose verification fails is rolled back to the previous
one, which keeps serving. Both scripts are shellcheck-clean (Debian's shellcheck)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import TEST_SECRETS, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "deploy" / "release.sh"
VENV = Path(sys.executable).parent.parent  # the shared venv: KAMIYO_RELEASE_VENV, no pip per release

# release.sh's KAMIYO_PREFLIGHT_CMD hook: a preflight that fails, as one with a bad secret does.
FAILING_PREFLIGHT = 'import sys; print("preflight (stand-in): STRIPE_SECRET_KEY is ill-formed"); sys.exit(2)\n'

# Added to a release's wsgi.py: what the test sees of which code answered.
MARKER = '''

@app.after_request
def _test_release_marker(response):
    response.headers["X-Test-Release"] = {name!r}
    return response
'''
BROKEN_HEALTH = '''

@app.before_request
def _test_broken_health():
    from flask import request
    if request.path == "/health":
        return {{"status": "broken by the test"}}, 503
'''


def source(tmp: Path, name: str, extra: str = "") -> Path:
    """A checkout of this tree (tracked and new files) marked as release `name` twice: in its
    wsgi.py (a header), and in the app's own code (RELEASE_ID's default, which /health reports,
    in kamiyo/config.py: a module gunicorn's master must not keep from the new workers)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    folder = tmp / f"source-{name}"
    for file in files:
        if file and (ROOT / file).is_file() and not file.startswith(("tests/", "bench/")):
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / file, folder / file)
    config = folder / "kamiyo" / "config.py"
    assert '"RELEASE_ID": None,' in config.read_text()
    config.write_text(config.read_text().replace('"RELEASE_ID": None,', f'"RELEASE_ID": "code-{name}",'))
    wsgi = folder / "wsgi.py"
    wsgi.write_text(wsgi.read_text() + MARKER.format(name=name) + extra.format())
    return folder


PUBLIC_URL = "https://payments.example.com"


def add_webhook_endpoint(stripe_proxy) -> None:
    """The endpoint preflight looks for, made as on Stripe (the emulator proxy keeps it)."""
    import stripe

    from kamiyo.webhooks.queries import handled_event_types

    client = stripe.StripeClient(TEST_SECRETS["STRIPE_SECRET_KEY"], base_addresses={"api": stripe_proxy.url},
                                 max_network_retries=0)
    client.v1.webhook_endpoints.create(params={"url": PUBLIC_URL + "/api/v1/webhooks/stripe",
                                               "enabled_events": handled_event_types()})


@pytest.fixture(scope="module")
def site(tmp_path_factory, stripe_proxy):
    """/srv/kamiyo in a temporary folder: its settings file, a first release, and gunicorn
    serving it as kamiyo-web.service would (pid file, --chdir on the `current` symlink, its
    log in LOG_FILE), with Stripe's emulator holding a webhook endpoint for PUBLIC_URL."""
    tmp = tmp_path_factory.mktemp("site")
    root = tmp / "srv"
    (root / "instance").mkdir(parents=True)
    port = free_port()
    settings = {**TEST_SECRETS, "KAMIYO_INSTANCE_PATH": root / "instance",
                "DATABASE_URL": "sqlite:///" + str(root / "instance" / "kamiyo.db"),
                "STRIPE_API_BASE": stripe_proxy.url, "PUBLIC_URL": PUBLIC_URL, "LOG_FILE": tmp / "web.log",
                "PORT": port, "WEB_CONCURRENCY": 2, "LOG_LEVEL": "INFO",
                # A version of ten days ago on the tests' clock: a pinned one grows old (--travel=730d),
                # and preflight rightly refuses a release on a critical version.
                "STRIPE_API_VERSION": (dt.date.today() - dt.timedelta(days=10)).isoformat()}
    add_webhook_endpoint(stripe_proxy)
    env_file = tmp / "kamiyo.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMIYO_")}
    env.update(KAMIYO_ROOT=str(root), KAMIYO_ENV_FILE=str(env_file), KAMIYO_PIDFILE=str(tmp / "gunicorn.pid"),
               KAMIYO_RELEASE_VENV=str(VENV), KAMIYO_SCHEDULER_UNIT="", KAMIYO_VERIFY_URL=f"http://127.0.0.1:{port}",
               KAMIYO_BACKUP_DIR=str(tmp / "backups"))

    def release(folder: Path, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", RELEASE, folder], env={**env, **extra_env}, capture_output=True, text=True,
                              timeout=180)

    first = release(source(tmp, "one"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "gunicorn is not running" in first.stdout
    # verify-deploy's idempotency probe calls the API with a key of the service's own.
    made = subprocess.run([root / "current" / "deploy" / "kamiyo-env", "flask", "--app", "wsgi", "api-keys", "create",
                           "release-check"], env=env, capture_output=True, text=True, timeout=60, check=True)
    env["KAMIYO_API_KEY"] = made.stdout.strip().splitlines()[-1]
    log = open(tmp / "web.log", "w")
    current = root / "current"
    server = subprocess.Popen([current / "deploy" / "kamiyo-env", "gunicorn", "-c", "gunicorn.conf.py",
                               "--chdir", str(current), "--pid", str(tmp / "gunicorn.pid"), "wsgi:app"],
                              env=env, cwd=current, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp / "web.log").read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield {"root": root, "tmp": tmp, "url": url, "release": release, "server": server, "env": env}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def served(url: str) -> tuple[int, str | None]:
    """/health's status and the release that answered (both markers must agree)."""
    answer = requests.get(url + "/health", timeout=5)
    marker = answer.headers.get("X-Test-Release")
    if answer.status_code == 200:
        assert answer.json().get("release") == f"code-{marker}", answer.json()
    return answer.status_code, marker


def test_a_good_release_goes_live_through_a_graceful_reload(site):
    assert served(site["url"]) == (200, "one")
    done = site["release"](source(site["tmp"], "two"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is live" in done.stdout
    live = os.readlink(site["root"] / "current")
    assert live.startswith("releases/") and (site["root"] / live / ".venv").resolve() == VENV.resolve()
    # The same master, new workers on the new release's code.
    assert site["server"].poll() is None
    assert {served(site["url"]) for _ in range(6)} == {(200, "two")}


def test_a_release_that_fails_verification_is_rolled_back_and_the_previous_keeps_serving(site):
    before = os.readlink(site["root"] / "current")
    assert served(site["url"]) == (200, "two")
    done = site["release"](source(site["tmp"], "three", BROKEN_HEALTH))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rolling back" in done.stdout and f"{before} serves again" in done.stderr
    assert os.readlink(site["root"] / "current") == before
    assert site["server"].poll() is None
    assert {served(site["url"]) for _ in range(6)} == {(200, "two")}


def test_a_failed_preflight_changes_nothing(site):
    before = os.readlink(site["root"] / "current")
    failing = site["tmp"] / "failing_preflight.py"
    failing.write_text(FAILING_PREFLIGHT)
    done = site["release"](source(site["tmp"], "four"), KAMIYO_PREFLIGHT_CMD=f"{sys.executable} {failing}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "preflight failed (exit 2" in done.stderr and "nothing was changed" in done.stderr
    assert os.readlink(site["root"] / "current") == before
    assert served(site["url"]) == (200, "two")


def test_the_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make test` (it installs Debian's shellcheck package)")
    done = subprocess.run([shellcheck, RELEASE, ROOT / "deploy" / "kamiyo-env"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout


def test_it_runs_only_as_the_owner_of_the_instance_folder(tmp_path):
    """Files the commands make there (SQLite's -wal and -shm, backups) must stay the service's."""
    root = tmp_path / "srv"
    root.mkdir()
    env = {**os.environ, "KAMIYO_ROOT": str(root)}
    done = subprocess.run(["bash", RELEASE, ROOT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"no instance folder {root}/instance" in done.stderr, done.stderr
    if os.geteuid() == 0:  # only root can hand the folder to another user
        (root / "instance").mkdir()
        os.chown(root / "instance", 65534, 65534)
        done = subprocess.run(["bash", RELEASE, ROOT], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "run it as the owner of" in done.stderr, done.stderr
    assert not (root / "releases").exists()


def test_kamiyo_env_reads_the_settings_file_as_systemd_does(tmp_path):
    settings = tmp_path / "kamiyo.env"
    settings.write_text('# a comment\n\nA=1\nB="two words"\nC=\'x;y\'\n  D=5/minute;20/hour\nE=\n')
    env = {**os.environ, "KAMIYO_ENV_FILE": str(settings)}
    done = subprocess.run([ROOT / "deploy" / "kamiyo-env", "sh", "-c", 'printf "%s|" "$A" "$B" "$C" "$D" "$E" "$PWD"'],
                          env=env, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout == f"1|two words|x;y|5/minute;20/hour||{ROOT}|"
    settings.write_text("A=1\nexport B=2\n")
    done = subprocess.run([ROOT / "deploy" / "kamiyo-env", "true"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 78 and f"{settings} line 2 is not NAME=value" in done.stderr
