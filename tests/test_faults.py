"""Tests of the test infrastructure: FaultServer behaviours (asyncio streams, no glasspool) and
the conftest leak check (run on deliberately leaky tests with pytester)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.faults import FaultServer, RawResponse, format_request, read_response, refusing_port
from tests.nginx import TLSCerts

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connect(
    server: FaultServer, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Conn]:
    """Open a client connection to ``server`` and close it (waiting for the close) after."""
    reader, writer = await asyncio.open_connection(
        server.host,
        server.port,
        ssl=ssl_context,
        server_hostname="localhost" if ssl_context else None,
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def exchange(
    conn: Conn,
    server: FaultServer,
    target: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> RawResponse:
    """Send one request on ``conn`` and read its response."""
    reader, writer = conn
    writer.write(format_request(method, target, port=server.port, headers=headers, body=body))
    await writer.drain()
    return await read_response(reader, method=method)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Read until EOF (ConnectionResetError propagates)."""
    return await asyncio.wait_for(reader.read(), timeout=5)


# -- normal serving -----------------------------------------------------------------------


async def test_ok_keeps_the_connection_and_numbers_requests(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        first = await exchange(conn, fault_server, "/a")
        second = await exchange(conn, fault_server, "/b")
    assert (first.status, first.body, first.header("x-request-id")) == (200, b"id=1", "1")
    assert (second.body, second.header("x-connection-id")) == (b"id=2", "1")
    assert first.header("connection") is None
    assert fault_server.connections_accepted == 1
    assert fault_server.requests_per_connection == {1: 2}
    assert [r.target for r in fault_server.requests] == ["/a", "/b"]
    await fault_server.wait_open(0)


async def test_request_bodies_are_read_and_recorded(fault_server: FaultServer) -> None:
    chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    async with connect(fault_server) as conn:
        r1 = await exchange(conn, fault_server, "/up", method="POST", body=b"x" * 1000)
        r2 = await exchange(
            conn,
            fault_server,
            "/up",
            method="POST",
            headers=[("Transfer-Encoding", "chunked")],
            body=chunked,
        )
    assert (r1.status, r2.status) == (200, 200)
    assert [r.body for r in fault_server.requests] == [b"x" * 1000, b"hello world"]
    assert fault_server.requests[1].header("TRANSFER-encoding") == "chunked"


async def test_expect_continue_gets_100_before_the_body_is_read(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        head = format_request(
            "PUT",
            "/",
            port=fault_server.port,
            headers=[("Expect", "100-continue"), ("Content-Length", "4")],
        )
        writer.write(head)
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        response = await read_response(reader)
    assert response.status == 200
    assert fault_server.requests[0].body == b"data"


async def test_head_gets_length_but_no_body(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        head = await exchange(conn, fault_server, "/", method="HEAD")
        after = await exchange(conn, fault_server, "/")
    assert (head.header("content-length"), head.body) == ("4", b"")
    assert after.body == b"id=2"


async def test_ok_parameters_set_status_size_and_chunking(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        r = await exchange(conn, fault_server, "/fault/ok?status=503&size=20&chunked=1")
    assert r.status == 503
    assert r.body == b"id=1" + b"." * 16
    assert r.chunk_sizes == (10, 10)
    assert r.header("content-length") is None


async def test_client_connection_close_is_honoured(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        r = await exchange(conn, fault_server, "/", headers=[("Connection", "close")])
        assert r.header("connection") == "close"
        assert await read_to_end(conn[0]) == b""


async def test_malformed_request_gets_400_and_close(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(b"NONSENSE\r\n\r\n")
        r = await read_response(reader)
        assert r.status == 400 and b"malformed request line" in r.body
        assert await read_to_end(reader) == b""
    assert fault_server.requests == []


# -- connection-ending faults -------------------------------------------------------------


async def test_reset_sends_rst_without_a_response(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(format_request("GET", "/fault/reset", port=fault_server.port))
        with pytest.raises(ConnectionResetError):
            await read_to_end(reader)
    assert fault_server.requests[0].fault == "reset"


async def test_reset_after_bytes_sends_a_prefix_then_rst(fault_server: FaultServer) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", fault_server.port))
        await loop.sock_sendall(
            sock, format_request("GET", "/fault/reset?after=12", port=fault_server.port)
        )
        received = b""
        with pytest.raises(ConnectionResetError):
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=5):
                received += chunk
    assert received == b"HTTP/1.1 200"


async def test_half_close_sends_fin_and_waits_for_the_client(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(format_request("GET", "/fault/half-close", port=fault_server.port))
        assert await read_to_end(reader) == b""
        await fault_server.wait_requests(1)
        assert fault_server.open_connections == 1  # still reading our side
    await fault_server.wait_open(0)


async def test_stall_never_answers_and_closes_when_the_client_does(
    fault_server: FaultServer,
) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(format_request("GET", "/fault/stall", port=fault_server.port))
        await fault_server.wait_requests(1)
        with pytest.raises(TimeoutError):  # a negative: nothing may arrive in this window
            await asyncio.wait_for(reader.read(1), timeout=0.2)
    await fault_server.wait_open(0)


async def test_stall_without_reading_backs_up_the_client(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (_, writer):
        head = format_request(
            "POST", "/fault/stall?read=0", port=fault_server.port, headers=[("Content-Length", "0")]
        )
        writer.write(head)
        await fault_server.wait_requests(1)
        writer.write(b"x" * (16 * 1024 * 1024))  # 16 MiB: more than the socket buffers hold
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), timeout=0.3)
        writer.transport.abort()


async def test_aclose_ends_stalled_connections() -> None:
    async with FaultServer() as server:
        server.plan(on_accept="stall")
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(format_request("GET", "/", port=server.port))
        await server.wait_connections(1)
    try:
        assert await read_to_end(reader) == b""
    except ConnectionResetError:
        pass  # aborted with our request unread: an RST is as good as a FIN here
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert (server.open_connections, server.requests) == (0, [])


async def test_truncate_promises_more_than_it_sends(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(
            format_request("GET", "/fault/truncate?length=50&send=7", port=fault_server.port)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        rest = await read_to_end(reader)
    assert b"Content-Length: 50\r\n" in head
    assert rest == b"id=1..."


async def test_connection_close_fault_says_so_and_closes(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        r = await exchange(conn, fault_server, "/fault/connection-close")
        assert (r.header("connection"), r.body) == ("close", b"id=1")
        assert await read_to_end(conn[0]) == b""


@pytest.mark.parametrize(
    ("query", "connection", "length", "keeps"),
    [
        ("", "close", "4", False),
        ("?keepalive=1", "keep-alive", "4", True),
        ("?nolength=1", "close", None, False),
    ],
)
async def test_http10_responses(
    fault_server: FaultServer, query: str, connection: str, length: str | None, keeps: bool
) -> None:
    async with connect(fault_server) as conn:
        r = await exchange(conn, fault_server, f"/fault/http10{query}")
        assert (r.version, r.status, r.body) == ("HTTP/1.0", 200, b"id=1")
        assert (r.header("connection"), r.header("content-length")) == (connection, length)
        if keeps:
            assert (await exchange(conn, fault_server, "/")).body == b"id=2"
        else:
            assert await read_to_end(conn[0]) == b""


async def test_early_413_answers_before_reading_the_upload(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(
            format_request(
                "POST",
                "/fault/early-413?read=10",
                port=fault_server.port,
                headers=[("Content-Length", str(8 * 1024 * 1024))],
            )
        )
        writer.write(b"y" * (1024 * 1024))  # the client is still uploading
        try:
            response = await read_response(reader)
            assert (response.status, response.header("connection")) == (413, "close")
        except ConnectionResetError:
            pass  # the server closed with our upload unread, so the kernel may reset first
    assert fault_server.requests[0].body == b"y" * 10
    await fault_server.wait_open(0)


async def test_early_413_with_linger_lets_the_client_read_it(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(
            format_request(
                "POST",
                "/fault/early-413?read=5&linger=2",
                port=fault_server.port,
                headers=[("Content-Length", str(1024 * 1024))],
            )
        )
        writer.write(b"z" * (256 * 1024))
        response = await read_response(reader)
        assert await read_to_end(reader) == b""
    assert (response.status, response.body) == (413, b"id=1")
    assert fault_server.requests[0].body == b"zzzzz"


# -- slow and idle faults -----------------------------------------------------------------


async def test_delay_answers_late(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        start = time.monotonic()
        r = await exchange(conn, fault_server, "/fault/delay?s=0.2")
    assert r.body == b"id=1"
    # asyncio may run a timer up to its clock resolution early: allow 10 ms
    assert time.monotonic() - start >= 0.19


async def test_trickle_sends_the_body_a_byte_at_a_time(fault_server: FaultServer) -> None:
    async with connect(fault_server) as (reader, writer):
        writer.write(
            format_request("GET", "/fault/trickle?delay=0.02&size=8", port=fault_server.port)
        )
        await reader.readuntil(b"\r\n\r\n")
        start = time.monotonic()
        pieces: list[bytes] = []
        while sum(len(p) for p in pieces) < 8:
            pieces.append(await asyncio.wait_for(reader.read(100), timeout=5))
    assert b"".join(pieces) == b"id=1...."
    assert len(pieces) >= 4, pieces  # far apart in time, so not one read
    assert time.monotonic() - start >= 7 * 0.02


async def test_close_after_closes_right_after_the_response(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        r = await exchange(conn, fault_server, "/fault/close-after")
        assert r.header("connection") is None  # looks reusable, but is not
        assert await read_to_end(conn[0]) == b""
    await fault_server.wait_open(0)


async def test_close_idle_closes_after_the_idle_time(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        r = await exchange(conn, fault_server, "/fault/close-idle?s=0.2&hint=1")
        start = time.monotonic()
        assert await read_to_end(conn[0]) == b""
    assert r.header("keep-alive") == "timeout=0.2"
    assert time.monotonic() - start >= 0.15


async def test_close_idle_spares_a_connection_that_is_used_again(
    fault_server: FaultServer,
) -> None:
    async with connect(fault_server) as conn:
        await exchange(conn, fault_server, "/fault/close-idle?s=5")
        assert (await exchange(conn, fault_server, "/")).body == b"id=2"


async def test_close_on_event_waits_for_the_event(fault_server: FaultServer) -> None:
    async with connect(fault_server) as conn:
        await exchange(conn, fault_server, "/fault/close-on-event")
        with pytest.raises(TimeoutError):  # a negative: still open without the event
            await asyncio.wait_for(conn[0].read(1), timeout=0.1)
        fault_server.close_event.set()
        assert await read_to_end(conn[0]) == b""


# -- plans, accept actions, refusal -------------------------------------------------------


async def test_plan_scripts_requests_then_falls_back_to_the_path(
    fault_server: FaultServer,
) -> None:
    fault_server.plan(requests=["ok", "reset"])
    async with connect(fault_server) as conn:
        assert (await exchange(conn, fault_server, "/same")).body == b"id=1"
        with pytest.raises(ConnectionResetError):
            await exchange(conn, fault_server, "/same")
    async with connect(fault_server) as conn:
        assert (await exchange(conn, fault_server, "/same")).body == b"id=3"
    assert [r.fault for r in fault_server.requests] == ["ok", "reset", "ok"]
    assert fault_server.requests_per_connection == {1: 2, 2: 1}


@pytest.mark.parametrize("action", ["reset", "close", "garbage"])
async def test_accept_actions(fault_server: FaultServer, action: str) -> None:
    fault_server.plan(on_accept=action)
    async with connect(fault_server) as (reader, _):
        if action == "reset":
            with pytest.raises(ConnectionResetError):
                await read_to_end(reader)
        else:
            data = await read_to_end(reader)
            assert data == (
                b"" if action == "close" else b"\x00\xffthis is neither TLS nor HTTP\r\n\r\n"
            )
    await fault_server.wait_open(0)
    assert fault_server.requests == []


def test_plan_and_fault_names_are_checked() -> None:
    server = FaultServer()
    with pytest.raises(ValueError, match="unknown on_accept 'explode'"):
        server.plan(on_accept="explode")
    with pytest.raises(ValueError, match="unknown fault 'rest' in 'rest'"):
        server.plan(requests=["ok", "rest"])


async def test_bad_fault_in_a_path_is_reported_at_close() -> None:
    server = FaultServer()
    with pytest.raises(AssertionError, match=r"delay\?s=soon.*s='soon' is not a number"):
        async with server:
            async with connect(server) as conn:
                r = await exchange(conn, server, "/fault/delay?s=soon")
                assert r.status == 400
    assert server.open_connections == 0


async def test_refused_port_refuses(refused_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", refused_port)


async def test_refusing_port_on_ipv6() -> None:
    with refusing_port("::1") as port, pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("::1", port)


async def test_ipv6_server() -> None:
    async with FaultServer(host="::1") as server, connect(server) as conn:
        assert (await exchange(conn, server, "/")).body == b"id=1"
    assert server.url("/x") == f"http://[::1]:{server.port}/x"


# -- counting and waiting -----------------------------------------------------------------


async def test_counts_open_and_peak_connections(fault_server: FaultServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(connect(fault_server))
        await fault_server.wait_connections(3)
        assert (fault_server.open_connections, fault_server.peak_connections) == (3, 3)
    await fault_server.wait_open(0)
    async with connect(fault_server):
        await fault_server.wait_connections(4)
    assert (fault_server.connections_accepted, fault_server.peak_connections) == (4, 3)


async def test_wait_gives_up_with_a_message_naming_the_counts(fault_server: FaultServer) -> None:
    with pytest.raises(AssertionError, match=r"waited 0.05s for 2 requests; have .*requests=0"):
        await fault_server.wait_requests(2, timeout=0.05)


# -- TLS ------------------------------------------------------------------------------------


async def test_tls_server_answers_a_verifying_client(tls_certs: TLSCerts) -> None:
    async with FaultServer(ssl=tls_certs.server_context()) as server:
        async with connect(server, ssl_context=tls_certs.client_context()) as conn:
            r = await exchange(conn, server, "/")
        assert r.body == b"id=1"
        assert server.url("/").startswith("https://127.0.0.1:")
        await server.wait_open(0)


async def test_tls_wrong_host_certificate_fails_verification(tls_certs: TLSCerts) -> None:
    async with FaultServer(ssl=tls_certs.server_context(wrong_host=True)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"example\.invalid|match"):
            await asyncio.open_connection(
                server.host,
                server.port,
                ssl=tls_certs.client_context(),
                server_hostname="localhost",
            )
        await server.wait_for(lambda: server.tls_failures == 1, "a failed handshake")


async def test_garbage_fails_a_tls_handshake(
    fault_server: FaultServer, tls_certs: TLSCerts
) -> None:
    fault_server.plan(on_accept="garbage")
    with pytest.raises(ssl.SSLError):
        await asyncio.open_connection(
            fault_server.host,
            fault_server.port,
            ssl=tls_certs.client_context(),
            server_hostname="localhost",
        )


# -- the leak check (conftest) --------------------------------------------------------------

LEAKY_TESTS = """
import asyncio
import socket

import pytest

KEEP = []


async def test_leaks_a_task():
    KEEP.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))


async def test_leaks_a_socket(fault_server):
    KEEP.append(await asyncio.open_connection("127.0.0.1", fault_server.port))


def test_sync_leaks_a_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    KEEP.append(sock)


async def test_clean_async(fault_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", fault_server.port)
    writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    await reader.readuntil(b"id=1")
    writer.close()
    await writer.wait_closed()


async def test_close_without_wait_closed(fault_server):
    _, writer = await asyncio.open_connection("127.0.0.1", fault_server.port)
    writer.close()


async def test_cancelled_task_not_awaited():
    asyncio.get_running_loop().create_task(asyncio.sleep(10)).cancel()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop():
    await asyncio.sleep(0)


def test_clean_sync():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))


@pytest.mark.no_leak_check(reason="shows the opt-out")
def test_opted_out():
    KEEP.append(socket.socket())


def test_failure_is_not_also_a_leak():
    KEEP.append(socket.socket())
    assert False, "the real failure"
"""


def test_leak_check_fails_leaky_tests_only(pytester: pytest.Pytester) -> None:
    here = Path(__file__).parent
    package = pytester.mkpydir("tests")
    for name in ("conftest.py", "faults.py", "loops.py", "nginx.py"):
        (package / name).write_text((here / name).read_text())
    (package / "test_inner.py").write_text(LEAKY_TESTS)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "tests")
    result.assert_outcomes(passed=9, failed=1, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*1 task(s) created during tests/test_inner.py::test_leaks_a_task are still pending*",
            "*1 socket(s) opened during tests/test_inner.py::test_leaks_a_socket are still open*",
            "*AF_INET SOCK_STREAM*->*",
            "*1 socket(s) opened during tests/test_inner.py::test_sync_leaks_a_socket are still*",
            "ERROR tests/test_inner.py::test_leaks_a_task - *",
            "ERROR tests/test_inner.py::test_leaks_a_socket - *",
            "ERROR tests/test_inner.py::test_sync_leaks_a_socket - *",
            "FAILED tests/test_inner.py::test_failure_is_not_also_a_leak*",
        ]
    )
