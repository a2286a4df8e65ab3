"""The benchmark's client side: one run of one client in one fresh process.

``benchmarks/run.py`` starts ``python benchmarks/clients.py --spec '<json>'`` once per
(client, scenario, round), so no two runs share memory, imports or event-loop state. The
process builds the named client, runs the load or memory scenario the spec describes and
prints one JSON line on stdout: ``{"status": "ok", ...figures}``, or ``"unavailable"`` (exit
3: the client cannot be imported or built, so the harness skips it) or ``"error"`` (exit 4).

Clients, each behind the same small :class:`Runner` interface:

- ``glasspool``: ``glasspool.Client(limit=, limit_per_host=)`` as in shared/API.md.
- ``aiohttp``: ``ClientSession`` over ``TCPConnector(limit=, limit_per_host=)``.
- ``httpx``: ``AsyncClient(limits=Limits(max_connections=...))``; httpx has no per-host
  limit, so ``limit_per_host`` is ignored for it.
- ``httpx-glasspool``: ``httpx.AsyncClient(transport=glasspool.httpx.AsyncTransport(limit=,
  limit_per_host=))``: httpx's API on glasspool's pool.
- ``reference``: :class:`ReferencePool` below, a deliberately minimal ``asyncio.Protocol`` +
  ``httptools`` client with a trivial pool; the practical ceiling for Python on this loop.

Every response is checked (status 200 and the exact body size) so a client that returns
the wrong thing fails the run instead of looking fast. Every loop is bounded by a request
count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import resource
import sys
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import httptools

__all__ = ["CLIENTS", "ReferencePool", "Runner", "WorkSpec", "main", "open_runner"]

CLIENTS = ("glasspool", "aiohttp", "httpx", "httpx-glasspool", "reference")
EXIT_UNAVAILABLE = 3
EXIT_ERROR = 4
_GRACE_S = 30.0  # on top of a run's own time cap, before it is declared hung
# Memory scenario: time for all connections to be open at once. httpx needs ~30 s for 1,000
# on an idle 2-core machine (its pool bookkeeping grows with the square of the count).
_GATE_TIMEOUT_S = 120.0
_CLIENT_TIMEOUT_S = 60.0  # per-request timeout given to clients that take one

Gate = Callable[[], Awaitable[None]]


class ClientUnavailable(Exception):
    """The named client cannot be imported or constructed here; the harness skips it."""


class BenchError(Exception):
    """A run went wrong: a bad response, a hang, or a scenario precondition not met."""


@dataclass(frozen=True, slots=True)
class WorkSpec:
    """What one worker process runs; built by run.py and passed as JSON.

    Attributes:
        client: one of :data:`CLIENTS`.
        kind: ``"load"`` (request loop) or ``"memory"`` (open connections, measure RSS).
        urls: requests go to these round-robin (one URL per stand-in host).
        concurrency: tasks issuing requests (load) or connections per URL (memory).
        limit: the client's overall connection limit.
        limit_per_host: the client's per-host limit, or None for none.
        requests: measured requests (load); the run stops at this count...
        max_seconds: ...or when this much time has passed, whichever is first.
        warmup: requests made before measuring, with the same client and concurrency.
        expected_size: the body size every response must have.
        status_url: nginx ``stub_status`` URL (memory: counts idle server connections).
        uvloop: run on uvloop instead of the default asyncio loop.
        tune_allocator: call ``glasspool.tune_allocator()`` first (glasspool only).
    """

    client: str
    kind: str
    urls: list[str]
    concurrency: int
    limit: int
    limit_per_host: int | None
    requests: int
    max_seconds: float
    warmup: int
    expected_size: int
    status_url: str
    uvloop: bool = False
    tune_allocator: bool = False


class Runner(Protocol):
    """The little every client adapter offers the scenarios."""

    async def get(self, url: str) -> tuple[int, int]:
        """GET ``url`` and read the whole body; return (status, body length)."""
        ...

    async def get_held(self, url: str, gate: Gate) -> tuple[int, int]:
        """GET ``url``, await ``gate()`` while holding the connection, then read the body."""
        ...

    def opened(self) -> int | None:
        """Connections opened so far by the client's own count, or None if it has none."""
        ...


