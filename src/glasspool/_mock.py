"""A transport for tests: requests are answered by a function, through the real pool.

``Client(transport=MockTransport(handler))`` makes the pool open in-memory connections
instead of sockets. Each is a real :class:`HTTP11Connection` whose event-loop transport is
:class:`_MemoryTransport`: the request the client writes is parsed back into a
:class:`Request`, handed to ``handler``, and the :class:`MockResponse` it returns is written
back as HTTP/1.1 bytes. Framing, keep-alive, limits, waiting, stats and events are those of
the real pool; only the socket is missing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, TypeAlias

import yarl

from ._exceptions import InvalidRequest
from ._headers import Headers
from ._http11 import HTTP11Connection, ParserLimits
from ._pool.key import PoolKey
from ._request import Request

__all__ = ["MockHandler", "MockResponse", "MockTransport"]

_CHUNK = 64 * 1024


class MockResponse:
    """What a :class:`MockTransport` handler answers.

    ``Content-Length`` is set from ``content`` unless a ``Content-Length`` header is given:
    that one is sent as it is, to play a server that gets it wrong. Fewer bytes than it
    says are sent and the connection is closed (the client raises
    :class:`glasspool.IncompleteBody`); more, and the bytes after the body make the
    connection not reusable. A ``Transfer-Encoding`` given is dropped. A
    ``Connection: close`` header closes the connection after the response, as a server
    would.

    Attributes:
        status: the status code (100-599; 1xx are not supported as final answers).
        headers: the response headers.
        content: the body; ``str`` is sent as UTF-8.
    """

    __slots__ = ("content", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        content: bytes | str = b"",
    ) -> None:
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise ValueError(f"MockResponse status must be an int from 200 to 599, not {status!r}")
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, bytes | bytearray | memoryview):
            raise TypeError(
                f"MockResponse content must be bytes or str, not {type(content).__name__}"
            )
        self.status = status
        self.headers = Headers(headers or ())
        self.content = bytes(content)

    def __repr__(self) -> str:
        return f"<MockResponse [{self.status}] {len(self.content)} bytes>"

    def _encode(self, method: str) -> bytes:
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {self.status} {reason}\r\n".encode("latin-1")]
        given = False
        for name, value in self.headers.items():
            lowered = name.lower()
            if lowered == "transfer-encoding":
                continue
            given = given or lowered == "content-length"
            lines.append(f"{name}: {value}\r\n".encode())
        no_body = self.status in (204, 304)
        if not no_body and not given:
            lines.append(b"Content-Length: %d\r\n" % len(self.content))
        lines.append(b"\r\n")
        if not no_body and method != "HEAD":
            lines.append(self.content)
        return b"".join(lines)

    def _short(self, method: str) -> bool:
        """Whether a ``Content-Length`` given says more than the body holds (the server
        then "dies" after sending what it has)."""
        given = self.headers.get("content-length")
        if given is None or method == "HEAD" or self.status in (204, 304):
            return False
        try:
            return int(given.strip()) > len(self.content)
        except ValueError:
            return False  # a malformed value: the client refuses the head itself


MockHandler: TypeAlias = Callable[[Request], "MockResponse | Awaitable[MockResponse]"]
"""``handler(request)``: returns a :class:`MockResponse`, or an awaitable of one."""


class MockTransport:
    """Answer a client's requests with ``handler`` instead of sockets, through the real pool.

    ``handler(request)`` gets a :class:`glasspool.Request` (method, url, headers as sent,
    ``content`` the whole body as bytes) and returns a :class:`MockResponse`, directly or
    from a coroutine. It runs once per request sent, retries and redirect hops included.
    An exception it raises propagates from the request unchanged; the connection is then
    closed and its slot freed.

    Attributes:
        handler: the function given.
        requests: every request handled so far, in order.
    """

    def __init__(self, handler: MockHandler) -> None:
        if not callable(handler):
            raise TypeError(f"MockTransport needs a callable handler, not {type(handler).__name__}")
        self.handler = handler
        self.requests: list[Request] = []

    def __repr__(self) -> str:
        return f"<MockTransport handler={self.handler!r}>"

    async def _open(self, key: PoolKey, limits: ParserLimits) -> HTTP11Connection:
        """A connected in-memory connection for ``key``."""
        conn = HTTP11Connection(key, limits=limits)
        transport = _MemoryTransport(self, conn, key)
        conn.connection_made(transport)
        return conn


class _MemoryTransport(asyncio.Transport):
    """The event-loop side of one in-memory connection (see the module docstring)."""

    def __init__(self, mock: MockTransport, conn: HTTP11Connection, key: PoolKey) -> None:
        super().__init__()
        self._mock = mock
        self._conn = conn
        self._key = key
        self._loop = asyncio.get_running_loop()
        self._inbox = bytearray()  # what the client wrote, not yet parsed
        self._outbox = bytearray()  # the response, not yet delivered
        self._paused = False
        self._closing = False
        self._close_after = False
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------- asyncio.Transport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("mock", self._key.port)}.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._loop.call_soon(self._conn.connection_lost, None)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._loop.call_soon(self._deliver)

    def is_reading(self) -> bool:
        return not self._paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._inbox += data
        if self._task is None or self._task.done():
            request = self._parse()
            if request is not None:
                self._task = self._loop.create_task(self._answer(request))

    # ------------------------------------------------------------------- internals
    def _parse(self) -> Request | None:
        """The next complete request in the inbox, taken out of it; ``None`` if not yet."""
        buf = self._inbox
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(buf[:end]).decode("utf-8", "replace").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        pairs = [line.split(":", 1) for line in lines[1:]]
        headers = Headers([(name, value.strip()) for name, value in pairs])
        pos = end + 4
        if (headers.get("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if size == 0:  # glasspool sends no trailers
                    if len(buf) < eol + 4:
                        return None
                    pos = eol + 4
                    break
                if len(buf) < eol + 2 + size + 2:
                    return None
                body += buf[eol + 2 : eol + 2 + size]
                pos = eol + 2 + size + 2
            content = bytes(body)
        else:
            length = int(headers.get("content-length") or "0")
            if len(buf) < pos + length:
                return None
            content = bytes(buf[pos : pos + length])
            pos += length
        del buf[:pos]
        if target.startswith(("http://", "https://")):
            url = yarl.URL(target, encoded=True)
        else:
            url = yarl.URL(f"{self._key.origin}{target}", encoded=True)
        return Request(method, url, headers, content=content)

    async def _answer(self, request: Request) -> None:
        self._mock.requests.append(request)
        try:
            answer = self._mock.handler(request)
            if inspect.isawaitable(answer):
                answer = await answer
            if not isinstance(answer, MockResponse):
                raise InvalidRequest(
                    f"the MockTransport handler returned {type(answer).__name__}, "
                    "not a MockResponse"
                )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._conn._fail(exc)  # receive_head raises it; the connection is closed
            return
        self._outbox += answer._encode(request.method)
        connection = (answer.headers.get("connection") or "").lower()
        self._close_after = connection == "close" or answer._short(request.method)
        self._deliver()
        if self._inbox:  # a pipelined request: not sent by glasspool, but answer it
            following = self._parse()
            if following is not None:
                self._task = self._loop.create_task(self._answer(following))

    def _deliver(self) -> None:
        """Hand the response to the connection in chunks, while it is reading."""
        while self._outbox and not self._paused and not self._closing:
            chunk = bytes(self._outbox[:_CHUNK])
            del self._outbox[:_CHUNK]
            self._conn.data_received(chunk)
        if not self._outbox and self._close_after and not self._closing:
            self.abort()
