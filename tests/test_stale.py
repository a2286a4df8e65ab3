"""Stale and closed connections: servers that close, cut bodies short, or refuse uploads.

A connection the server closed is never reused silently: an idle one is dropped
(``closed server_closed``); a request that dies on a reused connection before any
response byte is retried once if it is idempotent, and raises ``ServerDisconnected``
otherwise. Responses that end their connection are never pooled, short bodies raise
``IncompleteBody`` with both byte counts, and an early 413 reaches the caller.
"""

from __future__ import annotations

import asyncio
import random
import select
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

import glasspool
from glasspool import Client
from tests.faults import FaultServer
from tests.nginx import NginxServer, TLSCerts
from tests.rawserver import RawServer, Reply
from tests.test_cancellation import EventLog, assert_at_rest, assert_never_pooled

UPLOAD_BYTES = 4 * 1024 * 1024


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client with default timeouts and a small pool."""
    async with Client(limit=4, limit_per_host=2) as c:
        yield c


def body_of(r: glasspool.Response) -> bytes:
    """The body the FaultServer sends for the request id in the response's headers."""
    return f"id={r.headers['x-request-id']}".encode()


# -- the server closes idle connections -------------------------------------------------


async def test_idle_connections_closed_by_the_server_are_dropped_not_reused(
    client: Client, fault_server: FaultServer
) -> None:
    log = EventLog(client)
    for n in range(1, 4):
        mark = log.mark()
        r = await client.get(fault_server.url("/fault/close-idle?s=0.05"))
        assert r.status == 200 and r.content == body_of(r)
        assert r.headers["x-connection-id"] == str(n)  # a fresh connection every time
        closed = await log.wait_for("closed", "server_closed", since=mark)
        assert closed.connection_id == n
        assert_at_rest(client)
        assert client.pool.stats().open == 0
    assert [e.reason for e in log.find("acquired")] == ["new"] * 3
    assert len(log.find("closed", "server_closed")) == 3


@pytest.mark.parametrize("fault", ["half-close", "reset"])
async def test_a_get_on_a_connection_that_dies_unanswered_is_retried_once(
    client: Client, fault_server: FaultServer, fault: str
) -> None:
    fault_server.plan(requests=("ok", fault))  # connection 1: answers once, then dies
    log = EventLog(client)
    first = await client.get(fault_server.url("/a"))
    r = await client.get(fault_server.url("/b"))
    assert r.status == 200 and r.content == body_of(r)
    assert [(q.connection_id, q.target) for q in fault_server.requests] == [
        (1, "/a"),
        (1, "/b"),
        (2, "/b"),
    ]
    assert first.headers["x-connection-id"] == "1" and r.headers["x-connection-id"] == "2"
    assert log.history(1) == [
        "connecting",
        "acquired new",
        "released eof",
        "acquired reused",
        "released error",
        "closed server_closed",
    ]
    assert_at_rest(client)


async def test_a_get_is_retried_only_once(client: Client, fault_server: FaultServer) -> None:
    fault_server.plan(requests=("ok", "half-close"))
    fault_server.plan(requests=("half-close",))  # the retry's new connection dies too
    await client.get(fault_server.url("/a"))
    with pytest.raises(glasspool.ServerDisconnected, match="before any response"):
        await client.get(fault_server.url("/b"))
    assert [q.connection_id for q in fault_server.requests] == [1, 1, 2]
    assert_at_rest(client)


@pytest.mark.parametrize("fault", ["half-close", "reset"])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_never_retried(
    client: Client, fault_server: FaultServer, fault: str, method: str
) -> None:
    fault_server.plan(requests=("ok", fault))
    log = EventLog(client)
    await client.get(fault_server.url("/a"))
    with pytest.raises(glasspool.ServerDisconnected) as info:
        await client.request(method, fault_server.url("/b"), content=b"payload")
    assert f"127.0.0.1:{fault_server.port}" in str(info.value)
    sent = [q for q in fault_server.requests if q.method == method]
    assert len(sent) == 1 and sent[0].body == b"payload"  # exactly once: no silent retry
    assert fault_server.connections_accepted == 1  # no new connection was even opened
    assert log.history(1)[-3:] == ["acquired reused", "released error", "closed server_closed"]
    assert_at_rest(client)
    r = await client.post(fault_server.url("/c"), content=b"again")  # a fresh connection
    assert r.status == 200 and r.headers["x-connection-id"] == "2"


