"""open_connection (TCP, IPv6, happy eyeballs, TLS) and the SSL context helpers."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from typing import Any

import aiohappyeyeballs.impl
import pytest

from glasspool._connect import context_for, make_ssl_context, open_connection, tls_identity
from glasspool._exceptions import ConnectError, ConnectTimeout, TLSError
from glasspool._http11 import HTTP11Connection
from glasspool._pool.key import PoolKey, TLSIdentity
from tests.nginx import TLSCerts
from tests.rawserver import RawServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def get(conn: HTTP11Connection) -> bytes:
    """One GET; returns the body."""
    try:
        await conn.send_request(GET, None, chunked=False, write_timeout=5)
        await conn.receive_head(method="GET", read_timeout=5)
        return await conn.receive_body(read_timeout=5)
    finally:
        conn.close()


async def hang(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Accept and then say nothing (a TLS handshake never completes)."""
    await reader.read()


def fake_getaddrinfo(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[tuple[str, int]]]
) -> list[str]:
    """Make the running loop resolve names from ``answers``; return the names asked for.

    IP literals still resolve as a real resolver does: some loops' ``sock_connect`` passes
    the address it is given through ``loop.getaddrinfo`` (uvloop does).
    """
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        if _is_ip_literal(host):
            return await real(host, port, **kwargs)
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (ip, p),
            )
            for ip, p in answers[host]
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- TCP -------------------------------------------------------------------------------------


async def test_plain_connection_sets_tcp_nodelay() -> None:
    async with RawServer(replies=[OK]) as srv:
        conn = await open_connection(srv.key(), ssl_context=None, connect_timeout=5)
        sock: Any = conn.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert await get(conn) == b"ok"


@pytest.mark.parametrize("spelling", ["::1", "[::1]"])
async def test_ipv6_literal(spelling: str) -> None:
    async with RawServer(replies=[OK], host="::1") as srv:
        conn = await open_connection(
            PoolKey("http", spelling, srv.port), ssl_context=None, connect_timeout=5
        )
        peer = conn.get_extra_info("peername")
        assert isinstance(peer, tuple) and peer[0] == "::1"
        assert await get(conn) == b"ok"


async def test_refused_port_names_host_and_port(refused_port: int) -> None:
    with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{refused_port}") as info:
        await open_connection(
            PoolKey("http", "127.0.0.1", refused_port), ssl_context=None, connect_timeout=5
        )
    assert isinstance(info.value.__cause__, OSError)


async def test_unresolvable_name_names_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_getaddrinfo(monkeypatch, {})
    with pytest.raises(
        ConnectError, match=re.escape("could not resolve host 'nowhere.test' (port 8080)")
    ):
        await open_connection(
            PoolKey("http", "nowhere.test", 8080), ssl_context=None, connect_timeout=5
        )
    assert asked == ["nowhere.test"]


@pytest.mark.parametrize("delay", [0.25, None])
async def test_happy_eyeballs_falls_back_to_the_address_that_answers(
    monkeypatch: pytest.MonkeyPatch, refused_port: int, delay: float | None
) -> None:
    async with RawServer(replies=[OK]) as srv:
        # The first address refuses; the second (the server) answers.
        fake_getaddrinfo(
            monkeypatch, {"dual.test": [("127.0.0.1", refused_port), ("127.0.0.1", srv.port)]}
        )
        key = PoolKey("http", "dual.test", srv.port)
        conn = await open_connection(
            key, ssl_context=None, connect_timeout=5, happy_eyeballs_delay=delay
        )
        assert conn.get_extra_info("peername") == ("127.0.0.1", srv.port)
        assert await get(conn) == b"ok"


async def test_connect_timeout_names_host_port_and_seconds(tls_certs: TLSCerts) -> None:
    async with RawServer(hang) as srv:  # plain TCP: our TLS handshake never gets an answer
        key = srv.key(tls=tls_identity(str(tls_certs.ca_file), None, None))
        with pytest.raises(ConnectTimeout) as info:
            await open_connection(
                key, ssl_context=make_ssl_context(str(tls_certs.ca_file)), connect_timeout=0.1
            )
        assert str(info.value) == (
            f"connecting or the TLS handshake to 127.0.0.1:{srv.port} took longer than 0.1s "
            "(connect timeout)"
        )


