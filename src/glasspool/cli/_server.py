"""A small loopback HTTP/1.1 server for ``glasspool demo``.

Plain asyncio streams, ``GET`` only, keep-alive, ``Content-Length`` framing. It exists so
the demo needs no internet and can make the pool queue on cue: ``/hold`` answers only when
the demo calls :meth:`DemoServer.release_held`.

Routes::

    /hello         200, the 13-byte body "Hello, world!"
    /bytes/N       200, N bytes
    /status/N      status N with a short body
    /hold          answered (13 bytes) once release_held() was called
    /barrier/N     answered (13 bytes) once N requests have reached /barrier/N
    /delay/MS      answered (13 bytes) after MS milliseconds (at most 10 000)
    /stream        200 announcing 1 MiB, sends 16 KiB, then waits for the client to go
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

__all__ = ["HELLO", "DemoServer", "loopback_hosts"]

HELLO: Final = b"Hello, world!"
STREAM_SIZE: Final = 1024 * 1024
STREAM_SENT: Final = 16 * 1024
MAX_BYTES: Final = 64 * 1024 * 1024
CHUNK: Final = 64 * 1024
MAX_DELAY_MS: Final = 10_000

Route = Callable[["DemoServer", str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def loopback_hosts() -> tuple[str, str]:
    """Two loopback addresses for two "hosts": 127.0.0.1 and 127.0.0.2 if it can be bound.

    Returns:
        ``("127.0.0.1", "127.0.0.2")``, or ``("127.0.0.1", "127.0.0.1")`` where only
        127.0.0.1 exists (macOS, some containers); the two servers then differ by port.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return ("127.0.0.1", "127.0.0.1")
    return ("127.0.0.1", "127.0.0.2")


def _head(status: int, length: int) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {length}\r\n"
        "Content-Type: text/plain\r\n\r\n"
    ).encode("latin-1")


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes) -> bool:
    writer.write(_head(status, len(body)) + body)
    await writer.drain()
    return True


class DemoServer:
    """One loopback HTTP/1.1 server with the fixed routes above.

    Use ``async with DemoServer("127.0.0.1") as server:``; :meth:`aclose` ends every
    connection and handler, so nothing is left running.

    Args:
        host: the loopback address to listen on (port chosen by the OS).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.held = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[object]] = set()
        self._arrivals = asyncio.Condition()
        self._release = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._barriers: dict[int, int] = {}
        self._closing = False

    def url(self, path: str = "/") -> str:
        """``http://host:port`` + ``path``."""
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> DemoServer:
        """Start listening.

        Raises:
            OSError: the address could not be bound.
        """
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def wait_held(self, count: int) -> None:
        """Block until at least ``count`` requests are held at ``/hold``. A checkpoint."""
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: self.held >= count)

    def release_held(self) -> None:
        """Answer every held ``/hold`` request, and every later one at once."""
        self._release.set()

    async def aclose(self) -> None:
        """Stop listening, end every connection and wait for the handlers. Idempotent."""
        self._closing = True
        self._release.set()
        self._shutdown.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        async with self._arrivals:
            self._arrivals.notify_all()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> DemoServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- connections ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while not self._closing and await self._one(reader, writer):
                pass
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent garbage: end this connection
        except asyncio.CancelledError:
            pass  # only loop shutdown cancels us; end quietly (3.11 logs a cancelled handler)
        finally:
            self._writers.discard(writer)
            writer.close()
            self._tasks.discard(task)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether to keep the connection open."""
        head = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = head.decode("latin-1").partition(" ")
        return await self.answer(method, rest.partition(" ")[0], reader, writer)

    async def answer(
        self, method: str, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request whose head has been read, by its route.

        Args:
            method, path: from the request line, as sent.
            reader, writer: the connection, for a route that reads or streams.

        Returns:
            Whether to keep the connection open for another request.
        """
        if method != "GET":
            return await _send(writer, 405, b"GET only\n")
        name, _, arg = path.partition("?")[0].lstrip("/").partition("/")  # query ignored
        route = _ROUTES.get(name)
        if route is None:
            return await _send(writer, 404, f"no route {path}\n".encode())
        return await route(self, arg, reader, writer)

    # -- routes ----------------------------------------------------------------------------

    async def _hello(self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        return await _send(w, 200, HELLO)

    async def _bytes(self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        size = int(arg) if arg.isdigit() else -1
        if not 0 <= size <= MAX_BYTES:
            return await _send(w, 400, f"/bytes/N takes 0 <= N <= {MAX_BYTES}\n".encode())
        w.write(_head(200, size))
        for start in range(0, size, CHUNK):
            w.write(b"x" * min(CHUNK, size - start))
            await w.drain()
        await w.drain()
        return True

    async def _status(
        self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        code = int(arg) if arg.isdigit() else 0
        if not 200 <= code <= 599:
            return await _send(w, 400, b"/status/N takes 200 <= N <= 599\n")
        return await _send(w, code, f"status {code}\n".encode())

    async def _hold(self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        async with self._arrivals:
            self.held += 1
            self._arrivals.notify_all()
        await self._release.wait()
        return not self._closing and await _send(w, 200, HELLO)

    async def _barrier(
        self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        size = int(arg) if arg.isdigit() else 0
        async with self._arrivals:
            self._barriers[size] = self._barriers.get(size, 0) + 1
            self._arrivals.notify_all()
            await self._arrivals.wait_for(lambda: self._closing or self._barriers[size] >= size)
        return not self._closing and await _send(w, 200, HELLO)

    async def _delay(self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        ms = int(arg) if arg.isdigit() else -1
        if not 0 <= ms <= MAX_DELAY_MS:
            return await _send(w, 400, f"/delay/MS takes 0 <= MS <= {MAX_DELAY_MS}\n".encode())
        with contextlib.suppress(TimeoutError):  # a slow server, cut short by aclose()
            await asyncio.wait_for(self._shutdown.wait(), ms / 1000)
        return not self._closing and await _send(w, 200, HELLO)

    async def _stream(
        self, arg: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        w.write(_head(200, STREAM_SIZE) + b"s" * STREAM_SENT)
        await w.drain()
        with contextlib.suppress(OSError):
            await reader.read()  # the rest never comes: wait until the client closes
        return False


_ROUTES: Final[dict[str, Route]] = {
    "hello": DemoServer._hello,
    "bytes": DemoServer._bytes,
    "status": DemoServer._status,
    "hold": DemoServer._hold,
    "barrier": DemoServer._barrier,
    "delay": DemoServer._delay,
    "stream": DemoServer._stream,
}
