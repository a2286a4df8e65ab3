"""The Client end to end against real loopback servers: nginx and the fault server."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import sys
import warnings
from collections.abc import AsyncIterator

import pytest

import glasspool
from glasspool import Client, PoolEvent
from tests.faults import FaultServer
from tests.nginx import NginxServer, TLSCerts
from tests.rawserver import RawServer, read_request


def reasons(events: list[PoolEvent], kind: str) -> list[str | None]:
    return [e.reason for e in events if e.kind == kind]


def at_rest(client: Client) -> None:
    stats = client.pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats


async def test_get_reads_body_and_releases_before_returning(nginx: NginxServer) -> None:
    events: list[PoolEvent] = []
    async with Client(limit=25, limit_per_host=5) as client:
        client.pool.add_listener(events.append)
        r = await client.get(nginx.url("/small"))
        assert (r.status, r.reason, r.http_version) == (200, "OK", "HTTP/1.1")
        assert r.content == b"Hello, world!" and r.text == "Hello, world!"
        assert r.headers["content-length"] == "13"
        assert str(r.url) == nginx.url("/small")
        assert [e.kind for e in events] == ["connecting", "acquired", "released"]
        assert events[-1].reason == "eof"
        r2 = await client.get(nginx.url("/small"))
        assert r2.status == 200
        host = client.pool.stats().hosts[next(iter(client.pool.stats().hosts))]
        assert (host.opened, host.reused, host.idle, host.available) == (1, 1, 1, 4)


async def test_keepalive_reuse_is_one_tcp_connection(nginx: NginxServer) -> None:
    mark = nginx.log_mark()
    async with Client() as client:
        for _ in range(5):
            assert (await client.get(nginx.url("/small"))).status == 200
    entries = await nginx.wait_access_log(5, since=mark)
    assert len({e.connection for e in entries}) == 1
    assert [e.connection_requests for e in entries] == [1, 2, 3, 4, 5]


async def test_stream_holds_connection_until_eof(nginx: NginxServer) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        async with client.stream("GET", nginx.url("/1m")) as r:
            assert client.pool.stats().in_use == 1
            total = 0
            async for chunk in r.aiter_bytes():
                total += len(chunk)
            assert total == 1 << 20
            assert client.pool.stats().in_use == 0
        assert reasons(events, "released") == ["eof"]
        assert client.pool.stats().idle == 1


async def test_stream_closed_early_closes_connection(nginx: NginxServer) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        async with client.stream("GET", nginx.url("/big")) as r:
            async for _ in r.aiter_raw():
                break
        assert reasons(events, "released") == ["closed"]
        assert reasons(events, "closed") == ["not_reusable"]
        assert client.pool.stats().open == 0
        assert (await client.get(nginx.url("/small"))).status == 200


async def test_stream_read_and_text(nginx: NginxServer) -> None:
    async with Client() as client, client.stream("GET", nginx.url("/64k")) as r:
        body = await r.read()
        assert body == nginx.content("/64k") and r.content == body


async def test_post_json_form_and_chunked_upload(fault_server: FaultServer) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defg"):
            yield part

    async with Client() as client:
        r = await client.post(fault_server.url("/"), json={"a": [1, 2]})
        assert r.status == 200
        r = await client.post(fault_server.url("/"), data={"x": "1 2"})
        r = await client.put(fault_server.url("/"), content=gen())
        r = await client.patch(fault_server.url("/"), content="héllo")
    sent = fault_server.requests
    assert sent[0].body == b'{"a":[1,2]}' and sent[0].header("content-type") == "application/json"
    assert sent[1].body == b"x=1+2"
    assert sent[2].header("transfer-encoding") == "chunked" and sent[2].body == b"abcdefg"
    assert sent[3].body == "héllo".encode()
    assert sent[0].header("user-agent") == f"glasspool/{glasspool.__version__}"


async def test_params_headers_base_url_and_shortcuts(fault_server: FaultServer) -> None:
    base = fault_server.url("/api/")
    async with Client(base_url=base, headers={"X-Client": "1"}) as client:
        for method in ("get", "head", "options", "delete"):
            r = await getattr(client, method)("items", params={"q": "a b"}, headers={"X-R": "2"})
            assert r.status == 200
    seen = fault_server.requests
    assert [s.method for s in seen] == ["GET", "HEAD", "OPTIONS", "DELETE"]
    assert seen[0].target == "/api/items?q=a+b"
    assert seen[0].header("x-client") == "1" and seen[0].header("x-r") == "2"


async def test_json_and_raise_for_status(nginx: NginxServer, fault_server: FaultServer) -> None:
    async with Client() as client:
        r = await client.get(nginx.url("/status/404"))
        assert r.status == 404
        with pytest.raises(glasspool.HTTPStatusError, match="404") as info:
            r.raise_for_status()
        assert info.value.response is r
        ok = await client.get(fault_server.url("/"))
        assert ok.raise_for_status() is ok
        assert ok.text.startswith("id=")


async def test_gzip_decoded_and_raw_kept(nginx: NginxServer) -> None:
    async with Client() as client:
        r = await client.get(nginx.url("/gzip"))
        assert r.headers["content-encoding"] == "gzip"
        assert r.content == nginx.content("/gzip")
        async with client.stream("GET", nginx.url("/gzip")) as s:
            raw = b"".join([c async for c in s.aiter_raw()])
        assert gzip.decompress(raw) == nginx.content("/gzip")


async def test_chunked_response(nginx: NginxServer) -> None:
    async with Client() as client:
        r = await client.get(nginx.url("/chunked"))
        assert r.headers.get("transfer-encoding") == "chunked"
        assert r.content == nginx.content("/chunked")
        assert client.pool.stats().idle == 1


async def test_redirects_followed_with_history(nginx: NginxServer) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        r = await client.get(nginx.url("/redirect/3"))
        assert r.status == 200
        assert [h.status for h in r.history] == [302, 302, 302]
        assert reasons(events, "acquired").count("new") == 1  # every hop reused it
        at_rest(client)
        r = await client.get(nginx.url("/redirect/2"), follow_redirects=False)
        assert r.status == 302 and r.history == []
    async with Client(max_redirects=2) as client:
        with pytest.raises(glasspool.TooManyRedirects, match="max_redirects=2") as info:
            await client.get(nginx.url("/redirect/5"))
        assert [h.status for h in info.value.history] == [302, 302, 302]
        at_rest(client)


async def test_tls_verified_with_ca_and_rejected_without(
    nginx: NginxServer, tls_certs: TLSCerts
) -> None:
    url = nginx.url("/small", which="tls", host="localhost")
    async with Client(verify=str(tls_certs.ca_file)) as client:
        r = await client.get(url)
        assert r.content == b"Hello, world!"
        key = next(iter(client.pool.stats().hosts))
        assert key.scheme == "https" and key.tls is not None and key.tls.verify
    async with Client() as client:  # the system trust store does not know the test CA
        with pytest.raises(glasspool.TLSError, match="localhost"):
            await client.get(url)
        at_rest(client)
        assert client.pool.stats().open == 0
    async with Client(verify=False) as client:
        assert (await client.get(url)).status == 200
    async with Client(verify=tls_certs.client_context()) as client:
        assert (await client.get(url)).status == 200


async def test_tls_handshake_is_a_pool_event(nginx: NginxServer, tls_certs: TLSCerts) -> None:
    """``tls`` (origin) comes between ``connecting`` and ``acquired new`` on https only, and
    also when the handshake fails; a reused connection has none."""
    events: list[PoolEvent] = []
    async with Client(verify=str(tls_certs.ca_file)) as client:
        client.pool.add_listener(events.append)
        for _ in range(2):
            await client.get(nginx.url("/small", which="tls", host="localhost"))
        await client.get(nginx.url("/small"))
    steps = [(e.kind, e.reason, e.key.scheme) for e in events if e.kind != "closed"]
    assert steps == [
        ("connecting", None, "https"),
        ("tls", "origin", "https"),
        ("acquired", "new", "https"),
        ("released", "eof", "https"),
        ("acquired", "reused", "https"),
        ("released", "eof", "https"),
        ("connecting", None, "http"),
        ("acquired", "new", "http"),
        ("released", "eof", "http"),
    ]
    assert events[0].connection_id == events[1].connection_id == events[2].connection_id
    assert events[0].time <= events[1].time <= events[2].time
    events.clear()
    async with Client() as client:  # the test CA is unknown: the handshake fails
        client.pool.add_listener(events.append)
        timeline = glasspool.Timeline(client.pool)
        with pytest.raises(glasspool.TLSError):
            await client.get(nginx.url("/small", which="tls", host="localhost"))
    assert [(e.kind, e.reason) for e in events] == [
        ("connecting", None),
        ("tls", "origin"),
        ("closed", "error"),
    ]
    assert "TLS handshake with the server" in timeline.render_html()


async def test_connect_error_names_host_and_port(refused_port: int) -> None:
    async with Client() as client:
        with pytest.raises(glasspool.ConnectError, match=str(refused_port)):
            await client.get(f"http://127.0.0.1:{refused_port}/")
        at_rest(client)
        assert client.pool.stats().open == 0


async def test_read_timeout_and_total_timeout(fault_server: FaultServer) -> None:
    async with Client() as client:
        with pytest.raises(glasspool.ReadTimeout, match="read"):
            await client.get(fault_server.url("/fault/stall"), timeout=glasspool.Timeout(read=0.1))
        with pytest.raises(glasspool.TotalTimeout, match=r"total timeout of 0\.3s"):
            await client.get(
                fault_server.url("/fault/trickle?delay=0.05&size=100"),
                timeout=glasspool.Timeout(read=1, total=0.3),
            )
        at_rest(client)
        assert (await client.get(fault_server.url("/"))).status == 200


async def test_pool_timeout_through_client(fault_server: FaultServer) -> None:
    async with Client(limit=1, limit_per_host=1) as client:
        async with client.stream("GET", fault_server.url("/")):
            with pytest.raises(glasspool.PoolTimeout, match="per-host limit 1"):
                await client.get(fault_server.url("/"), timeout=glasspool.Timeout(pool=0.05))
        at_rest(client)


async def test_stale_get_retried_post_not(fault_server: FaultServer) -> None:
    events: list[PoolEvent] = []
    url = fault_server.url("/")
    async with Client() as client:
        client.pool.add_listener(events.append)
        fault_server.plan(requests=("ok", "half-close"))
        assert (await client.get(url)).status == 200
        r = await client.get(url)  # the reused connection dies: retried on a new one
        assert r.status == 200
        assert reasons(events, "acquired") == ["new", "reused", "new"]
        assert "server_closed" in reasons(events, "closed")
        at_rest(client)
    fault_server.plan(requests=("ok", "half-close"))
    async with Client() as client:
        assert (await client.get(url)).status == 200
        with pytest.raises(glasspool.ServerDisconnected):
            await client.post(url, content=b"x")
        at_rest(client)
    assert len(fault_server.requests) == 5  # the POST was sent once, never again


async def test_connection_close_and_http10_not_pooled(fault_server: FaultServer) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        assert (await client.get(fault_server.url("/fault/connection-close"))).status == 200
        assert (await client.get(fault_server.url("/fault/http10"))).http_version == "HTTP/1.0"
        assert reasons(events, "closed") == ["not_reusable", "not_reusable"]
        assert client.pool.stats().open == 0


async def test_incomplete_body_names_counts(fault_server: FaultServer) -> None:
    async with Client() as client:
        with pytest.raises(glasspool.IncompleteBody) as info:
            await client.get(fault_server.url("/fault/truncate?length=100&send=10"))
        assert (info.value.expected, info.value.received) == (100, 10)
        assert "100" in str(info.value) and "10" in str(info.value)
        at_rest(client)


async def test_aclose_idempotent_and_requests_after_fail(nginx: NginxServer) -> None:
    client = Client()
    await client.get(nginx.url("/small"))
    await client.aclose()
    await client.aclose()
    assert client.pool.stats().open == 0
    with pytest.raises(glasspool.ClientClosed):
        await client.get(nginx.url("/small"))


async def test_aclose_fails_in_flight_request(fault_server: FaultServer) -> None:
    client = Client()
    task = asyncio.create_task(client.get(fault_server.url("/fault/stall")))
    await fault_server.wait_requests(1)
    await client.aclose()
    with pytest.raises(glasspool.ClientClosed):
        await task


async def test_unclosed_stream_warns_with_call_site(nginx: NginxServer) -> None:
    async with Client() as client:
        cm = client.stream("GET", nginx.url("/big"))
        r = await cm.__aenter__()
        assert client.pool.stats().in_use == 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del cm, r
            gc.collect()
        messages = [
            str(w.message) for w in caught if w.category is glasspool.UnclosedResponseWarning
        ]
        assert messages and "test_client.py" in messages[0]
        await asyncio.sleep(0)  # the release is scheduled on the loop by the finaliser
        at_rest(client)
        assert client.pool.stats().open == 0


async def test_invalid_input_raises_before_connecting(fault_server: FaultServer) -> None:
    async with Client() as client:
        with pytest.raises(glasspool.InvalidURL):
            await client.get("ftp://127.0.0.1/")
        with pytest.raises(glasspool.InvalidRequest, match="X-Bad"):
            await client.get(fault_server.url("/"), headers={"X-Bad": "a\r\nInjected: 1"})
        with pytest.raises(glasspool.InvalidRequest):
            await client.request("GE T", fault_server.url("/"))
    assert fault_server.connections_accepted == 0


async def test_json_method_decodes(fault_server: FaultServer) -> None:
    async with Client() as client:
        r = await client.get(fault_server.url("/"))
        with pytest.raises(json.JSONDecodeError):
            r.json()


def test_bad_client_configuration_names_values() -> None:
    with pytest.raises(ValueError, match="limit_per_host=20 is greater than limit=10"):
        Client(limit=10, limit_per_host=20)
    with pytest.raises(ValueError, match="limit must be >= 1, got -1"):
        Client(limit=-1)
    with pytest.raises(ValueError, match="max_redirects"):
        Client(max_redirects=-1)


async def test_line_and_chunk_extension_caps_are_client_options() -> None:
    from tests.rawserver import RawServer

    long_line = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 300 + b"\r\nContent-Length: 0\r\n\r\n"
    chunk_ext = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;" + b"e" * 100 + b"\r\nok\r\n0\r\n\r\n"
    )
    async with RawServer(replies=[long_line, chunk_ext]) as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        async with Client(max_line_bytes=200, max_chunk_ext_bytes=50) as client:
            with pytest.raises(glasspool.ResponseTooLarge, match="200"):
                await client.get(url)
            with pytest.raises(glasspool.ResponseTooLarge, match="50"):
                await client.get(url)
            at_rest(client)
    with pytest.raises(ValueError, match="max_line_bytes"):
        Client(max_line_bytes=0)


def test_default_per_host_limit_follows_a_small_global_limit() -> None:
    assert Client(limit=1).pool.stats().limit_per_host == 1
    assert Client(limit=50).pool.stats().limit_per_host == 10
    assert Client(limit=3, limit_per_host=None).pool.stats().limit_per_host is None
    with pytest.raises(ValueError, match="limit_per_host=4 is greater than limit=3"):
        Client(limit=3, limit_per_host=4)


# -- whole bodies read by get(): one piece, straight into its buffer -----------------------------


@pytest.mark.parametrize("path", ["/64k", "/1m", "/big"])
@pytest.mark.parametrize("which", ["default", "tls"])
async def test_get_returns_large_bodies_exactly_and_reuses_the_connection(
    nginx: NginxServer, tls_certs: TLSCerts, path: str, which: str
) -> None:
    # /big (20 MiB) is read in several sink segments; /1m in one; TLS reads go through
    # asyncio's SSL protocol into the same buffers.
    events: list[PoolEvent] = []
    async with Client(verify=str(tls_certs.ca_file)) as client:
        client.pool.add_listener(events.append)
        for _ in range(2):
            r = await client.get(nginx.url(path, which))
            assert type(r.content) is bytes
            assert r.content == nginx.content(path)
        assert reasons(events, "released") == ["eof", "eof"]
        assert reasons(events, "acquired") == ["new", "reused"]
        assert client.pool.stats().idle == 1


# -- read() of a streamed response: the whole rest at once ---------------------------------------


@pytest.mark.parametrize("path", ["/1m", "/big"])
async def test_stream_read_takes_the_whole_body_and_releases_at_eof(
    nginx: NginxServer, path: str
) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        for _ in range(2):
            async with client.stream("GET", nginx.url(path)) as r:
                assert client.pool.stats().in_use == 1
                body = await r.read()
                assert client.pool.stats().in_use == 0  # released when the body ended
                assert body == nginx.content(path) and r.content is body
                assert r.num_bytes_downloaded == len(body) and r.is_closed
                with pytest.raises(glasspool.StreamConsumed):
                    async for _ in r.aiter_raw():
                        pass
        assert reasons(events, "released") == ["eof", "eof"]
        assert reasons(events, "acquired") == ["new", "reused"]


async def test_stream_read_of_a_truncated_body_raises_and_closes(
    fault_server: FaultServer,
) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        url = fault_server.url("/fault/truncate?length=100000&send=30000")
        async with client.stream("GET", url) as r:
            with pytest.raises(glasspool.IncompleteBody) as info:
                await r.read()
            assert (info.value.expected, info.value.received) == (100_000, 30_000)
            assert r.is_closed
        assert reasons(events, "released") == ["error"]
        assert client.pool.stats().open == 0


async def test_stream_read_after_iterating_part_of_it_is_refused(nginx: NginxServer) -> None:
    async with Client() as client, client.stream("GET", nginx.url("/1m")) as r:
        async for _ in r.aiter_raw():
            break
        with pytest.raises(glasspool.StreamConsumed):
            await r.read()


# -- num_bytes_downloaded: body bytes received, before any Content-Encoding is undone -----------

_PLAIN = bytes(range(256)) * 800  # 200 KiB: get() reads most of it straight into its buffer
_TEXT = b"glasspool counts the bytes it received, not the bytes it decoded.\n" * 2000
_GZIPPED = gzip.compress(_TEXT)


def _chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# path -> (extra header lines, body as framed on the wire, body bytes it carries)
_BODIES = {
    "/plain": (b"", _PLAIN, len(_PLAIN)),
    "/gzip": (b"Content-Encoding: gzip\r\n", _GZIPPED, len(_GZIPPED)),
    "/chunked": (b"Transfer-Encoding: chunked\r\n", _chunked(_PLAIN, 5000), len(_PLAIN)),
    "/gzip-chunked": (
        b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        _chunked(_GZIPPED, 1000),
        len(_GZIPPED),
    ),
}


async def _serve_bodies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (request := await read_request(reader)) is not None:
        method, path = request.split(b" ", 2)[:2]
        extra, framed, _ = _BODIES[path.decode()]
        length = b"" if b"chunked" in extra else b"Content-Length: %d\r\n" % len(framed)
        head = b"HTTP/1.1 200 OK\r\n" + extra + length + b"\r\n"
        writer.write(head if method == b"HEAD" else head + framed)
        await writer.drain()


@pytest.mark.parametrize("path", list(_BODIES))
async def test_num_bytes_downloaded_counts_body_bytes_as_received(path: str) -> None:
    # get() (the whole body read, whole or decoded as it arrives) and every way of reading
    # a streamed body count the same bytes: the body's, without chunked framing and
    # before gzip is undone
    _, _, wire = _BODIES[path]
    decoded = _TEXT if "gzip" in path else _PLAIN
    async with RawServer(_serve_bodies) as srv, Client() as client:
        url = f"http://127.0.0.1:{srv.port}{path}"
        for how in ("get", "aiter_bytes", "aiter_raw", "read", "get"):
            if how == "get":
                r = await client.get(url)
                assert r.content == decoded
            else:
                async with client.stream("GET", url) as r:
                    assert r.num_bytes_downloaded == 0
                    if how == "read":
                        assert await r.read() == decoded
                    elif how == "aiter_bytes":
                        assert b"".join([c async for c in r.aiter_bytes()]) == decoded
                    else:
                        assert len(b"".join([c async for c in r.aiter_raw()])) == wire
            assert r.num_bytes_downloaded == wire, how
        at_rest(client)
        host = client.pool.stats().host("127.0.0.1")
        assert host is not None and host.opened == 1


async def test_num_bytes_downloaded_is_zero_for_head_and_counts_the_next_get() -> None:
    async with RawServer(_serve_bodies) as srv, Client() as client:
        url = f"http://127.0.0.1:{srv.port}/plain"
        r = await client.head(url)
        assert r.headers["content-length"] == str(len(_PLAIN))
        assert r.content == b"" and r.num_bytes_downloaded == 0
        assert (await client.get(url)).num_bytes_downloaded == len(_PLAIN)


@pytest.mark.parametrize("path", ["/64k", "/1m", "/gzip", "/chunked"])
async def test_num_bytes_downloaded_after_get_from_nginx(nginx: NginxServer, path: str) -> None:
    async with Client() as client:
        r = await client.get(nginx.url(path))
        assert r.content == nginx.content(path)
        async with client.stream("GET", nginx.url(path)) as s:
            raw = b"".join([c async for c in s.aiter_raw()])
        assert r.num_bytes_downloaded == s.num_bytes_downloaded == len(raw)
        if path == "/gzip":
            assert len(raw) < len(r.content)  # the compressed size, not the decoded one


async def test_num_bytes_downloaded_of_redirects_counts_their_bodies() -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: /plain\r\nContent-Length: 7\r\n\r\nmoved.\n"
    done = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer(replies=[moved, done]) as srv, Client() as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.content == b"ok" and r.num_bytes_downloaded == 2
        assert [h.num_bytes_downloaded for h in r.history] == [7]


@pytest.mark.parametrize(
    "kwargs",
    [{"no_such_option": 1}, {"limit": 0}, {"timeout": "soon"}, {"base_url": "ftp://h/"}],
    ids=["unknown keyword", "bad limit", "bad timeout", "bad base_url"],
)
def test_a_client_whose_constructor_raised_is_collected_quietly(
    kwargs: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``__del__`` copes with a half-built object: no unraisable error, no warning."""
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises((TypeError, ValueError)):
            Client(**kwargs)  # type: ignore[arg-type]
        gc.collect()
    assert unraisable == []
