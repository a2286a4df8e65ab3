"""Adaptive per-host limits: the options, the rule in the sans-IO pool state, and a client
against a loopback server that is overloaded for a while (503 with Retry-After) and then
recovers.

The rule's invariants under random operations are in tests/_pool/test_state_machine.py.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import glasspool
from glasspool import AdaptiveLimits, Client, PoolEvent, PoolKey, Retry, Timeline
from glasspool._pool.state import Close, ConnState, PoolState, Waiter, WaiterState
from tests.rawserver import RawServer

K = PoolKey("http", "a.test", 80)
B = PoolKey("http", "b.test", 80)


# ------------------------------------------------------------------ the options


def test_defaults_and_coerce() -> None:
    a = AdaptiveLimits()
    assert (a.decrease_on, a.increase_after, a.retry_after) == ({429, 503}, 10, True)
    assert AdaptiveLimits.coerce(None) is None and AdaptiveLimits.coerce(False) is None
    assert AdaptiveLimits.coerce(True) == a
    assert AdaptiveLimits.coerce(a) is a
    assert glasspool.AdaptiveLimits is AdaptiveLimits and "AdaptiveLimits" in glasspool.__all__
    with pytest.raises(TypeError, match="adaptive_limits must be None, a bool or a glasspool"):
        Client(adaptive_limits=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"increase_after": 0}, ValueError, "AdaptiveLimits increase_after must be >= 1"),
        ({"increase_after": 2.5}, TypeError, "AdaptiveLimits increase_after must be an int"),
        ({"decrease_on": {503, 42}}, ValueError, "from 100 to 599, got 42"),
        ({"decrease_on": 503}, TypeError, "decrease_on must be a set of ints"),
        ({"retry_after": "yes"}, TypeError, "retry_after must be a bool"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, object], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        AdaptiveLimits(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------- the rule (sans-IO)


class Machine:
    """A PoolState with adaptive limits and a list of its events."""

    def __init__(self, per_host: int = 8, increase_after: int = 3, limit: int = 20) -> None:
        self.events: list[PoolEvent] = []
        adaptive = AdaptiveLimits(increase_after=increase_after)
        self.pool = PoolState(limit, per_host, emit=self.events.append, adaptive=adaptive)
        self.now = 0.0

    def active(self, key: PoolKey = K) -> Waiter:
        waiter, _ = self.pool.request(key, self.now)
        if waiter.state is WaiterState.CONNECTING:
            self.pool.connected(waiter, self.now)
        assert waiter.state is WaiterState.ACTIVE
        return waiter

    def seen(self, waiter: Waiter, status: int, retry_after: bool = False) -> list[Close]:
        actions = self.pool.response_seen(waiter, self.now, status, retry_after)
        self.pool._check_invariants(self.now)
        return [a for a in actions if isinstance(a, Close)]

    def limits(self) -> list[tuple[str | None, int | None]]:
        return [(e.reason, e.limit) for e in self.events if e.kind == "limit_changed"]


def test_halves_to_one_and_grows_back_by_one_per_run() -> None:
    m = Machine(per_host=8, increase_after=3)
    for expected in (4, 2, 1, 1):
        w = m.active()  # each request asked after the last cut
        m.seen(w, 503)
        assert m.pool.hosts()[K].limit == expected
        m.pool.release(w, m.now)
    assert m.limits() == [("status_503", 4), ("status_503", 2), ("status_503", 1)]
    assert m.pool.hosts()[K].limit_reason == "status_503"
    for _ in range(3 * 7 + 5):  # seven runs of three raise it to 8; then no further
        w = m.active()
        m.seen(w, 200)
        m.pool.release(w, m.now)
    assert m.pool.hosts()[K].limit == 8
    assert m.limits()[3:] == [("recovered", n) for n in range(2, 9)]


def test_one_cut_per_round_of_requests() -> None:
    """Requests that asked before a cut do not cut again: ten 503s in flight halve once."""
    m = Machine(per_host=10)
    inflight = [m.active() for _ in range(10)]
    for w in inflight:
        m.seen(w, 503)
    assert m.limits() == [("status_503", 5)]
    waiter, _ = m.pool.request(K, m.now)  # a request that asks now finds the limit full
    assert waiter.state is WaiterState.QUEUED
    assert [e.reason for e in m.events if e.kind == "queued"] == ["limit_per_host"]
    # in-use connections are never closed: all ten are still in use
    assert m.pool.hosts()[K].in_use == 10


def test_retry_after_signals_and_other_5xx_reset_the_run() -> None:
    m = Machine(per_host=4, increase_after=2)
    w = m.active()
    m.seen(w, 200, retry_after=True)  # any response with Retry-After
    assert m.limits() == [("retry_after", 2)]
    m.pool.release(w, m.now)
    for status in (200, 500, 200):  # the 500 breaks the run: no raise yet
        w = m.active()
        m.seen(w, status)
        m.pool.release(w, m.now)
    assert m.pool.hosts()[K].limit == 2
    w = m.active()
    m.seen(w, 404)  # a 4xx is the server coping: a success
    assert m.limits()[-1] == ("recovered", 3)


def test_a_cut_closes_surplus_idle_and_later_the_released_never_in_use() -> None:
    m = Machine(per_host=8)
    ws = [m.active() for _ in range(6)]
    for w in ws[2:]:
        m.pool.release(w, m.now)  # 2 in use, 4 idle
    probe = m.active()  # reuses an idle one: 3 in use, 3 idle
    closes = m.seen(probe, 429)
    host = m.pool.hosts()[K]
    assert host.limit == 4 and host.in_use == 3 and len(host.idle) == 1
    assert [c.reason for c in closes] == ["limit_lowered", "limit_lowered"]
    assert all(c.conn.state is ConnState.CLOSED for c in closes)
    # the idle one left within the limit is reused; the next request waits (4 open)
    assert m.pool.request(K, m.now)[0].state is WaiterState.ACTIVE
    third, _ = m.pool.request(K, m.now)
    assert third.state is WaiterState.QUEUED
    m.pool.release(ws[0], m.now)  # 3 open without it, under 4: it goes on to the waiter
    assert third.state is WaiterState.ACTIVE
    # cut again, 4 -> 2, with 4 in use: a connection that comes back is closed
    m.seen(third, 503)
    assert m.pool.hosts()[K].limit == 2 and m.pool.hosts()[K].in_use == 4
    closed = [a for a in m.pool.release(ws[1], m.now) if isinstance(a, Close)]
    assert [c.reason for c in closed] == ["limit_lowered"]
    m.pool._check_invariants(m.now)


def test_raising_the_limit_serves_a_waiter() -> None:
    m = Machine(per_host=2, increase_after=1)
    w1 = m.active()
    m.seen(w1, 503)  # 2 -> 1
    queued, _ = m.pool.request(K, m.now)
    assert queued.state is WaiterState.QUEUED
    actions = m.pool.response_seen(w1, m.now, 200, False)  # 1 -> 2: the waiter gets a slot
    assert queued.state is WaiterState.CONNECTING and actions
    assert m.limits()[-1] == ("recovered", 2)


def test_off_changes_nothing_and_other_keys_are_untouched() -> None:
    pool = PoolState(10, 4)
    w, _ = pool.request(K, 0.0)
    assert pool.response_seen(w, 0.0, 503, True) == [] and pool.hosts()[K].limit == 4
    m = Machine(per_host=4)
    a, b = m.active(K), m.active(B)
    m.seen(a, 503)
    assert (m.pool.hosts()[K].limit, m.pool.hosts()[B].limit) == (2, 4)
    del b


# ------------------------------------------------------ the client, on a socket


class Overloaded:
    """A server that answers 503 with Retry-After while ``busy`` requests remain, then 200;
    while ``gate`` is clear it holds each request, counting how many it holds at once."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.gate = asyncio.Event()
        self.gate.set()
        self.holding = 0
        self.most = 0
        self.held = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await srv_read(reader):
            if self.busy > 0:
                self.busy -= 1
                writer.write(
                    b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 4\r\n\r\nbusy"
                )
            else:
                self.holding += 1
                self.most = max(self.most, self.holding)
                self.held.set()
                await self.gate.wait()
                self.holding -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()


