"""glasspool._http11.protocol: HTTP11Connection against byte-exact responses over sockets.

What the bytes mean is tested without sockets in test_framing.py; here, what the connection
does with them: sending, waiting, timeouts, the peer going away, flow control and the sinks
of ``receive_all``, and that the reader's verdicts reach the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from glasspool._connect import open_connection
from glasspool._exceptions import (
    IncompleteBody,
    PoolMisuse,
    ProtocolError,
    ReadError,
    ReadTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    WriteError,
    WriteTimeout,
)
from glasspool._http11 import (
    HIGH_WATER,
    SINK_SEGMENT,
    HTTP11Connection,
    ParserLimits,
    ReceiveBuffer,
    ResponseHead,
    buffers,
)
from glasspool._pool.key import PoolKey
from tests._http11.test_framing import CAPS, INVALID, SMALL
from tests.rawserver import Handler, RawServer, Reply, read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def request(method: str = "GET", extra: bytes = b"") -> bytes:
    """A request head as the models layer would serialise it."""
    return f"{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + extra + b"\r\n"


@contextlib.asynccontextmanager
async def connected(srv: RawServer, **limits: int) -> AsyncIterator[HTTP11Connection]:
    """An open connection to ``srv``, closed afterwards."""
    conn = await open_connection(
        srv.key(), ssl_context=None, connect_timeout=5, limits=ParserLimits(**limits)
    )
    try:
        yield conn
    finally:
        conn.close()


async def fetch(
    conn: HTTP11Connection,
    method: str = "GET",
    body: bytes | None = None,
    *,
    extra: bytes = b"",
    timeout: float = 5,
) -> tuple[ResponseHead, bytes]:
    """One whole exchange; returns the head and the joined body."""
    await conn.send_request(request(method, extra), body, chunked=False, write_timeout=timeout)
    head = await conn.receive_head(method=method, read_timeout=timeout)
    parts = []
    while chunk := await conn.receive_body(read_timeout=timeout):
        parts.append(chunk)
    return head, b"".join(parts)


async def fetch_one(
    replies: Sequence[bytes | Reply], method: str = "GET", **limits: int
) -> tuple[ResponseHead, bytes, bool]:
    """Serve ``replies``, make one request; return head, body and ``is_reusable()``."""
    async with RawServer(replies=replies) as srv, connected(srv, **limits) as conn:
        head, body = await fetch(conn, method)
        return head, body, conn.is_reusable()


# -- valid responses -------------------------------------------------------------------------


async def test_content_length_response_is_parsed_exactly() -> None:
    reply = b"HTTP/1.1 201 Created Here\r\nX-A: 1\r\nx-b:  two  \r\nContent-Length: 5\r\n\r\nhello"
    async with RawServer(replies=[reply]) as srv, connected(srv) as conn:
        head, body = await fetch(conn, "POST", b"data!", extra=b"Content-Length: 5\r\n")
        assert head == ResponseHead(
            201, "Created Here", "HTTP/1.1", [("X-A", "1"), ("x-b", "two"), ("Content-Length", "5")]
        )
        assert body == b"hello"
        assert conn.response_started and conn.is_reusable()
        assert conn.keepalive_hint_s is None
        assert srv.requests == [request("POST", b"Content-Length: 5\r\n") + b"data!"]


async def test_response_trickled_one_byte_at_a_time() -> None:
    replies = [
        CHUNKED + b"3;a=b\r\nabc\r\n0000A\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz",
    ]

    async def trickle(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_request(reader)
            for i in range(len(reply)):
                w.write(reply[i : i + 1])
                await w.drain()
        await reader.read()

    async with RawServer(trickle) as srv, connected(srv) as conn:
        assert (await fetch(conn))[1] == b"abc0123456789"
        head, body = await fetch(conn)
        assert (head.status, body, conn.is_reusable()) == (200, b"xyz", True)
        assert srv.connections == 1


async def test_read_to_close_body_ends_at_eof_and_is_not_reusable() -> None:
    head, body, reusable = await fetch_one([Reply(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", True)])
    assert (head.status, body, reusable) == (200, b"until the end", False)


async def test_head_request_has_no_body_and_the_connection_is_reused() -> None:
    replies = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", OK]
    async with RawServer(replies=replies) as srv, connected(srv) as conn:
        head, body = await fetch(conn, "HEAD")
        assert (head.status, body, conn.is_reusable()) == (200, b"", True)
        assert (await fetch(conn))[1] == b"hello"
        assert srv.connections == 1


async def test_two_sequential_requests_share_one_connection() -> None:
    async with RawServer(replies=[OK, CHUNKED + b"2\r\nhi\r\n0\r\n\r\n"]) as srv:
        async with connected(srv) as conn:
            assert (await fetch(conn))[1] == b"hello"
            assert conn.is_reusable()
            assert (await fetch(conn))[1] == b"hi"
            assert conn.is_reusable()
        assert srv.connections == 1
        assert srv.requests == [request(), request()]
        assert srv.received == [bytearray(request() * 2)]


async def test_keep_alive_timeout_hint_reaches_the_pool_attribute() -> None:
    reply = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(replies=[reply, OK]) as srv, connected(srv) as conn:
        assert conn.keepalive_hint_s is None
        await fetch(conn)
        assert conn.keepalive_hint_s == 5.0
        await fetch(conn)  # no Keep-Alive field: the last hint stands
        assert conn.keepalive_hint_s == 5.0


async def test_bytes_after_the_response_make_it_not_reusable() -> None:
    async with RawServer(replies=[OK + b"HTTP/1.1 200 OK\r\n"]) as srv, connected(srv) as conn:
        assert (await fetch(conn))[1] == b"hello"
        assert not conn.is_reusable()
        with pytest.raises(ServerDisconnected, match="sent bytes after its last response"):
            await conn.send_request(request(), None, chunked=False, write_timeout=1)


async def test_unsolicited_bytes_on_an_idle_connection_close_it() -> None:
    done = asyncio.Event()
    lost = asyncio.Event()

    async def late_408(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(OK)
        await done.wait()
        w.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        await reader.read()

    async with RawServer(late_408) as srv, connected(srv) as conn:
        conn.on_lost = lost.set
        await fetch(conn)
        done.set()
        await asyncio.wait_for(lost.wait(), 5)
        assert conn.is_closed() and not conn.is_reusable()


async def test_on_lost_is_called_once() -> None:
    calls: list[int] = []
    lost = asyncio.Event()
    async with RawServer(replies=[Reply(OK, close=True)]) as srv, connected(srv) as conn:

        def on_lost() -> None:
            calls.append(1)
            lost.set()

        conn.on_lost = on_lost
        await fetch(conn)
        await asyncio.wait_for(lost.wait(), 5)
        conn.close()
        conn.close()
        assert calls == [1] and conn.is_closed()


# -- rejected responses ----------------------------------------------------------------------

# The reader's verdicts reach the caller, and the connection is spent (every case, and the
# state each error names: test_framing.py).
REJECTED = {"status 600", "TE gzip", "chunk size not hex", "trailer bare LF", "chunk ext invalid"}
TOO_LARGE = {"header bytes, no end yet", "1xx line", "trailer count", "chunk extension"}


@pytest.mark.parametrize(
    ("reply", "message", "state"),
    [c[1:] for c in INVALID if c[0] in REJECTED],
    ids=[c[0] for c in INVALID if c[0] in REJECTED],
)
async def test_invalid_responses_raise_protocol_error(
    reply: bytes, message: str, state: str
) -> None:
    async with RawServer(replies=[reply]) as srv, connected(srv) as conn:
        with pytest.raises(ProtocolError, match=message) as info:
            await fetch(conn)
        assert str(info.value).endswith(f"(in {state})")
        assert srv.host in str(info.value) or "chunk" in str(info.value)
        assert not conn.is_reusable()


@pytest.mark.parametrize(
    ("reply", "message", "state"),
    [c[1:] for c in CAPS if c[0] in TOO_LARGE],
    ids=[c[0] for c in CAPS if c[0] in TOO_LARGE],
)
async def test_size_caps_raise_response_too_large(reply: bytes, message: str, state: str) -> None:
    limits = {
        "max_line_bytes": SMALL.max_line_bytes,
        "max_header_bytes": SMALL.max_header_bytes,
        "max_headers": SMALL.max_headers,
        "max_chunk_ext_bytes": SMALL.max_chunk_ext_bytes,
    }
    async with RawServer(replies=[reply]) as srv, connected(srv, **limits) as conn:
        with pytest.raises(ResponseTooLarge, match=message) as info:
            await fetch(conn)
        assert str(info.value).endswith(f"(in {state})")
        assert not conn.is_reusable()


async def test_body_bytes_before_an_error_are_returned_first() -> None:
    reply = CHUNKED + b"5\r\nhello\r\nzz\r\n"
    async with RawServer(replies=[reply]) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        assert await conn.receive_body(read_timeout=5) == b"hello"
        with pytest.raises(ProtocolError, match="bad chunk size b'zz'"):
            await conn.receive_body(read_timeout=5)


# -- the peer going away, timeouts -------------------------------------------------------------


def closing_after(data: bytes, *, reset: bool = False) -> Handler:
    """A handler that reads one request, sends ``data`` and closes (or resets)."""

    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(data)
        await w.drain()
        if reset:
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort() if reset else w.close()

    return handler


async def test_close_before_any_response_byte_is_server_disconnected() -> None:
    async with RawServer(closing_after(b"")) as srv, connected(srv) as conn:
        with pytest.raises(ServerDisconnected, match="before any response") as info:
            await fetch(conn)
        assert srv.host in str(info.value)
        assert not conn.response_started and not conn.is_reusable()


async def test_reset_before_any_response_byte_is_server_disconnected() -> None:
    async with RawServer(closing_after(b"", reset=True)) as srv, connected(srv) as conn:
        with pytest.raises(ServerDisconnected, match="before any response") as info:
            await fetch(conn)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert not conn.response_started


async def test_close_mid_head_is_server_disconnected_after_response_started() -> None:
    async with (
        RawServer(closing_after(b"HTTP/1.1 200 OK\r\nContent-")) as srv,
        connected(srv) as conn,
    ):
        with pytest.raises(ServerDisconnected, match="after 25 bytes of the response head"):
            await fetch(conn)
        assert conn.response_started


async def test_close_mid_body_is_incomplete_body_with_counts() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with RawServer(closing_after(reply)) as srv, connected(srv) as conn:
        with pytest.raises(IncompleteBody, match="after 3 of 10 body bytes") as info:
            await fetch(conn)
        assert (info.value.expected, info.value.received) == (10, 3)


async def test_close_mid_chunked_body_is_incomplete_body_without_expected() -> None:
    reply = CHUNKED + b"4\r\nabcd\r\n6\r\nef"
    async with RawServer(closing_after(reply)) as srv, connected(srv) as conn:
        with pytest.raises(IncompleteBody, match="after 6 body bytes of a chunked body") as info:
            await fetch(conn)
        assert (info.value.expected, info.value.received) == (None, 6)


async def test_reset_mid_body_is_read_error_chained_to_the_os_error() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with RawServer(closing_after(reply, reset=True)) as srv, connected(srv) as conn:
        with pytest.raises(ReadError, match="failed after 3 bytes") as info:
            await fetch(conn)
        assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_stale_connection_raises_server_disconnected_on_send() -> None:
    lost = asyncio.Event()
    async with RawServer(replies=[Reply(OK, close=True)]) as srv, connected(srv) as conn:
        conn.on_lost = lost.set
        await fetch(conn)
        await asyncio.wait_for(lost.wait(), 5)
        with pytest.raises(ServerDisconnected, match="before the request"):
            await conn.send_request(request(), None, chunked=False, write_timeout=1)
        assert not conn.response_started


async def silent(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Read one request, send a head and part of a body if asked, then say nothing."""
    await read_request(reader)
    await reader.read()


