"""One owner of a connection from hand-over to release: ``_exchange.Exchange``.

Every way a request can end gives its connection back through one method,
``Exchange._end``, the only caller of ``Pool.release``, with the reason docs/pool.md gives.
The tests here end requests in each of those ways and check, for each, who called
``Pool.release`` and with what, and the pool events that followed. A source check makes
sure no other code calls ``Pool.release``.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import glasspool
from glasspool import Client, PoolEvent, Timeout
from glasspool._exchange import Exchange, Phase
from glasspool._pool.asyncio import Pool
from glasspool._pool.state import Waiter
from tests.faults import FaultServer
from tests.rawserver import RawServer
from tests.test_cancellation import assert_at_rest

SRC = Path(glasspool.__file__).parent
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass(frozen=True)
class Release:
    caller: str  # the qualified name of the function that called Pool.release
    reason: str
    close_reason: str | None


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> list[Release]:
    """Every ``Pool.release`` call of the test, with its caller."""
    calls: list[Release] = []
    real = Pool.release

    def release(
        self: Pool, lease: Waiter, *, reason: str = "eof", close_reason: str | None = None
    ) -> None:
        caller = sys._getframe(1).f_code
        calls.append(Release(getattr(caller, "co_qualname", caller.co_name), reason, close_reason))
        real(self, lease, reason=reason, close_reason=close_reason)

    monkeypatch.setattr(Pool, "release", release)
    return calls


def ends(events: list[PoolEvent]) -> list[str]:
    """The ``released`` and ``closed`` events, as ``"released eof #1"``."""
    return [
        f"{e.kind} {e.reason} #{e.connection_id}"
        for e in events
        if e.kind in ("released", "closed")
    ]


def one_path(releases: list[Release], *expected: tuple[str, str | None]) -> None:
    """Assert the releases were ``expected`` (reason, close reason), all from ``_end``."""
    assert [(r.reason, r.close_reason) for r in releases] == list(expected), releases
    assert {r.caller for r in releases} <= {"Exchange._end", "_end"}, releases


# -- eof ------------------------------------------------------------------------------------


async def test_a_body_read_to_its_end_is_released_eof_and_pooled(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        assert (await client.get(fault_server.url("/a"))).content == b"id=1"
        async with client.stream("GET", fault_server.url("/b")) as r:
            assert await r.read() == b"id=2"
        async with client.stream("GET", fault_server.url("/fault/ok?size=1000")) as r:
            assert len(b"".join([chunk async for chunk in r.aiter_raw()])) == 1000
        one_path(releases, ("eof", None), ("eof", None), ("eof", None))
        assert ends(events) == ["released eof #1"] * 3
        assert client.pool.stats().idle == 1


async def test_a_response_that_ends_its_connection_is_released_eof_not_reusable(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        await client.get(fault_server.url("/fault/connection-close"))
        async with client.stream("GET", fault_server.url("/fault/connection-close")) as r:
            await r.read()
        one_path(releases, ("eof", "not_reusable"), ("eof", "not_reusable"))
        assert ends(events) == [
            "released eof #1",
            "closed not_reusable #1",
            "released eof #2",
            "closed not_reusable #2",
        ]


# -- closed early -----------------------------------------------------------------------------


async def test_a_streamed_body_closed_early_is_released_closed(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        async with client.stream("GET", fault_server.url("/fault/ok?size=100000")) as r:
            async for _ in r.aiter_raw():
                break
        async with client.stream("GET", fault_server.url("/unread")):
            pass
        one_path(releases, ("closed", "not_reusable"), ("closed", "not_reusable"))
        assert ends(events) == [
            "released closed #1",
            "closed not_reusable #1",
            "released closed #2",
            "closed not_reusable #2",
        ]


async def test_a_dropped_streamed_response_warns_and_is_released_closed(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        response = await client.stream("GET", fault_server.url("/dropped")).__aenter__()
        line = sys._getframe().f_lineno - 1
        with pytest.warns(glasspool.UnclosedResponseWarning, match=f"{__file__}:{line}"):
            del response
            gc.collect()
        await asyncio.sleep(0)  # the release runs on the loop, soon after the collection
        one_path(releases, ("closed", "not_reusable"))
        assert ends(events) == ["released closed #1", "closed not_reusable #1"]
        assert_at_rest(client)


async def test_a_streamed_decoding_failure_is_released_closed(
    releases: list[Release],
) -> None:
    bad = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnogzp"
    events: list[PoolEvent] = []
    async with RawServer(replies=[bad]) as srv, Client() as client:
        client.pool.add_listener(events.append)
        with pytest.raises(glasspool.ProtocolError):
            async with client.stream("GET", f"http://127.0.0.1:{srv.port}/") as r:
                await r.read()
        # the response closed its stream: for a streamed body that is the caller's close
        one_path(releases, ("closed", "not_reusable"))
        assert ends(events) == ["released closed #1", "closed not_reusable #1"]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "error", "close_reason"),
    [
        ("/fault/truncate", glasspool.IncompleteBody, "error"),
        ("/fault/reset", glasspool.ServerDisconnected, "server_closed"),
        ("/fault/stall", glasspool.ReadTimeout, "error"),
    ],
    ids=["body cut short", "reset before the head", "read timeout"],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["get", "stream"])
async def test_an_error_while_the_connection_is_held_is_released_error(
    fault_server: FaultServer,
    releases: list[Release],
    path: str,
    error: type[Exception],
    close_reason: str,
    streamed: bool,
) -> None:
    events: list[PoolEvent] = []
    async with Client(timeout=Timeout(5, read=0.2)) as client:
        client.pool.add_listener(events.append)
        with pytest.raises(error):
            if streamed:
                async with client.stream("GET", fault_server.url(path)) as r:
                    await r.read()
            else:
                await client.get(fault_server.url(path))
        one_path(releases, ("error", close_reason))
        assert ends(events) == ["released error #1", f"closed {close_reason} #1"]
        assert_at_rest(client)


async def test_a_decoding_failure_of_a_get_is_released_error() -> None:
    bad = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnogzp"
    events: list[PoolEvent] = []
    async with RawServer(replies=[bad]) as srv, Client() as client:
        client.pool.add_listener(events.append)
        with pytest.raises(glasspool.ProtocolError):
            await client.get(f"http://127.0.0.1:{srv.port}/")
        # the client read the body as part of the request: its failure is the request's
        assert ends(events) == ["released error #1", "closed error #1"]


# -- cancellation and the total deadline ------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["get", "stream"])
async def test_a_cancellation_mid_body_is_released_error_cancelled(
    fault_server: FaultServer, releases: list[Release], streamed: bool
) -> None:
    events: list[PoolEvent] = []
    url = fault_server.url("/fault/trickle?size=100&delay=0.05")
    async with Client() as client:
        client.pool.add_listener(events.append)
        reading = asyncio.Event()

        async def request() -> None:
            if streamed:
                async with client.stream("GET", url) as r:
                    async for _ in r.aiter_raw():
                        reading.set()
            else:
                reading.set()  # the head is not here yet: the cancel may land in any phase
                await client.get(url)

        task = asyncio.create_task(request())
        await reading.wait()
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        one_path(releases, ("error", "cancelled"))
        assert ends(events) == ["released error #1", "closed cancelled #1"]
        assert_at_rest(client)


@pytest.mark.parametrize(
    ("streamed", "close_reason"),
    [(False, "cancelled"), (True, "error")],
    ids=["get: the client's deadline scope cancels", "stream: the exchange's read times out"],
)
async def test_the_total_deadline_is_released_error(
    fault_server: FaultServer, releases: list[Release], streamed: bool, close_reason: str
) -> None:
    events: list[PoolEvent] = []
    url = fault_server.url("/fault/trickle?size=100&delay=0.05")
    async with Client(timeout=Timeout(5, total=0.3)) as client:
        client.pool.add_listener(events.append)
        with pytest.raises(glasspool.TotalTimeout, match=r"total timeout of 0\.3s"):
            if streamed:
                async with client.stream("GET", url) as r:
                    await r.read()
            else:
                await client.get(url)
        one_path(releases, ("error", close_reason))
        assert ends(events) == ["released error #1", f"closed {close_reason} #1"]


# -- one decode loop: get() and stream() read a body the same way ---------------------------


async def test_a_body_less_response_with_an_unknown_coding_reads_the_same_both_ways() -> None:
    """A HEAD response names the coding of a body it does not carry. ``get()`` used to make
    the decoder before looking for a body (and raise ``ProtocolError`` for an unsupported
    coding); a stream never did. Both now go through the one decode loop, which makes a
    decoder for the first body byte."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Encoding: compress\r\nContent-Length: 9\r\n\r\n"
    events: list[PoolEvent] = []
    async with RawServer(replies=[reply, reply]) as srv, Client() as client:
        client.pool.add_listener(events.append)
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.head(url)).content == b""
        async with client.stream("HEAD", url) as r:
            assert await r.read() == b""
        assert ends(events) == ["released eof #1", "released eof #1"]


