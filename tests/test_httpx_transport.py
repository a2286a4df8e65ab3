"""glasspool.httpx.AsyncTransport under httpx.AsyncClient, against loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib
import ssl
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

import glasspool
from glasspool.httpx import AsyncTransport
from tests.nginx import TLSCerts
from tests.rawserver import RawServer, Reply, read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def test_get_sends_httpx_headers_as_given() -> None:
    async with (
        RawServer(replies=[OK]) as srv,
        httpx.AsyncClient(transport=AsyncTransport(limit=4)) as client,
    ):
        r = await client.get(f"http://127.0.0.1:{srv.port}/x", headers={"X-A": "1"})
        assert r.status_code == 200
        assert r.text == "hello"
        assert r.extensions["http_version"] == b"HTTP/1.1"
        assert r.extensions["reason_phrase"] == b"OK"
        raw = srv.requests[0].lower()
        assert b"x-a: 1" in raw
        assert b"user-agent: python-httpx" in raw  # httpx's, not glasspool's
        assert raw.count(b"user-agent") == 1


async def test_post_bytes_and_streamed_upload() -> None:
    async with (
        RawServer(replies=[OK, OK]) as srv,
        httpx.AsyncClient(transport=AsyncTransport()) as client,
    ):
        url = f"http://127.0.0.1:{srv.port}/"
        r = await client.post(url, content=b"abc")
        assert r.status_code == 200

        async def gen() -> AsyncIterator[bytes]:
            yield b"one"
            yield b"two"

        r = await client.post(url, content=gen())
        assert r.status_code == 200
    assert srv.requests[0].lower().endswith(b"content-length: 3\r\n\r\nabc")
    second = srv.requests[1].lower()
    assert b"transfer-encoding: chunked" in second
    assert second.endswith(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")


async def test_streamed_download_and_early_close_releases_closed() -> None:
    body = b"x" * 100_000
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    transport = AsyncTransport()
    events: list[glasspool.PoolEvent] = []
    transport.pool.add_listener(events.append)
    async with (
        RawServer(replies=[reply, reply]) as srv,
        httpx.AsyncClient(transport=transport) as client,
    ):
        url = f"http://127.0.0.1:{srv.port}/"
        async with client.stream("GET", url) as r:
            got = b"".join([c async for c in r.aiter_raw()])
        assert got == body
        async with client.stream("GET", url) as r:
            async for _ in r.aiter_raw():
                break
    released = [e.reason for e in events if e.kind == "released"]
    assert released == ["eof", "closed"]


async def test_gzip_is_decoded_by_httpx_not_by_us() -> None:
    payload = gzip.compress(b"zipped text")
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload)
        + payload
    )
    async with (
        RawServer(replies=[reply]) as srv,
        httpx.AsyncClient(transport=AsyncTransport()) as client,
    ):
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.content == b"zipped text"
    raw = srv.requests[0].lower()
    assert raw.count(b"accept-encoding") == 1  # httpx's only


async def test_redirects_followed_by_httpx() -> None:
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n"
    transport = AsyncTransport()
    async with (
        RawServer(replies=[redirect, OK]) as srv,
        httpx.AsyncClient(transport=transport, follow_redirects=True) as client,
    ):
        r = await client.get(f"http://127.0.0.1:{srv.port}/a")
        assert r.text == "hello"
        assert len(r.history) == 1
        async with RawServer(replies=[redirect]) as srv2:
            r2 = await client.get(f"http://127.0.0.1:{srv2.port}/a", follow_redirects=False)
            assert r2.status_code == 302
    assert len(srv.requests) == 2
    assert srv.requests[1].startswith(b"GET /b ")
    stats = transport.pool.stats()
    assert sum(h.requests for h in stats.hosts.values()) == 3


async def test_limits_and_stats() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.01)
            writer.write(OK)
            await writer.drain()

    transport = AsyncTransport(limit=3, limit_per_host=2)
    async with RawServer(handler=handler) as srv, httpx.AsyncClient(transport=transport) as client:
        url = f"http://127.0.0.1:{srv.port}/"
        rs = await asyncio.gather(*(client.get(url) for _ in range(20)))
        assert all(r.status_code == 200 for r in rs)
        stats = transport.pool.stats()
        assert stats.limit == 3 and stats.limit_per_host == 2
        assert stats.open <= 2 and stats.in_use == 0
        assert srv.connections <= 2
        (host,) = stats.hosts.values()
        assert host.requests == 20 and host.opened <= 2


async def test_read_timeout_mapped_with_cause() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with (
        RawServer(handler=handler) as srv,
        httpx.AsyncClient(transport=AsyncTransport(), timeout=httpx.Timeout(5, read=0.1)) as client,
    ):
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get(f"http://127.0.0.1:{srv.port}/")
        assert isinstance(info.value.__cause__, glasspool.ReadTimeout)


async def test_pool_timeout_mapped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        await asyncio.sleep(5)

    async with (
        RawServer(handler=handler) as srv,
        httpx.AsyncClient(
            transport=AsyncTransport(limit=1), timeout=httpx.Timeout(5, pool=0.1)
        ) as client,
    ):
        url = f"http://127.0.0.1:{srv.port}/"
        async with client.stream("GET", url):
            with pytest.raises(httpx.PoolTimeout) as info:
                await client.get(url)
            assert isinstance(info.value.__cause__, glasspool.PoolTimeout)


async def test_connect_error_and_protocol_error_mapped(refused_port: int) -> None:
    async with (
        RawServer(replies=[b"garbage\r\n\r\n"]) as srv,
        httpx.AsyncClient(transport=AsyncTransport()) as client,
    ):
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(f"http://127.0.0.1:{refused_port}/")
        assert isinstance(info.value.__cause__, glasspool.ConnectError)
        with pytest.raises(httpx.RemoteProtocolError) as info2:
            await client.get(f"http://127.0.0.1:{srv.port}/")
        assert isinstance(info2.value.__cause__, glasspool.GlasspoolError)


async def test_cancellation_storm_leaves_no_slot() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.02)
            writer.write(OK)
            await writer.drain()

    transport = AsyncTransport(limit=4, limit_per_host=4)
    async with RawServer(handler=handler) as srv, httpx.AsyncClient(transport=transport) as client:
        url = f"http://127.0.0.1:{srv.port}/"
        for _ in range(5):
            tasks = [asyncio.create_task(client.get(url)) for _ in range(50)]
            await asyncio.sleep(0.015)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        stats = transport.pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0 and stats.connecting == 0
        r = await asyncio.wait_for(client.get(url), 5)
        assert r.status_code == 200


async def test_http2_and_bad_options_refused() -> None:
    with pytest.raises(ValueError, match=r"HTTP/1\.1 only"):
        AsyncTransport(http2=True)
    with pytest.raises(TypeError, match="follow_redirects"):
        AsyncTransport(follow_redirects=True)


async def test_aclose_closes_pool() -> None:
    transport = AsyncTransport()
    async with RawServer(replies=[OK]) as srv:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(f"http://127.0.0.1:{srv.port}/")
            assert transport.pool.stats().idle == 1
        assert transport.pool.stats().open == 0
        with pytest.raises(httpx.TransportError):
            await transport.handle_async_request(
                httpx.Request("GET", f"http://127.0.0.1:{srv.port}/")
            )


def test_import_without_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delitem(sys.modules, "glasspool.httpx")
    with pytest.raises(ImportError, match=r"pip install 'glasspool\[httpx\]'"):
        importlib.import_module("glasspool.httpx")


async def test_server_closed_keepalive_connection_is_not_an_error() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        # Keep-alive promised, then the connection closes before the next request.
        writer.write(OK)
        await writer.drain()
        writer.close()

    async with (
        RawServer(handler=handler) as srv,
        httpx.AsyncClient(transport=AsyncTransport()) as client,
    ):
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url)).text == "hello"
        await asyncio.sleep(0.05)
        assert (await client.get(url)).text == "hello"
    assert served == 2


async def test_http2_extension_refused() -> None:
    async with AsyncTransport() as transport:
        request = httpx.Request("GET", "http://127.0.0.1:1/", extensions={"http2": True})
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(request)
        assert transport.pool.stats().open == 0


def _recording_server_context(tls_certs: TLSCerts, names: list[str | None]) -> ssl.SSLContext:
    ctx = tls_certs.server_context(wrong_host=True)  # valid only for example.invalid

    def record(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, c: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = record
    return ctx


async def test_sni_hostname_is_sent_verified_and_part_of_the_key(tls_certs: TLSCerts) -> None:
    names: list[str | None] = []
    ctx = _recording_server_context(tls_certs, names)
    transport = AsyncTransport(verify=str(tls_certs.ca_file))
    async with (
        RawServer(handler=_serve_ok, ssl_context=ctx) as srv,
        httpx.AsyncClient(transport=transport) as client,
    ):
        url = f"https://127.0.0.1:{srv.port}/"
        sni = {"sni_hostname": "example.invalid"}
        for _ in range(2):
            r = await client.get(url, extensions=sni)
            assert r.status_code == 200
        assert names == ["example.invalid"]  # sent, verified, and the connection reused
        # Without the extension the certificate (for example.invalid) does not match
        # 127.0.0.1, and the verified connection opened for example.invalid is not lent.
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(url)
        assert isinstance(info.value.__cause__, glasspool.TLSError)
        stats = transport.pool.stats()
        assert stats.open == 1
        (key,) = [k for k, h in stats.hosts.items() if h.open]
        assert key.tls is not None and key.tls.server_hostname == "example.invalid"


async def test_different_sni_hostnames_do_not_share_connections(tls_certs: TLSCerts) -> None:
    names: list[str | None] = []
    ctx = _recording_server_context(tls_certs, names)
    transport = AsyncTransport(verify=False)
    async with (
        RawServer(handler=_serve_ok, ssl_context=ctx) as srv,
        httpx.AsyncClient(transport=transport) as client,
    ):
        url = f"https://127.0.0.1:{srv.port}/"
        for name in ("a.example", "b.example", "a.example", b"b.example"):
            r = await client.get(url, extensions={"sni_hostname": name})
            assert r.status_code == 200
        assert names == ["a.example", "b.example"]
        assert srv.connections == 2
        assert transport.pool.stats().open == 2


@pytest.mark.parametrize("bad", [1, "", "a b", "x\r\n", "é.example", b"\xff"])
async def test_bad_sni_hostname_is_a_clear_error(bad: object) -> None:
    async with AsyncTransport() as transport:
        request = httpx.Request("GET", "https://127.0.0.1:1/", extensions={"sni_hostname": bad})
        with pytest.raises(httpx.LocalProtocolError, match="sni_hostname must be"):
            await transport.handle_async_request(request)
        assert transport.pool.stats().open == 0


async def test_httpx_limits_are_mapped() -> None:
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=1, keepalive_expiry=7)
    async with AsyncTransport(limits=limits, limit_per_host=2) as transport:
        stats = transport.pool.stats()
        assert stats.limit == 3
        assert transport.pool._state.keepalive_expiry == 7
    with pytest.raises(TypeError, match=r"limits must be httpx\.Limits"):
        AsyncTransport(limits=3)
    with pytest.raises(TypeError, match="not both"):
        AsyncTransport(limits=limits, limit=4)


async def _serve_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await read_request(reader):
        writer.write(OK)
        await writer.drain()


async def test_body_cut_short_is_remote_protocol_error() -> None:
    reply = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", close=True)
    async with (
        RawServer(replies=[reply]) as srv,
        httpx.AsyncClient(transport=AsyncTransport()) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await client.get(f"http://127.0.0.1:{srv.port}/")
        assert isinstance(info.value.__cause__, glasspool.IncompleteBody)


async def test_shared_limit_over_four_hosts_opens_few_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(OK)
            await writer.drain()

    transport = AsyncTransport(limit=4, limit_per_host=4)
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(RawServer(handler=handler)) for _ in range(4)]
        client = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        urls = [f"http://127.0.0.1:{srv.port}/" for srv in servers]
        for _ in range(5):
            rs = await asyncio.gather(*(client.get(urls[i % 4]) for i in range(64)))
            assert all(r.status_code == 200 for r in rs)
        stats = transport.pool.stats()
        assert stats.open <= 4
        opened = sum(h.opened for h in stats.hosts.values())
        assert opened <= 8, opened
