"""localstripe, run in-process on loopback, with its disk dump disabled.

The stock `localstripe` command binds every interface and pickles its store
into /tmp after each write; here it serves 127.0.0.1 only and keeps its state
in memory. localstripe's store, app and webhooks are module globals, so one
emulator per process; its webhook delay (1 s before each event) can be shortened
for tests that wait for many events. With persist_to(path), every request that may
change the emulator's objects saves them to `path` before it is answered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
from pathlib import Path

from aiohttp import web
from localstripe import resources, webhooks
from localstripe.server import app as localstripe_app

from .loop_server import LoopbackServer

# Keep the emulator's state in memory only (it would otherwise write /tmp/localstripe.pickle).
resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None

logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

_webhook_delay = 1.0  # seconds before each event is sent, as in localstripe
_state_path: Path | None = None  # where every change is saved (LocalStripe.persist_to)


class _WebhookClock:
    """localstripe's webhooks module as it sees asyncio: its one-second wait before each event
    lasts LocalStripe.set_webhook_delay's seconds instead; everything else is asyncio's."""

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, *args, **kwargs):
        return await asyncio.sleep(_webhook_delay if delay == 1 else delay, *args, **kwargs)


webhooks.asyncio = _WebhookClock()


@web.middleware
async def _save_changes(request: web.Request, handler):
    """Save after each request that may write, before its answer leaves: a runner that is
    killed, or a machine that stops, loses no object the demo database already points to.
    localstripe changes objects in place, so its own per-item hook would miss updates."""
    try:
        return await handler(request)
    finally:
        if _state_path is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            try:
                LocalStripe.save(_state_path)
            except OSError as exc:
                logging.getLogger(__name__).warning("localstripe state not saved: %s", exc)


def _fresh_app() -> web.Application:
    """localstripe's routes and middlewares on an Application of our own: its module-level app
    is bound to the first event loop that serves it, and a process may start localstripe again
    (a second test session in one process, as mutmut runs them)."""
    app = web.Application(middlewares=[_save_changes, *localstripe_app.middlewares],
                          client_max_size=localstripe_app._client_max_size)
    app.on_response_prepare.extend(localstripe_app.on_response_prepare)
    for route in localstripe_app.router.routes():
        app.router.add_route(route.method, route.resource.canonical, route.handler)
    return app


class LocalStripe(LoopbackServer):
    name = "localstripe"

    async def _setup(self, sock: socket.socket) -> None:
        self._runner = web.AppRunner(_fresh_app(), access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()

    @staticmethod
    def save(path: Path) -> None:
        """Keep the emulator's objects for the next start (demo mode: the SQLite
        database outlives the process, so Stripe's side must too)."""
        tmp = Path(f"{path}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(dict(resources.store), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> bool:
        """Restore what save() kept (our own file in the instance folder); False if none."""
        try:
            with open(path, "rb") as fh:
                saved = pickle.load(fh)
        except FileNotFoundError:
            return False
        except Exception as exc:  # an unreadable file: start empty rather than not at all
            logging.getLogger(__name__).warning("localstripe state not restored: %s", type(exc).__name__)
            return False
        resources.store.clear()
        resources.store.update(saved)
        return True

    @staticmethod
    def persist_to(path: Path | None) -> None:
        """Save the objects to `path` after every request that may change them (None: never)."""
        global _state_path
        _state_path = path

    @staticmethod
    def set_webhook_delay(seconds: float) -> None:
        """Wait this long before sending each event (localstripe: 1 s)."""
        global _webhook_delay
        if seconds < 0:
            raise ValueError("the webhook delay must be >= 0")
        _webhook_delay = float(seconds)

    @staticmethod
    def webhook_delay() -> float:
        return _webhook_delay

    @staticmethod
    def unregister_webhook(webhook_id: str) -> bool:
        """Remove a URL registered at /_config/webhooks/<id> (localstripe has no route for
        it); False if there was none. The registry is replaced rather than changed: an event
        being sent in the emulator's thread goes on over the one it started with."""
        registered = dict(webhooks._webhooks)
        found = registered.pop(webhook_id, None) is not None
        webhooks._webhooks = registered
        return found

    @staticmethod
    def flush() -> None:
        """Forget every object (registered webhook URLs stay)."""
        resources.store.clear()
