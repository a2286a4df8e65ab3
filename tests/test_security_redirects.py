"""Safe redirects, end to end: ``glasspool.Client`` following real redirects on loopback.

Issue 6, item 3. Credentials (``Authorization``, ``Cookie``, ``Proxy-Authorization``, every
copy, any case) must not follow a redirect to another origin, and must stay dropped even if
the chain comes back (urllib3 CVE-2018-20060, CVE-2023-43804; requests CVE-2018-18074).
Only http/https targets are followed. 303, and 301/302 after POST, become a body-less GET
(urllib3 CVE-2023-45803). Loops end in ``TooManyRedirects`` with every hop's connection
released. A redirect body is never decoded and is drained only up to 64 KiB.

The servers are :class:`Site` objects (a routed :class:`RawServer`) that record every raw
request, so the tests read exactly what reached each origin, and nginx's ``/redirect*``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from glasspool import (
    Client,
    InvalidRequest,
    InvalidURL,
    PoolEvent,
    Timeout,
    TooManyRedirects,
)
from tests.nginx import NginxServer, TLSCerts
from tests.rawserver import RawServer

TIMEOUT = Timeout(5, total=20)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CREDENTIALS = [
    ("Authorization", "Bearer one"),
    ("authorization", "Bearer two"),
    ("Cookie", "a=1"),
    ("COOKIE", "b=2"),
    ("Proxy-Authorization", "Basic cHJveHk6cHc="),
    ("proxy-AUTHORIZATION", "Basic second"),
]
CREDENTIAL_NAMES = (b"authorization", b"cookie", b"proxy-authorization")

Route = Callable[[bytes], bytes]


def redirect(status: int, location: str, body: bytes = b"", extra: str = "") -> bytes:
    """A redirect response with a Content-Length body."""
    head = f"HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\n{extra}"
    return head.encode("latin-1") + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Site:
    """A loopback server answering by request path; it keeps every raw request it read.

    ``routes`` maps a path (query included) to response bytes, or to a function of the raw
    request returning them; anything else gets 200 ``ok``. Routes may be added after start.
    """

    def __init__(self, *, tls: TLSCerts | None = None) -> None:
        self.routes: dict[str, bytes | Route] = {}
        self.server = RawServer(
            self._serve, ssl_context=None if tls is None else tls.server_context()
        )
        self.scheme = "http" if tls is None else "https"

    async def __aenter__(self) -> Site:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.server.__aexit__(*exc_info)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The absolute URL of ``path`` on this site."""
        return f"{self.scheme}://{host}:{self.server.port}{path}"

    def seen(self, path: str) -> list[bytes]:
        """The raw requests that asked for ``path``."""
        return [r for r in self.server.requests if target(r) == path]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (raw := await self.server.read_request(reader)) is not None:
            route = self.routes.get(target(raw), OK)
            writer.write(route if isinstance(route, bytes) else route(raw))
            await writer.drain()


def target(raw: bytes) -> str:
    """The request target of a raw request."""
    return raw.split(b" ", 2)[1].decode("latin-1")


def method_of(raw: bytes) -> str:
    """The method of a raw request."""
    return raw.split(b" ", 1)[0].decode("latin-1")


def header_values(raw: bytes, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (any case) in a raw request head."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    values = []
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.lower() == name:
            values.append(value.strip())
    return values


def credentials(raw: bytes) -> list[bytes]:
    """Every credential header value in a raw request."""
    return [v for name in CREDENTIAL_NAMES for v in header_values(raw, name)]


def body_of(raw: bytes) -> bytes:
    """The body of a raw request (as sent, framing included)."""
    return raw.split(b"\r\n\r\n", 1)[1]


def at_rest(client: Client) -> None:
    """Assert that no connection is in use, connecting, or waited for."""
    stats = client.pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats


def reasons(events: list[PoolEvent], kind: str) -> list[str | None]:
    """The reasons of the events of one kind, in order."""
    return [e.reason for e in events if e.kind == kind]


# ------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "change", ["port", "host", "scheme: http to https", "scheme: https to http"]
)
async def test_credentials_are_dropped_on_an_origin_change_and_stay_dropped(
    change: str, tls_certs: TLSCerts
) -> None:
    start_tls = change == "scheme: https to http"
    async with (
        Site(tls=tls_certs if start_tls else None) as home,
        Site(tls=tls_certs if change == "scheme: http to https" else None) as other,
        Client(verify=str(tls_certs.ca_file)) as client,
    ):
        away = home.url("/away", host="localhost") if change == "host" else other.url("/away")
        home.routes["/start"] = redirect(302, "/same")  # same origin: credentials kept
        home.routes["/same"] = redirect(307, away)
        for site in (home, other):
            site.routes["/away"] = redirect(301, home.url("/back"))  # back home: still dropped
        home.routes["/back"] = redirect(308, "/final")
        r = await client.get(home.url("/start"), headers=[*CREDENTIALS, ("X-Keep", "k")])
        assert (r.status, r.content, len(r.history)) == (200, b"ok", 4)
        sent = {path: home.seen(path) + other.seen(path) for path in ("/start", "/same")}
        for path in ("/start", "/same"):
            (raw,) = sent[path]
            assert len(credentials(raw)) == len(CREDENTIALS)  # every copy, any case
        for path in ("/away", "/back", "/final"):
            (raw,) = home.seen(path) + other.seen(path)
            assert credentials(raw) == [], (path, raw)
            assert header_values(raw, b"x-keep") == [b"k"]
        at_rest(client)