async def srv_read(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    return True


async def test_overloaded_host_limit_goes_down_then_back_up() -> None:
    server = Overloaded(busy=0)
    events: list[PoolEvent] = []
    queued = asyncio.Event()
    adaptive = AdaptiveLimits(increase_after=2)

    def listen(event: PoolEvent) -> None:
        events.append(event)
        if event.kind == "queued" and sum(e.kind == "queued" for e in events) == 2:
            queued.set()

    async with (
        RawServer(server.handle) as srv,
        Client(limit_per_host=4, adaptive_limits=adaptive, retry=Retry(total=5)) as client,
    ):
        delays: list[float] = []

        async def no_wait(delay: float) -> None:
            delays.append(delay)

        client._retry_sleep = no_wait
        client._retry_rng = random.Random(1)
        url = f"http://127.0.0.1:{srv.port}/"
        client.pool.add_listener(listen)
        timeline = Timeline(client.pool)
        # four connections open, then idle
        rs = await asyncio.gather(*(client.get(url) for _ in range(4)))
        assert [r.status for r in rs] == [200] * 4
        host = client.pool.stats().hosts[srv.key()]
        assert (host.limit, host.effective_limit, host.limit_reason) == (4, 4, None)

        # overloaded: three 503s with Retry-After, retried, then a 200
        server.busy = 3
        r = await client.get(url)
        assert r.status == 200 and [a.reason for a in r.attempts] == ["503"] * 3
        assert delays == [0.0, 0.0, 0.0]
        host = client.pool.stats().hosts[srv.key()]
        assert (host.limit, host.effective_limit, host.limit_reason) == (4, 1, "status_503")
        assert host.open == 1 and host.in_use == 0  # the surplus idle was closed
        lowered = [e for e in events if e.kind == "closed" and e.reason == "limit_lowered"]
        assert len(lowered) == 3
        assert [(e.reason, e.limit) for e in events if e.kind == "limit_changed"] == [
            ("status_503", 2),
            ("status_503", 1),
        ]

        # at limit 1, three concurrent requests: one at the server, two queued
        server.gate.clear()
        server.held.clear()
        events.clear()
        tasks = [asyncio.ensure_future(client.get(url)) for _ in range(3)]
        await asyncio.wait_for(queued.wait(), 5)
        await asyncio.wait_for(server.held.wait(), 5)
        host = client.pool.stats().hosts[srv.key()]
        assert (host.in_use, host.waiting, host.available) == (1, 2, 0)
        server.gate.set()
        assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 3
        assert server.most == 1

        # successes raise it by one per run of two, up to 4 and no further
        for _ in range(20):
            if client.pool.stats().hosts[srv.key()].effective_limit == 4:
                break
            assert (await client.get(url)).status == 200
        for _ in range(4):
            assert (await client.get(url)).status == 200
        host = client.pool.stats().hosts[srv.key()]
        assert (host.effective_limit, host.limit_reason) == (4, "recovered")
        raised = [(e.reason, e.limit) for e in events if e.kind == "limit_changed"]
        assert raised == [("recovered", 2), ("recovered", 3), ("recovered", 4)]
        assert (host.in_use, host.connecting, host.waiting) == (0, 0, 0)
    page = timeline.render_html()
    assert page.count('class="mark-limit"') == 5 and page.count('class="mark-retry"') == 3
    trace = timeline.render_trace()["traceEvents"]
    assert isinstance(trace, list)
    counters = [e["args"]["limit"] for e in trace if e.get("name") == "effective limit"]
    assert counters == [2, 1, 2, 3, 4]


async def test_off_by_default() -> None:
    server = Overloaded(busy=1)
    async with RawServer(server.handle) as srv, Client(limit_per_host=4) as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.status == 503
        host = client.pool.stats().hosts[srv.key()]
        assert (host.limit, host.effective_limit, host.limit_reason) == (4, None, None)


async def test_prometheus_reports_the_effective_limit() -> None:
    from prometheus_client import CollectorRegistry

    from glasspool.prometheus import PoolCollector

    server = Overloaded(busy=1)
    async with RawServer(server.handle) as srv:
        async with Client(limit_per_host=4, adaptive_limits=True) as client:
            registry = CollectorRegistry()
            registry.register(PoolCollector(client))
            assert (await client.get(f"http://127.0.0.1:{srv.port}/")).status == 503
            key = {"key": str(srv.key())}
            assert registry.get_sample_value("glasspool_pool_effective_limit", key) == 2
            assert registry.get_sample_value("glasspool_pool_host_limit", key) == 4
        async with Client(limit_per_host=4) as client:
            registry = CollectorRegistry()
            registry.register(PoolCollector(client))
            assert (await client.get(f"http://127.0.0.1:{srv.port}/")).status == 200
            assert registry.get_sample_value("glasspool_pool_effective_limit", key) is None


async def test_with_fleet_limits_a_cut_gives_back_the_leases_of_closed_connections() -> None:
    from tests._pool.test_asyncio import Factory, FakeFleet, until

    fleet = FakeFleet(slots=4)
    pool = glasspool.Pool(
        Factory(), limit=10, limit_per_host=4, shared_limits=fleet, adaptive_limits=AdaptiveLimits()
    )
    leases = [await pool.acquire(K) for _ in range(4)]
    assert fleet.held[K] == 4
    for lease in leases[1:]:
        pool.release(lease)  # three idle, each still holding its fleet slot
    pool._response_seen(leases[0], 503, False)  # 4 -> 2: two idle connections close
    await until(lambda: fleet.held[K] == 2, "the closed connections' leases went back")
    host = pool.stats().hosts[K]
    assert (host.effective_limit, host.limit, host.shared_limit) == (2, 4, 4)
    assert (host.in_use, host.idle, host.leases) == (1, 1, 2)
    pool.release(leases[0])  # 2 open with it: within the limit, kept idle with its lease
    host = pool.stats().hosts[K]
    assert (host.idle, host.open, fleet.held[K]) == (2, 2, 2)
    await pool.aclose()
