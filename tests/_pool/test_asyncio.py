"""The asyncio pool with fake connections: waiting, timeouts, cancellation, events, close."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from glasspool import ClientClosed, Pool, PoolEvent, PoolKey, PoolTimeout
from glasspool._pool.state import Waiter

A = PoolKey("http", "a.test", 80)
B = PoolKey("http", "b.test", 80)
KEYS = [PoolKey("http", f"h{i}.test", 80) for i in range(5)]


class FakeConn:
    """Stands in for an HTTP11Connection: the pool only closes it and watches it."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.closed = False
        self.keepalive_hint_s: float | None = None
        self.on_lost: Callable[[], None] | None = None

    def close(self) -> None:
        self.closed = True

    def is_closed(self) -> bool:
        return self.closed

    def peer_closes(self) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost()


class Factory:
    """A connection factory whose connects can be held at a gate or made to fail."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail: Exception | None = None
        self.made: list[FakeConn] = []

    async def __call__(self, key: PoolKey, connect_timeout: float | None) -> FakeConn:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        conn = FakeConn(key)
        self.made.append(conn)
        return conn


class LimitWatch:
    """A listener asserting the limits on every single event."""

    def __init__(self, limit: int, per_host: int) -> None:
        self.limit, self.per_host = limit, per_host
        self.open: Counter[PoolKey] = Counter()
        self.events: list[PoolEvent] = []

    def __call__(self, event: PoolEvent) -> None:
        self.events.append(event)
        if event.kind == "connecting":
            self.open[event.key] += 1
        elif event.kind == "closed":
            self.open[event.key] -= 1
        assert sum(self.open.values()) <= self.limit, event
        assert self.open[event.key] <= self.per_host, event


def at_rest(pool: Pool) -> None:
    stats = pool.stats()
    assert (stats.in_use, stats.connecting, stats.waiting) == (0, 0, 0), stats
    assert stats.open == stats.idle
    for h in stats.hosts.values():
        assert h.in_use == h.connecting == h.waiting == 0


async def test_acquire_release_reuse_and_stats() -> None:
    factory = Factory()
    pool = Pool(factory, limit=25, limit_per_host=5)
    lease = await pool.acquire(A)
    assert not lease.reused and pool.stats().hosts[A].in_use == 1
    pool.release(lease)
    stats = pool.stats()
    assert (stats.open, stats.idle, stats.available) == (1, 1, 24)
    assert stats.hosts[A].available == 4
    again = await pool.acquire(A)
    assert again.reused and again.conn is lease.conn
    pool.release(again)
    h = pool.stats().hosts[A]
    assert (h.opened, h.reused, h.requests, h.closed) == (1, 1, 2, 0)
    assert "open=1/25" in repr(pool)
    await pool.aclose()


async def test_pool_timeout_names_key_limits_and_queue() -> None:
    events: list[PoolEvent] = []
    pool = Pool(Factory(), limit=3, limit_per_host=1)
    pool.add_listener(events.append)
    held = await pool.acquire(A)
    with pytest.raises(PoolTimeout) as info:
        await pool.acquire(A, timeout=0.05)
    message = str(info.value)
    assert "per-host limit 1 reached for http://a.test:80" in message
    assert "0.05s" in message and "limit=3" in message and "limit_per_host=1" in message
    assert [(e.kind, e.reason) for e in events[-2:]] == [
        ("queued", "limit_per_host"),
        ("dequeued", "timeout"),
    ]
    pool.release(held)
    at_rest(pool)
    await pool.aclose()


@pytest.mark.parametrize("point", ["queued", "connecting", "handed"])
async def test_cancel_at_every_await_point(point: str) -> None:
    factory = Factory()
    watch = LimitWatch(limit=1, per_host=1)
    pool = Pool(factory, limit=1, limit_per_host=1)
    pool.add_listener(watch)
    holder = await pool.acquire(A) if point != "connecting" else None
    if point == "connecting":
        factory.gate = asyncio.Event()
    task = asyncio.create_task(pool.acquire(A))
    if point == "connecting":
        await factory.entered.wait()
    else:
        while pool.stats().waiting == 0:
            await asyncio.sleep(0)
    if point == "handed":
        assert holder is not None
        pool.release(holder)  # hands the connection to the task, which has not run yet
        assert pool.stats().hosts[A].in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if point == "queued":
        assert holder is not None
        pool.release(holder)
    at_rest(pool)
    kinds = [(e.kind, e.reason) for e in watch.events]
    expected = {
        "queued": ("dequeued", "cancelled"),
        "connecting": ("closed", "cancelled"),
        "handed": ("released", "closed"),
    }[point]
    assert expected in kinds
    factory.gate = None
    lease = await asyncio.wait_for(pool.acquire(A), 5)  # the slot was not leaked
    pool.release(lease)
    await pool.aclose()


async def test_connect_failure_frees_slot_for_next_waiter() -> None:
    factory = Factory()
    pool = Pool(factory, limit=1)
    factory.fail = OSError("refused")
    with pytest.raises(OSError, match="refused"):
        await pool.acquire(A)
    factory.fail = None
    lease = await pool.acquire(B)
    pool.release(lease)
    assert pool.stats().hosts[A].closed == 1
    await pool.aclose()


async def test_server_closed_idle_connection_is_dropped() -> None:
    factory = Factory()
    events: list[PoolEvent] = []
    pool = Pool(factory, limit=2)
    pool.add_listener(events.append)
    pool.release(await pool.acquire(A))
    factory.made[0].peer_closes()
    assert (events[-1].kind, events[-1].reason) == ("closed", "server_closed")
    lease = await pool.acquire(A)
    assert not lease.reused
    pool.release(lease)
    await pool.aclose()


async def test_release_of_connection_closed_by_peer_is_not_pooled() -> None:
    factory = Factory()
    pool = Pool(factory, limit=2)
    lease = await pool.acquire(A)
    factory.made[0].closed = True  # the peer closed while the response was being read
    pool.release(lease)
    assert pool.stats().open == 0
    await pool.aclose()


class SocketConn(FakeConn):
    """A FakeConn over one end of a socket pair; the test plays the server at the other."""

    def __init__(self, key: PoolKey) -> None:
        super().__init__(key)
        self.sock, self.server = socket.socketpair()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default

    def close(self) -> None:
        super().close()
        self.sock.close()
        self.server.close()


async def test_idle_connections_the_server_closed_unseen_are_dropped_before_reuse() -> None:
    # The loop has not polled these sockets (nothing awaited in between), so only the
    # check before reuse can tell. Most recently used first, up to the first one alive.
    made: list[SocketConn] = []

    async def factory(key: PoolKey, connect_timeout: float | None) -> SocketConn:
        made.append(SocketConn(key))
        return made[-1]

    events: list[PoolEvent] = []
    pool = Pool(factory, limit=4)
    pool.add_listener(events.append)
    leases = [await pool.acquire(A) for _ in range(4)]
    for lease in leases:  # idle: 1, 2, 3, 4 (4 the most recently used)
        pool.release(lease)
    made[3].server.close()  # EOF
    made[2].server.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")  # bytes nobody asked for
    made[0].server.close()  # the oldest: not looked at while a newer one is alive
    mark = len(events)
    lease = await pool.acquire(A)
    assert lease.reused and lease.conn is not None and lease.conn.handle is made[1]
    assert [(e.kind, e.reason, e.connection_id) for e in events[mark:]] == [
        ("closed", "server_closed", 4),
        ("closed", "server_closed", 3),
        ("acquired", "reused", 2),
    ]
    assert made[3].closed and made[2].closed and not made[0].closed
    pool.release(lease)
    assert len(made) == 4  # nothing new was opened
    lease = await pool.acquire(A)  # 2 again: alive, most recently used
    assert lease.conn is not None and lease.conn.handle is made[1]
    pool.release(lease)
    await pool.aclose()


async def test_an_expired_idle_connection_is_closed_and_the_next_one_checked_too() -> None:
    # The expiry timer runs late when the loop is busy: the most recently used connection
    # has expired (a short Keep-Alive hint), the one before it was closed by the server.
    now = [0.0]
    made: list[SocketConn] = []

    async def factory(key: PoolKey, connect_timeout: float | None) -> SocketConn:
        made.append(SocketConn(key))
        return made[-1]

    events: list[PoolEvent] = []
    pool = Pool(factory, limit=4, keepalive_expiry=15.0, clock=lambda: now[0])
    pool.add_listener(events.append)
    first, second = await pool.acquire(A), await pool.acquire(A)
    pool.release(first)
    made[1].keepalive_hint_s = 1.0
    pool.release(second)  # the most recently used; expires at 1.0
    made[0].server.close()
    now[0] = 2.0
    mark = len(events)
    lease = await pool.acquire(A)
    assert not lease.reused
    assert [(e.kind, e.reason, e.connection_id) for e in events[mark:]] == [
        ("closed", "expired", 2),
        ("closed", "server_closed", 1),
        ("connecting", None, 3),
        ("acquired", "new", 3),
    ]
    pool.release(lease)
    await pool.aclose()


async def test_keepalive_expiry_timer_closes_idle() -> None:
    factory = Factory()
    expired = asyncio.Event()
    pool = Pool(factory, limit=2, keepalive_expiry=0.02)

    def on_event(event: PoolEvent) -> None:
        if event.kind == "closed" and event.reason == "expired":
            expired.set()

    pool.add_listener(on_event)
    pool.release(await pool.acquire(A))
    await asyncio.wait_for(expired.wait(), 5)
    assert pool.stats().open == 0 and factory.made[0].closed
    await pool.aclose()


async def test_aclose_fails_waiters_closes_everything_and_is_idempotent() -> None:
    factory = Factory()
    pool = Pool(factory, limit=1)
    held = await pool.acquire(A)
    waiter = asyncio.create_task(pool.acquire(B))
    while pool.stats().waiting == 0:
        await asyncio.sleep(0)
    await pool.aclose()
    await pool.aclose()
    with pytest.raises(ClientClosed):
        await waiter
    assert factory.made[0].closed
    pool.release(held)  # late release after close is harmless
    with pytest.raises(ClientClosed, match="closed"):
        await pool.acquire(A)
    assert pool.stats().open == 0


async def test_listener_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(Factory(), limit=2)

    def broken(event: PoolEvent) -> None:
        raise RuntimeError("listener bug")

    pool.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="glasspool.pool"):
        pool.release(await pool.acquire(A))
    assert "listener bug" in caplog.text
    pool.remove_listener(broken)
    with pytest.raises(ValueError, match="never added"):
        pool.remove_listener(broken)
    await pool.aclose()


class AsyncCallable:
    """An object whose ``__call__`` is a coroutine function."""

    async def __call__(self, event: PoolEvent) -> None:
        pass


async def on_event_async(event: PoolEvent) -> None:
    pass


@pytest.mark.parametrize(
    "listener",
    [
        on_event_async,
        functools.partial(on_event_async),
        AsyncCallable(),
        functools.partial(AsyncCallable()),
        AsyncCallable().__call__,
    ],
    ids=["function", "partial", "async-call", "partial-of-async-call", "bound-method"],
)
async def test_an_async_listener_is_refused_with_what_to_do(listener: Any) -> None:
    pool = Pool(Factory(), limit=2)
    with pytest.raises(TypeError, match="called synchronously") as info:
        pool.add_listener(listener)
    assert "create_task" in str(info.value) and "put_nowait" in str(info.value)
    assert repr(listener) in str(info.value)
    with pytest.raises(ValueError, match="never added"):
        pool.remove_listener(listener)
    await pool.aclose()


async def test_a_listener_that_returns_a_coroutine_is_logged_and_the_coroutine_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a plain function that calls an async one cannot be told apart when it is added:
    # its coroutine is closed unrun (no "never awaited" warning later) and logged
    pool = Pool(Factory(), limit=2)
    made: list[Coroutine[Any, Any, None]] = []
    ran: list[PoolEvent] = []

    async def handle(event: PoolEvent) -> None:
        ran.append(event)

    def wrapper(event: PoolEvent) -> Coroutine[Any, Any, None]:
        made.append(coro := handle(event))
        return coro

    pool.add_listener(wrapper)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="glasspool.pool"):
        pool.release(await pool.acquire(A))
    assert len(made) == 3  # connecting, acquired, released
    assert all(inspect.getcoroutinestate(coro) == "CORO_CLOSED" for coro in made)
    assert ran == []
    assert caplog.text.count("returned a coroutine") == 3
    await pool.aclose()


async def test_a_listener_that_is_not_callable_is_refused() -> None:
    pool = Pool(Factory(), limit=2)
    with pytest.raises(TypeError, match="not callable"):
        pool.add_listener("print")  # type: ignore[arg-type]
    await pool.aclose()


async def test_events_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(Factory(), limit=2)
    with caplog.at_level(logging.DEBUG, logger="glasspool.pool"):
        pool.release(await pool.acquire(A))
    text = caplog.text
    assert "connecting connection 1 http://a.test:80" in text
    assert "released (eof) connection 1" in text
    await pool.aclose()


async def _client_task(pool: Pool, rng: random.Random, key: PoolKey) -> None:
    lease: Waiter = await pool.acquire(key, timeout=rng.choice([None, 0.01, 1.0]))
    try:
        for _ in range(rng.randint(0, 2)):
            await asyncio.sleep(0)
    finally:
        close = rng.choice([None, None, None, "not_reusable", "error"])
        pool.release(lease, reason="eof" if close is None else "error", close_reason=close)


async def test_random_cancellations_under_contention_never_leak() -> None:
    rng = random.Random(20261125)
    factory = Factory()
    watch = LimitWatch(limit=4, per_host=2)
    pool = Pool(factory, limit=4, limit_per_host=2, keepalive_expiry=0.5)
    pool.add_listener(watch)
    cancelled = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    tasks: list[asyncio.Task[None]] = []
    while cancelled < 1000 and loop.time() < deadline:
        for _ in range(8):
            tasks.append(asyncio.create_task(_client_task(pool, rng, rng.choice(KEYS))))
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        for task in rng.sample(tasks, k=min(len(tasks), 3)):
            if not task.done():
                task.cancel()
                cancelled += 1
        tasks = [t for t in tasks if not t.done()]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert all(isinstance(r, (type(None), asyncio.CancelledError, PoolTimeout)) for r in results)
    assert cancelled >= 1000
    at_rest(pool)
    stats = pool.stats()
    assert stats.open == sum(watch.open.values())
    await pool.aclose()
    assert all(c.closed for c in factory.made)


async def test_stats_hosts_accepts_key_string_and_host_name() -> None:
    pool = Pool(Factory(), limit=5)
    pool.release(await pool.acquire(A))
    hosts = pool.stats().hosts
    assert hosts[A] is hosts["http://a.test:80"] is hosts["a.test"]
    assert "a.test" in hosts and A in hosts and "b.test" not in hosts
    with pytest.raises(KeyError):
        hosts["b.test"]
    await pool.aclose()


class FakeFleet:
    """A SharedLimits with one slot per host, held in this process (no Redis)."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.held: Counter[PoolKey] = Counter()
        self.freed: dict[PoolKey, asyncio.Event] = {}
        self.asked = 0
        self.withdrawn = 0
        self.refuse: Exception | None = None  # raised by the next acquire() that would wait
        self.closed = False

    def limit_for(self, key: PoolKey) -> int | None:
        return self.slots

    def snapshot(self, key: PoolKey) -> tuple[int | None, int]:
        return self.held[key], self.held[key]

    async def acquire(self, key: PoolKey, timeout: float | None) -> FakeLease:
        self.asked += 1
        try:
            while self.held[key] >= self.slots:
                if self.refuse is not None:
                    raise self.refuse
                event = self.freed.setdefault(key, asyncio.Event())
                await event.wait()
                if self.closed:
                    raise ClientClosed("the fake fleet is closed")
        except asyncio.CancelledError:
            self.withdrawn += 1
            raise
        self.held[key] += 1
        return FakeLease(self, key)

    async def aclose(self) -> None:
        self.closed = True
        for event in self.freed.values():
            event.set()