@pytest.mark.parametrize("form", ["scheme-relative", "absolute, other host case"])
async def test_a_scheme_relative_or_absolute_location_to_another_host_drops_credentials(
    form: str,
) -> None:
    async with Site() as home, Client() as client:
        port = home.server.port
        location = (
            f"//localhost:{port}/away"
            if form == "scheme-relative"
            else (f"http://LOCALHOST:{port}/away")
        )
        home.routes["/a"] = redirect(302, location)
        assert (await client.get(home.url("/a"), headers=CREDENTIALS)).status == 200
        (away,) = home.seen("/away")
        assert credentials(home.seen("/a")[0]) != [] and credentials(away) == []
        assert header_values(away, b"host") == [f"localhost:{port}".encode()]


async def test_credentials_from_the_client_defaults_are_dropped_too() -> None:
    defaults = [("Authorization", "Bearer client"), ("Cookie", "session=1")]
    async with Site() as home, Site() as other, Client(headers=defaults) as client:
        home.routes["/a"] = redirect(302, other.url("/b"))
        other.routes["/b"] = redirect(302, home.url("/c"))
        assert (await client.get(home.url("/a"))).status == 200
        assert credentials(home.seen("/a")[0]) == [b"Bearer client", b"session=1"]
        assert credentials(other.seen("/b")[0]) == []
        assert credentials(home.seen("/c")[0]) == []
        assert client.headers["authorization"] == "Bearer client"  # defaults untouched
        await client.get(home.url("/c"))
        assert credentials(home.seen("/c")[1]) == [b"Bearer client", b"session=1"]
        at_rest(client)


async def test_credentials_are_kept_on_the_same_origin() -> None:
    async with Site() as home, Client() as client:
        home.routes["/a"] = redirect(302, home.url("/b"))
        home.routes["/b"] = redirect(303, "/c")
        r = await client.get(home.url("/a"), headers=CREDENTIALS)
        assert r.status == 200
        for path in ("/a", "/b", "/c"):
            (raw,) = home.seen(path)
            assert len(credentials(raw)) == len(CREDENTIALS)
        assert home.server.connections == 1
        at_rest(client)


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("ftp://127.0.0.1/x", "unsupported scheme 'ftp'; only http and https are followed"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("data:text/html,hi", "unsupported scheme 'data'"),
        ("ws://127.0.0.1/", "unsupported scheme 'ws'"),
        ("gopher://127.0.0.1:70/_GET", "unsupported scheme 'gopher'"),
        ("http://:80/", "not a valid URL"),
        ("http://127.0.0.1:0/", "port 0"),
        ("http://127.0.0.1:65536/", "Port out of range"),
        ("", "empty Location"),
    ],
)
async def test_only_http_and_https_targets_are_followed(location: str, message: str) -> None:
    events: list[PoolEvent] = []
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        home.routes["/go"] = redirect(302, location, body=b"moved")
        with pytest.raises(InvalidURL, match=message):
            await client.get(home.url("/go"), headers=CREDENTIALS)
        at_rest(client)
        assert reasons(events, "released") == ["eof"]  # drained and pooled, not leaked
        assert (await client.get(home.url("/ok"))).content == b"ok"
        assert home.server.connections == 1
        assert [target(r) for r in home.server.requests] == ["/go", "/ok"]