async def test_random_idle_closes_never_fail_a_get(
    client: Client, fault_server: FaultServer
) -> None:
    # The server closes each connection after a random idle time; the client sends after
    # another random gap, so some requests meet a connection closing at that very moment.
    rng = random.Random(7)
    log = EventLog(client)
    for _ in range(40):
        idle = rng.choice([0.002, 0.005, 0.01])
        r = await client.get(fault_server.url(f"/fault/close-idle?s={idle}"))
        assert r.status == 200 and r.content == body_of(r)
        await asyncio.sleep(rng.uniform(0, 0.012))  # the fault itself: a random gap
    assert_at_rest(client)
    # every failure was on a reused connection the server had closed, and was retried once
    failed = [e.connection_id for e in log.find("released", "error")]
    assert len(log.find("acquired")) == 40 + len(failed), log.summary()
    for cid in failed:
        assert cid is not None and log.history(cid)[-3:] == [
            "acquired reused",
            "released error",
            "closed server_closed",
        ]


# -- real nginx: keepalive_timeout 1s, keepalive_requests 3 ------------------------------


async def test_nginx_keepalive_requests_limit(client: Client, nginx: NginxServer) -> None:
    log = EventLog(client)
    mark = nginx.log_mark()
    for _ in range(7):
        r = await client.get(nginx.url("/small", which="strict"), headers={"X-Test-Tag": "kr"})
        assert r.status == 200 and r.content == b"Hello, world!"
    entries = await nginx.wait_access_log(7, since=mark)
    assert [e.connection_requests for e in entries] == [1, 2, 3, 1, 2, 3, 1]
    assert [e.reason for e in log.find("acquired")] == ["new", "reused", "reused"] * 2 + ["new"]
    assert len(log.find("closed", "not_reusable")) == 2  # nginx said Connection: close
    assert_at_rest(client)


async def test_nginx_keepalive_timeout_closes_idle_then_a_fresh_connection_serves(
    client: Client, nginx: NginxServer
) -> None:
    log = EventLog(client)
    url = nginx.url("/small", which="strict")
    assert (await client.get(url)).status == 200
    closed = await log.wait_for("closed", since=0, timeout=5.0)  # nginx: 1 s idle
    assert (closed.reason, closed.connection_id) == ("server_closed", 1)
    assert_at_rest(client)
    r = await client.get(url)
    assert r.status == 200 and r.content == b"Hello, world!"
    assert log.find("acquired")[-1].reason == "new" and log.find("acquired")[-1].connection_id == 2


# -- responses that end their connection are not pooled ----------------------------------


@pytest.mark.parametrize(
    "path", ["/fault/connection-close", "/fault/http10", "/fault/http10?nolength=1"]
)
@pytest.mark.parametrize("streamed", [False, True])
async def test_responses_that_end_their_connection_are_not_pooled(
    client: Client, fault_server: FaultServer, path: str, streamed: bool
) -> None:
    log = EventLog(client)
    if streamed:
        async with client.stream("GET", fault_server.url(path)) as r:
            content = await r.read()
    else:
        r = await client.get(fault_server.url(path))
        content = r.content
    assert r.status == 200 and content == body_of(r)
    assert log.history(1) == ["connecting", "acquired new", "released eof", "closed not_reusable"]
    assert client.pool.stats().open == 0
    r2 = await client.get(fault_server.url("/next"))
    assert r2.headers["x-connection-id"] == "2" and log.find("acquired")[-1].reason == "new"


async def test_http10_keep_alive_is_pooled(client: Client, fault_server: FaultServer) -> None:
    log = EventLog(client)
    for _ in range(3):
        r = await client.get(fault_server.url("/fault/http10?keepalive=1"))
        assert r.http_version == "HTTP/1.0" and r.content == body_of(r)
    assert [e.reason for e in log.find("acquired")] == ["new", "reused", "reused"]


