"""Resource caps, end to end: a hostile server cannot make the Client use unbounded memory or CPU.

Issue 6, item 5. Each cap is hit through ``glasspool.Client`` against a :class:`RawServer`
and must raise an error naming the cap; afterwards the pool is at rest and the connection
that carried the oversized response is closed, never pooled. Unterminated heads are sent
without closing the connection: the cap must fire on the bytes already received, not after
a read timeout. Decompression bombs are built once per session from compressible zeros.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import brotli
import pytest
import zstandard

from glasspool import (
    Client,
    GlasspoolError,
    PoolEvent,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    Timeout,
    TotalTimeout,
)
from tests.hostile_bodies import random_prefix_bomb, slow_empty_body, triple_gzip
from tests.rawserver import RawServer, read_request

H11 = b"HTTP/1.1 200 OK\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TIMEOUT = Timeout(5, total=20)
BOMB_SIZE = 16 << 20  # decoded size of every bomb below


def at_rest(client: Client) -> None:
    """Assert that no connection is in use, connecting, or waited for."""
    stats = client.pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats


def reasons(events: list[PoolEvent], kind: str) -> list[str | None]:
    """The reasons of the events of one kind, in order."""
    return [e.reason for e in events if e.kind == kind]


def header(name: str, size: int) -> bytes:
    """One header line whose value is ``size`` bytes of ``a``."""
    return name.encode() + b": " + b"a" * size + b"\r\n"


def headers(count: int) -> bytes:
    """``count`` short distinct header lines."""
    return b"".join(b"X-%d: v\r\n" % i for i in range(count))


def with_body(body: bytes, coding: str) -> bytes:
    """A 200 response carrying ``body`` with the given Content-Encoding."""
    return (
        H11 + f"Content-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )


@functools.cache
def gzip_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes, compressed 1 MiB at a time."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    step = min(size, 1 << 20)
    parts = [comp.compress(bytes(step)) for _ in range(size // step)]
    return b"".join([*parts, comp.flush()])


@functools.cache
def bombs() -> dict[str, tuple[str, bytes]]:
    """Small bodies that decode to :data:`BOMB_SIZE` bytes: {id: (Content-Encoding, body)}."""
    zeros = bytes(BOMB_SIZE)
    return {
        "gzip, gzip": ("gzip, gzip", gzip.compress(gzip_zeros(BOMB_SIZE))),
        "br": ("br", brotli.compress(zeros, quality=5)),
        "zstd": ("zstd", zstandard.ZstdCompressor().compress(zeros)),
        "deflate": ("deflate", zlib.compress(zeros, 9)),
    }


async def fail_once(
    reply: bytes,
    error: type[GlasspoolError],
    message: str,
    *,
    client: Client | None = None,
) -> str:
    """GET a valid response, then ``reply`` on the same connection, then a valid one again.

    Asserts ``reply`` raises ``error`` matching ``message``, the pool is at rest with the
    offending connection closed, and the last request is served on a new connection.

    Returns:
        The error message.
    """
    events: list[PoolEvent] = []
    client = client or Client()
    async with RawServer(replies=[OK, reply, OK]) as srv, client:
        client.pool.add_listener(events.append)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url, timeout=TIMEOUT)).content == b"ok"
        with pytest.raises(error, match=message) as info:
            await client.get(url, timeout=TIMEOUT)
        assert type(info.value) is error
        at_rest(client)
        assert client.pool.stats().open == 0
        assert (await client.get(url, timeout=TIMEOUT)).content == b"ok"
        assert srv.connections == 2
        assert reasons(events, "acquired") == ["new", "reused", "new"]
        assert reasons(events, "released") == ["eof", "error", "eof"]
    return str(info.value)


# ---------------------------------------------------------------------------- heads


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (H11 + header("X-Long", 8200) + b"\r\n", "max_line_bytes=8192"),
        (b"HTTP/1.1 200 " + b"R" * 8200 + b"\r\n\r\n", "max_line_bytes=8192"),
        (H11 + header("X-Long", 8200), "max_line_bytes=8192"),  # no end of head yet
        (H11 + b"X-Long: " + b"a" * 9000, "max_line_bytes=8192"),  # no end of line yet
        (H11 + header("X-A", 8000) * 9 + b"\r\n", "max_header_bytes=65536"),
        (H11 + header("X-A", 8000) * 9, "max_header_bytes=65536"),  # no end of head yet
        (H11 + headers(101) + b"\r\n", "101 header lines, more than max_headers=100"),
    ],
    ids=[
        "line",
        "status line",
        "line, open head",
        "line, open line",
        "bytes",
        "bytes, open",
        "count",
    ],
)
async def test_default_head_caps(reply: bytes, message: str) -> None:
    text = await fail_once(reply, ResponseTooLarge, message)
    assert "127.0.0.1" in text


async def test_max_header_bytes_and_max_headers_are_client_options() -> None:
    await fail_once(
        H11 + header("X-A", 300) * 4 + b"\r\n",
        ResponseTooLarge,
        "max_header_bytes=1024",
        client=Client(max_header_bytes=1024, max_headers=10),
    )
    await fail_once(
        H11 + headers(11) + b"\r\n",
        ResponseTooLarge,
        "11 header lines, more than max_headers=10",
        client=Client(max_header_bytes=1024, max_headers=10),
    )


BIG_1XX = b"HTTP/1.1 100 Continue\r\n" + header("X-A", 6000) + b"\r\n"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (CONTINUE * 700 + OK, "max_header_bytes=16384"),
        (BIG_1XX * 2 + H11 + header("X-B", 6000) + b"Content-Length: 0\r\n\r\n", "16384"),
        (b"HTTP/1.1 103 Early Hints\r\n" + headers(33) + b"\r\n" + OK, "max_headers=32"),
        (b"HTTP/1.1 103 Early Hints\r\n" + header("Link", 8200) + b"\r\n" + OK, "max_line_bytes"),
        (CONTINUE * 1000, "max_header_bytes=16384"),  # 1xx heads and no final response
    ],
    ids=["many 100", "100s then final", "1xx count", "1xx line", "only 100s"],
)
async def test_interim_responses_count_against_the_head_caps(reply: bytes, message: str) -> None:
    client = Client(max_header_bytes=16384, max_headers=32)
    await fail_once(reply, ResponseTooLarge, message, client=client)


async def test_interim_responses_within_the_caps_are_skipped() -> None:
    reply = CONTINUE * 20 + OK
    async with RawServer(replies=[reply]) as srv, Client(max_header_bytes=4096) as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/", timeout=TIMEOUT)
        assert (r.status, r.content) == (200, b"ok")
        at_rest(client)


# -------------------------------------------------------------------------- chunked


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (TE + b"0\r\n" + header("T", 8200) + b"\r\n", "trailer line longer than max_line_bytes"),
        (TE + b"0\r\n" + headers(101) + b"\r\n", "more than max_headers=100 trailer lines"),
        (TE + b"0\r\n" + header("T", 8000) * 9 + b"\r\n", "trailer section larger than"),
        (TE + b"0\r\n" + header("T", 8000) * 9, "max_header_bytes=65536"),  # open
        (TE + b"2;" + b"e" * 4096 + b"\r\nok\r\n0\r\n\r\n", "extension of 4097 bytes"),
        (TE + b"2;" + b"e" * 5000, "max_chunk_ext_bytes=4096"),  # size line never ends
        (TE + b"2;e\r\nok\r\n" * 10 + b"2;" + b"e" * 4100 + b"\r\nok\r\n0\r\n\r\n", "4096"),
    ],
    ids=[
        "trailer line",
        "trailer count",
        "trailer bytes",
        "trailer bytes, open",
        "chunk extension",
        "size line, open",
        "extension after chunks",
    ],
)
async def test_chunked_caps(reply: bytes, message: str) -> None:
    await fail_once(reply, ResponseTooLarge, message)


async def test_extensions_and_trailers_within_the_caps_are_fine() -> None:
    reply = TE + b"2;name=" + b"v" * 4000 + b"\r\nok\r\n0\r\n" + headers(100) + b"\r\n"
    async with RawServer(replies=[reply, OK]) as srv, Client() as client:
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url, timeout=TIMEOUT)).content == b"ok"
        assert (await client.get(url, timeout=TIMEOUT)).content == b"ok"
        assert srv.connections == 1


# ------------------------------------------------------------------------- encodings


async def test_more_than_five_codings_are_refused() -> None:
    body = b"hi"
    for _ in range(6):
        body = gzip.compress(body)
    reply = with_body(body, ", ".join(["gzip"] * 6))
    await fail_once(reply, ResponseTooLarge, "6 codings; at most 5")


async def test_five_codings_are_decoded() -> None:
    body = b"hi"
    for _ in range(5):
        body = gzip.compress(body)
    reply = with_body(body, "gzip, gzip, gzip, gzip, gzip")
    async with RawServer(replies=[reply]) as srv, Client() as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/", timeout=TIMEOUT)
        assert r.content == b"hi"
        at_rest(client)


async def test_unknown_coding_is_refused() -> None:
    await fail_once(with_body(b"hi", "compress"), ProtocolError, "unsupported Content-Encoding")


@pytest.mark.parametrize("bomb", ["gzip, gzip", "br", "zstd", "deflate"])
async def test_max_decompressed_size(bomb: str) -> None:
    coding, body = bombs()[bomb]
    client = Client(max_decompressed_size=100_000)
    text = await fail_once(
        with_body(body, coding), ResponseTooLarge, "max_decompressed_size=100000", client=client
    )
    assert coding in text


@pytest.mark.parametrize("bomb", ["gzip, gzip", "br", "zstd"])
async def test_the_ratio_guard_stops_a_bomb_without_a_size_cap(bomb: str) -> None:
    coding, body = bombs()[bomb]
    assert len(body) * 1000 < BOMB_SIZE  # a real bomb: far past the 1000:1 guard
    text = await fail_once(with_body(body, coding), ResponseTooLarge, "max_ratio=1000")
    assert "decompression ratio" in text


async def test_the_size_cap_applies_to_a_streamed_body() -> None:
    coding, body = bombs()["zstd"]
    events: list[PoolEvent] = []
    reply = with_body(body, coding)
    async with (
        RawServer(replies=[reply]) as srv,
        Client(max_decompressed_size=1 << 20) as client,
    ):
        client.pool.add_listener(events.append)
        url = f"http://127.0.0.1:{srv.port}/"
        received = 0
        with pytest.raises(ResponseTooLarge, match="max_decompressed_size=1048576"):
            async with client.stream("GET", url, timeout=TIMEOUT) as r:
                async for chunk in r.aiter_bytes():
                    received += len(chunk)
        assert received <= 1 << 20
        at_rest(client)
        assert client.pool.stats().open == 0
        assert reasons(events, "closed") == ["not_reusable"]


async def test_the_redirect_body_of_a_bomb_is_not_decoded() -> None:
    coding, body = bombs()["gzip, gzip"]
    redirect = (
        b"HTTP/1.1 302 Found\r\nLocation: /next\r\n"
        + f"Content-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    async with RawServer(replies=[redirect, OK]) as srv, Client(max_decompressed_size=10) as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/", timeout=TIMEOUT)
        assert (r.status, r.content, r.history[0].status) == (200, b"ok", 302)
        assert srv.connections == 1
        at_rest(client)


# --------------------------------------------------------------------- gzip members


async def chunked_body(body: bytes, piece: int) -> AsyncIterator[bytes]:
    """Frame ``body`` as chunks of ``piece`` bytes, the last chunk and no trailers."""
    for start in range(0, len(body), piece):
        part = body[start : start + piece]
        yield b"%x\r\n" % len(part) + part + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("coding", "member", "message"),
    [
        ("gzip", gzip.compress(b""), "gzip body has more than 16 empty members"),
        ("zstd", zstandard.ZstdCompressor().compress(b""), "zstd body has more than 16 empty"),
    ],
)
async def test_many_empty_members_are_bounded(coding: str, member: bytes, message: str) -> None:
    body = member * 100_000  # a decompressor set-up per ~20 bytes, and no output at all
    head = H11 + f"Content-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(head)
        async for frame in chunked_body(body, 1 << 16):
            writer.write(frame)
            await writer.drain()

    async with RawServer(handler) as srv, Client() as client:
        async with asyncio.timeout(20):  # a deadline, not a measurement: no hang, no spin
            with pytest.raises(ResponseTooLarge, match=message):
                await client.get(f"http://127.0.0.1:{srv.port}/", timeout=TIMEOUT)
        at_rest(client)
        assert client.pool.stats().open == 0


async def test_a_few_empty_members_are_fine() -> None:
    body = gzip.compress(b"") * 16 + gzip.compress(b"ok")
    async with RawServer(replies=[with_body(body, "gzip")]) as srv, Client() as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/", timeout=TIMEOUT)
        assert r.content == b"ok"
        at_rest(client)


async def test_a_bad_content_encoding_never_leaks_a_connection_slot() -> None:
    """Regression: make_decoder() raised before the lease was released (one slot per reply)."""
    replies = [with_body(b"hi", "gzip, gzip, gzip, gzip, gzip, gzip"), with_body(b"hi", "x")] * 3
    async with RawServer(replies=[*replies, OK]) as srv, Client(limit_per_host=2) as client:
        url = f"http://127.0.0.1:{srv.port}/"
        for _ in replies:
            with pytest.raises((ProtocolError, ResponseTooLarge), match="Content-Encoding"):
                await client.get(url, timeout=Timeout(5, pool=2))
            at_rest(client)
        assert (await client.get(url, timeout=TIMEOUT)).content == b"ok"
        assert srv.connections == len(replies) + 1


# ------------------------------------------------------------------------- CPU bounds


async def test_a_head_trickled_byte_by_byte_costs_linear_time() -> None:
    """A server that sends its head one byte per packet must not make parsing quadratic.

    Loopback sockets coalesce small writes unpredictably, so this drives the connection's
    ``data_received`` directly with one-byte pieces, as a slow server would deliver them.
    The head is just under ``max_header_bytes``. Before the fix, every read rescanned the
    whole buffer: 8.5 s of CPU on the development machine; now about 0.15 s. The bound is
    a generous regression guard measured in process CPU time.
    """
    from glasspool._http11 import HTTP11Connection

    async with RawServer(replies=[]) as srv:
        conn = HTTP11Connection(srv.key())
        line = b"X-A: " + b"a" * 700 + b"\r\n"
        head = H11 + line * ((65536 - 100) // len(line)) + b"Content-Length: 0\r\n\r\n"
        conn._start_exchange(b"GET / HTTP/1.1\r\n\r\n")  # expect a response, send nothing
        started = time.process_time()
        for i in range(len(head)):
            conn.data_received(head[i : i + 1])
        spent = time.process_time() - started
        assert (await conn.receive_head(method="GET", read_timeout=1)).status == 200
        assert spent < 3.0, f"{len(head)} one-byte reads took {spent:.2f}s of CPU"


# ------------------------------------------------------------------ decoding in steps


class Ticker:
    """Measures the longest stall of the event loop: a task that wakes every 10 ms."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._since = 0.0  # loop time when the current 10 ms sleep began
        self._task: asyncio.Task[None] | None = None

    def _note(self, now: float) -> None:
        self.longest = max(self.longest, now - self._since - 0.01)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._since = loop.time()
            await asyncio.sleep(0.01)
            self._note(loop.time())

    async def __aenter__(self) -> Ticker:
        self._since = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._note(asyncio.get_running_loop().time())  # a stall that ends here counts too
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_streaming_a_bomb_holds_memory_to_a_few_steps() -> None:
    """2 MiB of random bytes, then 256 MiB of zeros: 2.3 MiB on the wire, ratio ~110:1.

    The ratio guard does not fire, so the body streams whole; one network read of it
    decodes to up to 250 MiB, but only a step at a time is held.
    """
    body = random_prefix_bomb(2 << 20, 256 << 20)
    async with RawServer(replies=[with_body(body, "gzip")]) as srv, Client() as client:
        url = f"http://127.0.0.1:{srv.port}/"
        received = 0
        tracemalloc.start()
        try:
            async with client.stream("GET", url, timeout=TIMEOUT) as r:
                async for chunk in r.aiter_bytes(65536):
                    received += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert received == (2 << 20) + (256 << 20)
        assert peak < 16 << 20, f"peak {peak / (1 << 20):.1f} MiB"
        at_rest(client)