async def test_a_location_with_control_characters_is_refused_by_the_parser() -> None:
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        home.routes["/go"] = b"HTTP/1.1 302 Found\r\nLocation: /a\x01b\r\nContent-Length: 0\r\n\r\n"
        with pytest.raises(Exception, match="header value char") as info:
            await client.get(home.url("/go"))
        assert type(info.value).__name__ == "ProtocolError"
        assert [target(r) for r in home.server.requests] == ["/go"]
        at_rest(client)


# ------------------------------------------------------------------------ method rules


async def body_stream() -> AsyncIterator[bytes]:
    """A streamed request body (sent chunked; cannot be replayed)."""
    yield b"streamed"


@pytest.mark.parametrize(
    ("status", "method", "new_method", "keeps_body"),
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (303, "PATCH", "GET", False),
        (303, "DELETE", "GET", False),
        (301, "PUT", "PUT", True),
        (302, "PATCH", "PATCH", True),
        (307, "POST", "POST", True),
        (308, "POST", "POST", True),
        (308, "PUT", "PUT", True),
    ],
)
async def test_method_and_body_after_a_redirect(
    status: int, method: str, new_method: str, keeps_body: bool
) -> None:
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        home.routes["/form"] = redirect(status, "/next")
        r = await client.request(
            method,
            home.url("/form"),
            content=b"secret=1",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "x"},
        )
        assert r.status == 200
        (first,) = home.seen("/form")
        (second,) = home.seen("/next")
        assert (method_of(first), body_of(first)) == (method, b"secret=1")
        assert method_of(second) == new_method
        if keeps_body:
            assert body_of(second) == b"secret=1"
            assert header_values(second, b"content-length") == [b"8"]
            assert header_values(second, b"content-type") != []
        else:
            assert body_of(second) == b""
            for name in (b"content-length", b"content-type", b"content-encoding"):
                assert header_values(second, name) == [], name
            assert header_values(second, b"transfer-encoding") == []
        assert home.server.connections == 1
        at_rest(client)


async def test_head_stays_head_after_a_303() -> None:
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        home.routes["/h"] = redirect(303, "/next")
        home.routes["/next"] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        r = await client.head(home.url("/h"))
        assert (r.status, r.content) == (200, b"")
        assert method_of(home.seen("/next")[0]) == "HEAD"
        at_rest(client)


async def test_a_streamed_body_is_dropped_by_303_and_refused_by_307() -> None:
    events: list[PoolEvent] = []
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        home.routes["/s303"] = redirect(303, "/next")
        home.routes["/s307"] = redirect(307, "/next")
        r = await client.post(home.url("/s303"), content=body_stream())
        assert method_of(home.seen("/next")[0]) == "GET"
        assert body_of(home.seen("/next")[0]) == b""
        assert r.status == 200
        with pytest.raises(InvalidRequest, match="streamed and cannot be replayed"):
            await client.post(home.url("/s307"), content=body_stream())
        assert len(home.seen("/next")) == 1
        at_rest(client)
        assert reasons(events, "closed") == []


# ------------------------------------------------------------------------------- loops