async def test_a_connection_closed_right_after_its_response_is_not_reused(
    client: Client, fault_server: FaultServer
) -> None:
    log = EventLog(client)
    for _ in range(3):
        r = await client.get(fault_server.url("/fault/close-after"))
        assert r.status == 200 and r.content == body_of(r)
    # each close was seen while idle (server_closed) or on reuse (retried): never an error
    assert fault_server.connections_accepted >= 3
    assert all(e.reason in ("server_closed", "not_reusable") for e in log.find("closed"))
    assert_at_rest(client)


# -- bodies cut short, and bodies that are complete ---------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_body_cut_short_raises_incomplete_body_with_both_counts(
    client: Client, fault_server: FaultServer, streamed: bool
) -> None:
    log = EventLog(client)
    url = fault_server.url("/fault/truncate?length=100&send=10")
    with pytest.raises(glasspool.IncompleteBody, match="after 10 of 100 body bytes") as info:
        if streamed:
            async with client.stream("GET", url) as r:
                await r.read()
        else:
            await client.get(url)
    assert (info.value.expected, info.value.received) == (100, 10)
    assert f"127.0.0.1:{fault_server.port}" in str(info.value)
    assert_never_pooled(log, 1, "error")
    assert_at_rest(client)


async def test_a_chunked_body_cut_short_raises_incomplete_body(client: Client) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with RawServer(replies=[Reply(head + b"5\r\nhello\r\n3\r\nwor", close=True)]) as srv:
        with pytest.raises(glasspool.IncompleteBody, match="8 body bytes of a chunked") as info:
            await client.get(f"http://127.0.0.1:{srv.port}/")
    assert (info.value.expected, info.value.received) == (None, 8)
    assert_at_rest(client)


@pytest.mark.parametrize("size", [0, 1, 13, 16 * 1024, 300 * 1024, 1024 * 1024])
@pytest.mark.parametrize("chunked", [False, True])
async def test_a_complete_body_never_raises(
    client: Client, fault_server: FaultServer, size: int, chunked: bool
) -> None:
    url = fault_server.url(f"/fault/ok?size={size}&chunked={int(chunked)}")
    r = await client.get(url)
    assert len(r.content) == max(size, len(body_of(r)))
    assert r.content.startswith(body_of(r))
    async with client.stream("GET", url) as s:
        streamed = b"".join([chunk async for chunk in s.aiter_raw()])
    assert streamed.startswith(body_of(s)) and len(streamed) == len(r.content)
    assert client.pool.stats().idle == 1  # both read to the end: one pooled connection