async def test_an_inner_layer_that_decodes_to_nothing_is_stopped_at_once() -> None:
    """gzip, gzip, gzip in 5 KB, whose middle layer is 2 GiB of empty deflate blocks.

    It decodes to ``ok``, so no guard on the decoded body fires: before the fix the loop
    was blocked for 16 s and the call returned 200, past its total timeout of 2 s.
    """
    reply = with_body(triple_gzip(410), "gzip, gzip, gzip")
    async with Ticker() as ticker:
        started = time.monotonic()
        await fail_once(reply, ResponseTooLarge, r"max_ratio=1000 in an inner layer")
        elapsed = time.monotonic() - started
    assert elapsed < 2
    assert ticker.longest < 0.5


@pytest.mark.parametrize("stream", [False, True], ids=["get", "stream"])
async def test_the_total_timeout_fires_on_time_while_a_body_decodes(stream: bool) -> None:
    """450 KB, gzip, gzip: 1 KB of data, then 300 MiB of empty blocks (~2.5 s of CPU).

    Every layer stays under the ratio guard (~700:1): only the deadline can stop it, and
    it must fire on time without the loop being held. Before the fix, one network read
    (up to 256 KiB) was decoded in one go: 0.6 to 1.2 s with the loop held.
    """
    reply = with_body(slow_empty_body(60, 1000), "gzip, gzip")
    timeout = Timeout(5, total=0.5)
    async with RawServer(replies=[reply]) as srv, Client() as client, Ticker() as ticker:
        url = f"http://127.0.0.1:{srv.port}/"
        started = time.monotonic()
        with pytest.raises(TotalTimeout, match=r"total timeout of 0\.5s"):
            if stream:
                async with client.stream("GET", url, timeout=timeout) as r:
                    async for _ in r.aiter_bytes():
                        pass
            else:
                await client.get(url, timeout=timeout)
        elapsed = time.monotonic() - started
        at_rest(client)
    assert elapsed < 0.5 + 1
    assert ticker.longest < 0.25, ticker.longest