async def test_cancelling_a_connect_leaves_nothing_open(tls_certs: TLSCerts) -> None:
    async with RawServer(hang) as srv:
        key = srv.key(tls=tls_identity(str(tls_certs.ca_file), None, None))
        task = asyncio.create_task(
            open_connection(
                key, ssl_context=make_ssl_context(str(tls_certs.ca_file)), connect_timeout=5
            )
        )
        await asyncio.wait_for(srv.accepted.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # the autouse leak check fails this test if a socket stayed open


class Counting:
    """A handler that counts connections and how many of them the client closed."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.accepted = 0
        self.closed = 0
        self.all_accepted = asyncio.Event()
        self.all_closed = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted == self.expect:
            self.all_accepted.set()
        await reader.read()  # until the client closes its end
        self.closed += 1
        if self.closed == self.expect:
            self.all_closed.set()


def both_attempts_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold the first attempt that connects until the second has connected too.

    Without it the race can end before the second attempt reaches ``connect()`` (on
    uvloop ``sock_connect`` resolves the address in a thread first, and a busy machine
    lets the first attempt win meanwhile), and there would be no losing socket to check.
    The hold wraps aiohappyeyeballs' per-address attempt, the one place every attempt
    passes through.
    """
    connected: list[socket.socket] = []
    both = asyncio.Event()
    attempt = aiohappyeyeballs.impl._connect_sock

    async def held(*args: Any, **kwargs: Any) -> socket.socket:
        sock = await attempt(*args, **kwargs)
        connected.append(sock)
        if len(connected) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)
        return sock

    monkeypatch.setattr(aiohappyeyeballs.impl, "_connect_sock", held)


async def test_happy_eyeballs_closes_the_losing_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = Counting(expect=2)
    both_attempts_connect(monkeypatch)
    async with RawServer(counting) as srv:
        fake_getaddrinfo(monkeypatch, {"dual.test": [("127.0.0.1", srv.port)] * 2})
        key = PoolKey("http", "dual.test", srv.port)
        conn = await open_connection(
            key, ssl_context=None, connect_timeout=5, happy_eyeballs_delay=0.01
        )
        await asyncio.wait_for(counting.all_accepted.wait(), 5)
        assert not conn.is_closed()
        conn.close()
        await asyncio.wait_for(counting.all_closed.wait(), 5)


