"""The loopback server of ``glasspool demo`` as a test fixture (CLI and timeline tests).

The tests reach the CLI's ``DemoServer`` only through this module. ``CountingDemoServer``
adds what only tests ask of it, the number of requests it answered; ``ThreadedServer`` runs
one in its own event loop on a background thread, for tests that call ``main()`` (which
runs its own loop with ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from glasspool.cli._server import HELLO, DemoServer, loopback_hosts

__all__ = ["HELLO", "CountingDemoServer", "DemoServer", "ThreadedServer", "loopback_hosts"]

T = TypeVar("T")


class CountingDemoServer(DemoServer):
    """A :class:`DemoServer` that counts the requests whose head it read (``requests``)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.requests = 0

    async def answer(
        self, method: str, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        self.requests += 1
        return await super().answer(method, path, reader, writer)


class ThreadedServer:
    """A :class:`CountingDemoServer` running in its own event loop on a background thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="demo-server")
        self.server: CountingDemoServer

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        self.server = CountingDemoServer(self.host)
        self._call(self.server.start())
        return self

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def url(self, path: str) -> str:
        return self.server.url(path)

    def release_held(self) -> None:
        self.loop.call_soon_threadsafe(self.server.release_held)

    def __exit__(self, *exc: object) -> None:
        self._call(self.server.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