async def test_the_read_timeout_fires_when_decoding_yields_nothing_for_that_long() -> None:
    """The same body: after its 100 KB, decoding produces nothing for ~2.5 s."""
    reply = with_body(slow_empty_body(60, 100_000), "gzip, gzip")
    async with RawServer(replies=[reply]) as srv, Client() as client, Ticker() as ticker:
        url = f"http://127.0.0.1:{srv.port}/"
        received = 0
        started = time.monotonic()
        with pytest.raises(ReadTimeout, match=r"produced no bytes for 0\.5s"):
            async with client.stream("GET", url, timeout=Timeout(5, read=0.5)) as r:
                async for chunk in r.aiter_bytes():
                    received += len(chunk)
                    started = time.monotonic()
        elapsed = time.monotonic() - started
        at_rest(client)
    assert received == 100_000
    assert elapsed < 0.5 + 1
    assert ticker.longest < 0.5


async def test_cancelling_a_long_decode_is_prompt() -> None:
    """Cancelled while decoding empty blocks, the task ends within a step or two.

    A cancel can only be delivered when the loop runs, so the loop must not be held
    (before the fix, up to 1.2 s per network read), and it lands at the next step.
    """
    reply = with_body(slow_empty_body(60, 1000), "gzip, gzip")
    first = asyncio.Event()
    first_at = 0.0

    async def consume(client: Client, url: str) -> None:
        nonlocal first_at
        async with client.stream("GET", url, timeout=TIMEOUT) as r:
            async for _ in r.aiter_bytes():
                first_at = time.monotonic()
                first.set()

    async with RawServer(replies=[reply]) as srv, Client() as client:
        async with Ticker() as ticker:
            task = asyncio.create_task(consume(client, f"http://127.0.0.1:{srv.port}/"))
            await first.wait()  # the 1 KB are out: the empty blocks are being decoded
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - first_at < 0.25
        assert ticker.longest < 0.25, ticker.longest
        at_rest(client)
        assert client.pool.stats().open == 0
