"""The client's name cache and resolver hook (glasspool._dns), alone and under a client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence

import pytest

import glasspool
from glasspool._dns import DNSCache


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[int]:
    srv = await asyncio.start_server(_ok, "127.0.0.1", 0)
    async with srv:
        yield srv.sockets[0].getsockname()[1]


class Recorder:
    def __init__(self, answer: Sequence[str] | object = ("127.0.0.1",)) -> None:
        self.asked: list[tuple[str, int]] = []
        self.answer = answer
        self.release = asyncio.Event()
        self.release.set()
        self.called = asyncio.Event()

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        self.called.set()
        await self.release.wait()
        return self.answer  # type: ignore[return-value]


async def test_resolver_hook_answers_and_the_cache_keeps_it() -> None:
    resolver = Recorder()
    async with server() as port:
        async with glasspool.Client(resolver=resolver, trust_env=False) as client:
            for _ in range(3):  # the server closes each connection: three connects
                assert (await client.get(f"http://service.test:{port}/")).text == "ok"
            dns = client.pool.stats().dns
            assert dns is not None
            assert (dns.ttl, dns.entries, dns.hits, dns.misses) == (10.0, 1, 2, 1)
    assert resolver.asked == [("service.test", port)]


async def test_without_a_ttl_every_connect_asks() -> None:
    resolver = Recorder()
    async with server() as port:
        async with glasspool.Client(resolver=resolver, dns_ttl=0, trust_env=False) as client:
            for _ in range(2):
                await client.get(f"http://service.test:{port}/")
            dns = client.pool.stats().dns
            assert dns is not None and (dns.ttl, dns.entries, dns.misses) == (None, 0, 2)
    assert len(resolver.asked) == 2


async def test_entries_expire_after_the_ttl() -> None:
    now = [100.0]
    cache = DNSCache(5, Recorder(), clock=lambda: now[0])
    await cache.lookup("a.test", 80)
    now[0] += 4.9
    await cache.lookup("a.test", 80)
    now[0] += 0.2
    await cache.lookup("a.test", 80)
    assert (cache.hits, cache.misses) == (1, 2)


async def test_concurrent_lookups_of_one_name_share_one_query() -> None:
    resolver = Recorder()
    resolver.release.clear()
    cache = DNSCache(10, resolver)
    tasks = [asyncio.create_task(cache.lookup("a.test", 80)) for _ in range(5)]
    # The first task reaches the resolver; the other four, scheduled before this test
    # wakes up, join its lookup.
    await resolver.called.wait()
    resolver.release.set()
    results = await asyncio.gather(*tasks)
    assert len(resolver.asked) == 1
    assert all(r == results[0] for r in results)
    assert (cache.hits, cache.misses) == (4, 1)


async def test_failures_are_not_cached() -> None:
    calls = 0

    async def flaky(host: str, port: int) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")
        return ["127.0.0.1"]

    cache = DNSCache(10, flaky)
    with pytest.raises(socket.gaierror):
        await cache.lookup("a.test", 80)
    assert (await cache.lookup("a.test", 80))[0][4] == ("127.0.0.1", 80)
    assert calls == 2


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        ("127.0.0.1", TypeError, "list of IP address strings"),
        (["not-an-ip"], ValueError, "not an IP address"),
        ([], socket.gaierror, "no address"),
    ],
)
async def test_a_bad_resolver_answer_is_named(
    answer: object, error: type[Exception], words: str
) -> None:
    cache = DNSCache(10, Recorder(answer))
    with pytest.raises(error, match=words):
        await cache.lookup("a.test", 80)


async def test_an_unresolvable_name_from_the_hook_is_a_connect_error() -> None:
    async with glasspool.Client(resolver=Recorder([]), trust_env=False) as client:
        with pytest.raises(glasspool.ConnectError, match=r"nowhere\.test"):
            await client.get("http://nowhere.test/")
        assert client.pool.stats().open == 0


@pytest.mark.parametrize("ttl", [-1, "10", True])
def test_bad_dns_ttl_is_named(ttl: object) -> None:
    with pytest.raises(ValueError, match="dns_ttl"):
        glasspool.Client(dns_ttl=ttl, trust_env=False)  # type: ignore[arg-type]


def test_a_resolver_that_is_not_callable_is_named() -> None:
    with pytest.raises(TypeError, match="resolver"):
        glasspool.Client(resolver="8.8.8.8", trust_env=False)  # type: ignore[arg-type]