@pytest.mark.parametrize("path", ["/1m", "/chunked", "/gzip", "/small"])
async def test_complete_nginx_bodies_never_raise(
    client: Client, nginx: NginxServer, path: str
) -> None:
    r = await client.get(nginx.url(path), headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.content == nginx.content(path)


# -- an early 413 mid-upload ------------------------------------------------------------


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield bytes(size)


@pytest.mark.parametrize("streamed_upload", [False, True])
async def test_an_early_413_with_half_close_reaches_the_caller(
    client: Client, fault_server: FaultServer, streamed_upload: bool
) -> None:
    log = EventLog(client)
    content = _chunks(UPLOAD_BYTES) if streamed_upload else bytes(UPLOAD_BYTES)
    r = await client.post(fault_server.url("/fault/early-413?linger=2"), content=content)
    assert r.status == 413 and r.content == body_of(r)
    assert log.history(1)[-1] == "closed not_reusable", log.summary()
    assert_at_rest(client)
    assert client.pool.stats().open == 0


async def test_nginx_413_for_an_upload_over_its_limit(client: Client, nginx: NginxServer) -> None:
    r = await client.post(nginx.url("/upload"), content=bytes(UPLOAD_BYTES))
    assert r.status == 413
    r = await client.post(nginx.url("/upload"), content=b"small")
    assert r.status == 200 and r.content == b"uploaded\n"
    assert_at_rest(client)


# -- an idle connection the server closed while the event loop was busy -------------------


class ThreadServer:
    """A blocking server in a thread of its own, so it can act while the test's loop is blocked.

    It answers every request with a keep-alive ``200 OK``. After the first response on the
    first connection it waits for :meth:`act`, then does ``how`` to that connection: ``fin``
    closes it, ``reset`` resets it (RST), ``stray`` sends an unrequested ``408`` first and
    then closes it. Then it serves one more connection until the client closes it.
    ``requests`` lists ``(connection number, request line)`` for every request read.
    """

    def __init__(self, how: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.how = how
        self.requests: list[tuple[int, str]] = []
        self._ssl = ssl_context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop, self._stop_sender = socket.socketpair()  # wakes a waiting accept
        self._go = threading.Event()
        self.acted = threading.Event()  # set once the first connection was dealt with
        self._thread = threading.Thread(target=self._run, name="ThreadServer", daemon=True)
        self.errors: list[BaseException] = []

    async def __aenter__(self) -> ThreadServer:
        self._thread.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._go.set()
        self._stop_sender.send(b"x")
        # joined from another thread: the loop must run to close the client's sockets
        await asyncio.to_thread(self._thread.join, 10)
        for sock in (self._listener, self._stop, self._stop_sender):
            sock.close()
        if exc_info[0] is None:
            assert not self._thread.is_alive(), "the server thread did not finish"
            if self.errors:
                raise self.errors[0]

    def act(self) -> None:
        """Deal with the idle first connection now (see the class docstring)."""
        self._go.set()

    def _accept(self) -> socket.socket | None:
        ready, _, _ = select.select([self._listener, self._stop], [], [], 10)
        if self._listener not in ready:
            return None  # stopped (the test failed before connecting again)
        conn, _ = self._listener.accept()
        conn.settimeout(10)
        if self._ssl is not None:
            conn = self._ssl.wrap_socket(conn, server_side=True)
        return conn

    def _serve_one(self, conn: socket.socket, number: int) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return False
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                while len(body) < int(value):
                    body += conn.recv(65536)
        self.requests.append((number, head.split(b"\r\n")[0].decode()))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    def _run(self) -> None:
        try:
            first = self._accept()
            if first is None:
                return
            with first:
                self._serve_one(first, 1)
                self._go.wait(10)
                if self.how == "reset":
                    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif self.how == "stray":
                    first.sendall(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
            self.acted.set()
            second = self._accept()
            if second is None:
                return
            with second:
                while self._serve_one(second, 2):
                    pass
        except BaseException as exc:  # reported by __exit__
            self.errors.append(exc)
            self.acted.set()


def idle_socket(client: Client) -> Any:
    """The socket under the client's one idle connection (read from the pool's records)."""
    [host] = client.pool._state.hosts().values()
    [conn] = host.idle.values()
    return conn.handle.get_extra_info("socket")


@pytest.mark.parametrize("how", ["fin", "reset", "stray"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_an_idle_connection_the_server_closed_while_the_loop_was_busy_is_not_used(
    how: str, tls: bool, tls_certs: TLSCerts
) -> None:
    # The server closes (or spoils) the idle connection while this task keeps the event
    # loop busy, so asyncio has not seen it yet when the POST takes a connection. The
    # POST must go out on a new connection, once; before the check it went out on the
    # dead one (ServerDisconnected, or the stray 408 taken for its response).
    server_ctx = tls_certs.server_context() if tls else None
    async with ThreadServer(how, server_ctx) as server:
        scheme = "https" if tls else "http"
        url = f"{scheme}://localhost:{server.port}/" if tls else f"http://127.0.0.1:{server.port}/"
        async with Client(verify=str(tls_certs.ca_file)) as client:
            log = EventLog(client)
            assert (await client.get(url)).content == b"ok"
            sock = idle_socket(client)
            # The loop is blocked from here until the POST has taken its connection:
            server.act()
            assert server.acted.wait(10)
            readable, _, _ = select.select([sock.fileno()], [], [], 10)  # the kernel has it
            assert readable, "the client's socket never saw the server's close"
            r = await client.post(url, content=b"x")
            assert (r.status, r.content) == (200, b"ok")
            assert [e.reason for e in log.find("closed")] == ["server_closed"]
            assert [e.reason for e in log.find("acquired")] == ["new", "new"]
            assert (await client.get(url)).status == 200  # the new connection is reused
            assert [e.reason for e in log.find("acquired")] == ["new", "new", "reused"]
            assert_at_rest(client)
    assert server.requests == [(1, "GET / HTTP/1.1"), (2, "POST / HTTP/1.1"), (2, "GET / HTTP/1.1")]
