"""`make run`: migrate, then serve with gunicorn.

Without STRIPE_SECRET_KEY this is demo mode: localstripe is started in this
process on loopback as the Stripe backend, behind the Stripe emulator proxy
(devtools/stripe_proxy.py: Stripe's idempotency semantics, Request-Id headers,
and a fault queue at /_proxy/faults so the demo can show retries and the
breaker). A demo API key and dashboard user are created once and printed.
SIGINT (Ctrl-C), SIGTERM and SIGHUP stop everything started here, front to back:
gunicorn, the scheduler, the proxy, then the emulator (whose state is saved).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The whole stop stays within 10 s: gunicorn finishes its requests within its share, the
# scheduler needs about a second, and whatever outlives its share is killed.
GUNICORN_GRACE_SECONDS = 5
GUNICORN_STOP_SECONDS = 6
SCHEDULER_STOP_SECONDS = 2


class Stop(BaseException):
    """A stop signal arrived; like KeyboardInterrupt, for SIGTERM and SIGHUP too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_stop_signal(signum: int, _frame) -> None:
    # Further signals must not interrupt the stop itself half-way: it is bounded anyway.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signum)


def _caught_signals(pid: int) -> int:
    """The mask of signals process `pid` handles (Linux /proc), 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _watch_make(interval: float = 0.2) -> None:
    """Stop when the `make` that started us is told to stop.

    `kill -INT <make's pid>` reaches make alone, and GNU make then waits for its
    children without passing the signal on (it assumes the terminal sent it to the
    whole group), so the demo would run on behind a make that never returns. Its
    handler resets the signal to the default first, so the signal vanishing from
    make's caught set (/proc) tells us which one it got; we then stop on it ourselves.
    """
    parent = os.getppid()
    try:
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:
        return
    if name not in ("make", "gmake"):
        return
    watched = [sig for sig in (signal.SIGINT, signal.SIGHUP) if _caught_signals(parent) & (1 << (sig - 1))]
    if not watched:
        return  # make ignores them (started in the background): nothing to pass on

    def watch() -> None:
        while os.getppid() == parent:
            caught = _caught_signals(parent)
            for sig in watched:
                if not caught & (1 << (sig - 1)):
                    os.kill(os.getpid(), sig)
                    return
            threading.Event().wait(interval)

    threading.Thread(target=watch, name="make-watch", daemon=True).start()


def _ensure_emulator_installed() -> None:
    """Demo mode's Stripe emulator is not a production dependency (requirements-demo.txt): the
    first demo installs it (`make run` does so before starting us; this covers `python -m
    devtools.run` on its own)."""
    import importlib.util

    if importlib.util.find_spec("localstripe") and importlib.util.find_spec("aiohttp"):
        return
    print("Demo mode: installing the local Stripe emulator (localstripe, aiohttp) from requirements-demo.txt "
          "(first demo run only)...", flush=True)
    done = subprocess.run([str(ROOT / "scripts" / "install-requirements.sh"), sys.prefix,
                           str(ROOT / "requirements-demo.txt")], cwd=ROOT)
    importlib.invalidate_caches()
    if done.returncode != 0 or not importlib.util.find_spec("localstripe"):
        sys.exit("kamiyo: could not install the demo's Stripe emulator: run "
                 f"`{sys.prefix}/bin/pip install -r requirements-demo.txt`, or set STRIPE_SECRET_KEY to use Stripe")


def _start_localstripe(port: int):
    from devtools.localstripe_server import LocalStripe

    emulator = LocalStripe(port=port)
    try:
        emulator.start()
    except OSError:
        print(f"port {port} is taken; starting localstripe on a free port instead", flush=True)
        emulator = LocalStripe(port=0)
        emulator.start()
    return emulator


def _start_proxy(upstream: str, port: int):
    from devtools.stripe_proxy import StripeProxy

    proxy = StripeProxy(upstream, port=port)
    try:
        proxy.start()
    except OSError:
        print(f"port {port} is taken; starting the Stripe proxy on a free port instead", flush=True)
        proxy = StripeProxy(upstream, port=0)
        proxy.start()
    return proxy


def _seed_demo_price(emulator_url: str) -> str:
    """A recurring price to subscribe to (localstripe keeps it as a plan), made once."""
    import stripe

    from kamiyo.cli import DEMO_PRICE  # `demo traffic` subscribes to it too

    client = stripe.StripeClient("sk_test_demo_seed", base_addresses={"api": emulator_url}, max_network_retries=0)
    try:
        client.v1.plans.retrieve(DEMO_PRICE)
    except stripe.InvalidRequestError:
        product = client.v1.products.create(params={"name": "Kamiyo Pro (demo)"})
        client.v1.plans.create(params={"id": DEMO_PRICE, "product": product.id, "amount": 2900, "currency": "usd",
                                       "interval": "month"})
    return DEMO_PRICE


# The demo's circuit breaker half-opens after 10 s rather than production's 60, so that
# `demo traffic` shows it open and close again within its half minute. Its one price maps to
# its tier, so a wrong tier or an unknown price is refused before the emulator is asked.
DEMO_DEFAULTS = {"BREAKER_RESET_TIMEOUT": "10", "PRICE_TIERS": "price_demo_pro_monthly=pro"}


def _demo_defaults() -> None:
    """DEMO_DEFAULTS, unless the operator chose a value (environment or instance/config.py)."""
    from kamiyo import _new_flask

    chosen = _new_flask().config
    chosen.from_pyfile("config.py", silent=True)
    for name, value in DEMO_DEFAULTS.items():
        if name not in chosen and name not in os.environ and f"KAMIYO_{name}" not in os.environ:
            os.environ[name] = value


def _demo_env() -> str:
    """The environment a command needs to run against this demo (its instance folder if moved)."""
    env = "KAMIYO_DEMO_MODE=1"
    if os.environ.get("KAMIYO_INSTANCE_PATH"):
        env += f" KAMIYO_INSTANCE_PATH={shlex.quote(os.environ['KAMIYO_INSTANCE_PATH'])}"
    return env


def _traffic_command(port: str, proxy_url: str) -> str:
    """The `demo traffic` command line for this demo (its ports, and its instance folder if moved)."""
    return (f"{_demo_env()} .venv/bin/flask --app wsgi demo traffic --url http://127.0.0.1:{port} "
            f"--stripe-proxy {proxy_url}")


WEBHOOK_ID = "kamiyo-demo"  # the emulator's name for our endpoint; registering again replaces it


def _webhook_url(port: str) -> str:
    return f"http://127.0.0.1:{port}/api/v1/webhooks/stripe"


def _register_webhook(emulator_url: str, port: str, secret: str) -> None:
    """Have the emulator send its events to our endpoint, signed with the demo's secret, as a
    Stripe webhook endpoint would. localstripe keeps registrations in memory only: each start."""
    import requests

    answer = requests.post(f"{emulator_url}/_config/webhooks/{WEBHOOK_ID}",
                           data={"url": _webhook_url(port), "secret": secret}, timeout=10)
    answer.raise_for_status()


def _emulator_state() -> Path:
    from kamiyo import _new_flask

    path = Path(_new_flask().instance_path)
    path.mkdir(parents=True, exist_ok=True)
    return path / "demo-localstripe.pickle"


def _instance() -> Path:
    from kamiyo import _new_flask

    path = Path(_new_flask().instance_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# What a demo leaves in the instance folder; `make demo-reset` removes them all (and nothing
# else: instance/config.py stays).
DEMO_FILES = ("kamiyo.db", "kamiyo.db-wal", "kamiyo.db-shm", "kamiyo.db-journal", "demo-localstripe.pickle",
              "demo-localstripe.pickle.tmp", "demo-credentials.json", "demo-secrets.json", "demo-endpoints.json")


def _lock_demo(instance: Path):
    """Hold instance/demo.lock while the demo runs: a reset must not delete a running demo's
    database, and two demos on one folder would each believe they own its emulator state."""
    import fcntl

    fh = open(instance / "demo.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        sys.exit(f"kamiyo: a demo already runs on {instance}: stop it first (Ctrl-C in its terminal)")
    return fh


def _reset_demo(instance: Path) -> None:
    """Forget the demo: its database, the emulator's objects, its credentials and secrets."""
    from kamiyo import _new_flask

    config = _new_flask().config
    config.from_pyfile("config.py", silent=True)
    if any(os.environ.get(name) for name in ("DATABASE_URL", "KAMIYO_DATABASE_URL")) or "DATABASE_URL" in config:
        sys.exit("kamiyo: demo-reset only resets the demo's SQLite database in the instance folder, "
                 "and DATABASE_URL names another one: reset that database yourself, or unset DATABASE_URL")
    removed = []
    for name in DEMO_FILES:
        try:
            (instance / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    print(f"Demo reset: removed {', '.join(removed) or 'nothing (no demo yet)'} from {instance}", flush=True)


def _emulator_drift(app) -> str | None:
    """One line when the demo database points at Stripe objects the emulator lacks (its
    saved state lost, or older than the database), with the way out; None when they agree."""
    from localstripe import resources
    from sqlalchemy import text

    from kamiyo.extensions import db

    missing = []
    # Ended subscriptions are left out: nothing calls Stripe about them any more.
    for kind, query in (
        ("customer", "SELECT stripe_customer_id FROM customers WHERE stripe_customer_id IS NOT NULL"),
        ("subscription", "SELECT stripe_subscription_id FROM subscriptions WHERE stripe_subscription_id IS NOT NULL "
                         "AND status NOT IN ('canceled', 'incomplete_expired')"),
    ):
        ids = db.session.execute(text(query)).scalars()
        count = sum(1 for ident in ids if f"{kind}:{ident}" not in resources.store)
        if count:
            missing.append(f"{count} {kind}{'s' if count > 1 else ''}")
    if not missing:
        return None
    return (f"kamiyo: the demo database has {' and '.join(missing)} that the Stripe emulator does not know "
            f"(its saved state, {_emulator_state()}, is missing or older than the database), so calls about "
            "them will fail: run `make demo-reset` to start the demo afresh")


def _prepare(demo: bool) -> tuple[dict[str, str] | None, str]:
    """Migrate the database and (in demo mode) make sure the demo credentials exist; with
    the webhook secret the service checks signatures with."""
    from flask_migrate import upgrade

    from kamiyo import create_app
    from kamiyo.cli import ensure_demo_credentials
    from kamiyo.config import ConfigError

    try:
        app = create_app()
    except ConfigError as exc:
        sys.exit(f"kamiyo: configuration error: {exc}")
    secret = (app.config["STRIPE_WEBHOOK_SECRETS"] or [""])[0]
    with app.app_context():
        upgrade()
        if not demo:
            return None, secret
        drift = _emulator_drift(app)
        if drift:
            print(drift, flush=True)
        return ensure_demo_credentials(app.instance_path), secret


def _metrics_dir() -> str:
    """A fresh folder where every gunicorn worker writes its Prometheus samples."""
    import shutil

    from kamiyo import _new_flask

    path = Path(_new_flask().instance_path) / "prometheus-multiproc"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Each child leads its own process group: a terminal's Ctrl-C reaches this runner alone,
    # which stops the children in order, and a child that outlives its share is killed with
    # everything it started (gunicorn's workers).
    return subprocess.Popen(args, cwd=ROOT, env=env, process_group=0)


def _start_scheduler(env: dict[str, str]) -> subprocess.Popen:
    """One scheduler process beside the workers (`flask scheduler run`), as in a
    multi-worker deployment; the workers keep SCHEDULER_ENABLED off, so the
    weekly version check and the alert evaluation fire in one place (each job
    would still run once per period with more: see kamiyo/scheduler/)."""
    return _spawn([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler", "run"], env)


def _start_gunicorn(env: dict[str, str]) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return _spawn([str(gunicorn), "-c", str(ROOT / "gunicorn.conf.py"),
                   "--graceful-timeout", str(GUNICORN_GRACE_SECONDS), "wsgi:app"], env)


def _stop(proc: subprocess.Popen | None, seconds: float) -> None:
    """SIGTERM, then SIGKILL to its whole group once `seconds` have passed."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group: a stuck worker, say
    except ProcessLookupError:
        pass
    proc.wait()


def _wait_healthy(port: str, gunicorn: subprocess.Popen) -> bool:
    """Wait until /health answers 200 (gunicorn accepts before its workers have booted);
    False if gunicorn ended first."""
    import time

    import requests

    url = f"http://127.0.0.1:{port}/health"
    nudge = time.monotonic() + 30
    while gunicorn.poll() is None:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass  # not listening yet, or a worker still booting
        if time.monotonic() > nudge:
            print(f"Still waiting for {url} to answer 200 (see the log above)...", flush=True)
            nudge += 30
        threading.Event().wait(0.2)
    return False


def _banner(demo: bool, port: str, creds, proxy, emulator, price) -> None:
    from kamiyo.config import DEMO_SECRETS_FILE

    print("", flush=True)
    print(f"Kamiyo Payments on http://127.0.0.1:{port}  (health: http://127.0.0.1:{port}/health, "
          f"ops dashboard: http://127.0.0.1:{port}/)")
    if demo:
        print(f"Demo mode: Stripe is the emulator proxy at {proxy.url} in front of localstripe at "
              f"{emulator.url} (no real money, no keys needed)")
        print(f"  inject a fault: curl -X POST {proxy.url}/_proxy/faults "
              """-d '[{"kind": "status", "status": 503}]'""")
        print(f"  API key:        {creds['api_key']}")
        print(f"  dashboard:      http://127.0.0.1:{port}/  sign in as {creds['email']} / {creds['password']}")
        api = f"curl -H 'Authorization: Bearer {creds['api_key']}' -H 'Content-Type: application/json'"
        print(f"  demo price:     {price} (pay with payment method pm_card_visa)")
        print(f"  try: {api} -d '{{\"user_id\": \"u1\", \"email\": \"ada@example.com\"}}' "
              f"http://127.0.0.1:{port}/api/v1/payments/customers")
        print(f"       {api} -d '{{\"customer_id\": 1, \"price_id\": \"{price}\", \"tier\": \"pro\", "
              f"\"payment_method\": \"pm_card_visa\"}}' http://127.0.0.1:{port}/api/v1/payments/subscriptions")
        print(f"  demo traffic (customers, a decline, retries, the breaker, webhooks, a rate limit; ~20 s):\n"
              f"       {_traffic_command(port, proxy.url)}")
        print(f"  webhooks:       the emulator sends its events to {_webhook_url(port)}, signed with\n"
              f"                  STRIPE_WEBHOOK_SECRET, kept in {_instance() / DEMO_SECRETS_FILE}")
        print(f"  send a signed test event:\n"
              f"       {_demo_env()} .venv/bin/flask --app wsgi webhooks send-test customer.created "
              f"--url http://127.0.0.1:{port}")
    print(f"Ready: http://127.0.0.1:{port}/health answers. Press Ctrl-C to stop.", flush=True)


def main(argv: list[str] | None = None) -> int:
    reset = "--reset" in (sys.argv[1:] if argv is None else argv)
    # The demo's database, secrets, credentials and emulator state are this user's alone.
    os.umask(0o077)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)
    _watch_make()
    demo = not os.environ.get("STRIPE_SECRET_KEY")
    if reset and not demo:
        sys.exit("kamiyo: demo-reset is for demo mode only, and STRIPE_SECRET_KEY is set: nothing was removed")
    if demo:
        lock = _lock_demo(_instance())  # noqa: F841  # held until this process ends
        if reset:
            _reset_demo(_instance())
    port = os.environ.get("PORT", "8000")
    emulator = proxy = gunicorn = scheduler = None
    price = None
    code = 0
    try:
        if demo:
            os.environ["KAMIYO_DEMO_MODE"] = "1"
            _ensure_emulator_installed()
            _demo_defaults()
            from devtools.localstripe_server import LocalStripe

            LocalStripe.load(_emulator_state())  # the demo database remembers these customers
            LocalStripe.persist_to(_emulator_state())  # and must keep remembering them if we are killed
            emulator = _start_localstripe(int(os.environ.get("DEMO_STRIPE_PORT", "8420")))
            proxy = _start_proxy(emulator.url, int(os.environ.get("DEMO_STRIPE_PROXY_PORT", "8421")))
            price = _seed_demo_price(emulator.url)
            os.environ["STRIPE_API_BASE"] = proxy.url
        creds, webhook_secret = _prepare(demo)
        if demo:
            # Through the proxy, which then lists it as the account's webhook endpoint (preflight).
            _register_webhook(proxy.url, port, webhook_secret)
            os.environ.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
            # The ports may be free ones rather than the defaults: a `KAMIYO_DEMO_MODE=1 flask ...`
            # command reads where this demo's Stripe and service are from here.
            from kamiyo.config import write_demo_endpoints

            write_demo_endpoints(str(_instance()), os.environ["STRIPE_API_BASE"], os.environ["PUBLIC_URL"])
        env = dict(os.environ)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", _metrics_dir())
        env["SCHEDULER_ENABLED"] = "false"  # for the workers: the scheduler runs in its own process
        scheduler = _start_scheduler(env)
        gunicorn = _start_gunicorn(env)
        if _wait_healthy(port, gunicorn):
            _banner(demo, port, creds, proxy, emulator, price)
        code = gunicorn.wait()
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except Stop as stop:
        code = 128 + stop.signum
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _stop(gunicorn, GUNICORN_STOP_SECONDS)
        _stop(scheduler, SCHEDULER_STOP_SECONDS)
        if proxy:
            proxy.stop()
        if emulator:
            emulator.stop()
            emulator.save(_emulator_state())
        print("Stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
