"""Connection options: local_address, socket_options, uds, resolve; checked against real
loopback servers (TCP and Unix) that report what they saw."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import glasspool
from glasspool._connect import ConnectOptions, open_connection
from glasspool._pool.key import PoolKey


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each request with ``<peer address> <Host header>`` as the body, keep-alive."""
    peer = writer.get_extra_info("peername")
    who = peer[0] if isinstance(peer, tuple) else "unix"
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            host = next(
                (
                    line.split(b":", 1)[1].strip().decode()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"host:")
                ),
                "",
            )
            body = f"{who} {host}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tcp_server() -> AsyncIterator[int]:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_local_address_is_the_source_the_server_sees() -> None:
    async with tcp_server() as port:
        async with glasspool.Client(local_address="127.0.0.2", trust_env=False) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.text.split()[0] == "127.0.0.2"
        async with glasspool.Client(trust_env=False) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.text.split()[0] == "127.0.0.1"


async def test_local_address_of_another_family_is_a_connect_error_naming_it() -> None:
    async with tcp_server() as port:
        async with glasspool.Client(local_address="::1", trust_env=False) as client:
            with pytest.raises(glasspool.ConnectError, match="local_address=::1"):
                await client.get(f"http://127.0.0.1:{port}/")
            assert client.pool.stats().open == 0


async def test_socket_options_are_set_with_tcp_nodelay() -> None:
    options = ConnectOptions.build(socket_options=[(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)])
    async with tcp_server() as port:
        for opts in (options, ConnectOptions()):
            conn = await open_connection(
                PoolKey("http", "127.0.0.1", port),
                ssl_context=None,
                connect_timeout=5,
                options=opts,
            )
            sock = conn.get_extra_info("socket")
            keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            assert bool(keepalive) is (opts is options)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            conn.close()


async def test_uds_carries_requests_for_the_url_host(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    server = await asyncio.start_unix_server(_answer, path)
    async with server:
        async with glasspool.Client(uds=path, trust_env=False) as client:
            first = await client.get("http://docker/v1.43/info")
            second = await client.get("http://docker/v1.43/containers/json")
            assert first.text == second.text == "unix docker"
            [(key, host)] = client.pool.stats().hosts.items()
            assert key.host == "docker"
            assert (host.opened, host.reused, host.in_use) == (1, 1, 0)


async def test_uds_refuses_a_per_request_proxy(tmp_path: Path) -> None:
    # a proxy's credentials must never go to the local socket instead of the proxy
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    path = tmp_path / "api.sock"
    server = await asyncio.start_unix_server(record, path)
    async with server:
        async with glasspool.Client(uds=path, trust_env=False) as client:
            with pytest.raises(ValueError, match="uds= and proxy= cannot be combined"):
                await client.get("http://docker/info", proxy="http://u:pw@127.0.0.1:9")
            assert (await client.get("http://docker/info", proxy=None)).status == 200
            assert client.pool.stats().in_use == 0
    assert len(heads) == 1 and b"proxy-authorization" not in heads[0].lower()


async def test_uds_that_does_not_exist_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sock"
    async with glasspool.Client(uds=missing, trust_env=False) as client:
        with pytest.raises(glasspool.ConnectError, match=r"nothing\.sock"):
            await client.get("http://docker/")
        assert client.pool.stats().open == 0


async def test_resolve_sends_to_the_address_and_keeps_the_host() -> None:
    async with tcp_server() as port:
        resolve = {f"api.example.test:{port}": "127.0.0.1"}
        async with glasspool.Client(resolve=resolve, trust_env=False) as client:
            response = await client.get(f"http://api.example.test:{port}/")
            assert response.text == f"127.0.0.1 api.example.test:{port}"
            # Another port of the same name is not overridden (and does not resolve).
            with pytest.raises(glasspool.ConnectError):
                await client.get("http://api.example.test:1/")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"local_address": "not-an-ip"}, ValueError, "local_address"),
        ({"local_address": 127}, TypeError, "local_address"),
        ({"socket_options": [(1, 2)]}, TypeError, "socket_options"),
        ({"socket_options": [("a", 2, 3)]}, TypeError, "socket_options"),
        ({"resolve": {"no-port": "127.0.0.1"}}, ValueError, "host:port"),
        ({"resolve": {"h:80": "somewhere"}}, ValueError, "resolve"),
        ({"uds": ""}, ValueError, "uds"),
        ({"uds": 3}, TypeError, "uds"),
        ({"uds": "/tmp/x.sock", "proxy": "http://127.0.0.1:3128"}, ValueError, "uds"),
    ],
)
def test_bad_options_name_the_argument(
    kwargs: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        glasspool.Client(trust_env=False, **kwargs)  # type: ignore[arg-type]
