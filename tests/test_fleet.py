"""RedisLimits (glasspool._fleet) against a real redis-server started by this module.

The server runs on a free 127.0.0.1 port without persistence, in a temporary directory.
Every test uses its own key namespace, so tests share one server except those that stop
and restart it. Multi-process tests run tests/fleet_worker.py and a loopback server that
records its peak concurrent connections per host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import doctest
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import glasspool
import glasspool._fleet.limits
from glasspool._exceptions import ClientClosed, PoolTimeout
from glasspool._fleet import (
    Lease,
    RedisLease,
    RedisLimits,
    SharedLimits,
    SharedLimitsUnavailable,
)
from glasspool._fleet.scripts import KEY_GRACE_MS, HostKeys
from glasspool._pool.key import PoolKey
from tests.faults import FaultServer
from tests.redisproc import RedisProcess, free_port

WORKER = Path(__file__).with_name("fleet_worker.py")
KEY = PoolKey("http", "fleet.test", 80)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A server of the test's own, for tests that stop and restart it."""
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def inspect(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    """A plain Redis client to look at (and tamper with) the keys RedisLimits writes."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


LimitsFactory = Callable[..., RedisLimits]


@pytest.fixture
async def make_limits(redis_server: RedisProcess, namespace: str) -> AsyncIterator[LimitsFactory]:
    """Build RedisLimits on the shared server and namespace; all are closed afterwards."""
    made: list[RedisLimits] = []

    def make(**kwargs: Any) -> RedisLimits:
        kwargs.setdefault("namespace", namespace)
        kwargs.setdefault("limit_per_host", 3)
        limits = RedisLimits(kwargs.pop("url", redis_server.url), **kwargs)
        made.append(limits)
        return limits

    yield make
    for limits in made:
        await limits.aclose()


def keys_of(namespace: str, host: str = "fleet.test") -> HostKeys:
    return HostKeys.build(namespace, host)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5) -> None:
    """Poll ``check`` (state in Redis or another process, which has no event) until true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.01)


async def queue_length(client: aioredis.Redis, namespace: str) -> int:
    return int(await client.zcard(keys_of(namespace).queue))


async def leases_in_redis(client: aioredis.Redis, namespace: str) -> int:
    return int(await client.zcard(keys_of(namespace).leases))


# -- construction and configuration -------------------------------------------------------


def test_limit_for_prefers_the_host_override_whatever_the_scheme_or_port() -> None:
    limits = RedisLimits(
        "redis://127.0.0.1:1", limit_per_host=5, overrides={"API.example.org.": 2, "[::1]": 1}
    )
    assert limits.limit_for(PoolKey("https", "api.example.org", 443)) == 2
    assert limits.limit_for(PoolKey("http", "API.EXAMPLE.ORG", 8080)) == 2
    assert limits.limit_for(PoolKey("http", "::1", 80)) == 1
    assert limits.limit_for(PoolKey("http", "other.org", 80)) == 5


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"limit_per_host": 0}, ValueError, "limit_per_host"),
        ({"limit_per_host": True}, TypeError, "limit_per_host"),
        ({"overrides": {"a.org": 0}}, ValueError, "overrides['a.org']"),
        ({"lease_ttl": 0.01}, ValueError, "lease_ttl"),
        ({"lease_ttl": float("nan")}, ValueError, "lease_ttl"),
        ({"namespace": "a{b}"}, ValueError, "namespace"),
        ({"on_unavailable": "ignore"}, ValueError, "on_unavailable"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    kwargs.setdefault("limit_per_host", 3)
    with pytest.raises(error, match=names.replace("[", r"\[")):
        RedisLimits("redis://127.0.0.1:1", **kwargs)


def test_without_redis_py_construction_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"glasspool\[redis\]"):
        RedisLimits("redis://127.0.0.1:1", limit_per_host=1)


