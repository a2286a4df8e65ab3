"""Event hooks: request hooks (e.g. signing) and response hooks, sync and async."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator

import aiohttp.web
import pytest

import glasspool
from glasspool import MockResponse, MockTransport, Request, Response


def _echo_headers(request: Request) -> MockResponse:
    return MockResponse(200, content=request.headers.get("x-signature") or "")


def _sign(request: Request) -> None:
    mac = hmac.new(b"k", f"{request.method} {request.url.path}".encode(), hashlib.sha256)
    request.headers["X-Signature"] = mac.hexdigest()


async def test_a_request_hook_signs_each_request() -> None:
    transport = MockTransport(_echo_headers)
    async with glasspool.Client(transport=transport, event_hooks={"request": [_sign]}) as client:
        first = await client.get("http://a.test/one")
        second = await client.post("http://a.test/two")
    assert first.text == hmac.new(b"k", b"GET /one", hashlib.sha256).hexdigest()
    assert second.text == hmac.new(b"k", b"POST /two", hashlib.sha256).hexdigest()
    # the hook changed a copy: the client's own headers are untouched
    assert "x-signature" not in client.headers
    assert first.request is not None and "x-signature" in first.request.headers


async def test_hooks_run_in_order_sync_and_async_per_attempt_and_hop() -> None:
    calls: list[str] = []
    statuses = iter([503, 302, 200])

    def handler(request: Request) -> MockResponse:
        calls.append(f"handler {request.url.path} {request.headers.get('x-order')}")
        status = next(statuses)
        return MockResponse(status, {"Location": "/b", "Retry-After": "0"})

    def first(request: Request) -> None:
        calls.append("request 1")
        request.headers["X-Order"] = "1"

    async def second(request: Request) -> None:
        calls.append("request 2")
        request.headers["X-Order"] = request.headers["X-Order"] + ",2"

    async def on_response(response: Response) -> None:
        calls.append(f"response {response.status}")

    hooks = {"request": [first, second], "response": [on_response]}
    retry = glasspool.Retry(total=2, backoff=0)
    async with glasspool.Client(
        transport=MockTransport(handler), event_hooks=hooks, retry=retry
    ) as client:
        response = await client.get("http://a.test/a")
    assert response.status == 200
    assert calls == [
        "request 1", "request 2", "handler /a 1,2", "response 503",
        "request 1", "request 2", "handler /a 1,2", "response 302",
        "request 1", "request 2", "handler /b 1,2", "response 200",
    ]  # fmt: skip


class Refused(Exception):
    pass


async def test_a_request_hook_error_propagates_before_any_connection() -> None:
    def refuse(request: Request) -> None:
        raise Refused("no")

    transport = MockTransport(_echo_headers)
    async with glasspool.Client(transport=transport, event_hooks={"request": [refuse]}) as client:
        with pytest.raises(Refused):
            await client.get("http://a.test/")
        assert client.pool.stats().open == 0
    assert transport.requests == []


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def big(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=b"x" * 300000)

    app = aiohttp.web.Application()
    app.router.add_get("/", big)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("use_stream", [False, True])
async def test_a_response_hook_error_frees_the_slot(server: str, use_stream: bool) -> None:
    async def check(response: Response) -> None:
        if response.status == 200:
            raise Refused(f"refused {response.status}")

    async with glasspool.Client(limit=1, event_hooks={"response": [check]}) as client:
        with pytest.raises(Refused, match="refused 200"):
            if use_stream:
                async with client.stream("GET", server):
                    pass
            else:
                await client.get(server)
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.idle == 0  # unread body: closed, not reused
        host = stats.hosts["127.0.0.1"]
        assert host.closed == host.opened == 1


def test_bad_hooks_are_refused() -> None:
    with pytest.raises(TypeError, match="'requests' is not one of"):
        glasspool.Client(event_hooks={"requests": []})
    with pytest.raises(TypeError, match=r"event_hooks\['request'\]\[1\] is not callable"):
        glasspool.Client(event_hooks={"request": [_sign, 3]})  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a list"):
        glasspool.Client(event_hooks={"request": _sign})  # type: ignore[dict-item]