# --------------------------------------------------------------------------- reference


class _RefConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: feeds bytes to httptools, completes one future per response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BenchError(f"reference client: bad response: {exc}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = bool(self._parser.should_keep_alive())
        status = int(self._parser.get_status_code())
        body, self._body = b"".join(self._body), []
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        self._fail(exc or ConnectionResetError("reference client: server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def request(self, head: bytes) -> tuple[int, bytes]:
        """Send a serialised request head; return (status, body) once the body is complete."""
        if self._transport is None or self.closed:
            raise ConnectionResetError("reference client: connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(head)
        return await self._waiter


_Key = tuple[str, int]


class ReferencePool:
    """A trivial fair pool: idle stacks per host, open counts, a FIFO of waiters per host.

    A released reusable connection goes straight to the oldest waiter of its host, else on
    the idle stack; a closed one frees a slot for the oldest waiter allowed to open. There
    is no eviction of other hosts' idle connections: the scenarios never need it (their
    ``limit`` is at least the sum of the per-host limits in use).

    Args:
        limit: maximum open connections overall.
        limit_per_host: maximum open connections per (host, port), or None.
    """

    def __init__(self, limit: int, limit_per_host: int | None) -> None:
        self._limit = limit
        self._per_host = limit_per_host
        self._idle: dict[_Key, list[_RefConnection]] = {}
        self._open: dict[_Key, int] = {}
        self._total = 0
        self._waiters: dict[_Key, deque[asyncio.Future[_RefConnection | None]]] = {}
        self.opened = 0

    def _may_open(self, key: _Key) -> bool:
        per_host_ok = self._per_host is None or self._open.get(key, 0) < self._per_host
        return per_host_ok and self._total < self._limit

    async def acquire(self, key: _Key) -> _RefConnection:
        """Return an idle connection, a new one, or wait (FIFO per host) for one."""
        if not self._waiters.get(key):
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    return conn
                self._forget(key)
            if self._may_open(key):
                return await self._connect(key)
        waiter: asyncio.Future[_RefConnection | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        handed = await waiter
        return handed if handed is not None else await self._connect(key, reserved=True)

    async def _connect(self, key: _Key, reserved: bool = False) -> _RefConnection:
        if not reserved:
            self._open[key] = self._open.get(key, 0) + 1
            self._total += 1
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_RefConnection, key[0], key[1])
        except BaseException:
            self._forget(key)
            raise
        self.opened += 1
        return conn

    def _forget(self, key: _Key) -> None:
        """Give back the slot of a connection of ``key`` that is gone; wake who may open."""
        self._open[key] -= 1
        self._total -= 1
        for other, queue in self._waiters.items():
            while queue and queue[0].done():
                queue.popleft()
            if queue and self._may_open(other):
                self._open[other] = self._open.get(other, 0) + 1
                self._total += 1
                queue.popleft().set_result(None)

    def release(self, key: _Key, conn: _RefConnection) -> None:
        """Give ``conn`` back: to the oldest waiter of ``key``, the idle stack, or closed."""
        if conn.closed or not conn.keep_alive:
            conn.close()
            self._forget(key)
            return
        queue = self._waiters.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.setdefault(key, []).append(conn)

    async def aclose(self) -> None:
        """Close every idle connection and wait (at most 10 s) until their sockets are gone."""
        idle = [conn for stack in self._idle.values() for conn in stack]
        self._idle.clear()
        for conn in idle:
            conn.close()
        if idle:
            await asyncio.wait([conn.lost for conn in idle], timeout=10.0)


class _ReferenceRunner:
    """:class:`Runner` over :class:`ReferencePool`; request heads are built once per URL."""

    def __init__(self, limit: int, limit_per_host: int | None) -> None:
        self._pool = ReferencePool(limit, limit_per_host)
        self._targets: dict[str, tuple[_Key, bytes]] = {}

    def _target(self, url: str) -> tuple[_Key, bytes]:
        target = self._targets.get(url)
        if target is None:
            parts = urllib.parse.urlsplit(url)
            host, port = parts.hostname or "", parts.port or 80
            head = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            target = self._targets[url] = ((host, port), head.encode("ascii"))
        return target

    async def get_held(self, url: str, gate: Gate) -> tuple[int, int]:
        key, head = self._target(url)
        conn = await self._pool.acquire(key)
        try:
            status, body = await conn.request(head)
            await gate()
        except BaseException:
            conn.close()
            raise
        finally:
            self._pool.release(key, conn)
        return status, len(body)

    async def get(self, url: str) -> tuple[int, int]:
        return await self.get_held(url, _no_gate)

    def opened(self) -> int | None:
        return self._pool.opened


async def _no_gate() -> None:
    return None


# ----------------------------------------------------------------------- other clients


class _GPResponse(Protocol):
    """The part of ``glasspool.Response`` the harness uses (shared/API.md)."""

    @property
    def status(self) -> int: ...
    @property
    def content(self) -> bytes: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class _GPHostStats(Protocol):
    """The part of ``glasspool.HostStats`` the harness uses."""

    @property
    def opened(self) -> int: ...


class _GPStats(Protocol):
    """The part of ``glasspool.PoolStats`` the harness uses."""

    @property
    def hosts(self) -> Mapping[object, _GPHostStats]: ...


class _GPPool(Protocol):
    """The part of ``client.pool`` the harness uses."""

    def stats(self) -> _GPStats: ...


class _GPClient(Protocol):
    """The part of ``glasspool.Client`` the harness uses (shared/API.md)."""

    @property
    def pool(self) -> _GPPool: ...
    async def get(self, url: str) -> _GPResponse: ...
    def stream(self, method: str, url: str) -> AbstractAsyncContextManager[_GPResponse]: ...
    async def __aenter__(self) -> _GPClient: ...
    async def __aexit__(self, *exc_info: object) -> None: ...


class _GlasspoolRunner:
    """:class:`Runner` over ``glasspool.Client``."""

    def __init__(self, client: _GPClient) -> None:
        self._client = client

    async def get(self, url: str) -> tuple[int, int]:
        response = await self._client.get(url)
        return response.status, len(response.content)

    async def get_held(self, url: str, gate: Gate) -> tuple[int, int]:
        async with self._client.stream("GET", url) as response:
            await gate()
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
            return response.status, size

    def opened(self) -> int | None:
        return sum(host.opened for host in self._client.pool.stats().hosts.values())


class _AiohttpRunner:
    """:class:`Runner` over ``aiohttp.ClientSession``."""

    def __init__(self, session: Any) -> None:
        self._session = session

    async def get(self, url: str) -> tuple[int, int]:
        async with self._session.get(url) as response:
            body = await response.read()
            return int(response.status), len(body)

    async def get_held(self, url: str, gate: Gate) -> tuple[int, int]:
        async with self._session.get(url) as response:
            await gate()
            body = await response.read()
            return int(response.status), len(body)

    def opened(self) -> int | None:
        return None


class _HttpxRunner:
    """:class:`Runner` over ``httpx.AsyncClient``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def get(self, url: str) -> tuple[int, int]:
        response = await self._client.get(url)
        return int(response.status_code), len(response.content)

    async def get_held(self, url: str, gate: Gate) -> tuple[int, int]:
        async with self._client.stream("GET", url) as response:
            await gate()
            body = await response.aread()
            return int(response.status_code), len(body)

    def opened(self) -> int | None:
        return None


class _HttpxGlasspoolRunner(_HttpxRunner):
    """:class:`Runner` over ``httpx.AsyncClient`` on ``glasspool.httpx.AsyncTransport``."""

    def __init__(self, client: Any, pool: Any) -> None:
        super().__init__(client)
        self._pool = pool

    def opened(self) -> int | None:
        return sum(int(host.opened) for host in self._pool.stats().hosts.values())


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ClientUnavailable(f"cannot import {name}: {type(exc).__name__}: {exc}") from exc


async def _open_glasspool(stack: AsyncExitStack, limit: int, per_host: int | None) -> Runner:
    module = _import("glasspool")
    try:
        factory = cast(Callable[..., _GPClient], module.Client)
        client = factory(limit=limit, limit_per_host=per_host)
    except Exception as exc:
        raise ClientUnavailable(
            f"glasspool.Client(...) failed: {type(exc).__name__}: {exc}"
        ) from exc
    return _GlasspoolRunner(await stack.enter_async_context(client))


async def _open_aiohttp(stack: AsyncExitStack, limit: int, per_host: int | None) -> Runner:
    aiohttp = _import("aiohttp")
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=per_host or 0)
    timeout = aiohttp.ClientTimeout(total=_CLIENT_TIMEOUT_S)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)
    return _AiohttpRunner(await stack.enter_async_context(session))


async def _open_httpx(stack: AsyncExitStack, limit: int, per_host: int | None) -> Runner:
    httpx = _import("httpx")  # no per-host limit exists in httpx: per_host is ignored
    limits = httpx.Limits(
        max_connections=limit, max_keepalive_connections=limit, keepalive_expiry=600.0
    )
    client = httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(_CLIENT_TIMEOUT_S), trust_env=False
    )
    return _HttpxRunner(await stack.enter_async_context(client))


async def _open_httpx_glasspool(stack: AsyncExitStack, limit: int, per_host: int | None) -> Runner:
    httpx = _import("httpx")
    module = _import("glasspool.httpx")
    try:
        transport = module.AsyncTransport(limit=limit, limit_per_host=per_host)
    except Exception as exc:
        raise ClientUnavailable(
            f"glasspool.httpx.AsyncTransport(...) failed: {type(exc).__name__}: {exc}"
        ) from exc
    client = httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(_CLIENT_TIMEOUT_S), trust_env=False
    )
    return _HttpxGlasspoolRunner(await stack.enter_async_context(client), transport.pool)


async def _open_reference(stack: AsyncExitStack, limit: int, per_host: int | None) -> Runner:
    runner = _ReferenceRunner(limit, per_host)
    stack.push_async_callback(runner._pool.aclose)
    return runner


_OPENERS = {
    "glasspool": _open_glasspool,
    "aiohttp": _open_aiohttp,
    "httpx": _open_httpx,
    "httpx-glasspool": _open_httpx_glasspool,
    "reference": _open_reference,
}


async def open_runner(
    stack: AsyncExitStack, name: str, limit: int, limit_per_host: int | None
) -> Runner:
    """Build the named client; ``stack`` closes it.

    Args:
        stack: receives the client's close.
        name: one of :data:`CLIENTS`.
        limit: overall connection limit.
        limit_per_host: per-host connection limit, or None (ignored by httpx).

    Returns:
        The client behind the :class:`Runner` interface.

    Raises:
        ClientUnavailable: unknown name, the client's package cannot be imported, or its
            constructor fails.
    """
    opener = _OPENERS.get(name)
    if opener is None:
        raise ClientUnavailable(f"unknown client {name!r}; known: {', '.join(CLIENTS)}")
    return await opener(stack, limit, limit_per_host)


# --------------------------------------------------------------------------- scenarios


def _check(spec: WorkSpec, url: str, status: int, size: int) -> None:
    if status != 200 or size != spec.expected_size:
        raise BenchError(
            f"{spec.client}: GET {url} gave status {status} and {size} body bytes; "
            f"expected 200 and {spec.expected_size} bytes"
        )


@dataclass(slots=True)
class _Tally:
    """What the load tasks of one phase share: latencies (s), requests issued, bytes read."""

    latencies: list[float] = field(default_factory=list)
    issued: int = 0
    body_bytes: int = 0


async def _drive(runner: Runner, spec: WorkSpec, count: int, seconds: float) -> _Tally:
    """Run ``count`` requests over ``spec.concurrency`` tasks, stopping early at ``seconds``."""
    tally = _Tally()
    urls = spec.urls
    deadline = time.perf_counter() + seconds

    async def task() -> None:
        while tally.issued < count and time.perf_counter() < deadline:
            url = urls[tally.issued % len(urls)]
            tally.issued += 1
            start = time.perf_counter()
            status, size = await runner.get(url)
            tally.latencies.append(time.perf_counter() - start)
            _check(spec, url, status, size)
            tally.body_bytes += size

    try:
        async with asyncio.timeout(seconds + _GRACE_S), asyncio.TaskGroup() as group:
            for _ in range(spec.concurrency):
                group.create_task(task())
    except TimeoutError as exc:
        done = len(tally.latencies)
        raise BenchError(
            f"{spec.client}: {done} of {tally.issued} requests done after {seconds + _GRACE_S}s"
        ) from exc
    return tally


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used: unlike wall time, not inflated
    when other processes compete for the CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


async def _run_load(spec: WorkSpec) -> dict[str, Any]:
    """Warm up, then measure; return throughput and latency figures."""
    async with AsyncExitStack() as stack:
        runner = await open_runner(stack, spec.client, spec.limit, spec.limit_per_host)
        await _drive(runner, spec, spec.warmup, spec.max_seconds)
        start, cpu_start = time.perf_counter(), _cpu_s()
        tally = await _drive(runner, spec, spec.requests, spec.max_seconds)
        elapsed, cpu = time.perf_counter() - start, _cpu_s() - cpu_start
        opened = runner.opened()
    ordered = sorted(tally.latencies)
    if not ordered:
        raise BenchError(f"{spec.client}: no request completed in {spec.max_seconds}s")
    return {
        "requests": len(ordered),
        "elapsed_s": elapsed,
        "body_bytes": tally.body_bytes,
        "p50_ms": _percentile(ordered, 0.50) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
        "cpu_us_per_request": cpu / len(ordered) * 1e6,
        "client_opened": opened,
        "peak_rss_kib": _peak_rss_kib(),
    }


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _socket_count() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue  # closed between listdir and readlink
    return count


def _server_waiting(status_url: str) -> int:
    """nginx's count of idle keep-alive connections (blocking; the loop is idle here)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(status_url, timeout=5.0) as response:
        text = response.read().decode("ascii", "replace")
    marker = text.rfind("Waiting:")
    return int(text[marker + len("Waiting:") :].split()[0]) if marker >= 0 else -1


async def _settle(sockets: int) -> None:
    """Let closed transports finish closing: wait (at most 1 s) until ``sockets`` remain.

    A client's ``aclose()`` may return before its sockets are gone (asyncio closes them on
    a later loop iteration), and counting them in the baseline would skew the figure.
    """
    for _ in range(200):
        if _socket_count() <= sockets:
            return
        await asyncio.sleep(0.005)  # no event to await across every client's internals


class _AllAtOnce:
    """A gate that opens when ``target`` requests hold a connection at the same time."""

    def __init__(self, target: int, what: str) -> None:
        self._target = target
        self.arrived = 0
        self._open = asyncio.Event()
        self._what = what

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self._target:
            self._open.set()
        try:
            await asyncio.wait_for(self._open.wait(), _GATE_TIMEOUT_S)
        except TimeoutError as exc:
            raise BenchError(
                f"{self._what}: only {self.arrived} of {self._target} requests held a "
                f"connection at once after {_GATE_TIMEOUT_S}s"
            ) from exc


async def _open_all(runner: Runner, spec: WorkSpec) -> None:
    """Hold ``concurrency`` connections per URL open at once, then let them all go idle."""
    gate = _AllAtOnce(spec.concurrency * len(spec.urls), spec.client)

    async def one(url: str) -> None:
        status, size = await runner.get_held(url, gate.arrive)
        _check(spec, url, status, size)

    limit_s = _GATE_TIMEOUT_S + _GRACE_S
    try:
        async with asyncio.timeout(limit_s), asyncio.TaskGroup() as group:
            for url in spec.urls:
                for _ in range(spec.concurrency):
                    group.create_task(one(url))
    except TimeoutError as exc:
        raise BenchError(
            f"{spec.client}: {gate.arrived} of {spec.concurrency * len(spec.urls)} requests "
            f"had a connection after {limit_s:.0f}s (the event loop was too busy to time out "
            "sooner)"
        ) from exc


async def _run_memory(spec: WorkSpec) -> dict[str, Any]:
    """RSS growth per idle keep-alive connection, with all of them open and idle."""
    idle_sockets = _socket_count()
    async with AsyncExitStack() as warm:  # load the client's code paths before the baseline
        runner = await open_runner(warm, spec.client, spec.limit, spec.limit_per_host)
        for url in spec.urls * 2:
            _check(spec, url, *await runner.get(url))
    await _settle(idle_sockets)
    gc.collect()
    before_kib, before_sockets = _rss_kib(), _socket_count()
    async with AsyncExitStack() as stack:
        runner = await open_runner(stack, spec.client, spec.limit, spec.limit_per_host)
        start = time.perf_counter()
        await _open_all(runner, spec)
        open_s = time.perf_counter() - start
        gc.collect()
        after_kib, sockets = _rss_kib(), _socket_count() - before_sockets
        waiting = _server_waiting(spec.status_url)
        opened = runner.opened()
    if sockets <= 0:
        raise BenchError(f"{spec.client}: no idle connection left open after the requests")
    return {
        "rss_before_kib": before_kib,
        "rss_after_kib": after_kib,
        "open_sockets": sockets,
        "server_idle": waiting,
        "kib_per_conn": (after_kib - before_kib) / sockets,
        "open_s": open_s,
        "client_opened": opened,
        "peak_rss_kib": _peak_rss_kib(),
    }


# -------------------------------------------------------------------------------- main


def _describe(exc: BaseException) -> str:
    """One line naming the first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        raise BenchError("--uvloop given but uvloop is not installed (glasspool[speed])") from exc
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


def _tune_allocator(client: str) -> None:
    """Call ``glasspool.tune_allocator()`` (which only a glasspool worker is asked to do)."""
    if client != "glasspool":
        raise BenchError(f"tune_allocator is glasspool's; not for {client}")
    tune = getattr(_import("glasspool"), "tune_allocator", None)
    if tune is None:
        raise ClientUnavailable("this glasspool has no tune_allocator()")
    tune()


def run_spec(spec: WorkSpec) -> dict[str, Any]:
    """Run one spec on a fresh event loop and return its figures.

    Args:
        spec: what to run.

    Returns:
        The scenario's figures (see ``_run_load`` and ``_run_memory``).

    Raises:
        ClientUnavailable: the client cannot be built.
        BenchError: (or the client's own exception) the run failed.
    """
    scenario = _run_memory if spec.kind == "memory" else _run_load
    if spec.tune_allocator:
        _tune_allocator(spec.client)
    with asyncio.Runner(loop_factory=_loop_factory(spec.uvloop)) as loop:
        return loop.run(scenario(spec))


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: run the ``--spec`` JSON and print one JSON result line.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 3 when the client is unavailable, 4 when the run failed.
    """
    parser = argparse.ArgumentParser(description="one benchmark run (started by run.py)")
    parser.add_argument("--spec", required=True, help="WorkSpec as JSON")
    spec = WorkSpec(**json.loads(parser.parse_args(argv).spec))
    try:
        result: dict[str, Any] = {"status": "ok", **run_spec(spec)}
        code = 0
    except ClientUnavailable as exc:
        result, code = {"status": "unavailable", "reason": str(exc)}, EXIT_UNAVAILABLE
    except Exception as exc:
        result, code = {"status": "error", "reason": _describe(exc)}, EXIT_ERROR
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