async def test_read_timeout_waiting_for_the_head_names_origin_and_seconds() -> None:
    async with RawServer(silent) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=1)
        with pytest.raises(ReadTimeout) as info:
            await conn.receive_head(method="GET", read_timeout=0.05)
        assert str(info.value) == (
            f"timed out waiting for the response head: no data from {srv.key().origin} "
            "for 0.05s (read timeout)"
        )
        assert not conn.is_reusable()


async def test_read_timeout_waiting_for_the_body() -> None:
    async def partial(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()

    async with RawServer(partial) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=1)
        await conn.receive_head(method="GET", read_timeout=1)
        assert await conn.receive_body(read_timeout=1) == b"abc"
        with pytest.raises(ReadTimeout, match=r"response body: no data from .* for 0\.05s"):
            await conn.receive_body(read_timeout=0.05)


async def test_close_while_a_reader_waits_raises_read_error() -> None:
    async with RawServer(silent) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=1)
        waiting = asyncio.create_task(conn.receive_head(method="GET", read_timeout=5))
        await asyncio.sleep(0)  # one loop turn: the reader parks on its future
        conn.close()
        with pytest.raises(ReadError, match="closed locally"):
            await waiting
        assert conn.is_closed()


async def test_misuse_is_reported() -> None:
    async with RawServer(silent) as srv, connected(srv) as conn:
        with pytest.raises(PoolMisuse, match="without send_request"):
            await conn.receive_head(method="GET", read_timeout=1)
        await conn.send_request(request(), None, chunked=False, write_timeout=1)
        with pytest.raises(PoolMisuse, match="does not match"):
            await conn.receive_head(method="HEAD", read_timeout=1)
        with pytest.raises(PoolMisuse, match="before receive_head"):
            await conn.receive_body(read_timeout=1)
        with pytest.raises(PoolMisuse, match="previous response is unfinished"):
            await conn.send_request(request(), None, chunked=False, write_timeout=1)