async def test_a_redirect_loop_ends_with_history_and_every_hop_released() -> None:
    events: list[PoolEvent] = []
    async with Site() as home, Client(max_redirects=4, timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        home.routes["/loop"] = redirect(302, "/loop", body=b"again")
        with pytest.raises(TooManyRedirects, match="more than max_redirects=4") as info:
            await client.get(home.url("/loop"))
        history = info.value.history
        assert [h.status for h in history] == [302] * 5
        assert all(h.is_closed and h.content == b"" for h in history)
        assert str(history[0].url) == home.url("/loop")
        at_rest(client)
        assert reasons(events, "released") == ["eof"] * 5
        assert reasons(events, "acquired") == ["new"] + ["reused"] * 4
        assert client.pool.stats().idle == 1 and home.server.connections == 1


async def test_a_loop_across_two_origins_releases_both_connections() -> None:
    async with Site() as a, Site() as b, Client(max_redirects=7, timeout=TIMEOUT) as client:
        a.routes["/ping"] = redirect(302, b.url("/pong"))
        b.routes["/pong"] = redirect(307, a.url("/ping"))
        with pytest.raises(TooManyRedirects) as info:
            await client.get(a.url("/ping"), headers=CREDENTIALS)
        assert len(info.value.history) == 8
        at_rest(client)
        assert client.pool.stats().idle == 2
        assert credentials(a.seen("/ping")[0]) != []
        assert all(credentials(raw) == [] for raw in a.seen("/ping")[1:] + b.seen("/pong"))


async def test_max_redirects_zero_and_a_streamed_loop() -> None:
    async with Site() as home, Client(max_redirects=0, timeout=TIMEOUT) as client:
        home.routes["/loop"] = redirect(301, "/loop")
        with pytest.raises(TooManyRedirects) as info:
            await client.get(home.url("/loop"))
        assert len(info.value.history) == 1
        with pytest.raises(TooManyRedirects):
            async with client.stream("GET", home.url("/loop")):
                pytest.fail("a redirect loop must not yield a response")
        at_rest(client)
        assert home.server.connections == 1


async def test_nginx_redirect_chain_and_loop(nginx: NginxServer) -> None:
    mark = nginx.log_mark()
    async with Client(max_redirects=5, timeout=TIMEOUT) as client:
        r = await client.post(nginx.url("/redirect-303/3"), content=b"x" * 100)
        assert (r.status, r.content) == (200, b"Hello, world!")
        assert r.request is not None and r.request.method == "GET"
        assert [h.status for h in r.history] == [303, 303, 303]
        with pytest.raises(TooManyRedirects) as info:
            await client.get(nginx.url("/redirect/20"))
        assert len(info.value.history) == 6
        at_rest(client)
        assert client.pool.stats().idle == 1
    entries = await nginx.wait_access_log(10, since=mark)
    assert len({e.connection for e in entries}) == 1  # every hop reused one connection
    assert [e.method for e in entries[:4]] == ["POST", "GET", "GET", "GET"]


# ------------------------------------------------------------------------ redirect body


async def test_a_redirect_body_is_not_decompressed() -> None:
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        home.routes["/gz"] = redirect(
            302, "/next", body=b"not gzip", extra="Content-Encoding: gzip\r\n"
        )
        home.routes["/br"] = redirect(
            302, "/next", body=b"\xff" * 100, extra="Content-Encoding: br\r\n"
        )
        for path in ("/gz", "/br"):
            r = await client.get(home.url(path))
            assert (r.status, r.content, r.history[0].content) == (200, b"ok", b"")
        assert home.server.connections == 1
        at_rest(client)


async def test_a_real_gzip_redirect_body_is_drained_and_reused() -> None:
    body = gzip.compress(b"x" * 1000)
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        home.routes["/gz"] = redirect(301, "/next", body=body, extra="Content-Encoding: gzip\r\n")
        r = await client.get(home.url("/gz"))
        assert r.content == b"ok"
        assert home.server.connections == 1


@pytest.mark.parametrize(
    ("size", "reused"),
    [(0, True), (64 * 1024, True), (64 * 1024 + 1, False), (10 << 20, False)],
)
async def test_a_redirect_body_is_drained_up_to_64_kib(size: int, reused: bool) -> None:
    events: list[PoolEvent] = []
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        home.routes["/big"] = redirect(302, "/next", body=b"b" * size)
        r = await client.get(home.url("/big"))
        assert (r.status, r.content) == (200, b"ok")
        at_rest(client)
        if reused:
            assert reasons(events, "acquired") == ["new", "reused"]
            assert reasons(events, "closed") == []
        else:
            assert reasons(events, "acquired") == ["new", "new"]
            assert reasons(events, "released")[0] == "closed"
            assert reasons(events, "closed") == ["not_reusable"]
        assert home.server.connections == (1 if reused else 2)


async def test_an_endless_redirect_body_is_cut_off() -> None:
    """A 302 with a huge Content-Length whose body trickles on: drain stops at 64 KiB."""

    def endless(_raw: bytes) -> bytes:
        return redirect(302, "/next", body=b"e" * (256 * 1024)).replace(
            b"Content-Length: 262144", b"Content-Length: 1000000000000"
        )

    events: list[PoolEvent] = []
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        home.routes["/endless"] = endless
        r = await client.get(home.url("/endless"))
        assert r.content == b"ok"
        assert reasons(events, "closed") == ["not_reusable"]
        at_rest(client)


# ------------------------------------------------------------------------- no Location


async def test_a_3xx_without_location_is_a_final_response_with_its_body() -> None:
    async with Site() as home, Client(timeout=TIMEOUT) as client:
        home.routes["/x"] = b"HTTP/1.1 302 Found\r\nContent-Length: 5\r\n\r\nhello"
        r = await client.get(home.url("/x"))
        assert (r.status, r.content, r.history) == (302, b"hello", [])
        async with client.stream("GET", home.url("/x")) as s:
            assert await s.read() == b"hello"
        at_rest(client)
        assert home.server.connections == 1
