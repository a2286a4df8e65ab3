"""MockTransport: requests answered by a function, without sockets, through the real pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import glasspool
from glasspool import MockResponse, MockTransport, Request


async def test_sync_handler_sees_the_request_and_answers() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> MockResponse:
        seen.append(request)
        return MockResponse(201, {"X-Id": "7"}, content=b'{"ok": true}')

    async with glasspool.Client(transport=MockTransport(handler)) as client:
        response = await client.post(
            "http://api.test/items?x=1", json={"a": 1}, headers={"X-Trace": "t"}
        )
        again = await client.get("http://api.test/items")
    assert response.status == 201 and response.json() == {"ok": True}
    assert response.headers["x-id"] == "7"
    assert again.status == 201
    first = seen[0]
    assert first.method == "POST"
    assert str(first.url) == "http://api.test/items?x=1"
    assert first.headers["x-trace"] == "t"
    assert first.headers["content-type"] == "application/json"
    assert first.content == b'{"a":1}'
    assert seen[1].method == "GET" and seen[1].content == b""


async def test_a_content_length_given_plays_a_server_that_gets_it_wrong() -> None:
    bodies = {"/short": (b"hello", "100"), "/long": (b"hello world", "5"), "/ok": (b"ok", None)}

    def handler(request: Request) -> MockResponse:
        body, length = bodies[request.url.path]
        headers = {} if length is None else {"Content-Length": length}
        return MockResponse(200, headers, content=body)

    events: list[glasspool.PoolEvent] = []
    async with glasspool.Client(transport=MockTransport(handler)) as client:
        client.pool.add_listener(events.append)
        with pytest.raises(glasspool.IncompleteBody, match="after 5 of 100 body bytes"):
            await client.get("http://api.test/short")
        long = await client.get("http://api.test/long")
        assert long.content == b"hello"
        assert (await client.get("http://api.test/ok")).content == b"ok"
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.idle == 1
    closes = [e.reason for e in events if e.kind == "closed"]
    assert closes[:2] == ["error", "not_reusable"]


async def test_connections_are_reused_and_events_are_real() -> None:
    events: list[glasspool.PoolEvent] = []
    transport = MockTransport(lambda request: MockResponse(200, content=b"x" * 200000))
    async with glasspool.Client(transport=transport) as client:
        client.pool.add_listener(events.append)
        for _ in range(3):
            assert len((await client.get("http://a.test/")).content) == 200000
        host = client.pool.stats().hosts["a.test"]
        assert host.opened == 1 and host.reused == 2 and host.idle == 1
    kinds = [e.kind for e in events]
    assert kinds.count("connecting") == 1
    assert kinds.count("acquired") == 3 and kinds.count("released") == 3
    assert len(transport.requests) == 3


async def test_connection_close_in_the_response_closes_the_connection() -> None:
    transport = MockTransport(lambda request: MockResponse(200, {"Connection": "close"}))
    async with glasspool.Client(transport=transport) as client:
        await client.get("http://a.test/")
        await client.get("http://a.test/")
        host = client.pool.stats().hosts["a.test"]
        assert host.opened == 2 and host.reused == 0


async def test_limit_2_with_5_concurrent_requests_waits_in_the_pool() -> None:
    release = asyncio.Event()
    two_in = asyncio.Event()
    active = 0
    most = 0

    async def handler(request: Request) -> MockResponse:
        nonlocal active, most
        active += 1
        most = max(most, active)
        if active == 2:
            two_in.set()
        await release.wait()
        active -= 1
        return MockResponse(200, content=request.url.path)

    async with glasspool.Client(transport=MockTransport(handler), limit=2) as client:
        tasks = [asyncio.create_task(client.get(f"http://a.test/{i}")) for i in range(5)]
        await asyncio.wait_for(two_in.wait(), 5)
        stats = client.pool.stats()
        assert stats.in_use == 2 and stats.waiting == 3
        assert stats.hosts["a.test"].waiting == 3
        release.set()
        responses = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert [r.text for r in responses] == [f"/{i}" for i in range(5)]
        stats = client.pool.stats()
        assert stats.waiting == 0 and stats.in_use == 0 and stats.open == 2
    assert most == 2


class Boom(Exception):
    pass


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_handler_error_propagates_and_frees_the_slot(is_async: bool) -> None:
    calls = 0

    def fail(request: Request) -> MockResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Boom("handler failed")
        return MockResponse(204)

    async def afail(request: Request) -> MockResponse:
        return fail(request)

    transport = MockTransport(afail if is_async else fail)
    async with glasspool.Client(transport=transport, limit=1) as client:
        with pytest.raises(Boom, match="handler failed"):
            await client.get("http://a.test/")
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.open == 0  # the connection was closed
        assert (await client.get("http://a.test/")).status == 204  # the slot is free


async def test_a_handler_that_returns_the_wrong_type() -> None:
    transport = MockTransport(lambda request: 200)  # type: ignore[arg-type,return-value]
    async with glasspool.Client(transport=transport) as client:
        with pytest.raises(glasspool.InvalidRequest, match="returned int, not a MockResponse"):
            await client.get("http://a.test/")
        assert client.pool.stats().in_use == 0


async def test_streamed_and_multipart_bodies_reach_the_handler() -> None:
    bodies: list[bytes] = []

    def handler(request: Request) -> MockResponse:
        bodies.append(request.content or b"")
        return MockResponse(200)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    async with glasspool.Client(transport=MockTransport(handler)) as client:
        await client.post("http://a.test/", content=chunks())
        await client.post("http://a.test/", content=chunks(), headers={"Content-Length": "4"})
        await client.post("http://a.test/", files={"f": ("a.txt", b"hello")})
    assert bodies[0] == bodies[1] == b"abcd"
    assert b'filename="a.txt"' in bodies[2] and b"hello" in bodies[2]


async def test_retries_and_redirects_go_through_the_handler() -> None:
    statuses = iter([503, 302, 200])

    def handler(request: Request) -> MockResponse:
        status = next(statuses)
        headers = {"Location": "/next", "Retry-After": "0"} if status != 200 else {}
        return MockResponse(status, headers, content=request.url.path)

    transport = MockTransport(handler)
    retry = glasspool.Retry(total=2, backoff=0)
    async with glasspool.Client(transport=transport, retry=retry) as client:
        response = await client.get("http://a.test/first")
    assert response.text == "/next"
    assert [r.url.path for r in transport.requests] == ["/first", "/first", "/next"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="from 200 to 599"):
        MockResponse(99)
    with pytest.raises(TypeError, match="bytes or str"):
        MockResponse(200, content=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        MockTransport("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MockTransport or None"):
        glasspool.Client(transport=object())  # type: ignore[arg-type]


async def test_a_slow_handler_meets_the_read_timeout_and_is_cancelled() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request: Request) -> MockResponse:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    timeout = glasspool.Timeout(read=0.05)
    async with glasspool.Client(transport=MockTransport(slow), timeout=timeout) as client:
        with pytest.raises(glasspool.ReadTimeout):
            await client.get("http://a.test/")
        await asyncio.wait_for(cancelled.wait(), 5)  # the handler's task did not leak
        assert started.is_set()
        stats = client.pool.stats()
        assert stats.open == 0 and stats.in_use == 0
