"""FaultServer: a loopback HTTP/1.1 server that misbehaves on request, and counts what it saw.

The conftest fixture ``fault_server`` gives a fresh plain-HTTP one per test. For TLS, build
one yourself: ``async with FaultServer(ssl=tls_certs.server_context()) as server``.

API::

    async with FaultServer(ssl=None, host="127.0.0.1") as server:   # port 0, started
        server.port, server.host, server.url("/fault/reset")        # http(s)://127.0.0.1:P/...
        server.plan(on_accept="serve", requests=("ok", "reset"))    # next accepted connection
        server.close_event.set()                                    # for "close-on-event"
        await server.wait_connections(n) / wait_requests(n) / wait_open(n) / wait_for(...)
        server.connections_accepted, server.open_connections, server.peak_connections
        server.requests_per_connection   # {connection id: requests read on it}
        server.requests                  # [RecordedRequest, ...] in arrival order
        server.tls_failures              # TLS handshakes that failed
    # leaving the block closes every connection; it raises AssertionError if a request
    # named an unknown fault or bad parameters (see server.errors).

    with refusing_port() as port: ...   # connecting to 127.0.0.1:port is refused
    await read_response(reader, method="GET") -> RawResponse   # a tiny client-side parser
    format_request("GET", "/x", port=server.port, headers=..., body=b"") -> bytes

Choosing behaviour. Each request is answered by one *fault*, written ``name?k=v&k=v``. The
fault comes from the connection's plan if it still has one queued, else from the request
path ``/fault/<name>?k=v`` (any other path means ``ok``). Every response carries the headers
``X-Request-Id: <n>`` and ``X-Connection-Id: <c>`` and, unless said otherwise, the body
``id=<n>``. ``n`` counts requests and ``c`` connections, both from 1, per server. Faults:

==================  ========================================================================
``ok``              200 and keep-alive (closes if the request said ``Connection: close``
                    or was HTTP/1.0 without keep-alive). ``status=N``, ``size=N`` (pad the
                    body with dots), ``chunked=1`` (send the body chunked).
``delay``           wait ``s`` seconds (default 1), then as ``ok``.
``stall``           read the request, never answer; close when the client does. With
                    ``read=0`` stop reading too (the client's writes back up).
``reset``           read the request, send the first ``after`` bytes (default 0) of an
                    ``ok`` response, then reset: SO_LINGER 0 close, an RST.
``half-close``      read the request, shut down the write side (FIN) without answering, keep
                    reading until the client closes.
``trickle``         send the head, then the body one byte every ``delay`` s (default 0.05).
``close-after``     answer as ``ok`` (no ``Connection: close``), then close at once.
``close-idle``      answer, then close if no next request starts within ``s`` seconds
                    (default 1). ``hint=1`` adds ``Keep-Alive: timeout=<s>``.
``close-on-event``  answer, then close once ``server.close_event`` is set, unless a next
                    request arrives first.
``early-413``       read the head and only ``read`` body bytes (default 0; never sends
                    ``100 Continue``), answer 413 with ``Connection: close``, then close. With
                    ``linger=S`` shut down writing and drain the upload for up to S seconds
                    first; without it, the unread upload makes the kernel send an RST.
``truncate``        ``Content-Length: length`` (default 100) but send only ``send`` bytes
                    (default 10), then close.
``connection-close``  answer as ``ok`` with ``Connection: close``, then close.
``http10``          answer ``HTTP/1.0 200 OK`` and close; ``keepalive=1`` sends
                    ``Connection: keep-alive`` and keeps the connection; ``nolength=1``
                    omits ``Content-Length`` (body ends at the close).
==================  ========================================================================

Per-connection behaviour before any request (``plan(on_accept=...)``): ``serve`` (default),
``reset`` (RST at once), ``close`` (FIN at once), ``stall`` (accept and never read or
write, also no TLS handshake), ``garbage`` (send bytes that are neither TLS nor HTTP, then
close; a TLS client's handshake fails).

A request with ``Expect: 100-continue`` gets ``100 Continue`` before its body is read,
except under ``early-413``. ``HEAD`` responses have no body. A malformed request head gets
400 and a close. Waiting methods are checkpoints and raise AssertionError (naming what was
expected and what was seen) after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
import struct
import termios
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fcntl import ioctl
from types import TracebackType
from typing import cast
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "FaultServer",
    "RawResponse",
    "RecordedRequest",
    "format_request",
    "read_response",
    "refusing_port",
]

ACCEPT_ACTIONS = ("serve", "reset", "close", "stall", "garbage")
GARBAGE = b"\x00\xffthis is neither TLS nor HTTP\r\n\r\n"
MAX_HEAD_BYTES = 65536


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the FaultServer read it.

    Attributes:
        request_id: the ``n`` of ``X-Request-Id``.
        connection_id: the ``c`` of ``X-Connection-Id``.
        method, target, version: from the request line.
        headers: in arrival order, names as sent.
        body: the body bytes read (chunked framing removed; partial under ``early-413``).
        fault: the fault spec that answered it, e.g. ``"reset?after=5"``.
    """

    request_id: int
    connection_id: int
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    fault: str

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        return _find_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A response as :func:`read_response` parsed it.

    Attributes:
        version, status, reason: from the status line.
        headers: in arrival order.
        body: the body, chunked framing removed.
        chunk_sizes: the size of each chunk when the body was chunked, else empty.
        interim: status codes of 1xx responses that came first.
    """

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    chunk_sizes: tuple[int, ...] = ()
    interim: tuple[int, ...] = ()

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        return _find_header(self.headers, name)


def _find_header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed fault spec ``name?k=v&k=v``."""

    name: str
    params: tuple[tuple[str, str], ...]
    spec: str

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``spec``.

        Raises:
            ValueError: the name is not a known fault (the message lists the known ones).
        """
        name, _, query = spec.partition("?")
        if name not in _HANDLERS:
            raise ValueError(f"unknown fault {name!r} in {spec!r}; known: {sorted(_HANDLERS)}")
        return cls(name, tuple(parse_qsl(query, keep_blank_values=True)), spec)

    def number(self, key: str, default: float) -> float:
        """Return parameter ``key`` as a float, or ``default`` when absent.

        Raises:
            ValueError: the value is not a non-negative number (names key and spec).
        """
        raw = dict(self.params).get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ValueError(f"fault {self.spec!r}: {key}={raw!r} is not a number >= 0")
        return value

    def integer(self, key: str, default: int) -> int:
        """Return parameter ``key`` as an int (see :meth:`number`)."""
        return int(self.number(key, default))


@dataclass(slots=True)
class _Head:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        return _find_header(self.headers, name)

    def wants_close(self) -> bool:
        tokens = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens


_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(slots=True)
class _Conn:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    raw: asyncio.Transport  # writer.transport: the TLS transport over TLS
    planned: deque[Fault]
    idle_timeout: float | None = None
    idle_until_event: bool = False


@dataclass(slots=True)
class _Plan:
    on_accept: str
    requests: list[Fault] = field(default_factory=list)


class FaultServer:
    """An asyncio HTTP/1.1 server on a loopback port whose faults a test picks.

    Use as ``async with``; ``aclose()`` closes the listener and every connection (those
    stalled included) and waits for their sockets to be closed.
    """

    def __init__(self, *, ssl: ssl_module.SSLContext | None = None, host: str = "127.0.0.1"):
        """Prepare the server; ``start()`` (or ``async with``) binds port 0 on ``host``.

        Args:
            ssl: when given, every connection first does a server-side TLS handshake.
            host: the loopback address to bind.
        """
        self.host = host
        self.port = 0
        self.close_event = asyncio.Event()
        self.connections_accepted = 0
        self.open_connections = 0
        self.peak_connections = 0
        self.requests_per_connection: dict[int, int] = {}
        self.requests: list[RecordedRequest] = []
        self.tls_failures = 0
        self.errors: list[str] = []
        self._ssl = ssl
        self._server: asyncio.Server | None = None  # a plain server's
        self._listener: socket.socket | None = None  # a TLS server's, and its accept loop
        self._acceptor: asyncio.Task[None] | None = None
        self._plans: deque[_Plan] = deque()
        self._conns: dict[int, _Conn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._closing = False
        self._request_counter = 0

    def __repr__(self) -> str:
        return (
            f"<FaultServer {self.host}:{self.port} accepted={self.connections_accepted}"
            f" open={self.open_connections} requests={len(self.requests)}>"
        )

    async def __aenter__(self) -> FaultServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind and listen on ``host``, port 0 (the chosen port is then ``self.port``).

        A plain server is ``asyncio.start_server``. A TLS server accepts sockets itself
        (:meth:`_accept_tls`) and makes a transport for one only once its accept action is
        known, with the loop's own server-side handshake for ``serve``. Upgrading a stream
        that already reads, as ``StreamWriter.start_tls`` does, races the client: a loop
        may read as soon as it accepts (uvloop does, before the handler's first step), and
        a ClientHello read into the StreamReader never reaches the TLS layer.
        """
        if self._ssl is None:
            self._server = await asyncio.start_server(
                self._handle, self.host, 0, limit=MAX_HEAD_BYTES
            )
            self.port = self._server.sockets[0].getsockname()[1]
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, 0), family=family, backlog=100)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = asyncio.get_running_loop().create_task(self._accept_tls(listener))

    def url(self, path: str = "/", host: str | None = None) -> str:
        """Return ``http(s)://host:port/path`` for this server (``::1`` bracketed).

        Args:
            path: absolute path, may carry a query.
            host: host to put in the URL; default the bound address.
        """
        shown = host or self.host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"{'https' if self._ssl else 'http'}://{shown}:{self.port}{path}"

    def plan(self, on_accept: str = "serve", requests: Sequence[str] = ()) -> None:
        """Queue the behaviour of the next accepted connection not yet planned.

        Args:
            on_accept: what to do before reading anything (see the module docstring).
            requests: fault specs for its first requests, in order; later requests on it
                fall back to the path.

        Raises:
            ValueError: unknown ``on_accept`` action or fault name.
        """
        if on_accept not in ACCEPT_ACTIONS:
            raise ValueError(f"unknown on_accept {on_accept!r}; known: {ACCEPT_ACTIONS}")
        self._plans.append(_Plan(on_accept, [Fault.parse(spec) for spec in requests]))

    async def aclose(self) -> None:
        """Close the listener and every connection; wait until their sockets are closed.

        Idempotent. Raises AssertionError afterwards if a request asked for an unknown fault
        or gave bad parameters (the server is closed either way).
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        while self._tasks:
            for conn in self._conns.values():
                _abort(conn)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # run the transports' scheduled socket closes
        if self.errors:
            raise AssertionError(f"FaultServer errors: {self.errors}")

    # -- waiting -------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[], bool], description: str, timeout: float = 5.0
    ) -> None:
        """Wait until ``predicate()`` is true; it is re-checked whenever the counts change.

        Args:
            predicate: a cheap check of this server's attributes.
            description: what is awaited, for the failure message.
            timeout: seconds before giving up.

        Raises:
            AssertionError: ``timeout`` passed; names ``description`` and the counts.
        """
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise AssertionError(
                f"FaultServer: waited {timeout}s for {description}; have {self!r}"
                f" per connection {self.requests_per_connection}"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_connections(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` connections were accepted in total."""
        await self.wait_for(
            lambda: self.connections_accepted >= count, f"{count} accepted connections", timeout
        )

    async def wait_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` requests were read (heads and bodies)."""
        await self.wait_for(lambda: len(self.requests) >= count, f"{count} requests", timeout)

    async def wait_open(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` connections are open (e.g. 0: the client closed)."""
        await self.wait_for(
            lambda: self.open_connections == count, f"exactly {count} open connections", timeout
        )

    def _notify(self) -> None:
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    # -- connection lifecycle ------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``start_server``'s callback (plain servers): one connection, its streams made."""

        async def streams(plan: _Plan) -> _Streams:
            return reader, writer

        await self._connection(streams, writer.transport.abort)

    async def _accept_tls(self, listener: socket.socket) -> None:
        """A TLS server's accept loop (see :meth:`start`); runs until aclose()."""
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            task = loop.create_task(self._handle_tls(sock))
            self._tasks.add(task)  # aclose() waits for it, also before its first step

    async def _handle_tls(self, sock: socket.socket) -> None:
        """One connection a TLS server accepted: a transport for ``sock``, then as usual."""
        loop = asyncio.get_running_loop()
        ssl = self._ssl

        async def streams(plan: _Plan) -> _Streams | None:
            reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            handshake = ssl if plan.on_accept == "serve" else None
            try:  # from here on the loop owns sock, and closes it on failure
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=handshake
                )
            except OSError:  # ssl.SSLError included: the handshake failed
                self.tls_failures += 1
                return None
            return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

        await self._connection(streams, sock.close)

    async def _connection(
        self,
        streams: Callable[[_Plan], Awaitable[_Streams | None]],
        discard: Callable[[], object],
    ) -> None:
        """Serve one accepted connection: count it, take its plan, run it, close it.

        Args:
            streams: makes its reader and writer (None: a TLS handshake failed).
            discard: drops it unserved, when the server is already closing.
        """
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            discard()
            self._tasks.discard(task)
            return
        self._tasks.add(task)
        self.connections_accepted += 1
        cid = self.connections_accepted
        plan = self._plans.popleft() if self._plans else _Plan("serve")
        self.requests_per_connection[cid] = 0
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        self._notify()
        conn: _Conn | None = None
        try:
            made = await streams(plan)
            if made is None:
                return
            reader, writer = made
            raw = cast(asyncio.Transport, writer.transport)
            conn = _Conn(cid, reader, writer, raw, deque(plan.requests))
            self._conns[cid] = conn
            await _close(conn, await self._run_guarded(conn, plan.on_accept))
        except asyncio.CancelledError:
            # Only aclose() cancels this task, which the server owns: abort (aclose then runs
            # the loop once more, closing the socket) and end normally, which also keeps
            # 3.11's start_server done-callback from logging the cancellation as an error.
            # Cancelled in connect_accepted_socket, the loop closes the socket itself.
            if conn is not None:
                _abort(conn)
        finally:
            self._conns.pop(cid, None)
            self._tasks.discard(task)
            self.open_connections -= 1
            self._notify()

    async def _run_guarded(self, conn: _Conn, on_accept: str) -> bool:
        """Run the connection; return True for a graceful close. Records unexpected errors."""
        try:
            return await self._run(conn, on_accept)
        except (OSError, asyncio.IncompleteReadError):
            return False  # the client went away or reset: an ordinary end for a fault server
        except Exception as exc:
            self.errors.append(f"connection {conn.id}: {exc!r}")
            return False

    async def _run(self, conn: _Conn, on_accept: str) -> bool:
        """Carry out the accept action, then serve; return True for a graceful close.

        A TLS server's ``serve`` connection arrives here with its handshake done.
        """
        if on_accept == "reset":
            _abort_with_rst(conn)
            return False
        if on_accept == "close":
            return True
        if on_accept == "stall":
            conn.raw.pause_reading()
            await asyncio.get_running_loop().create_future()  # until aclose() cancels us
        if on_accept == "garbage":
            conn.writer.write(GARBAGE)
            await conn.writer.drain()
            return True
        return await self._serve(conn)

    async def _serve(self, conn: _Conn) -> bool:
        """Answer requests until one ends the connection; return True for a graceful close."""
        while True:
            head = await self._next_head(conn)
            if head is None:
                return True
            fault = self._fault_for(conn, head)
            if fault is None:
                await _send(conn, _plain_response(400, "Bad Request", b"bad fault\n"))
                return True
            self._request_counter += 1
            rid = self._request_counter
            try:
                body = await _read_body(conn, head, fault)
            except ValueError as exc:  # a bad Content-Length or chunk size
                await _send(conn, _plain_response(400, "Bad Request", f"{exc}\n".encode()))
                return True
            self._record(conn, head, body, fault, rid)
            if not await _HANDLERS[fault.name](self, conn, head, fault, rid):
                return not conn.raw.is_closing()

    def _fault_for(self, conn: _Conn, head: _Head) -> Fault | None:
        """Pick the fault: the connection's plan first, then the path. None if invalid."""
        if conn.planned:
            return conn.planned.popleft()
        path = urlsplit(head.target)
        if not path.path.startswith("/fault/"):
            return Fault("ok", (), "ok")
        spec = path.path.removeprefix("/fault/") + (f"?{path.query}" if path.query else "")
        try:
            fault = Fault.parse(spec)
            _validate_params(fault)
        except ValueError as exc:
            self.errors.append(str(exc))
            return None
        return fault

    def _record(self, conn: _Conn, head: _Head, body: bytes, fault: Fault, rid: int) -> None:
        self.requests.append(
            RecordedRequest(
                rid, conn.id, head.method, head.target, head.version, head.headers, body, fault.spec
            )
        )
        self.requests_per_connection[conn.id] += 1
        self._notify()

    async def _next_head(self, conn: _Conn) -> _Head | None:
        """Read the next request head; None at EOF, bad input, or when the idle rule fires."""
        timeout, by_event = conn.idle_timeout, conn.idle_until_event
        conn.idle_timeout, conn.idle_until_event = None, False
        read = conn.reader.readuntil(b"\r\n\r\n")
        try:
            if by_event:
                data = await _unless_event(read, self.close_event)
            else:
                async with asyncio.timeout(timeout):
                    data = await read
        except (TimeoutError, asyncio.IncompleteReadError):
            return None
        except asyncio.LimitOverrunError:
            await _send(conn, _plain_response(431, "Request Header Fields Too Large", b""))
            return None
        if data is None:
            return None
        try:
            return _parse_head(data)
        except ValueError as exc:
            await _send(conn, _plain_response(400, "Bad Request", f"{exc}\n".encode()))
            return None


