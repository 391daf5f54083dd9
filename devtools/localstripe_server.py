"""localstripe, run in-process on loopback, with its disk dump disabled.

The stock `localstripe` command binds every interface and pickles its store
into /tmp after each write; here it serves 127.0.0.1 only and keeps its state
in memory. localstripe's store and app are module globals, so one emulator per
process.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from pathlib import Path

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
    def flush() -> None:
        """Forget every object (registered webhook URLs stay)."""
        resources.store.clear()
