"""localstripe, run in-process on loopback, with its disk dump disabled.

The stock `localstripe` command binds every interface and pickles its store
into /tmp after each write; here it serves 127.0.0.1 only and keeps its state
in memory. localstripe's store and app are module globals, so one emulator per
process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

from aiohttp import web
from localstripe import resources
from localstripe.server import app as localstripe_app

# Keep the emulator's state in memory only (it would otherwise write /tmp/localstripe.pickle).
resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None


class LocalStripe:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))  # raises OSError when the port is taken
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="localstripe", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("localstripe did not start in time")
        if self._error:
            raise RuntimeError(f"localstripe failed to start: {self._error}")
        return self.url

    def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(localstripe_app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        # localstripe schedules webhook deliveries as tasks; end them quietly.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(timeout=5)

    @staticmethod
    def flush() -> None:
        """Forget every object (customers, plans, webhooks stay registered)."""
        resources.store.clear()


logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
