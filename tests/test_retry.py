"""Retries: the policy as pure functions (``_retry``), then the client against loopback servers.

No test sleeps to synchronise: the client's wait is a fake that records the delays
(``client._retry_sleep``), and the jitter comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections.abc import AsyncIterator

import pytest

import glasspool
from glasspool import Client, Retry, RetryAttempt
from glasspool._headers import Headers
from glasspool._retry import (
    error_delay,
    method_allows_retry,
    parse_retry_after,
    status_delay,
)
from tests.faults import FaultServer
from tests.rawserver import RawServer, Reply


class Top:
    """A random source that always gives the top of the range (the cap under test)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def reply(status: int, *headers: str, body: bytes = b"x") -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def fake_sleep(client: Client) -> list[float]:
    """Replace the client's wait with one that records the delay and returns at once."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    client._retry_sleep = sleep
    client._retry_rng = random.Random(7)
    return delays


def at_rest(client: Client) -> None:
    stats = client.pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats


# ------------------------------------------------------------------ the policy


def test_defaults() -> None:
    r = Retry()
    assert (r.total, r.backoff, r.max_backoff, r.max_retry_after) == (3, 0.5, 30.0, 120.0)
    assert r.statuses == {429, 502, 503, 504}
    assert r.methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    assert r.respect_retry_after is True and r.attempts == ()
    assert glasspool.Retry is Retry and "Retry" in glasspool.__all__


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"total": -1}, ValueError, "Retry total must be >= 0"),
        ({"total": True}, TypeError, "Retry total must be an int"),
        ({"backoff": -0.5}, ValueError, "Retry backoff must be >= 0"),
        ({"backoff": None}, ValueError, "Retry backoff must be a finite number"),
        ({"max_backoff": float("inf")}, ValueError, "Retry max_backoff must be a finite"),
        ({"backoff": "1"}, TypeError, "Retry backoff must be a number"),
        ({"max_retry_after": -1}, ValueError, "Retry max_retry_after must be >= 0"),
        ({"statuses": {503, 700}}, ValueError, "from 100 to 599, got 700"),
        ({"statuses": "503"}, TypeError, "Retry statuses must be a set of ints"),
        ({"methods": "GET"}, TypeError, "Retry methods must be a set"),
        ({"methods": {""}}, ValueError, "non-empty strings"),
        ({"respect_retry_after": 1}, TypeError, "respect_retry_after must be a bool"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, object], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_coerce_and_client_option() -> None:
    assert Retry.coerce(None) is None
    assert Retry.coerce(2) == Retry(total=2)
    r = Retry(total=1)
    assert Retry.coerce(r) is r
    with pytest.raises(TypeError, match=r"retry must be None, an int or a glasspool\.Retry"):
        Retry.coerce("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry must be"):
        Client(retry=True)
    assert Client(retry=5).retry == Retry(total=5)
    assert Client().retry is None


def test_increment_returns_a_new_value() -> None:
    r = Retry(total=2, methods={"get", "post"})
    assert r.methods == {"GET", "POST"}
    r1 = r.increment("503", 0.25)
    assert r.attempts == () and r.retries_left == 2
    assert r1.attempts == (RetryAttempt("503", 0.25),) and r1.retries_left == 1
    assert r1 == r  # the attempts are history, not configuration
    assert r1.increment("ReadError", 0.0).retries_left == 0


def test_full_jitter_bounds_with_a_seeded_rng() -> None:
    r = Retry(total=10, backoff=0.5, max_backoff=3.0)
    caps = []
    for n in range(6):
        caps.append(r.backoff_delay(Top()))
        rng = random.Random(n)
        for _ in range(200):
            assert 0.0 <= r.backoff_delay(rng) <= caps[-1]
        r = r.increment("503", 0.0)
    assert caps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    a, b = random.Random(42), random.Random(42)
    assert [Retry(backoff=1).backoff_delay(a) for _ in range(3)] == [
        Retry(backoff=1).backoff_delay(b) for _ in range(3)
    ]
    assert Retry(backoff=0).backoff_delay(random.Random(1)) == 0.0


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("0", now=now) == 0.0
    assert parse_retry_after(" 120 ", now=now) == 120.0
    in_30 = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(in_30, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 3600, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    far = "Fri, 31 Dec 9999 23:59:59 GMT"
    assert parse_retry_after(far, now=now) == pytest.approx(253402300799.0 - now)
    bad_values = ("", "-1", "1.5", "soon", "٣", "9" * 400, "Wed, 99 Foo 2015 07:28:00 GMT")
    for bad in bad_values:
        assert parse_retry_after(bad, now=now) is None, bad


def test_status_delay() -> None:
    rng = random.Random(3)
    r = Retry(total=2, backoff=0.5, max_retry_after=60)
    assert status_delay(r, 200, None, now=0, rng=rng) is None
    assert status_delay(r, 500, "1", now=0, rng=rng) is None  # not in statuses
    assert status_delay(r, 429, "7", now=0, rng=rng) == 7.0
    assert status_delay(r, 503, "60", now=0, rng=rng) == 60.0
    # Beyond the cap: not retried at all (the response goes back to the caller).
    assert status_delay(r, 503, "61", now=0, rng=rng) is None
    far = email.utils.formatdate(10_000_000, usegmt=True)
    assert status_delay(r, 503, far, now=0, rng=rng) is None
    # Malformed, or not respected: backoff.
    assert status_delay(r, 503, "later", now=0, rng=Top()) == 0.5
    ignore = Retry(total=2, backoff=0.5, respect_retry_after=False)
    assert status_delay(ignore, 503, "61", now=0, rng=Top()) == 0.5
    assert status_delay(Retry(max_retry_after=None), 503, "9999", now=0, rng=rng) == 9999.0
    spent = r.increment("503", 0).increment("503", 0)
    assert status_delay(spent, 503, "1", now=0, rng=rng) is None
    assert status_delay(Retry(total=0), 503, "1", now=0, rng=rng) is None


def test_methods_idempotency_key_and_replayable_body() -> None:
    r = Retry()
    none = Headers()
    keyed = Headers({"Idempotency-KEY": "abc"})
    assert method_allows_retry(r, "GET", none, True)
    assert method_allows_retry(r, "PUT", none, True)
    assert not method_allows_retry(r, "POST", none, True)
    assert not method_allows_retry(r, "PATCH", none, True)
    assert method_allows_retry(r, "POST", keyed, True)
    assert not method_allows_retry(r, "POST", keyed, False)  # a stream cannot be replayed
    assert not method_allows_retry(r, "GET", none, False)
    assert method_allows_retry(Retry(methods={"POST"}), "POST", none, True)


def test_error_delay() -> None:
    r = Retry(total=1, backoff=0.5)
    top = Top()
    exc: BaseException
    # Before sending: any method with a replayable body (the server saw nothing).
    for exc in (glasspool.ConnectError("x"), glasspool.ConnectTimeout("x")):
        assert error_delay(r, exc, method_ok=False, replayable=True, rng=top) == 0.5
        assert error_delay(r, exc, method_ok=False, replayable=False, rng=top) is None
    assert error_delay(r, glasspool.TLSError("x"), method_ok=True, replayable=True, rng=top) is None
    # After sending: only a retryable method.
    for exc in (
        glasspool.ServerDisconnected("x"),
        glasspool.ReadError("x"),
        glasspool.WriteError("x"),
        glasspool.ReadTimeout("x"),
        glasspool.WriteTimeout("x"),
    ):
        assert error_delay(r, exc, method_ok=True, replayable=True, rng=top) == 0.5
        assert error_delay(r, exc, method_ok=False, replayable=True, rng=top) is None
    for exc in (
        glasspool.PoolTimeout("x"),
        glasspool.TotalTimeout("x"),
        glasspool.ProtocolError("x"),
        ValueError("x"),
    ):
        assert error_delay(r, exc, method_ok=True, replayable=True, rng=top) is None
    spent = r.increment("ReadError", 0)
    exc = glasspool.ReadError("x")
    assert error_delay(spent, exc, method_ok=True, replayable=True, rng=top) is None


# ------------------------------------------------------------ the client, on sockets


async def test_503_then_200_on_the_same_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="glasspool")
    replies = [reply(503, body=b"busy" * 100), reply(200, body=b"ok")]
    async with RawServer(replies=replies) as srv, Client(retry=Retry(backoff=0.01)) as client:
        delays = fake_sleep(client)
        r = await client.get(f"http://127.0.0.1:{srv.port}/x")
        assert (r.status, r.content) == (200, b"ok")
        assert len(delays) == 1 and 0 <= delays[0] <= 0.01
        assert r.attempts == (RetryAttempt("503", delays[0]),)
        assert srv.connections == 1 and len(srv.requests) == 2  # drained, reused
        at_rest(client)
    retries = [m for m in caplog.messages if m.startswith("retry 1/3 of GET")]
    assert retries and "after 503" in retries[0], caplog.messages


@pytest.mark.parametrize("seconds", [0, 1])
async def test_429_with_retry_after(seconds: int) -> None:
    replies = [reply(429, f"Retry-After: {seconds}"), reply(200)]
    async with RawServer(replies=replies) as srv, Client(retry=2) as client:
        delays = fake_sleep(client)
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.status == 200 and delays == [float(seconds)]
        assert r.attempts == (RetryAttempt("429", float(seconds)),)
        at_rest(client)


async def test_retry_after_over_the_cap_returns_the_response() -> None:
    replies = [reply(503, "Retry-After: 3600")]
    async with RawServer(replies=replies) as srv, Client(retry=3) as client:
        delays = fake_sleep(client)
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.status == 503 and r.headers["retry-after"] == "3600"
        assert delays == [] and r.attempts == ()
        at_rest(client)


async def test_exhausted_retries_return_the_last_response() -> None:
    replies = [reply(503, body=b"1"), reply(502, body=b"2"), reply(503, body=b"3")]
    async with RawServer(replies=replies) as srv, Client(retry=Retry(total=2)) as client:
        delays = fake_sleep(client)
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert (r.status, r.content) == (503, b"3")
        assert [a.reason for a in r.attempts] == ["503", "502"] and len(delays) == 2
        with pytest.raises(glasspool.HTTPStatusError):
            r.raise_for_status()
        assert len(srv.requests) == 3
        at_rest(client)


async def test_per_request_retry_overrides_the_client() -> None:
    replies = [reply(503), reply(503), reply(200)]
    async with RawServer(replies=replies) as srv, Client(retry=5) as client:
        delays = fake_sleep(client)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url, retry=None)).status == 503
        r = await client.get(url, retry=Retry(total=1, backoff=0))
        assert r.status == 200 and delays == [0.0]
        at_rest(client)
    async with RawServer(replies=[reply(503), reply(200)]) as srv, Client() as client:
        fake_sleep(client)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url, retry=1)).status == 200


async def test_post_status_needs_an_idempotency_key() -> None:
    replies = [reply(503), reply(503), reply(200)]
    async with RawServer(replies=replies) as srv, Client(retry=3) as client:
        delays = fake_sleep(client)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.post(url, content=b"body")).status == 503
        r = await client.post(url, content=b"body", headers={"Idempotency-Key": "k1"})
        assert r.status == 200 and len(delays) == 1
        assert srv.requests[1].endswith(b"body") and srv.requests[2].endswith(b"body")
        at_rest(client)


async def test_a_streamed_body_is_not_replayed() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"once"

    async with RawServer(replies=[reply(503), reply(200)]) as srv, Client(retry=3) as client:
        delays = fake_sleep(client)
        url = f"http://127.0.0.1:{srv.port}/"
        r = await client.put(url, content=gen(), headers={"Idempotency-Key": "k"})
        assert r.status == 503 and delays == []
        at_rest(client)


async def test_network_error_retried_for_get(fault_server: FaultServer) -> None:
    fault_server.plan(requests=("reset",))
    async with Client(retry=Retry(total=2, backoff=0)) as client:
        delays = fake_sleep(client)
        r = await client.get(fault_server.url("/"))
        assert r.status == 200 and delays == [0.0]
        assert len(r.attempts) == 1
        assert r.attempts[0].reason in ("ServerDisconnected", "ReadError")
        assert fault_server.connections_accepted == 2
        at_rest(client)


async def test_network_error_not_retried_for_post(fault_server: FaultServer) -> None:
    fault_server.plan(requests=("reset",))
    async with Client(retry=Retry(total=2, backoff=0)) as client:
        delays = fake_sleep(client)
        with pytest.raises(glasspool.NetworkError):
            await client.post(fault_server.url("/"), content=b"pay")
        assert delays == [] and len(fault_server.requests) == 1
        at_rest(client)


async def test_network_error_retried_for_post_with_idempotency_key(
    fault_server: FaultServer,
) -> None:
    fault_server.plan(requests=("reset",))
    async with Client(retry=Retry(total=2, backoff=0)) as client:
        delays = fake_sleep(client)
        headers = {"Idempotency-Key": "order-17"}
        r = await client.post(fault_server.url("/"), content=b"pay", headers=headers)
        assert r.status == 200 and delays == [0.0]
        assert [q.body for q in fault_server.requests] == [b"pay", b"pay"]
        at_rest(client)


async def test_network_errors_exhausted_raise_the_error(fault_server: FaultServer) -> None:
    for _ in range(3):
        fault_server.plan(requests=("reset",))
    async with Client(retry=Retry(total=2, backoff=0)) as client:
        delays = fake_sleep(client)
        with pytest.raises(glasspool.NetworkError):
            await client.get(fault_server.url("/"))
        assert delays == [0.0, 0.0] and fault_server.connections_accepted == 3
        at_rest(client)


async def test_connect_error_retried_even_for_post(refused_port: int) -> None:
    async with Client(retry=Retry(total=2, backoff=0)) as client:
        delays = fake_sleep(client)
        with pytest.raises(glasspool.ConnectError):
            await client.post(f"http://127.0.0.1:{refused_port}/", content=b"x")
        assert delays == [0.0, 0.0]
        at_rest(client)


async def test_a_wait_past_the_total_deadline_is_not_made() -> None:
    replies = [reply(503, "Retry-After: 30")]
    async with RawServer(replies=replies) as srv:
        timeout = glasspool.Timeout(5, total=2)
        async with Client(retry=3, timeout=timeout) as client:

            async def never(delay: float) -> None:
                raise AssertionError(f"slept {delay}s past the deadline")

            client._retry_sleep = never
            r = await client.get(f"http://127.0.0.1:{srv.port}/")
            assert r.status == 503 and r.attempts == ()
            at_rest(client)


async def test_the_waits_count_inside_the_total_deadline() -> None:
    replies = [reply(503, "Retry-After: 0"), reply(200)]
    async with RawServer(replies=replies) as srv:
        async with Client(retry=3, timeout=glasspool.Timeout(5, total=0.2)) as client:
            started = asyncio.get_running_loop().time()

            async def slow(delay: float) -> None:  # a wait that outlasts the deadline
                await asyncio.Event().wait()

            client._retry_sleep = slow
            with pytest.raises(glasspool.TotalTimeout):
                await client.get(f"http://127.0.0.1:{srv.port}/")
            assert asyncio.get_running_loop().time() - started < 2.0
            at_rest(client)


async def test_stream_retries_before_the_hand_over() -> None:
    replies = [reply(503, "Retry-After: 0"), reply(200, body=b"streamed")]
    async with RawServer(replies=replies) as srv, Client(retry=2) as client:
        delays = fake_sleep(client)
        async with client.stream("GET", f"http://127.0.0.1:{srv.port}/") as r:
            assert r.status == 200 and delays == [0.0]
            assert r.attempts == (RetryAttempt("503", 0.0),)
            assert await r.read() == b"streamed"
        at_rest(client)
    async with RawServer(replies=[reply(503), reply(200)]) as srv, Client() as client:
        delays = fake_sleep(client)
        async with client.stream("GET", f"http://127.0.0.1:{srv.port}/", retry=1) as r:
            assert r.status == 200 and len(delays) == 1


async def test_redirects_and_retries_share_one_budget() -> None:
    async with RawServer(replies=[reply(503), reply(200)]) as target:
        loc = f"Location: http://127.0.0.1:{target.port}/b"
        replies = [reply(503), reply(302, loc)]
        async with RawServer(replies=replies) as srv, Client(retry=Retry(total=2)) as client:
            delays = fake_sleep(client)
            r = await client.get(f"http://127.0.0.1:{srv.port}/a")
            assert r.status == 200 and len(r.history) == 1 and len(delays) == 2
            assert [a.reason for a in r.attempts] == ["503", "503"]
            at_rest(client)


async def test_a_long_retried_body_closes_its_connection() -> None:
    big = reply(503, body=b"z" * (200 * 1024))
    async with RawServer(replies=[big, reply(200)]) as srv, Client(retry=1) as client:
        delays = fake_sleep(client)
        closed: list[str | None] = []
        client.pool.add_listener(lambda e: closed.append(e.reason) if e.kind == "closed" else None)
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.status == 200 and len(delays) == 1
        assert closed == ["not_reusable"] and srv.connections == 2
        at_rest(client)


async def test_cancelled_during_the_wait_holds_nothing() -> None:
    async with RawServer(replies=[reply(503, "Retry-After: 0")]) as srv, Client(retry=1) as client:
        waiting = asyncio.Event()

        async def sleep(delay: float) -> None:
            waiting.set()
            await asyncio.Event().wait()

        client._retry_sleep = sleep
        task = asyncio.create_task(client.get(f"http://127.0.0.1:{srv.port}/"))
        await waiting.wait()
        at_rest(client)
        assert client.pool.stats().idle == 1  # the 503's connection went back
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        at_rest(client)


async def test_a_broken_retried_body_is_still_retried() -> None:
    truncated = b"HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\nonly ten b"
    replies: list[bytes | Reply] = [Reply(truncated, close=True), reply(200, body=b"ok")]
    async with RawServer(replies=replies) as srv, Client(retry=1) as client:
        delays = fake_sleep(client)
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert (r.status, r.content) == (200, b"ok") and len(delays) == 1
        assert srv.connections == 2
        at_rest(client)