# -- uploads -------------------------------------------------------------------------------


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_chunked_upload_from_an_async_iterable_is_framed_exactly() -> None:
    head = request("POST", b"Transfer-Encoding: chunked\r\n")
    async with RawServer(replies=[OK]) as srv, connected(srv) as conn:
        body = chunks(b"hello", b"", b" ", b"w" * 300)
        await conn.send_request(head, body, chunked=True, write_timeout=5)
        assert (await conn.receive_head(method="POST", read_timeout=5)).status == 200
        assert srv.requests == [
            head + b"5\r\nhello\r\n1\r\n \r\n12c\r\n" + b"w" * 300 + b"\r\n0\r\n\r\n"
        ]


@pytest.mark.parametrize("size", [0, 10, 200_000])
async def test_bytes_upload_chunked_and_with_content_length(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    chunked_head = request("POST", b"Transfer-Encoding: chunked\r\n")
    length_head = request("POST", f"Content-Length: {size}\r\n".encode())
    framed = (b"%x\r\n" % size + data + b"\r\n" if size else b"") + b"0\r\n\r\n"
    async with RawServer(replies=[OK, OK]) as srv, connected(srv) as conn:
        await conn.send_request(chunked_head, data, chunked=True, write_timeout=5)
        await conn.receive_head(method="POST", read_timeout=5)
        assert await conn.receive_body(read_timeout=5) == b"hello"
        assert await conn.receive_body(read_timeout=5) == b""
        await conn.send_request(length_head, data, chunked=False, write_timeout=5)
        await conn.receive_head(method="POST", read_timeout=5)
        assert srv.requests == [chunked_head + framed, length_head + data]


def endless_upload(counter: list[int], limit: int = 256) -> AsyncIterator[bytes]:
    """Up to ``limit`` MiB of upload; ``counter[0]`` counts the chunks taken."""

    async def gen() -> AsyncIterator[bytes]:
        chunk = b"u" * (1 << 20)
        for _ in range(limit):
            counter[0] += 1
            yield chunk

    return gen()


async def test_early_error_response_stops_the_upload_and_stays_readable() -> None:
    reply = (
        b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!"
    )

    async def refuse(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        w.write(reply)
        await w.drain()
        await reader.read()

    taken = [0]
    async with RawServer(refuse) as srv, connected(srv) as conn:
        head = request("POST", b"Transfer-Encoding: chunked\r\n")
        await conn.send_request(head, endless_upload(taken), chunked=True, write_timeout=5)
        got, body = await receive_all(conn, "POST")
        assert (got.status, body) == (413, b"too big!")
        assert taken[0] < 256 and not conn.is_reusable()


async def test_write_error_after_a_response_arrived_does_not_hide_it() -> None:
    """The server answers (keep-alive, so the upload goes on), then resets the connection."""

    async def answer_then_reset(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        w.write(OK)
        await w.drain()
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    taken = [0]
    async with RawServer(answer_then_reset) as srv, connected(srv) as conn:
        head = request("POST", b"Transfer-Encoding: chunked\r\n")
        await conn.send_request(head, endless_upload(taken), chunked=True, write_timeout=5)
        got, body = await receive_all(conn, "POST")
        assert (got.status, body) == (200, b"hello")
        assert conn.response_started and taken[0] < 256 and not conn.is_reusable()


async def test_write_error_before_any_response_is_raised() -> None:
    async def reset(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    taken = [0]
    async with RawServer(reset) as srv, connected(srv) as conn:
        head = request("POST", b"Transfer-Encoding: chunked\r\n")
        with pytest.raises(WriteError, match=r"sending the request to .* failed") as info:
            await conn.send_request(head, endless_upload(taken), chunked=True, write_timeout=5)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert not conn.response_started and taken[0] < 256


async def test_write_timeout_when_the_server_stops_reading() -> None:
    taken = [0]
    async with RawServer(silent_after_head) as srv, connected(srv) as conn:
        head = request("POST", b"Transfer-Encoding: chunked\r\n")
        with pytest.raises(WriteTimeout) as info:
            await conn.send_request(
                head, endless_upload(taken, 128), chunked=True, write_timeout=0.1
            )
        assert str(info.value) == (
            f"sending the request to {srv.key().origin} stalled: the socket accepted no bytes "
            "for 0.1s (write timeout)"
        )
        assert taken[0] < 128 and not conn.is_reusable()


async def silent_after_head(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Read a request head, then nothing more."""
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.Event().wait()


async def receive_all(conn: HTTP11Connection, method: str) -> tuple[ResponseHead, bytes]:
    head = await conn.receive_head(method=method, read_timeout=5)
    parts = []
    while chunk := await conn.receive_body(read_timeout=5):
        parts.append(chunk)
    return head, b"".join(parts)


# -- flow control --------------------------------------------------------------------------


def sending_blocks(block: bytes, count: int) -> Handler:
    """A handler that answers one request with ``count`` copies of ``block``, paced by drain."""

    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (count * len(block)))
        for _ in range(count):
            w.write(block)
            await w.drain()
        await reader.read()

    return handler


BIG = 20 << 20
READ_MAX = 256 << 10  # the most one socket read delivers (asyncio's selector transports)


async def test_slow_consumer_keeps_buffered_body_under_the_high_water_mark() -> None:
    block = bytes(range(256)) * 4096  # 1 MiB

    async with RawServer(sending_blocks(block, BIG // len(block))) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        total, peak, paused = 0, 0, 0
        while chunk := await conn.receive_body(read_timeout=5):
            assert (chunk[0], chunk[-1]) == (total % 256, (total + len(chunk) - 1) % 256)
            total += len(chunk)
            for _ in range(4):  # a slow consumer: the loop runs between our reads
                await asyncio.sleep(0)
                peak = max(peak, conn.buffered_body_bytes)
                paused += conn.reading_paused
        assert total == BIG
        assert paused > 0, "the high-water mark was never reached"
        assert peak <= HIGH_WATER + READ_MAX
        assert conn.is_reusable() and not conn.reading_paused


# -- receive_all: a Content-Length body read straight into its own buffer ----------------------


def pattern(size: int, start: int = 0) -> bytes:
    """``size`` bytes counting up mod 251, so a misplaced or lost piece changes the body."""
    block = bytes(i % 251 for i in range(251))
    reps = (start % 251 + size) // 251 + 1
    return (block * reps)[start % 251 : start % 251 + size]


def gated(head: bytes, pieces: Sequence[bytes], gates: Sequence[asyncio.Event]) -> Handler:
    """Send ``head`` + ``pieces[0]``, then each next piece once its gate is set."""

    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(head + pieces[0])
        await w.drain()
        for piece, gate in zip(pieces[1:], gates, strict=True):
            await gate.wait()
            w.write(piece)
            await w.drain()
        await reader.read()

    return handler


@pytest.mark.parametrize(
    "size",
    [SINK_SEGMENT - 1000, 3 * SINK_SEGMENT + 12345],
    ids=["one-buffer", "segments"],  # the whole body in one buffer; or several, the last short
)
async def test_receive_all_reads_the_rest_into_one_buffer_of_exactly_the_bytes_due(
    size: int,
) -> None:
    body = pattern(size)
    gate = asyncio.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    shared = ReceiveBuffer()
    async with RawServer(gated(head, [body[:100_000], body[100_000:]], [gate])) as srv:
        conn = await open_connection(
            srv.key(), ssl_context=None, connect_timeout=5, recv_buffer=shared
        )
        try:
            await conn.send_request(request(), None, chunked=False, write_timeout=5)
            await conn.receive_head(method="GET", read_timeout=5)
            queued = conn.buffered_body_bytes  # what came with the head, read as usual
            task = asyncio.create_task(conn.receive_all(read_timeout=5))
            await asyncio.sleep(0)  # one loop turn: the reader opens its buffer and parks
            # The transport now reads into the body's own buffer, never past its end.
            assert len(conn.get_buffer(-1)) == min(SINK_SEGMENT, len(body) - queued)
            assert conn.buffered_body_bytes == 0  # what was queued moved there too
            gate.set()
            got = await task
            assert type(got) is bytes and len(got) == len(body)
            assert got == body
            assert conn.is_reusable()
            assert conn.get_buffer(-1) is shared.view  # the next head: the shared buffer
        finally:
            conn.close()


async def test_receive_all_close_mid_body_is_incomplete_body_with_counts() -> None:
    body = pattern(50_000)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + body
    async with RawServer(closing_after(reply)) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        with pytest.raises(IncompleteBody, match="after 50000 of 200000 body bytes") as info:
            await conn.receive_all(read_timeout=5)
        assert (info.value.expected, info.value.received) == (200_000, 50_000)
        assert not conn.is_reusable()


async def test_receive_all_reset_mid_body_is_read_error() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + pattern(30_000)
    async with RawServer(closing_after(reply, reset=True)) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        with pytest.raises(ReadError, match="failed after 30000 bytes") as info:
            await conn.receive_all(read_timeout=5)
        assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_a_failed_read_lets_go_of_the_body_buffer_without_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transport's error holds, in its traceback, the frame that read into a slice of
    the body buffer. Kept as the cause of the ReadError, it kept the buffer exported until
    the garbage collector broke the cycle, where finalizing a BytesIO with a live export
    crashed CPython 3.12. The connection drops that traceback, so the buffer goes at once."""
    alive: list[weakref.ref[Any]] = []

    class Tracked(buffers._SinkBuffer):
        __slots__ = ()

        def __init__(self, initial: bytes) -> None:
            super().__init__(initial)
            alive.append(weakref.ref(self))

    monkeypatch.setattr(buffers, "_SinkBuffer", Tracked)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + pattern(30_000)
    gc.disable()
    try:
        async with RawServer(closing_after(reply, reset=True)) as srv, connected(srv) as conn:
            await conn.send_request(request(), None, chunked=False, write_timeout=5)
            await conn.receive_head(method="GET", read_timeout=5)
            with pytest.raises(ReadError) as info:
                await conn.receive_all(read_timeout=5)
            assert alive, "the body was not read into a sink buffer"
            assert isinstance(info.value.__cause__, ConnectionResetError)
            assert [ref() for ref in alive] == [None]
    finally:
        gc.enable()


async def test_receive_all_read_timeout_when_the_body_stalls() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    never = asyncio.Event()
    handler = gated(head, [pattern(20_000), b"x"], [never])
    async with RawServer(handler) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        with pytest.raises(ReadTimeout, match=r"response body: no data from .* for 0\.05s"):
            await conn.receive_all(read_timeout=0.05)
        assert not conn.is_reusable()


async def test_receive_all_read_timeout_bounds_each_read_not_the_whole_body() -> None:
    # Time is what is under test: 7 pieces 0.2 s apart take longer than the 1 s read
    # timeout in all, but no single wait does, so the body must arrive whole.
    body = pattern(7 * 20_000)
    pieces = [body[i : i + 20_000] for i in range(0, len(body), 20_000)]

    async def trickle(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in pieces:
            w.write(piece)
            await w.drain()
            await asyncio.sleep(0.2)
        await reader.read()

    async with RawServer(trickle) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        started = asyncio.get_running_loop().time()
        assert await conn.receive_all(read_timeout=1.0) == body
        assert asyncio.get_running_loop().time() - started > 1.0


async def test_receive_all_local_close_while_waiting_raises_read_error() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    handler = gated(head, [pattern(10_000), b"x"], [asyncio.Event()])
    async with RawServer(handler) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        task = asyncio.create_task(conn.receive_all(read_timeout=5))
        await asyncio.sleep(0)  # one loop turn: the reader parks
        conn.close()
        with pytest.raises(ReadError, match="closed locally"):
            await task
        assert conn.is_closed() and not conn.is_reusable()


async def test_receive_all_after_reading_was_paused_resumes_it() -> None:
    block = pattern(1 << 20)

    async with RawServer(sending_blocks(block, 8)) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        first = await conn.receive_body(read_timeout=5)
        for _ in range(10_000):  # the loop reads on while we do not: until it pauses
            if conn.reading_paused:
                break
            await asyncio.sleep(0)
        assert conn.reading_paused, "the high-water mark was never reached"
        rest = await conn.receive_all(read_timeout=5)
        assert first + rest == block * 8
        assert conn.is_reusable() and not conn.reading_paused


async def test_receive_all_of_chunked_and_small_bodies_joins_the_pieces() -> None:
    reply = CHUNKED + b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    async with RawServer(replies=[reply, OK]) as srv, connected(srv) as conn:
        for expected in (b"abcdefg", b"hello"):
            await conn.send_request(request(), None, chunked=False, write_timeout=5)
            await conn.receive_head(method="GET", read_timeout=5)
            assert await conn.receive_all(read_timeout=5) == expected
            assert conn.is_reusable()


class _Transport(asyncio.Transport):
    """Just enough transport for a protocol fed by hand through ``data_received``."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.mark.parametrize("size", [SINK_SEGMENT, SINK_SEGMENT + 70_000])
async def test_receive_all_with_bytes_given_to_data_received(size: int) -> None:
    # Transports that are not buffered call data_received; a body arriving that way
    # while the reader's buffer is open is copied into it, across segment boundaries.
    conn = HTTP11Connection(PoolKey("http", "example.test", 80))
    conn.connection_made(_Transport())
    body = pattern(size)
    await conn.send_request(request(), None, chunked=False, write_timeout=5)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:9])
    await conn.receive_head(method="GET", read_timeout=5)
    task = asyncio.create_task(conn.receive_all(read_timeout=5))
    await asyncio.sleep(0)  # one loop turn: the reader opens its buffer and parks
    for start in range(9, len(body), 300_001):
        conn.data_received(body[start : start + 300_001])
    assert await task == body
    assert conn.is_reusable()


class _ReadingTransport(_Transport):
    """A hand-fed transport that remembers whether the protocol wants it to read."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@pytest.mark.parametrize("read", ["receive_all", "receive_body"])
async def test_a_whole_body_past_the_high_water_mark_in_one_read_leaves_reading_on(
    read: str,
) -> None:
    # One read can bring the end of a body and push the queue past the high-water mark
    # (uvloop reads whatever the socket holds). Handing the body out must turn reading back
    # on, or the next response on the connection is never read.
    conn = HTTP11Connection(PoolKey("http", "example.test", 80))
    transport = _ReadingTransport()
    conn.connection_made(transport)
    body = pattern(HIGH_WATER + 1000)
    await conn.send_request(request(), None, chunked=False, write_timeout=5)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await conn.receive_head(method="GET", read_timeout=5)
    assert conn.reading_paused and not transport.reading
    if read == "receive_all":
        got = await conn.receive_all(read_timeout=5)
    else:
        got = b"".join([chunk async for chunk in _pieces(conn)])
    assert got == body
    assert transport.reading and not conn.reading_paused and conn.is_reusable()


async def _pieces(conn: HTTP11Connection) -> AsyncIterator[bytes]:
    while chunk := await conn.receive_body(read_timeout=5):
        yield chunk


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
async def test_a_body_cut_off_in_receive_all_leaves_nothing_the_collector_reports(
    reset: bool,
) -> None:
    # The body's buffer is a BytesIO written through its getbuffer() view. Python 3.13
    # reports (as unraisable, an error here) a BytesIO finalized while a view of it is
    # alive; after a reset the transport's slice of it lives on in the error's traceback.
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + pattern(30_000)
    async with RawServer(closing_after(reply, reset=reset)) as srv, connected(srv) as conn:
        await conn.send_request(request(), None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        with pytest.raises((IncompleteBody, ReadError)):
            await conn.receive_all(read_timeout=5)
    del conn
    gc.collect()


class _LateWhen:
    """A timer handle whose ``when()`` is later than the time it was armed for."""

    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self.handle = handle

    def when(self) -> float:
        return self.handle.when() + 0.25  # uvloop: up to half a millisecond; here, plenty

    def cancel(self) -> None:
        self.handle.cancel()


async def test_a_timer_whose_when_is_late_still_serves_the_next_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvloop's TimerHandle.when() counts whole milliseconds: for a deadline computed in the
    # same millisecond it can be a little later than the time asked for. The lazy read
    # timer must still be reused, not armed anew for every read.
    loop = asyncio.get_running_loop()
    real_call_at = loop.call_at
    armed: list[_LateWhen] = []

    def call_at(when: float, callback: Any, *args: Any, context: Any = None) -> _LateWhen:
        armed.append(_LateWhen(real_call_at(when, callback, *args, context=context)))
        return armed[-1]

    monkeypatch.setattr(loop, "call_at", call_at)
    conn = HTTP11Connection(PoolKey("http", "example.test", 80))
    conn.connection_made(_Transport())
    try:
        for _ in range(5):
            await conn.send_request(request(), None, chunked=False, write_timeout=5)
            waiting = asyncio.ensure_future(conn.receive_head(method="GET", read_timeout=30))
            await asyncio.sleep(0)  # the reader parks (and arms or reuses the timer)
            conn.data_received(OK)
            assert (await waiting).status == 200
            assert await conn.receive_body(read_timeout=30) == b"hello"
            assert await conn.receive_body(read_timeout=30) == b""
        assert len(armed) == 1
    finally:
        conn.close()
