"""Fuzzing the Client with hostile responses over a real loopback socket.

Issue 6, item 6. Hypothesis builds valid HTTP/1.1 responses (1xx heads, Content-Length,
chunked with extensions and trailers, read-until-close, gzip/deflate/br/zstd bodies,
keep-alive or close) and then mutates them: random cuts, inserted bytes (CR, LF, NUL,
framing headers, whole status lines), deleted slices, case changes, duplicated header lines,
replaced bytes, garbage appended after the end. Each example starts a server and a client,
sends one to three hostile requests (read fully, streamed partly or not at all, or HEAD),
then one valid request on the same client. It asserts:

- every failure is a :class:`glasspool.GlasspoolError` (anything else fails the example);
- nothing hangs: each request runs under an ``asyncio.timeout`` deadline;
- after every request the pool is at rest (nothing in use, connecting or waiting);
- the valid request afterwards gets exactly its own response. Its body carries a nonce no
  hostile reply contains, so a connection left desynchronised by a hostile reply (leftover
  bytes read as the next response) is caught.

Redirects are not followed here: a mutated ``Location`` could name a host off this machine.
``GLASSPOOL_FUZZ_EXAMPLES`` sets the example count (default 150 for CI; ``make fuzz`` runs
5000).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import brotli
import zstandard
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from glasspool import Client, GlasspoolError, Timeout
from tests.rawserver import RawServer, Reply, read_request

EXAMPLES = int(os.environ.get("GLASSPOOL_FUZZ_EXAMPLES", "150"))
HOSTILE_TIMEOUT = Timeout(connect=2, read=0.3, write=2, total=1.5)
VALID_TIMEOUT = Timeout(5, total=5)
DEADLINE = 5.0  # seconds for any one request: past this it is a hang
MODES = ("read", "stream all", "stream one chunk", "stream none", "head")

ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}
INSERTS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"0",
    b"f",
    b"-",
    b"\x7f",
    b"\xff",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 ",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Content-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
]

tokens = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12
)
values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=24
)


@dataclass(frozen=True, slots=True)
class Hostile:
    """One hostile exchange: the bytes the server sends, whether it closes, how they are read."""

    data: bytes
    close: bool
    mode: str


def chunk_size_line(size: int, upper: bool, zeros: int, ext: bytes) -> bytes:
    """A chunk-size line: hex digits (either case, leading zeros), an optional extension."""
    digits = b"%x" % size
    return b"0" * zeros + (digits.upper() if upper else digits) + ext + b"\r\n"


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunked framing, split at random, with extensions and trailers."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = bytearray()
    for piece in (p for p in pieces if p):
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';name="q v"']))
        out += chunk_size_line(len(piece), draw(st.booleans()), draw(st.integers(0, 3)), ext)
        out += piece + b"\r\n"
    out += b"0\r\n"
    for name, value in draw(st.lists(st.tuples(tokens, values), max_size=2)):
        out += f"{name}: {value}\r\n".encode("latin-1")
    return bytes(out + b"\r\n")


@dataclass(frozen=True, slots=True)
class Valid:
    """A well-formed response and what a client must make of it."""

    data: bytes
    status: int
    content: bytes  # the decoded body
    ends_at_close: bool  # read-until-close framing: the server must close after it


INTERIM = [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"]


@st.composite
def valid_responses(draw: st.DrawFn) -> Valid:
    """A well-formed response, possibly after 1xx heads."""
    interim = b"".join(draw(st.lists(st.sampled_from(INTERIM), max_size=2)))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 404, 500]))
    reason = draw(st.sampled_from(["OK", "", "Whatever It Is", "Not Found"]))
    drawn = draw(st.lists(st.tuples(tokens, values), max_size=4))
    headers = [(n, v) for n, v in drawn if n.lower() not in FRAMING_NAMES]
    content = b"" if status in (204, 304) else draw(st.binary(max_size=200))
    body = content
    if coding := draw(st.sampled_from([None, *ENCODERS])):
        body = ENCODERS[coding](content) if content else b""
        headers.append(("Content-Encoding", coding))
    framing = (
        "none" if status in (204, 304) else draw(st.sampled_from(["length", "chunked", "close"]))
    )
    if framing == "chunked" and version == "HTTP/1.1":
        headers.append(("Transfer-Encoding", "chunked"))
        body = draw(chunked(body))
    elif framing in ("length", "chunked"):
        headers.append(("Content-Length", str(len(body))))
    headers.append(("Connection", draw(st.sampled_from(["keep-alive", "close", "Keep-Alive"]))))
    lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
    head = f"{version} {status} {reason}\r\n{lines}\r\n".encode("latin-1")
    return Valid(interim + head + body, status, content, framing == "close")


FRAMING_NAMES = {"content-length", "transfer-encoding", "connection", "content-encoding"}


def header_lines(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each header line (CRLF included) of the first head in ``data``."""
    end = data.find(b"\r\n\r\n")
    start = data.find(b"\r\n") + 2
    lines = []
    while 0 < start <= end:
        stop = data.find(b"\r\n", start) + 2
        lines.append((start, stop))
        start = stop
    return lines


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` after zero to four random mutations."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["cut", "insert", "delete", "case", "dup", "replace", "tail"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=6))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "case":
            data[pos : pos + 16] = bytes(data[pos : pos + 16]).swapcase()
        elif kind == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "tail":
            data += draw(
                st.sampled_from([b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", b"x"])
            )
        elif kind == "dup" and (lines := header_lines(bytes(data))):
            start, stop = draw(st.sampled_from(lines))
            data[stop:stop] = data[start:stop]
    return bytes(data)


@st.composite
def hostile(draw: st.DrawFn) -> Hostile:
    """A hostile exchange: a mutated valid response, or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.binary(max_size=64))
    else:
        data = draw(mutated(draw(valid_responses()).data))
    return Hostile(data, close=draw(st.integers(0, 9)) < 7, mode=draw(st.sampled_from(MODES)))


def at_rest(client: Client) -> None:
    """Assert that no connection is in use, connecting, or waited for."""
    stats = client.pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats


async def consume(client: Client, url: str, mode: str) -> None:
    """Send one request and consume its response as ``mode`` says."""
    method = "HEAD" if mode == "head" else "GET"
    if mode in ("read", "head"):
        await client.request(method, url, timeout=HOSTILE_TIMEOUT, follow_redirects=False)
        return
    async with client.stream(method, url, timeout=HOSTILE_TIMEOUT, follow_redirects=False) as r:
        if mode == "stream all":
            await r.read()
        elif mode == "stream one chunk":
            async for _ in r.aiter_raw():
                break


async def attempt(client: Client, url: str, mode: str) -> None:
    """One hostile request; glasspool errors are expected, anything else escapes."""
    try:
        await consume(client, url, mode)
    except GlasspoolError as exc:
        event(f"{mode}: {type(exc).__name__}")
        return
    event(f"{mode}: ok")


async def run_example(exchanges: list[Hostile], nonce: int) -> None:
    """Serve the hostile replies, then check the client still gets the valid one right."""
    valid_body = b"valid-%d" % nonce
    valid = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(valid_body) + valid_body

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (raw := await read_request(reader)) is not None:
            path = raw.split(b" ", 2)[1]
            if path.startswith(b"/h/"):
                exchange = exchanges[int(path[3:])]
                writer.write(exchange.data)
                await writer.drain()
                if exchange.close:
                    return
            else:
                writer.write(valid)
                await writer.drain()

    async with RawServer(handler) as srv, Client(limit_per_host=2) as client:
        base = f"http://127.0.0.1:{srv.port}"
        for i, exchange in enumerate(exchanges):
            try:
                async with asyncio.timeout(DEADLINE):
                    await attempt(client, f"{base}/h/{i}", exchange.mode)
            except TimeoutError as exc:
                raise AssertionError(f"hostile request {i} hung past {DEADLINE}s") from exc
            at_rest(client)
        async with asyncio.timeout(DEADLINE):
            r = await client.get(base + "/valid", timeout=VALID_TIMEOUT, follow_redirects=False)
        assert (r.status, r.content) == (200, valid_body)
        at_rest(client)
        assert client.pool.stats().open <= 2


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(exchanges=st.lists(hostile(), min_size=1, max_size=3), nonce=st.integers(0, 2**32))
def test_fuzz_hostile_responses(exchanges: list[Hostile], nonce: int) -> None:
    assume(all(b"valid-%d" % nonce not in e.data for e in exchanges))
    asyncio.run(run_example(exchanges, nonce))


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None)
@given(response=valid_responses())
def test_fuzz_generated_valid_responses_are_read_exactly(response: Valid) -> None:
    """The fuzzer's starting points are valid, and the Client reads them exactly."""

    async def run() -> None:
        async with RawServer(replies=[Reply(response.data, close=response.ends_at_close)]) as srv:
            async with Client() as client:
                url = f"http://127.0.0.1:{srv.port}/"
                async with asyncio.timeout(DEADLINE):
                    r = await client.get(url, timeout=VALID_TIMEOUT, follow_redirects=False)
                assert (r.status, r.content) == (response.status, response.content)
                at_rest(client)

    asyncio.run(run())
