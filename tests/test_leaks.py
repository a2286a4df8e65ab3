"""Leak checks with the garbage collector: what a client keeps, and what it lets go.

The autouse fixture in conftest already fails a test that leaves a socket or a task
behind. These tests look at objects: after a workload of successes, errors and
cancellations, an open client keeps exactly its idle connections and no request state;
a closed client is freed with everything it opened; a forgotten client or streamed
response is collected while the loop runs, warns naming its call site, and closes its
socket.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections import Counter

import pytest

import glasspool
from glasspool import Client, Timeout
from glasspool._exchange import Exchange
from glasspool._http11 import HTTP11Connection
from glasspool._pool.state import Conn, Waiter
from tests.faults import FaultServer
from tests.test_cancellation import EventLog, assert_at_rest

TRACKED = (HTTP11Connection, Conn, Waiter, Exchange, Client)


def live() -> Counter[str]:
    """How many objects of each tracked glasspool type are alive, after a full collection."""
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, TRACKED))


async def workload(client: Client, server: FaultServer) -> None:
    """Successes, streams read and dropped, errors, timeouts and cancellations."""
    await client.get(server.url("/ok"))
    async with client.stream("GET", server.url("/fault/ok?size=100000")) as r:
        await r.read()
    async with client.stream("GET", server.url("/fault/ok?size=100000")) as r:
        async for _ in r.aiter_raw():
            break  # closed early: its connection is closed
    for fault in ("truncate", "reset", "half-close", "connection-close", "http10"):
        try:
            await client.get(server.url(f"/fault/{fault}"))
        except glasspool.GlasspoolError:
            pass
    with pytest.raises(glasspool.ReadTimeout):
        await client.get(server.url("/fault/stall"), timeout=Timeout(read=0.05))
    stalled = asyncio.create_task(client.get(server.url("/fault/stall")))
    queued = [asyncio.create_task(client.get(server.url("/q"))) for _ in range(3)]
    await server.wait_requests(len(server.requests) + 1)
    for task in (stalled, *queued):
        task.cancel()
    await asyncio.gather(stalled, *queued, return_exceptions=True)
    await client.get(server.url("/last"))


async def test_an_open_client_keeps_only_its_idle_connections(fault_server: FaultServer) -> None:
    before = live()
    async with Client(limit=2, limit_per_host=2) as client:
        await workload(client, fault_server)
        assert_at_rest(client)
        idle = client.pool.stats().idle
        assert idle >= 1
        await fault_server.wait_open(idle)  # every other socket's close has run its course
        grown = live() - before
        # no waiter or body stream outlives its request; one connection object per socket
        # (closed ``Conn`` records may linger in the pool's lazily pruned expiry heap)
        assert grown["Conn"] >= idle
        del grown["Conn"]
        assert grown == Counter({"Client": 1, "HTTP11Connection": idle}), f"{idle} idle"


async def test_a_closed_client_frees_everything_it_opened(fault_server: FaultServer) -> None:
    before = live()
    client = Client(limit=2, limit_per_host=2)
    ref = weakref.ref(client)
    await workload(client, fault_server)
    await client.aclose()
    assert client.pool.stats().open == 0
    await fault_server.wait_open(0)  # every socket's close has run its course
    del client
    assert live() - before == Counter()
    assert ref() is None


async def test_a_closed_client_is_freed_by_reference_counting_alone(
    fault_server: FaultServer,
) -> None:
    client = Client()
    ref = weakref.ref(client)
    await client.get(fault_server.url("/a"))
    async with client.stream("GET", fault_server.url("/b")) as r:
        await r.read()
    await client.aclose()
    gc.disable()
    try:
        del client, r
        assert ref() is None, [type(o).__name__ for o in gc.get_referrers(ref())]
    finally:
        gc.enable()


async def test_a_forgotten_client_is_collected_warns_and_closes_its_sockets(
    fault_server: FaultServer,
) -> None:
    client = Client()
    line = sys._getframe().f_lineno - 1
    ref = weakref.ref(client)
    await client.get(fault_server.url("/a"))  # its connection stays idle in the pool
    assert fault_server.open_connections == 1
    with pytest.warns(glasspool.UnclosedResponseWarning) as caught:
        del client
        gc.collect()
    assert ref() is None
    message = str(caught[0].message)
    assert f"{__file__}:{line} was never closed" in message, message
    assert "1 connection(s) are closed now" in message
    await fault_server.wait_open(0)


async def test_a_dropped_streamed_response_warns_with_its_call_site_and_is_not_reused(
    fault_server: FaultServer,
) -> None:
    async with Client() as client:
        log = EventLog(client)
        response = await client.stream("GET", fault_server.url("/a")).__aenter__()
        line = sys._getframe().f_lineno - 1
        ref = weakref.ref(response)
        with pytest.warns(glasspool.UnclosedResponseWarning) as caught:
            del response
            gc.collect()
        assert ref() is None
        message = str(caught[0].message)
        assert f"the request was made at {__file__}:{line}." in message, message
        await log.wait_for("closed", since=0)
        assert log.history(1) == [
            "connecting",
            "acquired new",
            "released closed",
            "closed not_reusable",
        ]
        assert_at_rest(client)
        r = await client.get(fault_server.url("/b"))
        assert r.headers["x-connection-id"] == "2"  # the dropped one was never reused
