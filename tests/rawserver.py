"""A tiny loopback HTTP server for byte-exact transport tests.

Give it either a handler coroutine ``handler(reader, writer)`` that does whatever the
test needs, or a list of canned replies: raw response bytes sent one per request, in order,
across connections. It listens on 127.0.0.1 (or the host given) on a free port and records
what it got: ``received`` holds every byte each connection sent (in any mode),
``requests`` every whole request the canned mode (or ``srv.read_request``) read, and
``connections`` counts accepted connections::

    async with RawServer(replies=[b"HTTP/1.1 204 No Content\\r\\n\\r\\n"]) as srv:
        ...  # connect to srv.port; srv.requests[0] holds the raw request bytes

A handler that raises anything but a connection error fails the test: the first such error
is re-raised when the ``async with`` block exits.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import SupportsIndex

from glasspool._pool.key import PoolKey, TLSIdentity

__all__ = ["Handler", "RawServer", "Reply", "read_request"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Reply:
    """A canned reply.

    Attributes:
        data: the raw bytes to send after reading one request.
        close: close the connection after sending (for read-to-close bodies).
    """

    data: bytes
    close: bool = False


class RawServer:
    """A loopback server that records raw requests and replies with raw bytes.

    Args:
        handler: a coroutine run for each connection; it owns reader and writer.
        replies: canned replies (bytes or :class:`Reply`), one per request read. When they
            run out the connection is closed.
        host: the address to listen on: ``"127.0.0.1"`` or ``"::1"``.
        ssl_context: a server-side TLS context, for HTTPS tests.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        replies: Sequence[bytes | Reply] | None = None,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if (handler is None) == (replies is None):
            raise ValueError("give RawServer exactly one of handler= or replies=")
        self.host = host
        self.port = 0
        self.requests: list[bytes] = []
        self.received: list[bytearray] = []
        self.connections = 0
        self.accepted = asyncio.Event()  # set at the first accepted connection
        self.errors: list[BaseException] = []
        self._handler = handler
        self._replies = [r if isinstance(r, Reply) else Reply(r) for r in replies or ()]
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    def key(self, *, tls: TLSIdentity | None = None) -> PoolKey:
        """A pool key for this server (``https`` when ``tls`` is given)."""
        return PoolKey("https" if tls is not None else "http", self.host, self.port, tls)

    async def __aenter__(self) -> RawServer:
        def protocol() -> asyncio.StreamReaderProtocol:
            reader = _RecordingReader(limit=1 << 20)
            self.received.append(reader.raw)
            return asyncio.StreamReaderProtocol(reader, self._accept)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self.host, 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self.errors and exc_info[0] is None:
            raise self.errors[0]

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """Read one request with :func:`read_request` and append it to ``requests``."""
        raw = await read_request(reader)
        if raw is not None:
            self.requests.append(raw)
        return raw

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.accepted.set()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self._handler is not None:
                await self._handler(reader, writer)
            else:
                await self._serve_replies(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Stopped by __aexit__: end normally, or asyncio's StreamReaderProtocol logs
            # "Exception in callback" for the cancelled handler task.
        except Exception as exc:  # reported when the server exits
            self.errors.append(exc)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve_replies(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while self._replies:
            if await self.read_request(reader) is None:
                return
            reply = self._replies.pop(0)
            writer.write(reply.data)
            await writer.drain()
            if reply.close:
                return


class _RecordingReader(asyncio.StreamReader):
    """A StreamReader that also keeps every byte it was fed."""

    def __init__(self, *, limit: int) -> None:
        super().__init__(limit=limit)
        self.raw = bytearray()

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.raw.extend(data)
        super().feed_data(data)


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """Read one request (head plus Content-Length or chunked body).

    Returns:
        The raw request bytes, or None if the peer closed before a whole head.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return head + body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        parts.append(line)
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        parts.append(await reader.readexactly(size + 2))
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        parts.append(line)
    parts.append(line)
    return b"".join(parts)
