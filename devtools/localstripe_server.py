"""localstripe, run in-process on loopback, with its disk dump disabled.

The stock `localstripe` command binds every interface and pickles its store
into /tmp after each write; here it serves 127.0.0.1 only and keeps its state
in memory. localstripe's store and app are module globals, so one emulator per
process.
"""

from __future__ import annotations

import logging
import socket

from aiohttp import web
from localstripe import resources
from localstripe.server import app as localstripe_app

from .loop_server import LoopbackServer

# Keep the emulator's state in memory only (it would otherwise write /tmp/localstripe.pickle).
resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None

logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class LocalStripe(LoopbackServer):
    name = "localstripe"

    async def _setup(self, sock: socket.socket) -> None:
        self._runner = web.AppRunner(localstripe_app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()

    @staticmethod
    def flush() -> None:
        """Forget every object (registered webhook URLs stay)."""
        resources.store.clear()