# -- helpers: reading and writing ---------------------------------------------------------


async def _unless_event(read: Awaitable[bytes], event: asyncio.Event) -> bytes | None:
    """Await ``read`` unless ``event`` is set first (then None). A read already done wins."""
    read_task = asyncio.ensure_future(read)
    event_task = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({read_task, event_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (read_task, event_task):
            t.cancel()
        await asyncio.gather(read_task, event_task, return_exceptions=True)
    if read_task.done() and not read_task.cancelled():
        return read_task.result()
    return None


def _parse_head(data: bytes) -> _Head:
    """Parse a request head.

    Raises:
        ValueError: malformed request line or header line (names the line).
    """
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"malformed request line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"malformed header line {line!r}")
        headers.append((name, value.strip()))
    return _Head(parts[0], parts[1], parts[2], tuple(headers))


async def _read_body(conn: _Conn, head: _Head, fault: Fault) -> bytes:
    """Read the request body (all of it, or only ``read`` bytes under ``early-413``)."""
    expect = (head.header("expect") or "").lower() == "100-continue"
    length = int(head.header("content-length") or 0)
    chunked = "chunked" in (head.header("transfer-encoding") or "").lower()
    if fault.name == "early-413":
        if expect:
            return b""
        want = fault.integer("read", 0)
        return await conn.reader.readexactly(min(want, length) if not chunked else want)
    if expect and (length or chunked):
        await _send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        return (await _read_chunks(conn.reader))[0]
    return await conn.reader.readexactly(length)


def _check_open(conn: _Conn) -> None:
    """Raise ConnectionResetError if the client already went away.

    asyncio's transports drop a write after the connection was lost (``drain()`` then
    raises ConnectionResetError); uvloop's raise RuntimeError, which would be recorded as a
    server error. Checking first ends the connection the same way on both.
    """
    if conn.writer.transport.is_closing():
        raise ConnectionResetError(f"connection {conn.id}: the client closed it")


async def _send(conn: _Conn, data: bytes) -> None:
    _check_open(conn)
    conn.writer.write(data)
    await conn.writer.drain()


async def _drain_until_eof(conn: _Conn) -> None:
    while await conn.reader.read(65536):
        pass


def _abort_with_rst(conn: _Conn) -> None:
    """Close with SO_LINGER 0, so the kernel sends an RST instead of a FIN."""
    sock = conn.raw.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _abort(conn)


async def _wait_sent(conn: _Conn, timeout: float = 2.0) -> None:
    """Wait until the kernel's send queue is empty (all bytes acknowledged), bounded."""
    sock = conn.raw.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(timeout):
            while struct.unpack("i", ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]:
                await asyncio.sleep(0.001)  # the kernel offers no event for this


async def _close(conn: _Conn, graceful: bool) -> None:
    """Close the connection (FIN if graceful, else abort) and wait until its socket is."""
    transport = conn.writer.transport
    if graceful and not transport.is_closing():
        conn.writer.close()
        try:
            async with asyncio.timeout(5.0):
                await conn.writer.wait_closed()
        except (TimeoutError, ConnectionError, ssl_module.SSLError, OSError):
            pass
    _abort(conn)
    await asyncio.sleep(0)  # the transport closes its socket in a callback it just scheduled


def _abort(conn: _Conn) -> None:
    """Abort the connection's transport (over TLS, the TCP one under it too). Idempotent."""
    conn.writer.transport.abort()


# -- responses --------------------------------------------------------------------------


def _head_bytes(status_line: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [status_line, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _plain_response(status: int, reason: str, body: bytes) -> bytes:
    headers = [("Content-Length", str(len(body))), ("Connection", "close")]
    return _head_bytes(f"HTTP/1.1 {status} {reason}", headers) + body


def _id_body(rid: int, size: int = 0) -> bytes:
    return f"id={rid}".encode().ljust(size, b".")


def _response_head(
    conn: _Conn,
    rid: int,
    *,
    length: int | None,
    status: int = 200,
    chunked: bool = False,
    extra: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """Return a response head with the standard headers and the given framing."""
    headers = [("Content-Type", "text/plain")]
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif length is not None:
        headers.append(("Content-Length", str(length)))
    headers += [("X-Request-Id", str(rid)), ("X-Connection-Id", str(conn.id)), *extra]
    return _head_bytes(f"{version} {status} {_REASONS.get(status, 'Status')}", headers)


def _response(
    conn: _Conn,
    head: _Head,
    rid: int,
    body: bytes,
    *,
    status: int = 200,
    chunked: bool = False,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Return a whole response; the body is omitted for HEAD, split in two chunks if chunked."""
    start = _response_head(conn, rid, length=len(body), status=status, chunked=chunked, extra=extra)
    if head.method == "HEAD":
        return start
    if chunked:
        half = len(body) // 2
        pieces = [c for c in (body[:half], body[half:]) if c]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in pieces) + b"0\r\n\r\n"
    return start + body


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _validate_params(fault: Fault) -> None:
    """Convert every parameter once, so a typo fails at the request, naming the key."""
    for key, _ in fault.params:
        fault.number(key, 0)


# -- fault handlers: each returns True to keep serving the connection ---------------------

Handler = Callable[[FaultServer, _Conn, _Head, Fault, int], Awaitable[bool]]


async def _ok(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    close = head.wants_close()
    extra = [("Connection", "close")] if close else []
    if head.version == "HTTP/1.0" and not close:
        extra = [("Connection", "keep-alive")]
    body = _id_body(rid, fault.integer("size", 0))
    status, chunked = fault.integer("status", 200), bool(fault.integer("chunked", 0))
    await _send(conn, _response(conn, head, rid, body, status=status, chunked=chunked, extra=extra))
    return not close


async def _delay(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    await asyncio.sleep(fault.number("s", 1.0))  # the fault itself: answer late
    return await _ok(server, conn, head, fault, rid)


async def _stall(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    if fault.integer("read", 1) == 0:
        conn.raw.pause_reading()
        await asyncio.get_running_loop().create_future()  # until aclose() cancels us
    await _drain_until_eof(conn)
    return False


async def _reset(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    after = fault.integer("after", 0)
    if after:
        await _send(conn, _response(conn, head, rid, _id_body(rid))[:after])
        await _wait_sent(conn)
    _abort_with_rst(conn)
    return False


async def _half_close(
    server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int
) -> bool:
    _check_open(conn)
    conn.writer.write_eof()
    await _drain_until_eof(conn)
    return False


async def _trickle(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    body = _id_body(rid, fault.integer("size", 0)) if head.method != "HEAD" else b""
    await _send(conn, _response_head(conn, rid, length=len(body)))
    delay = fault.number("delay", 0.05)
    for i in range(len(body)):
        await asyncio.sleep(delay)  # the fault itself: a slow sender
        await _send(conn, body[i : i + 1])
    return not head.wants_close()


async def _close_after(
    server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int
) -> bool:
    await _ok(server, conn, head, fault, rid)
    return False


async def _close_idle(
    server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int
) -> bool:
    seconds = fault.number("s", 1.0)
    extra = [("Keep-Alive", f"timeout={seconds:g}")] if fault.integer("hint", 0) else []
    await _send(conn, _response(conn, head, rid, _id_body(rid), extra=extra))
    conn.idle_timeout = seconds
    return not head.wants_close()


async def _close_on_event(
    server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int
) -> bool:
    conn.idle_until_event = True
    return await _ok(server, conn, head, fault, rid)


async def _early_413(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    extra = [("Connection", "close")]
    await _send(conn, _response(conn, head, rid, _id_body(rid), status=413, extra=extra))
    linger = fault.number("linger", 0)
    if linger:
        _check_open(conn)
        conn.writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(linger):
                await _drain_until_eof(conn)
    return False


async def _truncate(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    length = fault.integer("length", 100)
    send = min(fault.integer("send", 10), length)
    body = _id_body(rid, length)[:send] if head.method != "HEAD" else b""
    await _send(conn, _response_head(conn, rid, length=length) + body)
    return False


async def _connection_close(
    server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int
) -> bool:
    extra = [("Connection", "close")]
    await _send(conn, _response(conn, head, rid, _id_body(rid), extra=extra))
    return False


async def _http10(server: FaultServer, conn: _Conn, head: _Head, fault: Fault, rid: int) -> bool:
    nolength = bool(fault.integer("nolength", 0))
    keep = bool(fault.integer("keepalive", 0)) and not nolength
    body = _id_body(rid) if head.method != "HEAD" else b""
    extra = [("Connection", "keep-alive" if keep else "close")]
    start = _response_head(
        conn, rid, length=None if nolength else len(_id_body(rid)), extra=extra, version="HTTP/1.0"
    )
    await _send(conn, start + body)
    return keep


_HANDLERS: dict[str, Handler] = {
    "ok": _ok,
    "delay": _delay,
    "stall": _stall,
    "reset": _reset,
    "half-close": _half_close,
    "trickle": _trickle,
    "close-after": _close_after,
    "close-idle": _close_idle,
    "close-on-event": _close_on_event,
    "early-413": _early_413,
    "truncate": _truncate,
    "connection-close": _connection_close,
    "http10": _http10,
}


# -- client-side helpers for tests --------------------------------------------------------


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """Yield a port on ``host`` where connections are refused (RST to the SYN).

    A socket stays bound to it without listening for the duration, so no other process
    can take the port meanwhile.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


def format_request(
    method: str,
    target: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """Return the bytes of a simple HTTP/1.1 request with ``Host`` and, for a body,
    ``Content-Length`` (unless ``headers`` set a framing header themselves)."""
    names = {k.lower() for k, _ in headers}
    all_headers = [("Host", f"{host}:{port}"), *headers]
    if body and not names & {"content-length", "transfer-encoding"}:
        all_headers.append(("Content-Length", str(len(body))))
    return _head_bytes(f"{method} {target} HTTP/1.1", all_headers) + body


async def read_response(reader: asyncio.StreamReader, *, method: str = "GET") -> RawResponse:
    """Read one response: skip 1xx, then frame the body by chunked, length, or EOF.

    Raises:
        asyncio.IncompleteReadError: the connection ended early.
        ValueError: a malformed status line.
    """
    interim: list[int] = []
    while True:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status_text, reason = [*lines[0].split(" ", 2), ""][:3]
        if not status_text.isdigit():
            raise ValueError(f"malformed status line {lines[0]!r}")
        status = int(status_text)
        headers = tuple((k, v.strip()) for k, _, v in (x.partition(":") for x in lines[1:] if x))
        if status >= 200:
            break
        interim.append(status)
    te, cl = _find_header(headers, "transfer-encoding"), _find_header(headers, "content-length")
    sizes: list[int] = []
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif te and "chunked" in te.lower():
        body, sizes = await _read_chunks(reader)
    elif cl is not None:
        body = await reader.readexactly(int(cl))
    else:
        body = await reader.read()
    return RawResponse(version, status, reason, headers, body, tuple(sizes), tuple(interim))


async def _read_chunks(reader: asyncio.StreamReader) -> tuple[bytes, list[int]]:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts), [len(p) for p in parts]
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