def test_glasspool_imports_without_redis_py() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import glasspool, glasspool._fleet\n"
        "assert 'redis.asyncio' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_shared_limits_unavailable_is_one_class_wherever_it_is_imported_from() -> None:
    import glasspool._exceptions

    assert glasspool.SharedLimitsUnavailable is SharedLimitsUnavailable
    assert glasspool._exceptions.SharedLimitsUnavailable is SharedLimitsUnavailable
    assert issubclass(SharedLimitsUnavailable, glasspool.GlasspoolError)
    assert not issubclass(SharedLimitsUnavailable, glasspool.ConnectError)


def test_module_doctests_pass() -> None:
    result = doctest.testmod(glasspool._fleet.limits)
    assert result.attempted >= 5
    assert result.failed == 0


async def test_the_password_never_appears_in_urls_reprs_or_errors() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    async with RedisLimits(url, limit_per_host=1) as limits:
        assert limits.url == url.replace("s3cret", "***")
        assert "s3cret" not in repr(limits)
        with pytest.raises(SharedLimitsUnavailable) as caught:
            await limits.acquire(KEY, timeout=1)
        assert "s3cret" not in str(caught.value) and limits.url in str(caught.value)


@pytest.mark.parametrize(
    "template",
    [
        "redis://127.0.0.1:{port}/0?password=s3cret",
        "redis://127.0.0.1:{port}/0?db=0&password=s3cret",
        "redis://127.0.0.1:{port}/0?username=bob&pass%77ord=s3cret",
        "rediss://127.0.0.1:{port}/0?ssl_password=s3cret",
        "unix://{sock}?password=s3cret",
    ],
)
async def test_a_password_given_as_a_query_argument_never_appears(
    template: str, refused_port: int, tmp_path: Path
) -> None:
    """redis-py takes ``?password=`` (and ``ssl_password=``) as well as userinfo."""
    url = template.format(port=refused_port, sock=tmp_path / "none.sock")
    async with RedisLimits(url, limit_per_host=1) as limits:
        assert "s3cret" not in limits.url and "=***" in limits.url
        assert "s3cret" not in repr(limits)
        with pytest.raises(SharedLimitsUnavailable) as caught:
            await limits.acquire(KEY, timeout=1)
        assert "s3cret" not in str(caught.value) and limits.url in str(caught.value)
        assert caught.value.url == limits.url


# -- basics -------------------------------------------------------------------------------