# -- the client closed ----------------------------------------------------------------------


async def test_a_streamed_body_read_after_aclose_is_released_error_client_closed(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    events: list[PoolEvent] = []
    client = Client()
    client.pool.add_listener(events.append)
    async with client.stream("GET", fault_server.url("/x")) as r:
        await client.aclose()
        with pytest.raises(glasspool.ClientClosed, match="while reading the body from"):
            await r.read()
    one_path(releases, ("error", "client_closed"))
    assert ends(events) == ["closed client_closed #1"]  # the pool had closed it already


async def test_a_get_in_flight_when_the_client_closes_is_released_error(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    events: list[PoolEvent] = []
    client = Client()
    client.pool.add_listener(events.append)
    task = asyncio.create_task(client.get(fault_server.url("/fault/stall")))
    await fault_server.wait_requests(1)
    await client.aclose()
    with pytest.raises(glasspool.ClientClosed, match="/fault/stall was in flight"):
        await task
    assert [r.reason for r in releases] == ["error"]
    one_path(releases, ("error", releases[0].close_reason))
    assert ends(events) == ["closed client_closed #1"]


# -- redirects and the stale retry, on exchanges ----------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["get", "stream"])
async def test_a_redirect_body_is_drained_and_its_connection_reused(
    releases: list[Release], recwarn: pytest.WarningsRecorder, streamed: bool
) -> None:
    """A streamed request that follows a redirect used to leave the redirect's body stream
    unfinished: when it was collected, it warned that the caller's response was never
    closed, closed the pooled connection under the pool (``closed server_closed``) and
    released it a second time (``PoolMisuse`` in a loop callback)."""
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 3\r\n\r\nabc"
    events: list[PoolEvent] = []
    async with RawServer(replies=[redirect, OK]) as srv, Client() as client:
        client.pool.add_listener(events.append)
        url = f"http://127.0.0.1:{srv.port}/a"
        if streamed:
            async with client.stream("GET", url) as r:
                gc.collect()
                assert await r.read() == b"ok"
        else:
            r = await client.get(url)
        gc.collect()
        await asyncio.sleep(0)
        assert [h.num_bytes_downloaded for h in r.history] == [3]
        assert r.history[0].content == b"" and r.history[0].is_closed
        one_path(releases, ("eof", None), ("eof", None))
        assert ends(events) == ["released eof #1", "released eof #1"]
        assert srv.connections == 1
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


async def test_a_redirect_body_too_long_to_drain_is_released_closed(
    releases: list[Release],
) -> None:
    size = 70000  # more than the client drains (64 KiB)
    redirect = (
        b"HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    )
    events: list[PoolEvent] = []
    async with RawServer(replies=[redirect, OK]) as srv, Client() as client:
        client.pool.add_listener(events.append)
        r = await client.get(f"http://127.0.0.1:{srv.port}/a")
        assert r.content == b"ok" and r.history[0].content == b""
        one_path(releases, ("closed", "not_reusable"), ("eof", None))
        assert ends(events) == ["released closed #1", "closed not_reusable #1", "released eof #2"]


async def test_a_stale_connection_is_released_error_and_the_retry_eof(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    fault_server.plan(requests=("ok", "half-close"))  # connection 1: answers once, then dies
    events: list[PoolEvent] = []
    async with Client() as client:
        client.pool.add_listener(events.append)
        await client.get(fault_server.url("/a"))
        r = await client.get(fault_server.url("/b"))  # sent on 1, dies unanswered, sent on 2
        assert r.headers["x-connection-id"] == "2"
        one_path(releases, ("eof", None), ("error", "server_closed"), ("eof", None))
        assert ends(events) == [
            "released eof #1",
            "released error #1",
            "closed server_closed #1",
            "released eof #2",
        ]


# -- one place --------------------------------------------------------------------------------


def test_pool_release_is_called_in_one_place() -> None:
    """``Exchange._end`` is the only code in glasspool that gives a connection back."""
    callers = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "release"
                    and any(k.arg == "reason" for k in node.keywords)
                ):
                    callers.append(f"{path.relative_to(SRC)}:{func.name}")
    assert callers == ["_exchange.py:_end"], callers


async def test_an_exchange_releases_once_whatever_ends_it(
    fault_server: FaultServer, releases: list[Release]
) -> None:
    """``_end`` is idempotent: a later ending (an aclose after the release, a failure
    reported twice) gives nothing back again, and the phase says it holds nothing."""
    async with Client() as client:
        key = glasspool.PoolKey("http", "127.0.0.1", fault_server.port)
        exchange = await Exchange.start(client.pool, key, Timeout(5), None, "http://h/")
        phases = [exchange.phase]
        exchange._end("closed")
        phases.append(exchange.phase)
        assert phases == [Phase.CLIENT, Phase.RELEASED]
        exchange._end("error", RuntimeError("late"))
        await exchange.aclose()
        assert await exchange.read_chunk() == b""
        assert await exchange.read_rest() == b""
        one_path(releases, ("closed", "not_reusable"))
        assert_at_rest(client)
