"""An aiohttp server on loopback, in its own thread with its own event loop.

Shared by the in-process localstripe and the emulator proxy in front of it, so
tests and `make run` can start and stop both from synchronous code.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import socket
import threading

log = logging.getLogger(__name__)


class LoopbackServer(abc.ABC):
    name = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @abc.abstractmethod
    async def _setup(self, sock: socket.socket) -> None:
        """Start serving on the bound socket (runs in the server's loop)."""

    async def _shutdown(self) -> None:
        """Release what _setup made (runs in the server's loop)."""

    def start(self, timeout: float = 10.0) -> str:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))  # raises OSError when the port is taken
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.name} did not start in time")
        if self._error:
            raise RuntimeError(f"{self.name} failed to start: {self._error}")
        return self.url

    def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._setup(sock))
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        # End what is still scheduled (localstripe's webhook deliveries, for one) quietly.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            except Exception:  # stopping anyway
                log.exception("%s: unclean shutdown", self.name)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=10)