async def test_acquire_release_and_snapshot(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    limits = make_limits(limit_per_host=2)
    assert limits.snapshot(KEY) == (None, 0)
    first = await limits.acquire(KEY, timeout=1)
    second = await limits.acquire(PoolKey("https", "FLEET.test", 443), timeout=1)
    assert limits.snapshot(KEY) == (2, 2)
    assert await leases_in_redis(inspect, namespace) == 2
    assert first.lease_id != second.lease_id
    assert str(os.getpid()) in first.lease_id
    await first.release()
    await first.release()  # idempotent: the second call does nothing
    assert first.released
    assert limits.snapshot(KEY) == (1, 1)
    assert await leases_in_redis(inspect, namespace) == 1
    assert "leases=1" in repr(limits)


async def test_waiting_reports_the_fleet_queue_seen_by_attempts_and_renewals(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1, lease_ttl=0.3)  # renews every 0.1 s
    others = [make_limits(limit_per_host=1) for _ in range(2)]
    assert holder.waiting(KEY) is None
    lease = await holder.acquire(KEY, timeout=1)
    assert holder.waiting(KEY) == 0
    tasks = [asyncio.create_task(other.acquire(KEY, timeout=10)) for other in others]

    async def holder_sees_two() -> bool:
        return holder.waiting(KEY) == 2

    await wait_until(holder_sees_two, "a renewal reports both waiters to the holder")
    await lease.release()
    pending = set(tasks)
    while pending:  # the two tickets queued in either order: release whichever is served
        done, pending = await asyncio.wait(pending, timeout=5, return_when="FIRST_COMPLETED")
        assert done, "no waiter was served within 5 s"
        for task in done:
            await task.result().release()
    assert await queue_length(inspect, namespace) == 0


async def test_a_caller_supplied_client_with_str_replies_works_and_stays_open(
    redis_server: RedisProcess, namespace: str
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        limits = RedisLimits(
            "redis://ignored.invalid", namespace=namespace, limit_per_host=1, client=client
        )
        async with limits:
            held = await limits.acquire(KEY, timeout=1)
            waiter = asyncio.create_task(limits.acquire(KEY, timeout=5))

            async def enqueued() -> bool:
                return int(await client.zcard(keys_of(namespace).queue)) == 1

            await wait_until(enqueued, "the waiter's ticket is queued")
            released_at = time.monotonic()
            await held.release()
            await (await asyncio.wait_for(waiter, 5)).release()
            assert time.monotonic() - released_at < 1.0  # woken by the notice, not the poll
        assert await client.ping()  # aclose() left the caller's client open
    finally:
        await client.aclose()


async def test_keys_carry_an_expiry_and_vanish_when_released(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    limits = make_limits(limit_per_host=1, lease_ttl=2.0)
    lease = await limits.acquire(KEY, timeout=1)
    ttl_ms = await inspect.pttl(keys_of(namespace).leases)
    assert 0 < ttl_ms <= 2000 + KEY_GRACE_MS
    await lease.release()
    assert await inspect.keys(f"{namespace}:*") == []


async def test_many_concurrent_acquirers_never_exceed_the_limit(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    workers = [make_limits(limit_per_host=4) for _ in range(3)]
    holding = peak = grants = 0

    async def one(limits: RedisLimits) -> None:
        nonlocal holding, peak, grants
        for _ in range(4):
            lease = await limits.acquire(KEY, timeout=10)
            holding += 1
            grants += 1
            peak = max(peak, holding)
            assert await leases_in_redis(inspect, namespace) <= 4
            await asyncio.sleep(0.002)  # the work done while holding the slot
            holding -= 1
            await lease.release()

    async with asyncio.timeout(30):
        async with asyncio.TaskGroup() as group:
            for limits in workers:
                for _ in range(12):
                    group.create_task(one(limits))
    assert grants == 3 * 12 * 4
    assert peak == 4, f"peak {peak}: the limit 4 was exceeded or never reached"
    assert await queue_length(inspect, namespace) == 0


async def test_a_released_slot_goes_to_the_oldest_ticket_across_workers(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    workers = [make_limits(limit_per_host=1) for _ in range(4)]
    holder = await workers[0].acquire(KEY, timeout=1)
    pending: dict[asyncio.Task[RedisLease], int] = {}
    for i in (3, 1, 2):  # arrival order differs from creation order
        pending[asyncio.create_task(workers[i].acquire(KEY, timeout=10))] = i
        n = len(pending)

        async def enqueued(n: int = n) -> bool:
            return await queue_length(inspect, namespace) == n

        await wait_until(enqueued, f"{n} ticket(s) are queued")
    await holder.release()
    served = []
    while pending:
        done, _ = await asyncio.wait(pending, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, f"{len(done)} waiters served at once with limit 1"
        task = done.pop()
        served.append(pending.pop(task))
        await task.result().release()
    assert served == [3, 1, 2]


async def test_release_wakes_a_waiter_by_pubsub_long_before_the_poll(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder_limits = make_limits(limit_per_host=1, lease_ttl=30.0)  # poll every 7.5 s
    waiter_limits = make_limits(limit_per_host=1, lease_ttl=30.0)
    holder = await holder_limits.acquire(KEY, timeout=1)
    waiter = asyncio.create_task(waiter_limits.acquire(KEY, timeout=5))

    async def enqueued() -> bool:
        return await queue_length(inspect, namespace) == 1

    await wait_until(enqueued, "the waiter's ticket is queued")
    released_at = time.monotonic()
    await holder.release()
    lease = await asyncio.wait_for(waiter, timeout=5)
    assert time.monotonic() - released_at < 1.0
    assert lease.host == "fleet.test"


async def test_a_release_wakes_only_the_next_waiter(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1, lease_ttl=30.0)  # polls every 7.5 s: not in play
    waiters = [make_limits(limit_per_host=1, lease_ttl=30.0) for _ in range(3)]
    channels = [w._wake_prefix + w._worker_id for w in waiters]
    spy = inspect.pubsub()
    try:
        await spy.subscribe(*channels)
        for _ in channels:  # the three subscribe confirmations
            assert (await spy.get_message(timeout=5))["type"] == "subscribe"
        held = await holder.acquire(KEY, timeout=1)
        tasks = []
        for n, limits in enumerate(waiters, start=1):
            tasks.append(asyncio.create_task(limits.acquire(KEY, timeout=10)))

            async def enqueued(n: int = n) -> bool:
                return await queue_length(inspect, namespace) == n

            await wait_until(enqueued, f"{n} ticket(s) are queued")
        await held.release()
        first = await asyncio.wait_for(tasks[0], 5)
        await first.release()
        second = await asyncio.wait_for(tasks[1], 5)
        await inspect.publish(channels[2], "END")  # delivered after anything published before
        seen: list[tuple[str, str]] = []
        while not seen or seen[-1][1] != "END":
            message = await spy.get_message(timeout=5)
            assert message is not None, f"no END marker; saw {seen}"
            seen.append((message["channel"].decode(), message["data"].decode()))
        assert [c for c, _ in seen] == [channels[0], channels[1], channels[2]], seen
        assert seen[0][1].startswith(first.lease_id + " ")
        assert not tasks[2].done()
        await second.release()
        await (await asyncio.wait_for(tasks[2], 5)).release()
    finally:
        await spy.aclose()  # type: ignore[no-untyped-call]


# -- timeouts, cancellation, close --------------------------------------------------------


async def test_timeout_raises_pool_timeout_and_leaves_no_ticket(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1)
    waiter = make_limits(limit_per_host=1)
    await holder.acquire(KEY, timeout=1)
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as caught:
        await waiter.acquire(KEY, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    message = str(caught.value)
    assert "shared limit 1" in message and "'fleet.test'" in message and "1 in use" in message
    assert await queue_length(inspect, namespace) == 0
    assert await inspect.zcard(keys_of(namespace).tickets) == 0


async def test_timeout_zero_still_makes_one_attempt(make_limits: LimitsFactory) -> None:
    limits = make_limits(limit_per_host=1)
    lease = await limits.acquire(KEY, timeout=0)
    with pytest.raises(PoolTimeout):
        await limits.acquire(KEY, timeout=0)
    await lease.release()


async def test_cancelled_waiter_leaves_no_ticket(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1)
    waiter = make_limits(limit_per_host=1)
    await holder.acquire(KEY, timeout=1)
    task = asyncio.create_task(waiter.acquire(KEY, timeout=None))

    async def enqueued() -> bool:
        return await queue_length(inspect, namespace) == 1

    await wait_until(enqueued, "the waiter's ticket is queued")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await queue_length(inspect, namespace) == 0
    assert await inspect.zcard(keys_of(namespace).tickets) == 0
    assert await leases_in_redis(inspect, namespace) == 1


# redis-py 8.1 was seen to swallow a cancellation that arrives while a command is in flight
# (the call then returns normally): a cancelled acquire() went on waiting for a slot, and
# its ticket sat at the head of the fleet's queue. Each test below stands in a command
# that does exactly that, and checks the cancel still ends the wait, promptly and cleanly.


async def test_a_cancel_swallowed_inside_subscribe_still_cancels_the_waiter(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1)
    waiter = make_limits(limit_per_host=1)
    await holder.acquire(KEY, timeout=1)
    entered = asyncio.Event()

    async def swallowing_subscribe(*channels: str) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # a command that does not answer...
        except asyncio.CancelledError:
            pass  # ...and returns normally when cancelled

    waiter._waker._pubsub.subscribe = swallowing_subscribe  # type: ignore[method-assign]
    task = asyncio.create_task(waiter.acquire(KEY, timeout=None))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await queue_length(inspect, namespace) == 0
    assert await inspect.zcard(keys_of(namespace).tickets) == 0
    assert await leases_in_redis(inspect, namespace) == 1  # the holder's


async def test_a_cancel_swallowed_inside_an_attempt_still_cancels_the_waiter(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1)
    waiter = make_limits(limit_per_host=1)
    lease = await holder.acquire(KEY, timeout=1)
    real = waiter._scripts.acquire
    calls = 0
    entered, answer = asyncio.Event(), asyncio.Event()

    async def swallowing_acquire(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the re-check after subscribing: the ticket is queued by now
            entered.set()
            try:
                await answer.wait()
            except asyncio.CancelledError:
                await answer.wait()  # swallowed: the command still completes
        return await real(**kwargs)

    waiter._scripts = dataclasses.replace(waiter._scripts, acquire=swallowing_acquire)
    task = asyncio.create_task(waiter.acquire(KEY, timeout=None))
    await asyncio.wait_for(entered.wait(), 5)
    await lease.release()  # the answer will grant the slot: it must be given back
    task.cancel()
    answer.set()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await queue_length(inspect, namespace) == 0
    assert await inspect.zcard(keys_of(namespace).tickets) == 0
    assert await leases_in_redis(inspect, namespace) == 0


async def test_cancellation_racing_a_grant_leaves_no_lease(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    holder = make_limits(limit_per_host=1)
    waiter = make_limits(limit_per_host=1)
    for _ in range(5):
        lease = await holder.acquire(KEY, timeout=1)
        task = asyncio.create_task(waiter.acquire(KEY, timeout=None))

        async def enqueued() -> bool:
            return await queue_length(inspect, namespace) == 1

        await wait_until(enqueued, "the waiter's ticket is queued")
        release = asyncio.create_task(lease.release())
        await asyncio.sleep(0)  # let the release start, then cancel mid-way
        task.cancel()
        await release
        try:
            got = await task
        except asyncio.CancelledError:
            pass
        else:
            await got.release()
        assert await leases_in_redis(inspect, namespace) == 0
        assert await queue_length(inspect, namespace) == 0


async def test_aclose_releases_everything_and_wakes_waiters(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    limits = make_limits(limit_per_host=2)
    held = [await limits.acquire(KEY, timeout=1) for _ in range(2)]
    waiter = asyncio.create_task(limits.acquire(KEY, timeout=10))

    async def enqueued() -> bool:
        return await queue_length(inspect, namespace) == 1

    await wait_until(enqueued, "the waiter's ticket is queued")
    await limits.aclose()
    with pytest.raises(ClientClosed, match="is closed"):
        await waiter
    assert all(lease.released for lease in held)
    assert await inspect.keys(f"{namespace}:*") == []
    await held[0].release()  # after close: a no-op, no error
    await limits.aclose()  # idempotent
    with pytest.raises(ClientClosed):
        await limits.acquire(KEY, timeout=1)


# -- leases: renewal, loss, expiry --------------------------------------------------------


async def test_renewal_keeps_a_lease_alive_well_past_its_ttl(make_limits: LimitsFactory) -> None:
    holder = make_limits(limit_per_host=1, lease_ttl=0.4)
    other = make_limits(limit_per_host=1, lease_ttl=0.4)
    lease = await holder.acquire(KEY, timeout=1)
    with pytest.raises(PoolTimeout):
        await other.acquire(KEY, timeout=1.5)  # ~4 TTLs: only renewal keeps the slot taken
    await lease.release()
    assert (await other.acquire(KEY, timeout=1)).host == "fleet.test"


async def test_a_lease_lost_in_redis_is_re_registered_with_a_warning(
    make_limits: LimitsFactory,
    inspect: aioredis.Redis,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = make_limits(limit_per_host=1, lease_ttl=0.6)
    lease = await limits.acquire(KEY, timeout=1)
    caplog.set_level(logging.WARNING, logger="glasspool.fleet")
    assert await inspect.zrem(keys_of(namespace).leases, lease.lease_id) == 1

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "re-registered" in r.getMessage()]

    async def warned() -> bool:
        return bool(warnings())

    await wait_until(warned, "the renewer re-registers the lease and warns", timeout=3)
    assert await inspect.zscore(keys_of(namespace).leases, lease.lease_id) is not None
    assert len(warnings()) == 1 and "'fleet.test'" in warnings()[0]


async def test_a_dead_workers_expired_lease_is_purged_by_the_next_acquire(
    make_limits: LimitsFactory, inspect: aioredis.Redis, namespace: str
) -> None:
    keys = keys_of(namespace)
    past_ms = int(time.time() * 1000) - 1000
    await inspect.zadd(keys.leases, {"dead-worker:1": past_ms})
    limits = make_limits(limit_per_host=1)
    lease = await limits.acquire(KEY, timeout=0)
    assert await inspect.zrange(keys.leases, 0, -1) == [lease.lease_id.encode()]


# -- several worker processes -------------------------------------------------------------


class PeakServer:
    """Loopback server counting concurrent connections per announced host."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.order: list[tuple[str, str]] = []  # (host, worker) per connection, in order
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, host, worker = (await reader.readline()).decode().split()
        self.current[host] = self.current.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.current[host])
        self.order.append((host, worker))
        try:
            writer.write(b"OK\n")
            await writer.drain()
            await reader.readline()  # BYE, or b"" if the worker died
            self.current[host] -= 1  # counted down before the worker may release its lease
            writer.write(b"BYE\n")
            await writer.drain()
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Worker:
    """One tests/fleet_worker.py child process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, mode: str, server: RedisProcess, namespace: str, *args: str) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            mode,
            "--redis",
            server.url,
            "--namespace",
            namespace,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def expect(self, prefix: str, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode()
        if not line.startswith(prefix):
            assert self.proc.stderr is not None
            err = (await asyncio.wait_for(self.proc.stderr.read(), timeout)).decode()
            pytest.fail(f"worker said {line!r}, expected {prefix!r}; stderr:\n{err}")
        return line.strip()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())

    async def finish(self, timeout: float = 30) -> dict[str, Any]:
        """Close stdin, wait for exit, return the JSON the worker printed last."""
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode == 0, err.decode()
        return dict(json.loads(out.decode().strip().splitlines()[-1]))

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    spawned: list[Worker] = []
    yield spawned
    for worker in spawned:
        await worker.kill()


async def run_hammer(
    redis_server: RedisProcess,
    namespace: str,
    workers: list[Worker],
    count: int,
    *args: str,
) -> list[dict[str, Any]]:
    """Start ``count`` hammer workers, release them together, collect their results."""
    for _ in range(count):
        workers.append(await Worker.spawn("hammer", redis_server, namespace, *args))
    for worker in workers:
        await worker.expect("READY")
    for worker in workers:
        worker.send("GO\n")
    return [await worker.finish() for worker in workers]


async def test_worker_processes_never_exceed_the_shared_limit_per_host(
    redis_server: RedisProcess, namespace: str, workers: list[Worker]
) -> None:
    server = PeakServer()
    port = await server.start()
    try:
        results = await run_hammer(
            redis_server, namespace, workers, 4,
            "--port", str(port), "--hosts", "alpha.test,beta.test", "--limit", "3",
            "--tasks", "3", "--iterations", "8", "--hold-ms", "10",
        )  # fmt: skip
    finally:
        await server.aclose()
    for host in ("alpha.test", "beta.test"):
        assert sum(r["counts"][host] for r in results) == 4 * 3 * 8
        assert server.peak[host] == 3, f"{host}: peak {server.peak[host]} with shared limit 3"
        assert server.current[host] == 0


async def test_three_contending_workers_are_served_in_turn(
    redis_server: RedisProcess, namespace: str, workers: list[Worker]
) -> None:
    server = PeakServer()
    port = await server.start()
    try:
        results = await run_hammer(
            redis_server, namespace, workers, 3,
            "--port", str(port), "--limit", "1", "--duration", "1.5", "--hold-ms", "5",
        )  # fmt: skip
    finally:
        await server.aclose()
    counts = [r["counts"]["fleet.test"] for r in results]
    assert min(counts) > 0 and max(counts) <= 1.5 * min(counts), f"unfair shares: {counts}"
    assert server.peak["fleet.test"] == 1
    # FIFO tickets: while all three contend, nobody is served twice in a row more than once.
    middle = [worker for _, worker in server.order][5:-5]
    repeats = sum(1 for a, b in itertools.pairwise(middle) if a == b)
    assert repeats <= 2, f"{repeats} back-to-back grants in {len(middle)}: not in turn"


async def test_sigkilled_worker_frees_its_slots_within_the_ttl(
    redis_server: RedisProcess, namespace: str, make_limits: LimitsFactory, workers: list[Worker]
) -> None:
    ttl = 1.0
    worker = await Worker.spawn(
        "hold", redis_server, namespace, "--limit", "3", "--count", "3", "--ttl", str(ttl)
    )
    workers.append(worker)
    await worker.expect("HELD 3")
    limits = make_limits(limit_per_host=3, lease_ttl=ttl)
    with pytest.raises(PoolTimeout):
        await limits.acquire(KEY, timeout=0.2)
    killed_at = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGKILL)
    await worker.proc.wait()
    leases = await asyncio.gather(*(limits.acquire(KEY, timeout=5) for _ in range(3)))
    freed_after = time.monotonic() - killed_at
    assert len(leases) == 3
    assert freed_after <= ttl + ttl / 4 + 0.5, f"slots came back after {freed_after:.2f}s"


async def test_a_sigkilled_waiters_ticket_does_not_block_the_queue(
    redis_server: RedisProcess,
    namespace: str,
    make_limits: LimitsFactory,
    inspect: aioredis.Redis,
    workers: list[Worker],
) -> None:
    ttl = 1.0
    limits = make_limits(limit_per_host=1, lease_ttl=ttl)
    held = await limits.acquire(KEY, timeout=1)
    worker = await Worker.spawn("wait", redis_server, namespace, "--limit", "1", "--ttl", "1")
    workers.append(worker)
    await worker.expect("WAITING")

    async def enqueued() -> bool:
        return await queue_length(inspect, namespace) == 1

    await wait_until(enqueued, "the worker's ticket is queued")
    os.kill(worker.proc.pid, signal.SIGKILL)
    await worker.proc.wait()
    behind = asyncio.create_task(limits.acquire(KEY, timeout=5))  # queued behind the dead one
    await held.release()
    started = time.monotonic()
    lease = await behind
    assert time.monotonic() - started <= ttl + ttl / 4 + 0.5
    assert lease.host == "fleet.test"


# -- Redis unavailable --------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["fail", "local"])
async def test_redis_unreachable_at_first_use_is_a_clear_error(policy: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with RedisLimits(url, limit_per_host=1, on_unavailable=policy) as limits:  # type: ignore[arg-type]
        with pytest.raises(SharedLimitsUnavailable, match="first use") as caught:
            await limits.acquire(KEY, timeout=1)
        assert url in str(caught.value) and caught.value.url == url
        with pytest.raises(SharedLimitsUnavailable, match=url):
            await limits.ping()


async def test_redis_restart_under_fail_raises_then_recovers(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="glasspool.fleet")
    async with RedisLimits(own_redis.url, limit_per_host=5, lease_ttl=0.6) as limits:
        kept = await limits.acquire(KEY, timeout=1)
        own_redis.stop()
        with pytest.raises(SharedLimitsUnavailable, match="while running") as caught:
            await limits.acquire(KEY, timeout=1)
        assert own_redis.url in str(caught.value)
        assert not isinstance(caught.value, PoolTimeout)
        own_redis.start()  # empty: no persistence
        again = await limits.acquire(KEY, timeout=2)
        client = aioredis.Redis.from_url(own_redis.url)
        try:
            leases_key = keys_of("glasspool").leases

            async def re_registered() -> bool:
                return await client.zscore(leases_key, kept.lease_id) is not None

            await wait_until(re_registered, "the held lease is back in Redis", timeout=3)
            assert await client.zcard(leases_key) == 2
        finally:
            await client.aclose()
        assert again.registered
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_redis_restart_under_local_keeps_going_and_warns_once(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="glasspool.fleet")
    async with RedisLimits(
        own_redis.url, limit_per_host=5, lease_ttl=0.6, on_unavailable="local"
    ) as limits:
        await limits.acquire(KEY, timeout=1)
        own_redis.stop()
        local = [await limits.acquire(KEY, timeout=1) for _ in range(3)]
        assert not any(lease.registered for lease in local)
        assert limits.snapshot(KEY)[1] == 4
        outage = [r for r in caplog.records if "on_unavailable='local'" in r.getMessage()]
        assert len(outage) == 1, [r.getMessage() for r in caplog.records]
        assert own_redis.url in outage[0].getMessage()
        await local[0].release()  # Redis down: no error, the lease is just dropped
        own_redis.start()
        await limits.acquire(KEY, timeout=2)
        client = aioredis.Redis.from_url(own_redis.url)
        try:

            async def all_registered() -> bool:
                return await client.zcard(keys_of("glasspool").leases) == 4

            await wait_until(all_registered, "local leases are registered in Redis", timeout=3)
        finally:
            await client.aclose()
        assert all(lease.registered for lease in local[1:])


# -- with the Client ----------------------------------------------------------------------


def test_redis_limits_satisfies_the_pools_protocols() -> None:
    limits: SharedLimits = RedisLimits("redis://127.0.0.1:1", limit_per_host=1)  # mypy checks
    lease_type: type[Lease] = RedisLease
    assert limits.limit_for(KEY) == 1 and lease_type is RedisLease


class CountingLimits(RedisLimits):
    """RedisLimits that counts acquire() calls (each one is a Redis round trip or more)."""

    acquires = 0

    async def acquire(self, key: PoolKey, timeout: float | None) -> RedisLease:
        self.acquires += 1
        return await super().acquire(key, timeout)


async def test_clients_sharing_a_limit_stay_within_it_and_reuse_skips_redis(
    redis_server: RedisProcess, namespace: str, fault_server: FaultServer
) -> None:
    shared = [
        CountingLimits(redis_server.url, namespace=namespace, limit_per_host=2) for _ in range(2)
    ]
    url = fault_server.url("/fault/delay?s=0.05")
    async with (
        glasspool.Client(limit_per_host=10, keepalive_expiry=0.2, shared_limits=shared[0]) as a,
        glasspool.Client(limit_per_host=10, keepalive_expiry=0.2, shared_limits=shared[1]) as b,
    ):
        async with asyncio.timeout(20):
            await asyncio.gather(*(client.get(url) for client in (a, b) for _ in range(5)))
        assert fault_server.peak_connections == 2, "the shared limit 2 was exceeded"
        host = only_host(a)
        assert (host.shared_limit, host.leases) == (2, host.idle + host.in_use)
        # Requests that waited on the fleet may have been served by a connection of their
        # own key released meanwhile (their fleet request withdrawn), so count from here.
        assert shared[0].acquires >= host.opened
        before, opened = shared[0].acquires, only_host(a).opened
        for _ in range(3):
            assert (await a.get(fault_server.url("/"))).status == 200
        new = only_host(a).opened - opened
        assert new < 3  # keep-alive reuse happened
        assert shared[0].acquires - before == new, "a reused connection never touches Redis"


def only_host(client: glasspool.Client) -> glasspool.HostStats:
    (host,) = client.pool.stats().hosts.values()
    return host
