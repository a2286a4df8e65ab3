"""Tests of the ``nginx`` and ``tls_certs`` fixtures, using only the stdlib (not glasspool)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import http.client
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import tests.nginx
from tests.faults import format_request, read_response
from tests.nginx import NginxServer, TLSCerts, find_nginx, start_nginx

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.contextmanager
def http_conn(
    nginx: NginxServer,
    which: str = "default",
    host: str = "127.0.0.1",
    context: ssl.SSLContext | None = None,
) -> Iterator[http.client.HTTPConnection]:
    """An http.client connection to one of the nginx servers, closed afterwards."""
    port = nginx.ports[which]
    if which == "tls":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, context=context, timeout=10
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    with contextlib.closing(conn):
        yield conn


def get(
    nginx: NginxServer, path: str, which: str = "default", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """GET ``path`` on a fresh connection; return the response and its body."""
    with http_conn(nginx, which) as conn:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()


@contextlib.asynccontextmanager
async def raw(nginx: NginxServer, which: str = "default") -> AsyncIterator[Conn]:
    """An asyncio stream connection to one of the nginx servers, closed afterwards."""
    reader, writer = await asyncio.open_connection("127.0.0.1", nginx.ports[which])
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# -- content -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/small", "/64k", "/1m"])
def test_static_files_have_exact_content_and_length(nginx: NginxServer, path: str) -> None:
    response, body = get(nginx, path)
    assert response.status == 200
    assert body == nginx.content(path)
    assert response.getheader("Content-Length") == str(len(body))


def test_small_is_hello_world(nginx: NginxServer) -> None:
    assert get(nginx, "/small")[1] == b"Hello, world!"


def test_big_is_20_mib_streamed(nginx: NginxServer) -> None:
    digest, size = hashlib.sha256(), 0
    with http_conn(nginx) as conn:
        conn.request("GET", "/big")
        response = conn.getresponse()
        while block := response.read(1 << 20):
            digest.update(block)
            size += len(block)
    assert size == 20 * 1024 * 1024
    assert digest.digest() == hashlib.sha256(nginx.content("/big")).digest()


def test_gzip_is_compressed_only_when_asked(nginx: NginxServer) -> None:
    zipped, zipped_body = get(nginx, "/gzip", headers={"Accept-Encoding": "gzip"})
    plain, plain_body = get(nginx, "/gzip")
    assert zipped.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped_body) == nginx.content("/gzip")
    assert len(zipped_body) < len(plain_body) // 5
    assert plain.getheader("Content-Encoding") is None
    assert plain_body == nginx.content("/gzip")


async def test_chunked_is_really_chunked(nginx: NginxServer) -> None:
    async with raw(nginx) as (reader, writer):
        writer.write(format_request("GET", "/chunked", port=nginx.ports["default"]))
        response = await read_response(reader)
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.header("Content-Length") is None
    assert response.header("Content-Encoding") is None
    assert len(response.chunk_sizes) >= 2, response.chunk_sizes
    assert response.body == nginx.content("/chunked")


def test_redirects_count_down_to_small(nginx: NginxServer) -> None:
    port = nginx.ports["default"]
    response, _ = get(nginx, "/redirect/3")
    assert response.status == 302
    assert response.getheader("Location") == f"http://127.0.0.1:{port}/redirect/2"
    response, _ = get(nginx, "/redirect/1")
    assert response.getheader("Location") == f"http://127.0.0.1:{port}/small"
    response, _ = get(nginx, "/redirect-307/2")
    assert response.status == 307
    assert response.getheader("Location") == f"http://127.0.0.1:{port}/redirect-307/1"


@pytest.mark.parametrize("code", [404, 204, 503])
def test_status_paths_return_their_code(nginx: NginxServer, code: int) -> None:
    assert get(nginx, f"/status/{code}")[0].status == code


def test_upload_accepts_a_body_and_limits_it(nginx: NginxServer) -> None:
    with http_conn(nginx) as conn:
        conn.request("POST", "/upload", body=b"x" * 1000)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"uploaded\n")
    too_big = 2 * 1024 * 1024
    with http_conn(nginx) as conn:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Length", str(too_big))
        conn.endheaders()
        assert conn.getresponse().status == 413


# -- keep-alive policies and the access log ---------------------------------------------------


async def test_default_server_reuses_one_connection(nginx: NginxServer) -> None:
    tag = uuid.uuid4().hex
    mark = nginx.log_mark()
    async with raw(nginx) as (reader, writer):
        for _ in range(5):
            writer.write(
                format_request(
                    "GET", "/small", port=nginx.ports["default"], headers=[("X-Test-Tag", tag)]
                )
            )
            assert (await read_response(reader)).body == b"Hello, world!"
    entries = [e for e in await nginx.wait_access_log(5, since=mark) if e.tag == tag]
    assert len({e.connection for e in entries}) == 1
    assert [e.connection_requests for e in entries] == [1, 2, 3, 4, 5]
    assert {(e.port, e.status, e.method, e.uri) for e in entries} == {
        (nginx.ports["default"], 200, "GET", "/small")
    }


async def test_strict_server_closes_after_three_requests(nginx: NginxServer) -> None:
    mark = nginx.log_mark()
    port = nginx.ports["strict"]
    async with raw(nginx, "strict") as (reader, writer):
        responses = []
        for _ in range(3):
            writer.write(format_request("GET", "/small", port=port))
            responses.append(await read_response(reader))
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    assert [r.header("Connection") for r in responses] == ["keep-alive", "keep-alive", "close"]
    entries = [e for e in await nginx.wait_access_log(3, since=mark) if e.port == port]
    assert [e.connection_requests for e in entries] == [1, 2, 3]
    assert len({e.connection for e in entries}) == 1


async def test_strict_server_closes_idle_connections_after_1s(nginx: NginxServer) -> None:
    async with raw(nginx, "strict") as (reader, writer):
        writer.write(format_request("GET", "/small", port=nginx.ports["strict"]))
        await read_response(reader)
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    assert 0.5 <= time.monotonic() - start < 4


async def test_access_log_since_mark_shows_only_new_lines(nginx: NginxServer) -> None:
    port = nginx.ports["default"]
    before = nginx.log_mark()
    async with raw(nginx) as (reader, writer):
        writer.write(format_request("GET", "/small", port=port))
        await read_response(reader)
        await nginx.wait_access_log(1, since=before)  # its line is in before we mark
        mark = nginx.log_mark()
        writer.write(
            format_request("GET", "/status/404", port=port, headers=[("X-Test-Tag", "after-mark")])
        )
        await read_response(reader)
    entries = await nginx.wait_access_log(1, since=mark)
    assert [(e.uri, e.status, e.tag) for e in entries] == [("/status/404", 404, "after-mark")]


async def test_wait_access_log_gives_up_with_the_lines_seen(nginx: NginxServer) -> None:
    with pytest.raises(AssertionError, match=r"logged 0 of 1 expected access log lines"):
        await nginx.wait_access_log(1, since=nginx.log_mark(), timeout=0.05)


# -- TLS, IPv6, URLs ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_tls_verifies_against_the_test_ca(
    nginx: NginxServer, tls_certs: TLSCerts, host: str
) -> None:
    with http_conn(nginx, "tls", host, tls_certs.client_context()) as conn:
        conn.request("GET", "/small")
        assert conn.getresponse().read() == b"Hello, world!"
    assert nginx.ca_file == tls_certs.ca_file


def test_tls_is_not_trusted_without_the_test_ca(nginx: NginxServer) -> None:
    with http_conn(nginx, "tls", "localhost", ssl.create_default_context()) as conn:
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("GET", "/small")


def test_ipv6_loopback_is_served_when_available(nginx: NginxServer) -> None:
    assert nginx.ipv6, "::1 is available on this machine, so nginx must listen there too"
    with http_conn(nginx, "default", "::1") as conn:
        conn.request("GET", "/small")
        assert conn.getresponse().read() == b"Hello, world!"


def test_url_builds_each_server(nginx: NginxServer) -> None:
    ports = nginx.ports
    assert nginx.url("/x") == f"http://127.0.0.1:{ports['default']}/x"
    assert nginx.url("/x?a=1", "strict") == f"http://127.0.0.1:{ports['strict']}/x?a=1"
    assert nginx.url("/", "tls", host="::1") == f"https://[::1]:{ports['tls']}/"
    assert len(set(ports.values())) == 3
    with pytest.raises(ValueError, match="unknown nginx server 'fast'"):
        nginx.url("/", "fast")
    with pytest.raises(ValueError, match="must start with '/'"):
        nginx.url("small")


# -- failing clearly ------------------------------------------------------------------------


def test_missing_nginx_fails_with_install_instructions() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"run \.ci/run, or `apt-get install nginx`"):
        find_nginx(("/nonexistent/nginx",))


def test_nginx_that_does_not_start_fails_with_its_log(tmp_path: Path, tls_certs: TLSCerts) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"could not start /bin/false.*exited"):
        start_nginx(tmp_path, tls_certs, binary="/bin/false", startup_timeout=5)


def test_start_picks_new_ports_when_one_was_taken(
    tmp_path: Path, tls_certs: TLSCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pick = tests.nginx.pick_ports
    picked: list[list[int]] = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]

        def pick_a_taken_port_first(count: int, ipv6: bool) -> list[int]:
            ports = real_pick(count, ipv6)
            picked.append([taken, *ports[1:]] if not picked else ports)
            return picked[-1]

        monkeypatch.setattr(tests.nginx, "pick_ports", pick_a_taken_port_first)
        started = time.monotonic()
        server = start_nginx(tmp_path, tls_certs)
        try:
            assert len(picked) == 2
            assert server.ports["default"] == picked[1][0] != taken
            assert time.monotonic() - started < 2  # did not sit out nginx's bind() retries
            with http_conn(server) as conn:
                conn.request("GET", "/small")
                assert conn.getresponse().read() == b"Hello, world!"
        finally:
            server.stop()
