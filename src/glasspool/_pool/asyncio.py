"""The asyncio pool: carries out the actions of ``state.PoolState`` with futures and timers.

All policy lives in ``state.py``; this module only waits, wakes, opens and closes. Ownership
of a slot changes hands in exactly two places, each guarded so that no cancellation leaks
it: ``_wait()`` (a queued request becomes the owner when its future completes, and gives
the slot back if it is cancelled or times out at any point before it returns) and
``_open()`` (a reserved slot becomes an open connection, or is given back if the wait for
a fleet-wide lease or the connect fails or is cancelled). With shared limits, the wait for
a lease is the waiter's FLEET state in ``state.py``; this module only asks the
``SharedLimits`` for the lease and reports the outcome.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import select
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from .._defaults import (
    DEFAULT_EVICT_GRACE,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_LIMIT,
    DEFAULT_MAX_PASSOVERS,
)
from .._events import PoolEvent, PoolListener
from .._exceptions import ClientClosed, PoolTimeout
from .._stats import DNSStats, HostStats, HostsView, PoolStats
from .adaptive import AdaptiveLimits
from .key import PoolKey
from .state import Action, Close, Conn, ConnState, PoolState, Waiter, WaiterState

__all__ = ["Pool", "PoolConnection", "SharedLimits", "connect_progress"]

logger = logging.getLogger("glasspool.pool")

# Set around a connection factory call: reports a step of that connect as a pool event.
# It holds a list that is emptied when the connect ends: transports copy the context into
# their callbacks, and must not keep the request's waiter alive through it.
_PROGRESS: ContextVar[list[Callable[[str, str | None], None]] | None] = ContextVar(
    "glasspool_connect_progress", default=None
)


def connect_progress(kind: str, reason: str | None) -> None:
    """Report a step of the connect under way (called from a connection factory).

    Emits a :class:`PoolEvent` of ``kind`` for the connection being opened, e.g.
    ``tunnel``/``connect`` when a proxy accepted ``CONNECT``. Does nothing outside a
    pool's connect.
    """
    for report in _PROGRESS.get() or ():
        report(kind, reason)


class PoolConnection(Protocol):
    """What the pool needs of a connection object (``HTTP11Connection`` satisfies it).

    A connection that also has ``get_extra_info("socket")`` (as asyncio transports do) has
    its socket checked before it is reused; see :meth:`Pool._drop_closed_idle`.
    """

    keepalive_hint_s: float | None
    on_lost: Callable[[], None] | None

    def close(self) -> None: ...

    def is_closed(self) -> bool: ...


class Lease(Protocol):
    """A fleet-wide slot held while one connection is open."""

    async def release(self) -> None: ...


class SharedLimits(Protocol):
    """Per-host limits shared by several processes (see ``glasspool.RedisLimits``)."""

    def limit_for(self, key: PoolKey) -> int | None: ...

    async def acquire(self, key: PoolKey, timeout: float | None) -> Lease: ...

    def snapshot(self, key: PoolKey) -> tuple[int | None, int]: ...

    async def aclose(self) -> None: ...


ConnectionFactory = Callable[[PoolKey, float | None], Awaitable[Any]]


class Pool:
    """A connection pool with hard limits and a public view of everything it does.

    Think of it as a rack of at most ``limit`` sockets, with a shelf of at most
    ``limit_per_host`` per key. Requests take a socket from their key's shelf (the most
    recently used first), or open one if the rack and shelf have room, or queue in arrival
    order. Idle sockets stay on the rack and count until they expire or are evicted.

    Args:
        connection_factory: ``async def f(key, connect_timeout) -> connection``; runs in
            the requesting task, so cancelling the request cancels the connect.
        limit, limit_per_host, host_limits, keepalive_expiry, max_lifetime,
        max_requests_per_connection, max_passovers, evict_grace: see ``PoolState``.
        shared_limits: fleet-wide per-host limits taken before each new connection.
        adaptive_limits: per-host limits that back off on overload (see
            ``PoolState.response_seen``); ``None``: off.
        clock: monotonic seconds; injected for tests.

    Raises:
        ValueError, TypeError: a limit or duration is out of range (named in the message).
    """

    def __init__(
        self,
        connection_factory: ConnectionFactory,
        *,
        limit: int = DEFAULT_LIMIT,
        limit_per_host: int | None = None,
        host_limits: Mapping[str, int] | None = None,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY,
        max_lifetime: float | None = None,
        max_requests_per_connection: int | None = None,
        max_passovers: int = DEFAULT_MAX_PASSOVERS,
        evict_grace: float | None = DEFAULT_EVICT_GRACE,
        shared_limits: SharedLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        adaptive_limits: AdaptiveLimits | None = None,
        dns_stats: Callable[[], DNSStats] | None = None,
    ) -> None:
        self._dns_stats = dns_stats
        self._state = PoolState(
            limit,
            limit_per_host,
            host_limits,
            keepalive_expiry,
            max_lifetime,
            max_requests_per_connection,
            max_passovers,
            evict_grace=evict_grace,
            adaptive=adaptive_limits,
        )
        self._factory = connection_factory
        self._adaptive = adaptive_limits is not None  # the client asks before each call
        self._shared = shared_limits
        self._clock = clock
        self._listeners: list[PoolListener] = []
        self._active: set[Waiter] = set()
        self._leases: dict[int, Lease] = {}
        self._lease_tasks: set[asyncio.Task[None]] = set()
        self._connects: set[asyncio.Future[Any]] = set()  # factory calls under way
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False

    # ------------------------------------------------------------ observability

    def add_listener(self, fn: PoolListener) -> None:
        """Call ``fn(event)`` synchronously for every :class:`PoolEvent` from now on.

        ``fn`` runs inside the pool's bookkeeping, on the event loop's thread, before the
        operation that caused the event returns; it must not block. A listener that
        raises is logged on ``glasspool.pool`` and otherwise ignored. A coroutine
        returned by a listener is closed unrun and logged.

        Raises:
            TypeError: ``fn`` is not callable, or is an ``async def`` function (or a
                ``functools.partial`` of one, or an object whose ``__call__`` is one):
                its coroutine would never run. Schedule the async work from a plain
                function instead.
        """
        if not callable(fn):
            raise TypeError(f"pool listener {fn!r} is not callable")
        if _is_async_callable(fn):
            raise TypeError(
                f"pool listener {fn!r} is an async function, but listeners are called "
                "synchronously and its coroutine would never run. Add a plain function "
                "that hands the event on, e.g. to an asyncio.Queue that a task of yours "
                "reads (pool.add_listener(queue.put_nowait)), or one that schedules the "
                "coroutine: pool.add_listener(lambda event: "
                "tasks.add(loop.create_task(handler(event)))), keeping a reference to each task"
            )
        self._listeners.append(fn)
        self._update_emit()

    def remove_listener(self, fn: PoolListener) -> None:
        """Stop calling ``fn``.

        Raises:
            ValueError: ``fn`` was not added.
        """
        try:
            self._listeners.remove(fn)
        except ValueError:
            raise ValueError(f"listener {fn!r} was never added to this pool") from None
        self._update_emit()

    def _update_emit(self) -> None:
        wanted = bool(self._listeners) or logger.isEnabledFor(logging.DEBUG)
        self._state.emit = self._dispatch if wanted else None

    def _dispatch(self, event: PoolEvent) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", event)
        for fn in tuple(self._listeners):
            try:
                result: object = fn(event)
            except Exception:
                logger.exception("pool listener %r raised on %s", fn, event)
                continue
            if result is not None and inspect.iscoroutine(result):
                result.close()
                logger.error(
                    "pool listener %r returned a coroutine on %s; listeners are called "
                    "synchronously, so it was closed unrun (schedule it with "
                    "loop.create_task() inside the listener instead)",
                    fn,
                    event,
                )

    def _retry_event(self, key: PoolKey, reason: str, delay: float, attempt: int) -> None:
        """Report a ``retry`` event: a request to ``key`` is sent again (attempt number
        ``attempt``) after ``delay`` seconds, because of ``reason``. The client calls this
        just before it waits."""
        emit = self._state.emit
        if emit is not None:
            host = self._state.hosts().get(key)
            waiting = 0 if host is None else len(host.waiters)
            now = self._clock()
            emit(PoolEvent("retry", key, None, reason, now, waiting, delay=delay, attempt=attempt))

    def _response_seen(self, lease: Waiter, status: int, retry_after: bool) -> None:
        """Adaptive limits: tell the pool a response head arrived on ``lease``'s
        connection (``status``, whether it has ``Retry-After``); the client calls this for
        every response when adaptive limits are on."""
        if self._closed:
            return
        actions = self._state.response_seen(lease, self._clock(), status, retry_after)
        if actions:
            self._run(actions)

    def stats(self) -> PoolStats:
        """A frozen snapshot of every count, global and per key. O(number of keys)."""
        st = self._state
        hosts = HostsView()
        now = self._clock()
        for key, h in st.hosts().items():
            shared_limit, fleet, leases = None, None, 0
            if self._shared is not None:
                shared_limit = self._shared.limit_for(key)
                fleet, leases = self._shared.snapshot(key)
            hosts[key] = HostStats(
                limit=h.configured
                if st.limit_per_host is not None or key.host in st.host_limits
                else None,
                connecting=h.connecting,
                in_use=h.in_use,
                idle=len(h.idle),
                waiting=len(h.waiters),
                available=st.host_available(h, now),
                opened=h.opened,
                reused=h.reused,
                closed=h.closed,
                requests=h.requests,
                shared_limit=shared_limit,
                fleet_in_use=fleet,
                leases=leases,
                fleet_waiting=len(h.fleet),
                effective_limit=None if st.adaptive is None else h.limit,
                limit_reason=h.limit_reason,
            )
        return PoolStats(
            limit=st.limit,
            limit_per_host=st.limit_per_host,
            open=st.open,
            connecting=st.connecting,
            in_use=st.in_use,
            idle=st.idle,
            waiting=st.waiting,
            available=max(0, st.limit - st.open),
            hosts=hosts,
            dns=None if self._dns_stats is None else self._dns_stats(),
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    def __repr__(self) -> str:
        st = self._state
        return (
            f"<Pool open={st.open}/{st.limit} in_use={st.in_use} idle={st.idle} "
            f"connecting={st.connecting} waiting={st.waiting}>"
        )

    # -------------------------------------------------------- acquire / release

    async def acquire(
        self, key: PoolKey, *, timeout: float | None = None, connect_timeout: float | None = None
    ) -> Waiter:
        """Get a connection for ``key``: reuse an idle one, open one, or wait in line.

        A checkpoint only when it must wait or connect. Cancellation at any await gives
        the slot back; nothing is left behind.

        Args:
            key: which pool of connections.
            timeout: seconds allowed to wait in the queue (the ``pool`` timeout).
            connect_timeout: passed to the connection factory when a connection is opened.

        Returns:
            The lease: ``lease.conn.handle`` is the connection; pass the lease to
            :meth:`release` when done. ``lease.reused`` says whether it was open before.

        Raises:
            PoolTimeout: no slot within ``timeout``; names the key, limits and queue.
            ClientClosed: the pool is closed, or closed while waiting.
            Whatever the connection factory raises (``ConnectError`` ...).
        """
        if self._closed:
            raise ClientClosed(f"the client is closed; cannot request a connection to {key}")
        if self._state.emit is None and logger.isEnabledFor(logging.DEBUG):
            self._update_emit()
        now = self._clock()
        if self._state.idle:
            self._drop_closed_idle(key, now)
        waiter, actions = self._state.request(key, now)
        if actions:
            self._run(actions)
        if waiter.state is WaiterState.QUEUED:
            self._schedule_eviction()
            await self._wait(waiter, timeout)
            if self._closed:
                if waiter.conn is not None and waiter.conn.handle is not None:
                    waiter.conn.handle.close()
                raise ClientClosed(f"the client was closed while {key} waited")
        if waiter.state is WaiterState.CONNECTING:
            self._active.add(waiter)
            if timeout is not None and self._shared is not None:
                # the fleet wait gets what is left of the pool timeout
                timeout = max(0.0, timeout - (self._clock() - waiter.enqueued_at))
            await self._open(waiter, timeout, connect_timeout)
        else:
            self._active.add(waiter)
        return waiter

    def _drop_closed_idle(self, key: PoolKey, now: float) -> None:
        """Close the idle connections of ``key`` that the server has closed, most recently
        used first, up to the first one still open: the one ``request()`` hands out next.

        The event loop learns that a server closed a connection only when it next polls
        the socket. A task that keeps the loop busy (CPU-bound work, a blocking call) can
        come here first, and a request sent on such a connection fails, or reads bytes
        that were never its response. An idle HTTP/1.1 connection whose socket is readable
        has either reached its end or holds bytes nobody asked for; either way it cannot
        carry a request, so it is closed (``closed`` ``server_closed``, as when the loop
        sees the close) and the request goes on with another connection or a new one.
        An idle connection past its expiry (its timer is late when the loop is busy) is
        closed as expired first. Costs one ``poll()`` system call per reused connection.
        """
        host = self._state.hosts().get(key)
        if host is None:
            return
        idle = host.idle
        while idle and not host.waiters:
            conn = idle[next(reversed(idle))]  # the most recently used
            if conn.expires_at is not None and now >= conn.expires_at:
                # late timer (the loop was busy): close what has expired, as it would
                self._run(self._state.expire(now))
                if conn.state is ConnState.IDLE:
                    return  # not expired after all; request() decides
                continue
            if not _peer_closed(conn.handle):
                return
            self._run(self._state.server_closed(conn, now))

    async def _wait(self, waiter: Waiter, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter.payload = fut
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, self._on_timeout, waiter, timeout)
        try:
            await fut
        except BaseException:
            # Cancelled, timed out or closed: if the state machine handed us a slot or a
            # connection in the meantime, it passes on to the next waiter.
            if not self._closed and waiter.state is not WaiterState.DONE:
                self._run(self._state.cancel(waiter, self._clock(), "cancelled"))
            raise
        finally:
            waiter.payload = None
            if timer is not None:
                timer.cancel()

    def _on_timeout(self, waiter: Waiter, timeout: float) -> None:
        fut = waiter.payload
        if fut is None or fut.done() or waiter.state is not WaiterState.QUEUED:
            return
        message = self._timeout_message(waiter.key, timeout)
        self._run(self._state.cancel(waiter, self._clock(), "timeout"))
        fut.set_exception(PoolTimeout(message))

    def _timeout_message(self, key: PoolKey, timeout: float) -> str:
        st = self._state
        host = st.hosts()[key]
        which = (
            f"per-host limit {host.limit} reached for {key}"
            if host.open >= host.limit
            else f"global limit {st.limit} reached"
        )
        if host.limit < host.configured:
            which += f" (adaptive: lowered from {host.configured}, {host.limit_reason})"
        return (
            f"{which} after {timeout:g}s pool timeout ({len(host.waiters)} queued for {key}; "
            f"limit={st.limit}, limit_per_host={st.limit_for(key)}, "
            f"{st.open} open overall, {host.open} open for this key)"
        )

    async def _open(
        self, waiter: Waiter, timeout: float | None, connect_timeout: float | None
    ) -> None:
        conn = waiter.conn
        assert conn is not None
        try:
            if self._shared is not None and not await self._fleet_lease(waiter, timeout):
                return  # served by an idle connection of its key instead
            cell = [lambda kind, reason: self._state.progress(waiter, kind, reason, self._clock())]
            token = _PROGRESS.set(cell)
            try:
                handle = await self._connect(waiter.key, connect_timeout)
            finally:
                cell.clear()
                _PROGRESS.reset(token)
        except BaseException as exc:
            self._active.discard(waiter)
            if not self._closed:
                self._give_up(waiter, exc)
            self._drop_lease(conn)
            raise
        if self._closed:
            handle.close()
            self._active.discard(waiter)
            self._drop_lease(conn)
            raise ClientClosed(f"the client was closed while connecting to {waiter.key}")
        conn.handle = handle
        handle.on_lost = lambda: self._on_lost(conn)
        self._state.connected(waiter, self._clock())

    def _give_up(self, waiter: Waiter, exc: BaseException) -> None:
        """Give back what ``waiter`` holds after its fleet wait or connect failed or was
        cancelled: the reserved slot, or a connection adopted just before a cancellation."""
        reason = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        now = self._clock()
        if waiter.state is WaiterState.FLEET:
            self._run(self._state.fleet_failed(waiter, now, reason))
        elif waiter.state is WaiterState.CONNECTING:
            self._run(self._state.connect_failed(waiter, now, reason))
        else:  # it adopted a connection as it was cancelled: that passes on, unused
            conn = waiter.conn
            self._run(self._state.cancel(waiter, now))
            if conn is not None and conn.state is ConnState.IDLE:
                self._schedule_expiry(conn)

    async def _fleet_lease(self, waiter: Waiter, timeout: float | None) -> bool:
        """Take a fleet-wide slot for a new connection, unless a connection turns up first.

        The waiter is in FLEET (``state.fleet_wait``) meanwhile: a connection of its key
        that comes back (or is idle already) is adopted by it, which wakes it
        (``Wake``), and the fleet request is withdrawn.

        Returns:
            True with the lease recorded for ``waiter.conn``, or False when the waiter
            was served by a connection of its key instead.

        Raises:
            Whatever the lease source raises (``PoolTimeout``, ``SharedLimitsUnavailable``,
            ``ClientClosed``); the waiter is still in FLEET then, for the caller to undo.
            ClientClosed: the pool closed while the lease was granted.
        """
        assert self._shared is not None and waiter.conn is not None
        key = waiter.key
        limit = self._shared.limit_for(key)
        fleet, _ = self._shared.snapshot(key)
        full = limit is not None and fleet is not None and fleet >= limit
        now = self._clock()
        if self._state.idle:
            self._drop_closed_idle(key, now)
        self._run(self._state.fleet_wait(waiter, now, full))
        if waiter.state is not WaiterState.FLEET:
            return False  # an idle connection of its key was there
        task = asyncio.ensure_future(self._shared.acquire(key, timeout))
        adopted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.payload = adopted  # a Wake (adoption) completes it
        try:
            await asyncio.wait((task, adopted), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._withdraw(task)
            raise
        finally:
            waiter.payload = None
        if waiter.state is not WaiterState.FLEET:
            self._withdraw(task)
            if waiter.state is WaiterState.ACTIVE:
                return False
            raise ClientClosed(f"the client was closed while connecting to {key}")
        lease = task.result()
        self._leases[waiter.conn.id] = lease
        self._state.fleet_granted(waiter, self._clock())
        return True

    def _withdraw(self, task: asyncio.Future[Lease]) -> None:
        """Cancel a fleet request without waiting for it; a lease it got anyway goes back.

        Not awaited: withdrawing takes a Redis round trip, and the request it belonged to
        has what it needs already (or is being cancelled).
        """
        task.cancel()
        task.add_done_callback(self._give_back_granted)

    def _give_back_granted(self, task: asyncio.Future[Lease]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        release = asyncio.ensure_future(task.result().release())
        self._lease_tasks.add(release)
        release.add_done_callback(self._lease_released)

    async def _connect(self, key: PoolKey, connect_timeout: float | None) -> Any:
        """Run the connection factory in a child task, which :meth:`aclose` cancels.

        Cancelling the requesting task cancels the child as well, and waits for it.

        Raises:
            ClientClosed: the pool was closed during the connect.
        """
        task = asyncio.ensure_future(self._factory(key, connect_timeout))
        self._connects.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()  # it connected just as the request was cancelled
            me = asyncio.current_task()
            if self._closed and (me is None or not me.cancelling()):
                raise ClientClosed(f"the client was closed while connecting to {key}") from None
            raise
        finally:
            self._connects.discard(task)

    def release(
        self,
        lease: Waiter,
        *,
        reason: str = "eof",
        close_reason: str | None = None,
    ) -> None:
        """Give a connection back.

        Args:
            lease: what :meth:`acquire` returned.
            reason: ``eof`` (response fully read), ``closed`` (closed early by the caller)
                or ``error``.
            close_reason: ``None`` if the connection is clean and reusable, else why it
                must be closed (``not_reusable``, ``error``, ``cancelled``,
                ``server_closed``).

        Raises:
            PoolMisuse: this lease was already released.
        """
        self._active.discard(lease)
        conn = lease.conn
        hint = None
        if close_reason is None and conn is not None:
            handle = conn.handle
            if handle is None or handle.is_closed():
                close_reason = "server_closed"
            else:
                hint = handle.keepalive_hint_s
        actions = self._state.release(lease, self._clock(), reason, close_reason, hint)
        if actions:
            self._run(actions)
        if conn is not None and conn.state is ConnState.IDLE:
            self._schedule_expiry(conn)
            if self._state.waiting:
                self._schedule_eviction()

    def _on_lost(self, conn: Conn) -> None:
        if conn.state is ConnState.IDLE and not self._closed:
            self._run(self._state.server_closed(conn, self._clock()))

    # -------------------------------------------------------------- actions

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Close):
                conn = action.conn
                if conn.handle is not None:
                    conn.handle.close()
                    # state.py's expiry heap deletes lazily and may hold this record until
                    # its expiry time: let the connection object (and its buffers) go now
                    conn.handle = None
                self._drop_lease(conn)
            else:
                fut = action.waiter.payload
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _drop_lease(self, conn: Conn) -> None:
        lease = self._leases.pop(conn.id, None)
        if lease is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a collected client): the lease expires by its TTL
            task = loop.create_task(lease.release())
            self._lease_tasks.add(task)
            task.add_done_callback(self._lease_released)

    def _lease_released(self, task: asyncio.Task[None]) -> None:
        self._lease_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("releasing a shared-limit lease failed: %r", task.exception())

    def _schedule_eviction(self) -> None:
        """Wake up when an idle connection becomes evictable for a waiting request."""
        self._schedule_at(self._state.evict_deadline())

    def _schedule_expiry(self, conn: Conn) -> None:
        self._schedule_at(conn.expires_at)

    def _schedule_at(self, when: float | None) -> None:
        """Run :meth:`_on_expiry` at ``when`` (monotonic) unless it already runs sooner."""
        if when is None:
            return
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_later(max(0.0, when - self._clock()), self._on_expiry)

    def _on_expiry(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = self._clock()
        self._run(self._state.expire(now))
        nxt = self._state.next_expiry()
        if nxt is not None:
            loop = asyncio.get_running_loop()
            self._timer_at = nxt
            self._timer = loop.call_later(max(0.0, nxt - now), self._on_expiry)

    async def aclose(self) -> None:
        """Close every connection and fail every waiting request with ``ClientClosed``.

        Idempotent. Requests in flight see their connection closed; the client turns
        that into ``ClientClosed``.
        """
        if self._closed:
            return
        self._close_now()
        if self._shared is not None:
            await self._shared.aclose()

    def _close_now(self) -> None:
        """The synchronous part of :meth:`aclose` (also used when a client is collected)."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dropped, actions = self._state.close_all(now)
        for waiter in self._active:
            actions.extend(self._state.close_in_use(waiter, now))
        self._active.clear()
        self._run(actions)
        for task in self._connects:
            task.cancel()  # its requester raises ClientClosed
        for waiter in dropped:
            fut = waiter.payload
            if fut is not None and not fut.done():
                fut.set_exception(ClientClosed(f"the client was closed while {waiter.key} waited"))


def _is_async_callable(fn: Callable[..., object]) -> bool:
    """Whether calling ``fn`` makes a coroutine: an ``async def`` function or method, a
    ``functools.partial`` of one, or an object whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _peer_closed(handle: Any) -> bool:
    """Whether an idle connection is closed, or its socket is readable (see
    :meth:`Pool._drop_closed_idle`): EOF, a reset, or bytes nobody asked for.

    Under TLS the raw socket is looked at: any record arriving on an idle connection (a
    close_notify alert, application data) makes it unusable too. False when there is no
    socket to look at (an in-memory transport).
    """
    if handle.is_closed():
        return True
    get_extra_info = getattr(handle, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    if sock is None:
        return False
    fd: int = sock.fileno()
    return fd < 0 or _readable_now(fd)


if hasattr(select, "poll"):

    def _readable_now(fd: int) -> bool:
        """Whether ``fd`` is readable (or failed) right now; never waits."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

else:  # pragma: no cover (Windows)

    def _readable_now(fd: int) -> bool:
        """Whether ``fd`` is readable (or failed) right now; never waits."""
        readable, _, failed = select.select([fd], [], [fd], 0)
        return bool(readable or failed)
