"""Hostile response framing, end to end: ``glasspool.Client`` against a byte-exact server.

Issue 6, item 4. Every malformed or ambiguous response must raise a glasspool error that
says what was wrong, and the connection it arrived on must never be used again. Each case
runs the same three requests against one :class:`RawServer`: a valid response (the
connection goes idle), the hostile response on that reused connection (it must fail and
close it), and a valid response again, which must arrive on a *new* connection. A
connection reused after a framing error is how response smuggling and desync attacks on
clients work (aiohttp CVE-2023-37276, CVE-2023-47627, CVE-2024-52304; see
docs/security.md).
"""

from __future__ import annotations

import asyncio

import pytest

from glasspool import (
    Client,
    GlasspoolError,
    IncompleteBody,
    PoolEvent,
    ProtocolError,
    Timeout,
)
from tests.rawserver import RawServer, Reply

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
H11 = b"HTTP/1.1 200 OK\r\n"
TE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
TIMEOUT = Timeout(5, total=10)

# (id, hostile reply, exception type, message pattern)
FRAMING: list[tuple[str, bytes | Reply, type[GlasspoolError], str]] = [
    # Content-Length together with Transfer-Encoding, in either order.
    (
        "CL then TE",
        H11 + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ProtocolError,
        "Content-Length",
    ),
    (
        "TE then CL",
        H11 + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ProtocolError,
        "Content-Length",
    ),
    # Malformed or repeated Content-Length.
    (
        "CL repeated, different",
        H11 + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        ProtocolError,
        "Duplicate Content-Length",
    ),
    (
        "CL repeated, same",
        H11 + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "Duplicate Content-Length",
    ),
    ("CL list", H11 + b"Content-Length: 2, 2\r\n\r\nok", ProtocolError, "Content-Length"),
    ("CL plus sign", H11 + b"Content-Length: +2\r\n\r\nok", ProtocolError, "Content-Length"),
    ("CL negative", H11 + b"Content-Length: -2\r\n\r\nok", ProtocolError, "Content-Length"),
    ("CL hex", H11 + b"Content-Length: 0x2\r\n\r\nok", ProtocolError, "Content-Length"),
    ("CL inner space", H11 + b"Content-Length: 1 2\r\n\r\nok", ProtocolError, "Content-Length"),
    ("CL empty", H11 + b"Content-Length: \r\n\r\nok", ProtocolError, "Content-Length"),
    (
        "CL overflow",
        H11 + b"Content-Length: 99999999999999999999999\r\n\r\nok",
        ProtocolError,
        "Content-Length",
    ),
    # Transfer codings other than one final "chunked".
    ("TE gzip", H11 + b"Transfer-Encoding: gzip\r\n\r\nabc", ProtocolError, "Transfer-Encoding"),
    (
        "TE identity",
        H11 + b"Transfer-Encoding: identity\r\n\r\nabc",
        ProtocolError,
        "Transfer-Encoding",
    ),
    (
        "TE chunked, gzip",
        H11 + b"Transfer-Encoding: chunked, gzip\r\n\r\nabc",
        ProtocolError,
        "Transfer-Encoding",
    ),
    (
        "TE gzip, chunked",
        H11 + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ProtocolError,
        "Transfer-Encoding",
    ),
    (
        "TE chunked, chunked",
        H11 + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        ProtocolError,
        "Transfer-Encoding",
    ),
    (
        "TE two lines",
        H11 + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ProtocolError,
        "repeated 2 times",
    ),
    (
        "TE xchunked",
        H11 + b"Transfer-Encoding: xchunked\r\n\r\nabc",
        ProtocolError,
        "Transfer-Encoding",
    ),
    (
        "TE in HTTP/1.0",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ProtocolError,
        "HTTP/1.0",
    ),
    # Bad chunk sizes.
    ("chunk size not hex", TE + b"zz\r\nabc\r\n0\r\n\r\n", ProtocolError, "chunk size"),
    ("chunk size negative", TE + b"-3\r\nabc\r\n0\r\n\r\n", ProtocolError, "chunk size"),
    ("chunk size 0x", TE + b"0x3\r\nabc\r\n0\r\n\r\n", ProtocolError, "chunk size"),
    ("chunk size space", TE + b"3 \r\nabc\r\n0\r\n\r\n", ProtocolError, "chunk size"),
    ("chunk size empty", TE + b"\r\nabc\r\n0\r\n\r\n", ProtocolError, "chunk size"),
    (
        "chunk size overflow",
        TE + b"1ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ProtocolError,
        "64 bits",
    ),
    (
        "chunk size 2**64-1, cut",
        Reply(TE + b"ffffffffffffffff\r\nabc", close=True),
        IncompleteBody,
        "3 body bytes of a chunked body",
    ),
    # Chunk data not followed by CRLF.
    ("chunk data, no CRLF", TE + b"3\r\nabcX\r\n0\r\n\r\n", ProtocolError, "not followed by CRLF"),
    ("chunk data, LF only", TE + b"3\r\nabc\n0\r\n\r\n", ProtocolError, "CRLF"),
    ("chunk data, CR only", TE + b"3\r\nabc\r0\r\n\r\n", ProtocolError, "CRLF"),
    # Bare LF anywhere.
    (
        "bare LF status line",
        b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "bare LF",
    ),
    ("bare LF header line", H11 + b"X: y\nContent-Length: 2\r\n\r\nok", ProtocolError, "bare LF"),
    ("bare LF end of head", H11 + b"Content-Length: 2\n\nok", ProtocolError, "bare LF"),
    ("bare LF chunk size", TE + b"3\nabc\r\n0\r\n\r\n", ProtocolError, "bare LF"),
    ("bare LF trailer", TE + b"0\r\nT: a\n\r\n", ProtocolError, "CR"),
    # obs-fold where it would decide the framing (elsewhere it is unfolded, see below);
    # NUL, CR and other controls inside header lines.
    (
        "obs-fold in Content-Length",
        H11 + b"Content-Length: 2\r\n 0\r\n\r\nok",
        ProtocolError,
        "obs-fold in Content-Length",
    ),
    (
        "obs-fold in Transfer-Encoding",
        H11 + b"Transfer-Encoding: \r\n\tchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ProtocolError,
        "obs-fold in Transfer-Encoding",
    ),
    (
        "whitespace after the status line",
        H11 + b" Content-Length: 2\r\n\r\nok",
        ProtocolError,
        "starts with whitespace",
    ),
    ("obs-fold trailer", TE + b"0\r\nT: a\r\n b\r\n\r\n", ProtocolError, "whitespace"),
    ("NUL in value", H11 + b"X: a\x00b\r\nContent-Length: 2\r\n\r\nok", ProtocolError, "NUL"),
    ("NUL in name", H11 + b"X\x00Y: a\r\nContent-Length: 2\r\n\r\nok", ProtocolError, "NUL"),
    ("NUL in trailer", TE + b"0\r\nT: a\x00b\r\n\r\n", ProtocolError, "header value char"),
    ("CR in value", H11 + b"X: a\rb\r\nContent-Length: 2\r\n\r\nok", ProtocolError, "LF"),
    ("CR in name", H11 + b"X\rY: a\r\nContent-Length: 2\r\n\r\nok", ProtocolError, "header token"),
    (
        "CTL in value",
        H11 + b"X: a\x01b\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "header value char",
    ),
    (
        "DEL in value",
        H11 + b"X: a\x7fb\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "header value char",
    ),
    ("space before colon", H11 + b"Content-Length : 2\r\n\r\nok", ProtocolError, "header"),
    ("no colon", H11 + b"Content-Length 2\r\n\r\nok", ProtocolError, "header field char"),
    # Malformed status lines.
    (
        "status 2 digits",
        b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "malformed status line",
    ),
    (
        "status 4 digits",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "malformed status line",
    ),
    (
        "status letters",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "malformed status line",
    ),
    (
        "status no space",
        b"HTTP/1.1200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "status line",
    ),
    (
        "status two spaces",
        b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "malformed status line",
    ),
    (
        "status 099",
        b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "outside 100..599",
    ),
    (
        "status 600",
        b"HTTP/1.1 600 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "outside 100..599",
    ),
    (
        "status 101",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        ProtocolError,
        "101",
    ),
    ("reason NUL", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok", ProtocolError, "NUL"),
    (
        "reason CTL",
        b"HTTP/1.1 200 O\x1bK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "reason phrase",
    ),
    (
        "lowercase http",
        b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "HTTP/1.x status line",
    ),
    ("leading CRLF", b"\r\n" + OK, ProtocolError, "HTTP/1.x status line"),
    ("not HTTP at all", b"<html>hello</html>\r\n\r\n", ProtocolError, "HTTP/1.x status line"),
    (
        "ICE/1.0",
        b"ICE/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "HTTP/1.x status line",
    ),
    # Versions other than HTTP/1.0 and HTTP/1.1.
    (
        "HTTP/0.9",
        b"HTTP/0.9 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "unsupported HTTP version",
    ),
    (
        "HTTP/1.2",
        b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "unsupported HTTP version",
    ),
    (
        "HTTP/2.0",
        b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "unsupported HTTP version",
    ),
    (
        "HTTP/2",
        b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "unsupported HTTP version",
    ),
    (
        "HTTP/3.0",
        b"HTTP/3.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "unsupported HTTP version",
    ),
    (
        "HTTP/1.10",
        b"HTTP/1.10 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ProtocolError,
        "unsupported HTTP version",
    ),
    # A body that ends before its framing says.
    (
        "CL body cut",
        Reply(H11 + b"Content-Length: 5\r\n\r\nabc", close=True),
        IncompleteBody,
        "3 of 5 body bytes",
    ),
    (
        "chunked body cut",
        Reply(TE + b"5\r\nabc", close=True),
        IncompleteBody,
        "3 body bytes of a chunked body",
    ),
]


def at_rest(client: Client) -> None:
    """Assert that no connection is in use, connecting, or waited for."""
    stats = client.pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats


def reasons(events: list[PoolEvent], kind: str) -> list[str | None]:
    """The reasons of the events of one kind, in order."""
    return [e.reason for e in events if e.kind == kind]


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [case[1:] for case in FRAMING],
    ids=[case[0] for case in FRAMING],
)
async def test_hostile_framing_fails_and_the_connection_is_never_reused(
    reply: bytes | Reply, error: type[GlasspoolError], message: str
) -> None:
    events: list[PoolEvent] = []
    async with RawServer(replies=[OK, reply, OK]) as srv, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url)).content == b"ok"
        with pytest.raises(error, match=message) as info:
            await client.get(url)
        assert type(info.value) is error
        if not isinstance(info.value, IncompleteBody):
            assert f"127.0.0.1:{srv.port}" in str(info.value) or "chunk" in str(info.value)
        at_rest(client)
        assert client.pool.stats().open == 0  # the hostile connection is gone
        assert (await client.get(url)).content == b"ok"
        assert srv.connections == 2
        assert reasons(events, "acquired") == ["new", "reused", "new"]
        assert reasons(events, "released") == ["eof", "error", "eof"]
        assert reasons(events, "closed")[0] in ("error", "server_closed")