async def test_cancelling_during_happy_eyeballs_and_tls_closes_every_socket(
    monkeypatch: pytest.MonkeyPatch, tls_certs: TLSCerts
) -> None:
    counting = Counting(expect=2)
    both_attempts_connect(monkeypatch)
    async with RawServer(counting) as srv:  # plain TCP: the TLS handshake never completes
        fake_getaddrinfo(monkeypatch, {"dual.test": [("127.0.0.1", srv.port)] * 2})
        key = PoolKey("https", "dual.test", srv.port, tls_identity(True, None, None))
        ctx = make_ssl_context(str(tls_certs.ca_file))
        task = asyncio.create_task(
            open_connection(key, ssl_context=ctx, connect_timeout=5, happy_eyeballs_delay=0.01)
        )
        await asyncio.wait_for(counting.all_accepted.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(counting.all_closed.wait(), 5)


# -- TLS -------------------------------------------------------------------------------------


def server_context(tls_certs: TLSCerts, *, wrong_host: bool = False) -> ssl.SSLContext:
    ctx = tls_certs.server_context(wrong_host=wrong_host)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def test_tls_with_a_trusted_ca_verifies_and_negotiates_http11(tls_certs: TLSCerts) -> None:
    async with RawServer(replies=[OK], ssl_context=server_context(tls_certs)) as srv:
        identity = tls_identity(str(tls_certs.ca_file), None, None)
        conn = await open_connection(
            srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
        )
        ssl_object = conn.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        assert await get(conn) == b"ok"


async def test_tls_with_the_wrong_ca_is_a_tls_error_naming_the_host(tls_certs: TLSCerts) -> None:
    async with RawServer(replies=[OK], ssl_context=server_context(tls_certs)) as srv:
        identity = tls_identity(True, None, None)  # the system CAs do not know the test CA
        with pytest.raises(TLSError, match=re.escape("verification failed for 127.0.0.1")) as info:
            await open_connection(
                srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
            )
        assert isinstance(info.value, ConnectError)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_tls_with_the_wrong_hostname_is_a_tls_error(tls_certs: TLSCerts) -> None:
    ctx = server_context(tls_certs, wrong_host=True)
    async with RawServer(replies=[OK], ssl_context=ctx) as srv:
        identity = tls_identity(str(tls_certs.ca_file), None, None)
        with pytest.raises(TLSError, match=re.escape("verification failed for 127.0.0.1")) as info:
            await open_connection(
                srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
            )
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_server_hostname_overrides_sni_and_the_name_checked(tls_certs: TLSCerts) -> None:
    ctx = server_context(tls_certs, wrong_host=True)  # valid only for example.invalid
    async with RawServer(replies=[OK], ssl_context=ctx) as srv:
        identity = tls_identity(str(tls_certs.ca_file), None, "example.invalid")
        conn = await open_connection(
            srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
        )
        assert await get(conn) == b"ok"
    good = server_context(tls_certs)  # valid for 127.0.0.1, not for the overriding name
    async with RawServer(replies=[OK], ssl_context=good) as srv:
        with pytest.raises(TLSError, match=re.escape("verification failed for example.invalid")):
            await open_connection(
                srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
            )


async def test_verify_false_accepts_any_certificate(tls_certs: TLSCerts) -> None:
    ctx = server_context(tls_certs, wrong_host=True)
    async with RawServer(replies=[OK], ssl_context=ctx) as srv:
        identity = tls_identity(False, None, None)
        conn = await open_connection(
            srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
        )
        assert await get(conn) == b"ok"


async def test_tls_handshake_failure_is_a_tls_error(tls_certs: TLSCerts) -> None:
    async def not_tls(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.read(1)
        w.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        await w.drain()

    async with RawServer(not_tls) as srv:
        identity = tls_identity(str(tls_certs.ca_file), None, None)
        with pytest.raises(
            TLSError, match=f"TLS handshake with 127.0.0.1 \\(127.0.0.1:{srv.port}\\)"
        ):
            await open_connection(
                srv.key(tls=identity), ssl_context=context_for(identity), connect_timeout=5
            )


# -- SSL contexts ----------------------------------------------------------------------------


def test_make_ssl_context_caches_per_verify_and_cert(tls_certs: TLSCerts) -> None:
    ca = str(tls_certs.ca_file)
    assert make_ssl_context(True) is make_ssl_context(True)
    assert make_ssl_context(ca) is make_ssl_context(ca)
    assert make_ssl_context(ca) is not make_ssl_context(True)
    pair = (str(tls_certs.server_cert_file), str(tls_certs.server_key_file))
    with_cert = make_ssl_context(ca, pair)
    assert with_cert is make_ssl_context(ca, pair) and with_cert is not make_ssl_context(ca)
    assert make_ssl_context(True).verify_mode == ssl.CERT_REQUIRED
    assert make_ssl_context(True).check_hostname


def test_make_ssl_context_variants(tls_certs: TLSCerts) -> None:
    off = make_ssl_context(False)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    mine = ssl.create_default_context()
    assert make_ssl_context(mine) is mine
    directory = make_ssl_context(str(tls_certs.ca_file.parent))
    assert directory.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="no such CA bundle"):
        make_ssl_context("/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="cannot be combined"):
        make_ssl_context(mine, "cert.pem")


def test_tls_identity_describes_the_settings(tls_certs: TLSCerts) -> None:
    ca = str(tls_certs.ca_file)
    mine = ssl.create_default_context()
    assert tls_identity(True, None, None) == TLSIdentity()
    assert tls_identity(False, "c.pem", "h") == TLSIdentity(
        verify=False, client_cert=("c.pem", None), server_hostname="h"
    )
    assert tls_identity(ca, ("c", "k"), None) == TLSIdentity(ca_path=ca, client_cert=("c", "k"))
    assert tls_identity(mine, None, None) == TLSIdentity(context=mine)
    assert len({tls_identity(True, None, None), tls_identity(True, None, None)}) == 1
    assert context_for(tls_identity(mine, None, None)) is mine
    assert context_for(tls_identity(ca, None, None)) is make_ssl_context(ca)