class FakeLease:
    def __init__(self, fleet: FakeFleet, key: PoolKey) -> None:
        self.fleet, self.key = fleet, key

    async def release(self) -> None:
        self.fleet.held[self.key] -= 1
        self.fleet.freed.pop(self.key, asyncio.Event()).set()


async def until(check: Callable[[], bool], what: str) -> None:
    """Let the event loop run (no time passes) until ``check()`` is true."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def fleet_waits(pool: Pool, key: PoolKey) -> None:
    """Let the event loop run until a request for ``key`` waits for a fleet-wide slot."""

    def waiting() -> bool:
        host = pool.stats().hosts.get(key)
        return host is not None and host.fleet_waiting == 1

    await until(waiting, f"a request for {key} waits on the fleet")


async def test_request_waiting_on_fleet_takes_a_released_connection_of_its_key() -> None:
    fleet = FakeFleet()
    events: list[PoolEvent] = []
    pool = Pool(Factory(), limit=10, limit_per_host=5, shared_limits=fleet)
    pool.add_listener(events.append)
    first = await pool.acquire(A)
    second = asyncio.create_task(pool.acquire(A))
    await fleet_waits(pool, A)
    assert ("queued", "shared_limit") in [(e.kind, e.reason) for e in events]
    waiting = pool.stats().hosts[A]
    assert (waiting.fleet_waiting, waiting.connecting, waiting.in_use) == (1, 1, 1)
    pool.release(first)  # clean: handed to the request waiting on the fleet
    lease = await asyncio.wait_for(second, 5)
    assert lease.reused and lease.conn is first.conn
    assert fleet.withdrawn == 1 and fleet.held[A] == 1  # no second fleet slot was taken
    pool.release(lease)
    stats = pool.stats()
    assert (stats.open, stats.idle, stats.hosts[A].leases) == (1, 1, 1)
    assert [e.reason for e in events if e.kind == "closed"] == ["cancelled"]  # the reserved slot
    await pool.aclose()
    for _ in range(100):  # the lease goes back in a task the close started
        if not fleet.held[A]:
            break
        await asyncio.sleep(0)
    assert fleet.held[A] == 0


async def test_waiting_key_evicts_an_idle_connection_when_its_grace_runs_out() -> None:
    """The pool's timer serves a waiter once another key's idle connection may be evicted."""
    events: list[PoolEvent] = []
    pool = Pool(Factory(), limit=2, limit_per_host=2, evict_grace=0.05)
    pool.add_listener(events.append)
    held = await pool.acquire(A)
    b = await pool.acquire(B)
    pool.release(b)  # B's connection idles: within its grace, A waits for its own
    lease = await asyncio.wait_for(pool.acquire(A), timeout=5)
    assert not lease.reused
    reasons = [(e.kind, e.key, e.reason) for e in events]
    assert ("queued", A, "limit") in reasons and ("closed", B, "evicted") in reasons
    assert events[-1].time - events[reasons.index(("queued", A, "limit"))].time >= 0.05
    pool.release(lease)
    pool.release(held)
    await pool.aclose()


async def test_key_without_connection_is_not_made_to_wait_for_a_grace() -> None:
    pool = Pool(Factory(), limit=1, evict_grace=None)
    pool.release(await pool.acquire(A))
    b = await pool.acquire(B)  # no connection to B: A's idle one is evicted at once
    assert pool.stats().hosts[A].closed == 1
    pool.release(b)
    await pool.aclose()


async def test_a_fleet_waiter_cancelled_just_after_it_adopted_a_connection_gives_it_back() -> None:
    fleet = FakeFleet()
    pool = Pool(Factory(), limit=10, limit_per_host=5, shared_limits=fleet)
    first = await pool.acquire(A)
    second = asyncio.create_task(pool.acquire(A))
    await fleet_waits(pool, A)
    pool.release(first)  # adopted by the waiting request, cancelled before it resumes
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    at_rest(pool)
    assert pool.stats().idle == 1
    await until(lambda: fleet.withdrawn == 1, "the fleet request is withdrawn")
    again = await pool.acquire(A)
    assert again.reused and again.conn is first.conn
    pool.release(again)
    await pool.aclose()


@pytest.mark.parametrize("how", ["refused", "cancelled"])
async def test_a_request_without_a_fleet_slot_gives_its_reserved_slot_back(how: str) -> None:
    fleet = FakeFleet()
    events: list[PoolEvent] = []
    pool = Pool(Factory(), limit=1, shared_limits=fleet)
    pool.add_listener(events.append)
    fleet.held[B] = 1  # someone else holds B's only fleet-wide slot
    second = asyncio.create_task(pool.acquire(B))
    await fleet_waits(pool, B)
    queued = asyncio.create_task(pool.acquire(A))  # waits for the slot B's request holds
    await until(lambda: pool.stats().waiting == 1, "the request for A is queued")
    if how == "cancelled":
        second.cancel()
    else:
        fleet.refuse = PoolTimeout("no fleet-wide slot for b.test")
        fleet.freed[B].set()
    with pytest.raises(asyncio.CancelledError if how == "cancelled" else PoolTimeout):
        await second
    reason = "cancelled" if how == "cancelled" else "error"
    assert ("closed", B, reason) in [(e.kind, e.key, e.reason) for e in events]
    assert pool.stats().hosts[B].fleet_waiting == 0
    lease = await asyncio.wait_for(queued, 5)  # the slot went on to the next request
    pool.release(lease)
    at_rest(pool)
    await pool.aclose()


async def test_a_request_given_a_slot_takes_an_idle_connection_of_its_key_over_a_lease() -> None:
    fleet = FakeFleet(slots=2)
    pool = Pool(Factory(), limit=10, limit_per_host=2, shared_limits=fleet)
    first, second = await pool.acquire(A), await pool.acquire(A)
    third = asyncio.create_task(pool.acquire(A))
    await until(lambda: pool.stats().waiting == 1, "the third request is queued")
    pool.release(first, close_reason="not_reusable")  # its slot goes to the third request
    pool.release(second)  # idle before the third request goes on to take a lease
    lease = await asyncio.wait_for(third, 5)
    assert lease.reused and lease.conn is second.conn
    assert fleet.asked == 2  # no lease was asked for the third
    pool.release(lease)
    await pool.aclose()


async def test_closing_the_pool_ends_a_fleet_wait_with_client_closed() -> None:
    fleet = FakeFleet()
    pool = Pool(Factory(), limit=10, shared_limits=fleet)
    first = await pool.acquire(A)
    second = asyncio.create_task(pool.acquire(A))
    await fleet_waits(pool, A)
    await pool.aclose()
    with pytest.raises(ClientClosed):
        await second
    stats = pool.stats()
    assert (stats.open, stats.hosts[A].fleet_waiting) == (0, 0)
    pool.release(first)  # a late release after close is harmless