async def test_obs_fold_is_unfolded_and_the_connection_reused() -> None:
    """RFC 9112 section 5.2: each obs-fold is replaced with SP before the field is read."""
    folded = H11 + b"X-Folded: a,\r\n b\r\n\tc\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer(replies=[folded, OK]) as srv, Client(timeout=TIMEOUT) as client:
        url = f"http://127.0.0.1:{srv.port}/"
        r = await client.get(url)
        assert (r.content, r.headers["x-folded"]) == (b"ok", "a, b c")
        assert (await client.get(url)).content == b"ok"
        assert srv.connections == 1


async def test_incomplete_body_states_expected_and_received_counts() -> None:
    reply = Reply(H11 + b"Content-Length: 10\r\n\r\nabcd", close=True)
    async with RawServer(replies=[reply]) as srv, Client(timeout=TIMEOUT) as client:
        with pytest.raises(IncompleteBody) as info:
            await client.get(f"http://127.0.0.1:{srv.port}/")
        assert (info.value.expected, info.value.received) == (10, 4)
        at_rest(client)


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("GET", H11 + b"Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("GET", H11 + b"Content-Length: 0\r\n\r\nsmuggled"),
        ("GET", TE + b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        ("HEAD", H11 + b"Content-Length: 5\r\n\r\nhello"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\nbody after a 204"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nbody"),
    ],
    ids=["second response", "CL 0 plus bytes", "after last chunk", "HEAD", "204", "304"],
)
async def test_bytes_after_the_end_make_the_connection_unusable(method: str, reply: bytes) -> None:
    events: list[PoolEvent] = []
    async with RawServer(replies=[reply, OK]) as srv, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        url = f"http://127.0.0.1:{srv.port}/"
        first = await client.request(method, url)
        assert first.status in (200, 204, 304)
        at_rest(client)
        second = await client.get(url)
        assert (second.status, second.content) == (200, b"ok")
        assert srv.connections == 2
        assert reasons(events, "acquired") == ["new", "new"]
        assert reasons(events, "closed")[0] in ("not_reusable", "server_closed")


async def test_bytes_sent_to_an_idle_connection_close_it() -> None:
    """Unsolicited bytes while the connection sits idle: the pool drops it at once."""
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = srv.connections == 1
        await srv.read_request(reader)
        writer.write(OK)
        await writer.drain()
        if not first:
            await srv.read_request(reader)
            return
        await sent.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        await writer.drain()
        await srv.read_request(reader)  # returns None once the client aborts

    closed = asyncio.Event()
    events: list[PoolEvent] = []

    def listen(event: PoolEvent) -> None:
        events.append(event)
        if event.kind == "closed":
            closed.set()

    srv = RawServer(handler)
    async with srv, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(listen)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url)).content == b"ok"
        assert client.pool.stats().idle == 1
        sent.set()
        async with asyncio.timeout(5):
            await closed.wait()
        assert client.pool.stats().open == 0
        assert reasons(events, "closed") == ["server_closed"]
        assert (await client.get(url)).content == b"ok"
        assert srv.connections == 2
        at_rest(client)
