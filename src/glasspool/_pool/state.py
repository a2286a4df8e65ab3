"""The pool's whole policy as a plain state machine: no asyncio, no sockets, no clock.

Rule 1: every decision about which request gets which connection, which connection is
opened, reused, evicted or closed, and who waits, lives in this file.
Rule 2: this file does no I/O. Each operation takes ``now`` (monotonic seconds) and returns
a list of actions for the I/O layer (``_pool/asyncio.py``) to carry out:

- ``Wake(waiter)``: the waiter was given a connection. ``waiter.conn.state`` says whether
  it is an open connection to use (``IN_USE``) or a reserved slot to open (``CONNECTING``).
  A waiter in ``FLEET`` is woken only when it adopts an open connection (``IN_USE``).
- ``Close(conn, reason)``: close that connection's socket.

Invariants (checked by ``_check_invariants()`` after every step in the stateful tests):

I1  open = connecting + in_use + idle <= limit, globally.
I2  for every key, open(key) <= limit_for(key), the configured limit. Every decision uses
    the key's *effective* limit (``_Host.limit``), which equals it unless adaptive limits
    lowered it (I9).
I3  waiters are served first in, first out among those whose limits allow: the ready heap
    holds, for every key with waiters and per-key headroom, its oldest waiter; a new
    request never goes ahead of a queued waiter that could be served.
I4  every connection is in exactly one state (CONNECTING, IN_USE, IDLE) and in exactly one
    per-key container; closed connections are in none. A waiter is in exactly one state:
    a QUEUED one is in its key's queue (``waiters``) only, a FLEET one in its key's fleet
    line (``fleet``) only, and a FLEET waiter's connection is a reserved slot of its key
    (CONNECTING), so it counts against I1 and I2 while it waits for its lease.
I5  no waiter waits while capacity for it exists: a key with waiters has no idle
    connection, and a waiter with per-key headroom exists only while open == limit and no
    idle connection may be evicted for it (I8), both with the effective limit. A key with
    FLEET waiters has no idle connection either: one that is idle when the wait begins, or
    comes back while it lasts and is not taken first by a QUEUED waiter of the key, is
    adopted by the oldest of them (see "Shared limits" below).
I6  the per-key counters equal a recount, and the totals equal the sum over keys
    (``waiting`` counts QUEUED waiters, ``fleet_waiting`` FLEET ones; a FLEET waiter's
    reserved slot is also in ``connecting``).
I7  every idle connection with an expiry has its entry in the expiry heap, at or before
    that expiry (``conn.heap_at``); a connection has at most one live entry.
I8  eviction does not thrash. An idle connection of another key is closed (``evicted``) to
    make room under a full global limit only (a) for a key with no connection at all
    (none connecting, in use or idle), at once, or (b) once it has been idle for at least
    ``evict_grace`` seconds, for any key with per-key headroom. A key that has connections
    otherwise waits for its own: they come back to it first. The oldest idle connection
    is the one evicted. A key with no connection is on the starving heap, so it finds an
    idle connection to evict even when older waiters of other keys may not.
I9  adaptive limits: 1 <= effective limit <= configured limit. A key may have more open
    connections than its effective limit only just after it was lowered, and then has no
    idle connection: nothing is granted (a new slot, an idle or handed-over connection)
    while open(key) >= its effective limit, surplus idle connections are closed when the
    limit is lowered, and a connection that comes back clean to a key over its effective
    limit is closed (``limit_lowered``) instead of reused.

Theory of operation. A request is a ``Waiter``. ``request()`` serves it at once (an idle
connection of its key, most recently used first; else a new slot if the limits allow,
evicting the oldest idle connection if only the global limit is full and I8 allows it) or
queues it. Capacity comes back in three ways. A released reusable connection goes straight
to the oldest waiter of its key; a closed connection frees a slot, which goes to the
oldest waiter (by arrival) among keys with per-key headroom; an idle connection nobody of
its key takes goes to the oldest waiter allowed to evict it (I8), at once or when its
grace runs out (``evict_deadline``, served by ``expire``). Preferring the same key avoids
a reconnect, but may pass over an older waiter of another key that only the global limit
holds back; that waiter is passed over at most ``max_passovers`` times, after which the
released connection is closed (``evicted``) and the slot goes to it.

Shared limits. With fleet-wide limits (``glasspool.RedisLimits``), a request that holds a
reserved slot must take a fleet-wide lease before it opens its connection. ``fleet_wait``
moves it from CONNECTING to FLEET, where it keeps its slot (a ``queued`` event with reason
``shared_limit`` says so when the fleet is known to be full). ``fleet_granted`` sends it
back to CONNECTING to open the connection; ``fleet_failed`` (no lease: timeout, error) and
``cancel`` give the slot back like a failed connect. While it waits, a connection of its
key is better than a new one: the key's oldest FLEET waiter *adopts* it (``acquired``
``reused``; its reserved slot is given back, ``closed`` ``cancelled``; ``Wake``). A
connection of a key that comes back clean goes, in this order: to the key's oldest
QUEUED waiter (the same-key hand-over above, with its pass-over bound), which has nothing
yet; else the key's oldest FLEET waiter adopts it, first in, first out among the key's
FLEET waiters (the reserved slot that waiter gives back goes to the next waiter of any
key, so nothing is closed to serve a key with no connection); else it is parked idle,
where a waiter of another key that I8 lets evict it at once may take it. A FLEET waiter
also adopts an idle connection of its key that is there when its wait begins. The lease
itself is the I/O layer's business: this file only records who waits for one.

Adaptive limits (``glasspool.AdaptiveLimits``). ``response_seen`` is told of every
response head: a status in ``decrease_on`` or a ``Retry-After`` halves the key's effective
limit (floor 1; ``limit_changed`` with ``status_<code>`` or ``retry_after``), at most once
per round: a signal from a request that asked for its connection before the last cut is
ignored, since the cut already answered it (the idea of TCP's one decrease per window). A
run of ``increase_after`` successes (below 500, no signal) raises it by one
(``limit_changed`` ``recovered``), never above the configured limit, and serves waiters.
Connections in use are never closed for a cut; see I9 for the rest.

Data structures keep every operation O(1) or O(log n): per-key ordered dicts of idle
connections and of waiters, one global ordered dict of idle connections (oldest first, for
eviction), a heap of ready keys ordered by the arrival of their oldest waiter, the same for
starving keys (waiters and no connection), and a heap of idle-connection expiry times. The
heaps use lazy deletion. The expiry heap is also lazy about updates: a connection released
again keeps its earlier entry, which moves to the new expiry when it comes up
(``expire``/``next_expiry``), so a release costs no push and the heap holds about one
entry per connection, not one per request.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._defaults import (
    DEFAULT_EVICT_GRACE,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_LIMIT,
    DEFAULT_MAX_PASSOVERS,
)
from .._events import PoolEvent
from .._exceptions import PoolMisuse
from .._validate import check_limit as _check_limit
from .._validate import check_seconds as _check_seconds
from .adaptive import AdaptiveLimits
from .key import PoolKey

__all__ = [
    "Close",
    "Conn",
    "ConnState",
    "PoolState",
    "Wake",
    "Waiter",
    "WaiterState",
]


class ConnState(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    IN_USE = "in_use"
    IDLE = "idle"
    CLOSED = "closed"


class WaiterState(enum.Enum):
    """Where a request is in its dealings with the pool."""

    QUEUED = "queued"  # waiting for a slot
    CONNECTING = "connecting"  # holds a reserved slot and must open the connection
    FLEET = "fleet"  # holds a reserved slot and waits for a fleet-wide lease to open it
    ACTIVE = "active"  # holds an open connection
    DONE = "done"  # released its connection, or was cancelled


class Conn:
    """The pool's record of one connection. ``handle`` is the I/O object, opaque here."""

    __slots__ = (
        "close_reason",
        "expire_reason",
        "expires_at",
        "handle",
        "heap_at",
        "id",
        "idle_since",
        "key",
        "opened_at",
        "requests",
        "state",
    )

    def __init__(self, conn_id: int, key: PoolKey) -> None:
        self.id = conn_id
        self.key = key
        self.state = ConnState.CONNECTING
        self.handle: Any = None
        self.opened_at = 0.0
        self.idle_since = 0.0
        self.expires_at: float | None = None
        self.heap_at: float | None = None  # time of its live expiry-heap entry, if any
        self.expire_reason = "expired"
        self.requests = 0
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Conn {self.id} {self.key} {self.state.value} requests={self.requests}>"


class Waiter:
    """One request's claim on the pool; after service, its ticket for ``release()``."""

    __slots__ = ("conn", "enqueued_at", "key", "passovers", "payload", "reused", "seq", "state")

    def __init__(self, seq: int, key: PoolKey, now: float) -> None:
        self.seq = seq
        self.key = key
        self.state = WaiterState.QUEUED
        self.conn: Conn | None = None
        self.reused = False
        self.enqueued_at = now
        self.passovers = 0
        self.payload: Any = None  # the I/O layer's future

    def __repr__(self) -> str:
        return f"<Waiter {self.seq} {self.key} {self.state.value}>"


@dataclass(frozen=True, slots=True)
class Wake:
    """Action: ``waiter`` was given ``waiter.conn``; resume it."""

    waiter: Waiter


@dataclass(frozen=True, slots=True)
class Close:
    """Action: close the socket of ``conn``; ``reason`` is also in the ``closed`` event."""

    conn: Conn
    reason: str


Action = Wake | Close
Emit = Callable[[PoolEvent], None]


class _Host:
    """Everything the pool tracks for one key."""

    __slots__ = (
        "closed",
        "configured",
        "connecting",
        "cut_seq",
        "fleet",
        "heap_seq",
        "idle",
        "in_use",
        "key",
        "limit",
        "limit_reason",
        "opened",
        "requests",
        "reused",
        "starve_seq",
        "successes",
        "waiters",
    )

    def __init__(self, key: PoolKey, limit: int) -> None:
        self.key = key
        self.limit = limit  # the effective limit: every decision uses it (I9)
        self.configured = limit
        self.limit_reason: str | None = None  # why ``limit`` last changed
        self.successes = 0  # successes in a row since the last signal (adaptive limits)
        self.cut_seq = 0  # requests up to this seq came before the last cut
        self.connecting = 0
        self.in_use = 0
        self.idle: OrderedDict[int, Conn] = OrderedDict()  # most recently used at the end
        self.waiters: OrderedDict[int, Waiter] = OrderedDict()  # oldest first
        # FLEET waiters (each holds a reserved slot), in the order their wait began
        self.fleet: OrderedDict[int, Waiter] = OrderedDict()
        self.heap_seq = -1  # seq of the waiter this key was last pushed on the ready heap with
        self.starve_seq = -1  # the same for the starving heap
        self.opened = self.reused = self.closed = self.requests = 0

    @property
    def open(self) -> int:
        return self.connecting + self.in_use + len(self.idle)


class PoolState:
    """The pool's bookkeeping and policy; see the module docstring.

    Args:
        limit: the most connections open at once across all keys.
        limit_per_host: the most connections open at once per key; ``None`` = only
            ``limit`` applies.
        host_limits: per-host-name overrides of ``limit_per_host``.
        keepalive_expiry: seconds an idle connection is kept; ``None`` = until closed.
        max_lifetime: seconds since a connection opened after which it is not reused.
        max_requests_per_connection: requests after which a connection is not reused.
        max_passovers: how many times a waiter of another key that only the global limit
            holds back may be passed over in favour of a same-key handover.
        evict_grace: seconds an idle connection must have been idle before it may be
            evicted for a key that already has a connection (I8); a key with none may
            evict any idle connection at once. ``0`` evicts whenever the global limit is
            full; ``None`` evicts only for keys with no connection.
        emit: called with each :class:`PoolEvent`; ``None`` builds no events at all.
        adaptive: adaptive per-host limits (:meth:`response_seen`); ``None``: off.

    Raises:
        ValueError: a limit below 1, ``limit_per_host`` or a host limit above ``limit``,
            or a negative duration. ``TypeError`` for values of the wrong type.
    """

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        limit_per_host: int | None = None,
        host_limits: Mapping[str, int] | None = None,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY,
        max_lifetime: float | None = None,
        max_requests_per_connection: int | None = None,
        max_passovers: int = DEFAULT_MAX_PASSOVERS,
        emit: Emit | None = None,
        evict_grace: float | None = DEFAULT_EVICT_GRACE,
        adaptive: AdaptiveLimits | None = None,
    ) -> None:
        self.limit = _check_limit("limit", limit)
        self.limit_per_host = (
            None
            if limit_per_host is None
            else _check_limit("limit_per_host", limit_per_host, limit)
        )
        self.host_limits = {
            h.lower(): _check_limit(f"host_limits[{h!r}]", v, limit)
            for h, v in (host_limits or {}).items()
        }
        self.keepalive_expiry = _check_seconds(
            "keepalive_expiry", keepalive_expiry, allow_zero=True
        )
        self.max_lifetime = _check_seconds("max_lifetime", max_lifetime)
        self.max_requests = (
            None
            if max_requests_per_connection is None
            else _check_limit("max_requests_per_connection", max_requests_per_connection)
        )
        self.max_passovers = max_passovers
        self.evict_grace = _check_seconds("evict_grace", evict_grace, allow_zero=True)
        self.emit = emit
        self.adaptive = adaptive
        self._hosts: dict[PoolKey, _Host] = {}
        self._idle: OrderedDict[int, Conn] = OrderedDict()  # all idle, oldest idle first
        self._ready: list[tuple[int, PoolKey]] = []  # (seq of oldest waiter, key)
        self._starving: list[tuple[int, PoolKey]] = []  # the same, keys with no connection
        self._expiry: list[tuple[float, int, Conn]] = []
        self._conn_ids = itertools.count(1)
        self._seqs = itertools.count(1)
        self.open = 0
        self.connecting = 0
        self.in_use = 0
        self.waiting = 0
        self.fleet_waiting = 0

    # ----------------------------------------------------------------- helpers

    def limit_for(self, key: PoolKey) -> int:
        """The per-key limit that applies to ``key`` (the global limit if none)."""
        override = self.host_limits.get(key.host)
        if override is not None:
            return override
        return self.limit if self.limit_per_host is None else self.limit_per_host

    def _host(self, key: PoolKey) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key, self.limit_for(key))
        return host

    def _event(
        self, kind: str, host: _Host, conn: Conn | None, reason: str | None, now: float
    ) -> None:
        if self.emit is not None:
            cid = None if conn is None else conn.id
            self.emit(PoolEvent(kind, host.key, cid, reason, now, len(host.waiters)))

    def progress(self, waiter: Waiter, kind: str, reason: str | None, now: float) -> None:
        """Report a step in opening ``waiter``'s connection (a proxy tunnel) as an event.

        Changes no count: the connection stays ``connecting`` until :meth:`connected`.
        """
        conn = waiter.conn
        if self.emit is None or conn is None or waiter.state is not WaiterState.CONNECTING:
            return
        host = self._hosts.get(waiter.key)
        if host is not None:
            self._event(kind, host, conn, reason, now)

    def _mark_ready(self, host: _Host) -> None:
        """Push ``host`` on the ready heap if it has waiters and per-key headroom, and on
        the starving heap too if it has no connection."""
        if host.waiters and host.open < host.limit:
            seq = next(iter(host.waiters))
            if host.heap_seq != seq:
                host.heap_seq = seq
                heapq.heappush(self._ready, (seq, host.key))
            if host.open == 0 and host.starve_seq != seq:
                host.starve_seq = seq
                heapq.heappush(self._starving, (seq, host.key))

    def _oldest_starving(self) -> _Host | None:
        """The key with no connection whose oldest waiter is the oldest such waiter (I8)."""
        starving = self._starving
        while starving:
            seq, key = starving[0]
            host = self._hosts[key]
            if host.waiters and host.open == 0 and next(iter(host.waiters)) == seq:
                return host
            heapq.heappop(starving)
            if host.starve_seq == seq:
                host.starve_seq = -1
                self._mark_ready(host)
        return None

    def _oldest_ready(self) -> _Host | None:
        """The key whose oldest waiter is the oldest among keys with headroom (I3)."""
        ready = self._ready
        while ready:
            seq, key = ready[0]
            host = self._hosts[key]
            if host.waiters and host.open < host.limit and next(iter(host.waiters)) == seq:
                return host
            heapq.heappop(ready)
            if host.heap_seq == seq:
                host.heap_seq = -1
                self._mark_ready(host)
        return None

    # ----------------------------------------------------------- the operations

    def request(self, key: PoolKey, now: float) -> tuple[Waiter, list[Action]]:
        """A request for a connection to ``key``.

        Returns:
            The waiter and the actions to carry out. If ``waiter.state`` is ``ACTIVE`` an
            idle connection was reused; ``CONNECTING``: the caller must open
            ``waiter.conn``; ``QUEUED``: wait for a ``Wake(waiter)`` action.
        """
        host = self._host(key)
        host.requests += 1
        waiter = Waiter(next(self._seqs), key, now)
        actions: list[Action] = []
        if host.idle and not host.waiters:
            conn = self._take_idle(host, now, actions)
            if conn is not None:
                self._hand(waiter, conn, host, now)
                return waiter, actions
        if (
            not host.waiters
            and host.open < host.limit
            and (self.open < self.limit or self._evict_for(host, now, actions))
        ):
            self._give_slot(waiter, host, now)
            return waiter, actions
        self._enqueue(waiter, host, now)
        return waiter, actions

    def _take_idle(self, host: _Host, now: float, actions: list[Action]) -> Conn | None:
        """Pop the most recently used idle connection of ``host`` that has not expired."""
        while host.idle:
            _, conn = host.idle.popitem(last=True)
            del self._idle[conn.id]
            if conn.expires_at is not None and now >= conn.expires_at:
                self._close(conn, host, conn.expire_reason, now, actions)
                continue
            return conn
        return None

    def _hand(self, waiter: Waiter, conn: Conn, host: _Host, now: float) -> None:
        """Give the open connection ``conn`` to ``waiter``."""
        conn.state = ConnState.IN_USE
        conn.requests += 1
        conn.expires_at = None
        host.in_use += 1
        host.reused += 1
        self.in_use += 1
        waiter.conn = conn
        waiter.state = WaiterState.ACTIVE
        waiter.reused = True
        if self.emit is not None:  # (a call saved per request when nobody listens)
            self._event("acquired", host, conn, "reused", now)

    def _give_slot(self, waiter: Waiter, host: _Host, now: float) -> None:
        """Reserve a new connection slot for ``waiter``; the caller opens it."""
        conn = Conn(next(self._conn_ids), host.key)
        host.connecting += 1
        self.connecting += 1
        self.open += 1
        waiter.conn = conn
        waiter.state = WaiterState.CONNECTING
        self._event("connecting", host, conn, None, now)

    def _enqueue(self, waiter: Waiter, host: _Host, now: float) -> None:
        host.waiters[waiter.seq] = waiter
        self.waiting += 1
        self._mark_ready(host)
        reason = "limit_per_host" if host.open >= host.limit else "limit"
        self._event("queued", host, None, reason, now)

    def _may_evict(self, host: _Host, now: float) -> bool:
        """Whether an idle connection may be evicted now to open one for ``host`` (I8)."""
        if not self._idle:
            return False
        if host.open == 0:
            return True
        grace = self.evict_grace
        oldest = next(iter(self._idle.values()))
        return grace is not None and now - oldest.idle_since >= grace

    def _evict_for(self, host: _Host, now: float, actions: list[Action]) -> bool:
        """Close the oldest idle connection to make room for ``host``, if I8 allows it.

        ``host`` has no idle connection of its own (it would have used it), so the oldest
        idle connection belongs to another key. One that has expired is closed for that.
        """
        if not self._may_evict(host, now):
            return False
        _, conn = self._idle.popitem(last=False)
        victim = self._hosts[conn.key]
        del victim.idle[conn.id]
        expired = conn.expires_at is not None and now >= conn.expires_at
        self._close(conn, victim, conn.expire_reason if expired else "evicted", now, actions)
        return True

    def evict_deadline(self) -> float | None:
        """When the oldest idle connection becomes evictable for keys that have connections.

        Only while requests wait under a full global limit; the I/O layer runs
        :meth:`expire` then, which serves them (I8).
        """
        grace = self.evict_grace
        if self.waiting and self._idle and grace is not None and self.open >= self.limit:
            return next(iter(self._idle.values())).idle_since + grace
        return None

    def connected(self, waiter: Waiter, now: float) -> list[Action]:
        """The connection reserved for ``waiter`` is open; it is now in use by it."""
        conn = self._expect(waiter, WaiterState.CONNECTING, "connected")
        host = self._hosts[conn.key]
        conn.state = ConnState.IN_USE
        conn.opened_at = now
        conn.requests = 1
        host.connecting -= 1
        host.in_use += 1
        host.opened += 1
        self.connecting -= 1
        self.in_use += 1
        waiter.state = WaiterState.ACTIVE
        self._event("acquired", host, conn, "new", now)
        return []

    def connect_failed(self, waiter: Waiter, now: float, reason: str = "error") -> list[Action]:
        """Opening the connection reserved for ``waiter`` failed or was cancelled."""
        conn = self._expect(waiter, WaiterState.CONNECTING, "connect_failed")
        waiter.state = WaiterState.DONE
        actions: list[Action] = []
        self._close(conn, self._hosts[conn.key], reason, now, actions)
        self._serve_ready(now, actions)
        return actions

    def fleet_wait(self, waiter: Waiter, now: float, full: bool = False) -> list[Action]:
        """``waiter`` holds a reserved slot and must take a fleet-wide lease to open it.

        It moves to FLEET and keeps its slot until :meth:`fleet_granted`,
        :meth:`fleet_failed` or :meth:`cancel`, or until it adopts a connection of its key
        that comes back (``Wake(waiter)``, the connection ``IN_USE``). An idle connection of
        its key that is there already is adopted at once: reusing never needs a lease.

        Args:
            full: the lease source last saw the host's fleet-wide limit full; the wait is
                then reported as ``queued`` with reason ``shared_limit``.

        Returns:
            The actions; ``waiter.state`` is ``ACTIVE`` if it adopted a connection, else
            ``FLEET``.

        Raises:
            PoolMisuse: the waiter does not hold a reserved slot (``CONNECTING``).
        """
        conn = self._expect(waiter, WaiterState.CONNECTING, "fleet_wait")
        host = self._hosts[conn.key]
        waiter.state = WaiterState.FLEET
        host.fleet[waiter.seq] = waiter
        self.fleet_waiting += 1
        actions: list[Action] = []
        if host.idle:
            self._adopt(host, now, actions)
        if full and waiter.state is WaiterState.FLEET:
            self._event("queued", host, None, "shared_limit", now)
        return actions

    def fleet_granted(self, waiter: Waiter, now: float) -> list[Action]:
        """``waiter`` got its fleet-wide lease: it goes on to open its connection
        (``CONNECTING``; then :meth:`connected` or :meth:`connect_failed`)."""
        self._expect(waiter, WaiterState.FLEET, "fleet_granted")
        self._leave_fleet(waiter)
        return []

    def fleet_failed(self, waiter: Waiter, now: float, reason: str = "error") -> list[Action]:
        """``waiter`` got no fleet-wide lease (timed out, the lease source failed, or it was
        cancelled): its reserved slot is given back (``closed`` with ``reason``) and goes to
        the next waiter, as after a failed connect."""
        self._expect(waiter, WaiterState.FLEET, "fleet_failed")
        self._leave_fleet(waiter)
        return self.connect_failed(waiter, now, reason)

    def _leave_fleet(self, waiter: Waiter) -> None:
        """Take a FLEET waiter out of its key's fleet line; it holds its slot (CONNECTING)."""
        del self._hosts[waiter.key].fleet[waiter.seq]
        self.fleet_waiting -= 1
        waiter.state = WaiterState.CONNECTING

    def _adopt(self, host: _Host, now: float, actions: list[Action]) -> None:
        """Serve ``host``'s oldest FLEET waiter with its most recently used idle connection.

        The waiter's reserved slot is given back (``closed`` ``cancelled``) and the
        connection handed over (``acquired`` ``reused``); the freed slot goes to the next
        waiter. Expired idle connections met on the way are closed; if none is left,
        nobody is served.
        """
        mark = len(actions)
        taken = self._take_idle(host, now, actions)
        if taken is not None:
            _, waiter = host.fleet.popitem(last=False)
            self.fleet_waiting -= 1
            reserved = waiter.conn
            assert reserved is not None
            self._hand(waiter, taken, host, now)
            self._close(reserved, host, "cancelled", now, actions)
            actions.append(Wake(waiter))
        if len(actions) > mark:  # a slot was freed
            self._serve_ready(now, actions)

    def _expect(self, waiter: Waiter, state: WaiterState, op: str) -> Conn:
        if waiter.state is not state or waiter.conn is None:
            raise PoolMisuse(
                f"{op}() on a request for {waiter.key} that is {waiter.state.value}, "
                f"not {state.value}"
            )
        return waiter.conn

    def release(
        self,
        waiter: Waiter,
        now: float,
        reason: str = "eof",
        close_reason: str | None = None,
        keepalive_hint_s: float | None = None,
    ) -> list[Action]:
        """``waiter`` is done with its connection.

        Args:
            reason: ``eof``, ``closed`` or ``error`` (the ``released`` event's reason).
            close_reason: ``None`` if the connection is clean and may be reused, else why
                it must be closed (``not_reusable``, ``error``, ``cancelled``,
                ``server_closed``).
            keepalive_hint_s: the server's ``Keep-Alive: timeout=N``, if it sent one.

        Raises:
            PoolMisuse: the waiter holds no connection (released twice, or never served).
        """
        if (
            waiter.state is WaiterState.DONE
            and waiter.conn is not None
            and (
                waiter.conn.state is ConnState.CLOSED
                and waiter.conn.close_reason == "client_closed"
            )
        ):
            waiter.conn = None
            return []  # the pool closed it under us (aclose); nothing to give back
        conn = self._expect(waiter, WaiterState.ACTIVE, "release")
        waiter.state = WaiterState.DONE
        host = self._hosts[conn.key]
        if self.emit is not None:
            self._event("released", host, conn, reason, now)
        actions: list[Action] = []
        limited = self.max_requests is not None or self.max_lifetime is not None
        if close_reason is None and limited:
            close_reason = self._reuse_verdict(conn, now)
        if close_reason is not None:
            self._close(conn, host, close_reason, now, actions)
            self._serve_ready(now, actions)
        else:
            host.in_use -= 1
            self.in_use -= 1
            conn.state = ConnState.IDLE  # in no container until _recycle places it
            self._set_expiry(conn, now, keepalive_hint_s)
            self._recycle(conn, host, now, actions)
        return actions

    def _reuse_verdict(self, conn: Conn, now: float) -> str | None:
        if self.max_requests is not None and conn.requests >= self.max_requests:
            return "max_requests"
        if self.max_lifetime is not None and now - conn.opened_at >= self.max_lifetime:
            return "max_lifetime"
        return None

    def _set_expiry(self, conn: Conn, now: float, hint: float | None) -> None:
        expires, why = None, "expired"
        if self.keepalive_expiry is not None:
            expires = now + self.keepalive_expiry
        if hint is not None and (expires is None or now + hint < expires):
            expires = now + hint
        if self.max_lifetime is not None:
            end = conn.opened_at + self.max_lifetime
            if expires is None or end < expires:
                expires, why = end, "max_lifetime"
        conn.expires_at, conn.expire_reason = expires, why

    def _recycle(self, conn: Conn, host: _Host, now: float, actions: list[Action]) -> None:
        """A clean connection came back: hand it to its key's oldest waiter, or park it."""
        if conn.expires_at is not None and now >= conn.expires_at:
            self._close(conn, host, conn.expire_reason, now, actions)
            self._serve_ready(now, actions)
            return
        if host.limit < host.configured and host.open >= host.limit:  # adaptive cut (I9)
            self._close(conn, host, "limit_lowered", now, actions)
            self._serve_ready(now, actions)
            return
        if host.waiters:
            other = self._passed_over(host)
            if other is None:
                _, waiter = host.waiters.popitem(last=False)
                self.waiting -= 1
                self._hand(waiter, conn, host, now)
                self._mark_ready(host)
                actions.append(Wake(waiter))
                return
            # The other key's waiter has been passed over enough: the slot goes to it.
            self._close(conn, host, "evicted", now, actions)
            self._serve_ready(now, actions)
            return
        conn.state = ConnState.IDLE
        conn.idle_since = now
        host.idle[conn.id] = conn
        self._idle[conn.id] = conn
        self._push_expiry(conn)
        if host.fleet:
            # A FLEET waiter of its key takes it (I5); the slot it held goes to the next
            # waiter, so a key with no connection is served without closing this one.
            self._adopt(host, now, actions)
        if self.waiting and host.idle:
            self._serve_ready(now, actions)  # a global-limit waiter may evict it at once

    def response_seen(
        self, waiter: Waiter, now: float, status: int, retry_after: bool
    ) -> list[Action]:
        """Adaptive limits: the request of ``waiter`` got a response head.

        Args:
            status: its status.
            retry_after: whether it carries a ``Retry-After`` header.

        Returns:
            The actions: surplus idle connections closed after a cut, waiters served after
            a raise. Nothing when adaptive limits are off.
        """
        adaptive = self.adaptive
        host = self._hosts.get(waiter.key)
        actions: list[Action] = []
        if adaptive is None or host is None:
            return actions
        if status in adaptive.decrease_on:
            reason = f"status_{status}"
        elif retry_after and adaptive.retry_after:
            reason = "retry_after"
        else:
            if status >= 500:
                host.successes = 0
            elif host.limit < host.configured:
                host.successes += 1
                if host.successes >= adaptive.increase_after:
                    host.successes = 0
                    self._set_limit(host, host.limit + 1, "recovered", now)
                    self._mark_ready(host)
                    self._serve_ready(now, actions)
            return actions
        host.successes = 0
        if waiter.seq <= host.cut_seq or host.limit == 1:
            return actions  # asked before the last cut, which answered it already
        host.cut_seq = next(self._seqs)
        self._set_limit(host, max(1, host.limit // 2), reason, now)
        while host.idle and host.open > host.limit:  # the surplus idle, least recent first
            _, conn = host.idle.popitem(last=False)
            del self._idle[conn.id]
            self._close(conn, host, "limit_lowered", now, actions)
        if actions:
            self._serve_ready(now, actions)  # the slots freed may serve other keys
        return actions

    def _set_limit(self, host: _Host, limit: int, reason: str, now: float) -> None:
        host.limit = limit
        host.limit_reason = reason
        if self.emit is not None:
            self.emit(
                PoolEvent("limit_changed", host.key, None, reason, now, len(host.waiters), limit)
            )

    def _push_expiry(self, conn: Conn) -> None:
        """Make sure the expiry heap has an entry for ``conn`` at or before its expiry (I7).

        An entry left from an earlier idle spell that is due sooner is kept: when it comes
        up, ``expire``/``next_expiry`` move it to the expiry then in force.
        """
        when = conn.expires_at
        if when is not None and (conn.heap_at is None or conn.heap_at > when):
            conn.heap_at = when
            heapq.heappush(self._expiry, (when, conn.id, conn))

    def _pop_expiry(self) -> tuple[float, Conn] | None:
        """Pop the heap's top entry; None if it was superseded (the connection has a newer).

        An entry that is live gives up its place: ``heap_at`` is cleared, and the caller
        pushes the connection again if it stays idle with a later expiry.
        """
        when, _, conn = heapq.heappop(self._expiry)
        if conn.heap_at != when:
            return None
        conn.heap_at = None
        return when, conn

    def _passed_over(self, host: _Host) -> _Host | None:
        """The key of an older waiter held back only by the global limit, if its turn came.

        Counts one more pass-over for that waiter otherwise.
        """
        if self.open < self.limit:
            return None
        other = self._oldest_ready()
        if other is None or other is host:
            return None
        oldest = next(iter(other.waiters.values()))
        if oldest.seq > next(iter(host.waiters)):
            return None
        if oldest.passovers >= self.max_passovers:
            return other
        oldest.passovers += 1
        return None

    def _serve_ready(self, now: float, actions: list[Action]) -> None:
        """Give free or evictable capacity to waiters, oldest first among keys that may grow.

        Under a full global limit, only keys that I8 allows to evict are served: any key
        once the oldest idle connection is past its grace, else keys with no connection.
        """
        while self.waiting:
            if self.open < self.limit:
                host = self._oldest_ready()
            elif not self._idle:
                return
            elif self._may_evict_any(now):
                host = self._oldest_ready()
            else:
                host = self._oldest_starving()
            if host is None:
                return
            if self.open >= self.limit and not self._evict_for(host, now, actions):
                return
            _, waiter = host.waiters.popitem(last=False)
            self.waiting -= 1
            self._give_slot(waiter, host, now)
            self._mark_ready(host)
            actions.append(Wake(waiter))

    def _may_evict_any(self, now: float) -> bool:
        """Whether the oldest idle connection is past its grace (evictable for any key)."""
        grace = self.evict_grace
        oldest = next(iter(self._idle.values()))
        return grace is not None and now - oldest.idle_since >= grace

    def _close(
        self, conn: Conn, host: _Host, reason: str, now: float, actions: list[Action]
    ) -> None:
        """Forget ``conn`` (already removed from idle containers) and free its slot."""
        if conn.state is ConnState.CONNECTING:
            host.connecting -= 1
            self.connecting -= 1
        elif conn.state is ConnState.IN_USE:
            host.in_use -= 1
            self.in_use -= 1
        conn.state = ConnState.CLOSED
        conn.close_reason = reason
        self.open -= 1
        host.closed += 1
        self._event("closed", host, conn, reason, now)
        actions.append(Close(conn, reason))
        self._mark_ready(host)

    def cancel(self, waiter: Waiter, now: float, reason: str = "cancelled") -> list[Action]:
        """The request behind ``waiter`` was cancelled or timed out before it used its slot.

        A queued waiter leaves the queue (``dequeued``). A reserved slot is given up
        (``closed`` ``cancelled``), also while it waits for a fleet-wide lease. An open
        connection handed to it passes on, unused, to the next waiter of its key or back to
        the idle set. Idempotent.
        """
        actions: list[Action] = []
        if waiter.state is WaiterState.QUEUED:
            host = self._hosts[waiter.key]
            del host.waiters[waiter.seq]
            self.waiting -= 1
            waiter.state = WaiterState.DONE
            self._event("dequeued", host, None, reason, now)
            self._mark_ready(host)
        elif waiter.state is WaiterState.CONNECTING:
            return self.connect_failed(waiter, now, "cancelled")
        elif waiter.state is WaiterState.FLEET:
            return self.fleet_failed(waiter, now, "cancelled")
        elif waiter.state is WaiterState.ACTIVE:
            assert waiter.conn is not None
            waiter.conn.requests -= 1
            return self.release(waiter, now, "closed", None)
        return actions

    def server_closed(self, conn: Conn, now: float) -> list[Action]:
        """The server closed ``conn``. Only an idle connection is closed here; one in use is
        released by its request with the error it saw."""
        actions: list[Action] = []
        if conn.state is ConnState.IDLE:
            host = self._hosts[conn.key]
            del host.idle[conn.id]
            del self._idle[conn.id]
            self._close(conn, host, "server_closed", now, actions)
            self._serve_ready(now, actions)
        return actions

    def expire(self, now: float) -> list[Action]:
        """Close idle connections whose keep-alive time or lifetime has run out."""
        actions: list[Action] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            entry = self._pop_expiry()
            if entry is None or entry[1].state is not ConnState.IDLE:
                continue
            conn = entry[1]
            if conn.expires_at is None or conn.expires_at > now:  # idle again since: move it
                self._push_expiry(conn)
                continue
            host = self._hosts[conn.key]
            del host.idle[conn.id]
            del self._idle[conn.id]
            self._close(conn, host, conn.expire_reason, now, actions)
        if actions or self.waiting:
            self._serve_ready(now, actions)  # also whoever may evict now that time passed
        return actions

    def next_expiry(self) -> float | None:
        """When :meth:`expire` has work next: an idle connection expires, or one becomes
        evictable for a waiting request (:meth:`evict_deadline`). ``None``: nothing due."""
        heap = self._expiry
        evict_at = self.evict_deadline()
        while heap:
            when, _, conn = heap[0]
            if conn.heap_at == when and conn.state is ConnState.IDLE:
                if conn.expires_at == when:
                    return when if evict_at is None else min(when, evict_at)
                self._pop_expiry()  # an early entry: move it to the expiry in force
                self._push_expiry(conn)
                continue
            self._pop_expiry()  # superseded, or its connection is no longer idle: dropped
        return evict_at

    def close_all(self, now: float) -> tuple[list[Waiter], list[Action]]:
        """Close every connection (``client_closed``) and drop every waiter.

        Returns:
            The waiters that were queued (the I/O layer fails them) and the close actions.
            Connections in use are closed too; their later ``release()`` is a no-op.
        """
        actions: list[Action] = []
        dropped: list[Waiter] = []
        for host in self._hosts.values():
            while host.waiters:
                _, waiter = host.waiters.popitem(last=False)
                self.waiting -= 1
                waiter.state = WaiterState.DONE
                dropped.append(waiter)
                self._event("dequeued", host, None, "cancelled", now)
            for conn in list(host.idle.values()):
                del host.idle[conn.id]
                del self._idle[conn.id]
                self._close(conn, host, "client_closed", now, actions)
        self._ready.clear()
        self._starving.clear()
        for _, _, conn in self._expiry:
            conn.heap_at = None  # in-use connections keep no claim on the emptied heap (I7)
        self._expiry.clear()
        return dropped, actions

    def close_in_use(self, waiter: Waiter, now: float) -> list[Action]:
        """Close the connection a request holds or is opening (or waits for a fleet-wide
        lease to open) because the client closed."""
        conn = waiter.conn
        if conn is None or conn.state not in (ConnState.IN_USE, ConnState.CONNECTING):
            return []
        if waiter.state is WaiterState.FLEET:
            self._leave_fleet(waiter)
        actions: list[Action] = []
        self._close(conn, self._hosts[conn.key], "client_closed", now, actions)
        waiter.state = WaiterState.DONE
        return actions

    # ------------------------------------------------------------- inspection

    def hosts(self) -> Mapping[PoolKey, _Host]:
        """Per-key records (read-only use)."""
        return self._hosts

    @property
    def idle(self) -> int:
        return len(self._idle)

    def host_available(self, host: _Host, now: float | None = None) -> int:
        """Per-key headroom, also bounded by global headroom plus the idle connections of
        other keys that could be evicted for it now (all of them for a key with no
        connection; else those idle for ``evict_grace`` at ``now``, or all without ``now``)."""
        per_key = host.limit - host.open
        evictable = len(self._idle) - len(host.idle)
        if host.open and now is not None:
            evictable = self._evictable_count(host, now)
        return max(0, min(per_key, self.limit - self.open + evictable))

    def _evictable_count(self, host: _Host, now: float) -> int:
        grace = self.evict_grace
        if grace is None:
            return 0
        count = 0
        for conn in self._idle.values():  # oldest idle first: stop at the first too young
            if now - conn.idle_since < grace:
                break
            count += conn.key != host.key
        return count

    def _check_invariants(self, now: float | None = None) -> None:
        """Assert I1-I8 (the time-dependent half of I8 only if ``now`` is given), naming the
        offending key and counts."""
        tot = {"connecting": 0, "in_use": 0, "idle": 0, "waiting": 0, "fleet": 0}
        for key, host in self._hosts.items():
            assert host.open <= host.configured, f"I2: {key} open={host.open} > {host.configured}"
            assert 1 <= host.limit <= host.configured, f"I9: {key} limit {host.limit}"
            assert not (host.idle and host.open > host.limit), (
                f"I9: {key} has {len(host.idle)} idle over its limit {host.limit}"
            )
            tot["connecting"] += host.connecting
            tot["in_use"] += host.in_use
            tot["idle"] += len(host.idle)
            tot["waiting"] += len(host.waiters)
            for conn in host.idle.values():
                assert conn.state is ConnState.IDLE, f"I4: {conn!r} in idle of {key}"
                assert self._idle.get(conn.id) is conn, f"I4: {conn!r} missing from idle"
                self._check_expiry_entry(conn)
            for waiter in host.waiters.values():
                assert waiter.state is WaiterState.QUEUED, f"I4: {waiter!r} queued in {key}"
            self._check_fleet(host)
            tot["fleet"] += len(host.fleet)
            if host.waiters:
                assert not host.idle, f"I5: {key} has {len(host.waiters)} waiters and idle"
                if host.open < host.limit:
                    assert self.open >= self.limit, f"I5: {key} waits with headroom"
                    self._check_no_eviction_due(host, now)
                    seq = next(iter(host.waiters))
                    assert (seq, key) in self._ready, f"I3: {key} head {seq} not on ready heap"
                    if host.open == 0:
                        assert (seq, key) in self._starving, f"I8: {key} not on starving heap"
        assert len(self._idle) == tot["idle"], f"I6: idle {len(self._idle)} != {tot['idle']}"
        assert self.connecting == tot["connecting"], f"I6: connecting {self.connecting} != {tot}"
        assert self.in_use == tot["in_use"], f"I6: in_use {self.in_use} != {tot}"
        assert self.waiting == tot["waiting"], f"I6: waiting {self.waiting} != {tot}"
        assert self.fleet_waiting == tot["fleet"], f"I6: fleet {self.fleet_waiting} != {tot}"
        open_ = tot["connecting"] + tot["in_use"] + tot["idle"]
        assert self.open == open_, f"I6: open {self.open} != recount {open_}"
        assert self.open <= self.limit, f"I1: open {self.open} > limit {self.limit}"

    def _check_fleet(self, host: _Host) -> None:
        """Assert I4 and I5 for the FLEET waiters of ``host``."""
        key = host.key
        for seq, waiter in host.fleet.items():
            conn = waiter.conn
            assert waiter.state is WaiterState.FLEET, f"I4: {waiter!r} in the fleet line of {key}"
            assert waiter.seq == seq and waiter.key == key, f"I4: {waiter!r} filed under {key}"
            assert seq not in host.waiters, f"I4: {waiter!r} both queued and in the fleet line"
            assert conn is not None and conn.state is ConnState.CONNECTING, (
                f"I4: FLEET {waiter!r} holds {conn!r}, not a reserved slot"
            )
        assert len(host.fleet) <= host.connecting, (
            f"I6: {key} has {len(host.fleet)} FLEET waiters but {host.connecting} connecting"
        )
        assert not (host.fleet and host.idle), (
            f"I5: {key} has {len(host.fleet)} FLEET waiters and {len(host.idle)} idle"
        )

    def _check_no_eviction_due(self, host: _Host, now: float | None) -> None:
        """Assert that no idle connection may be evicted for waiting ``host`` (I5, I8)."""
        key, idle = host.key, len(self._idle)
        if host.open == 0:
            assert idle == 0, f"I8: {key} has no connection and waits while {idle} are idle"
        elif now is not None and idle and self.evict_grace is not None:
            oldest = next(iter(self._idle.values()))
            assert now - oldest.idle_since < self.evict_grace, (
                f"I8: {key} waits while {oldest!r} has been idle past the grace"
            )

    def _check_expiry_entry(self, conn: Conn) -> None:
        """Assert I7 for one idle connection."""
        if conn.expires_at is None:
            return
        at = conn.heap_at
        assert at is not None and at <= conn.expires_at, f"I7: {conn!r} entry at {at}"
        assert (at, conn.id, conn) in self._expiry, f"I7: {conn!r} entry {at} not in heap"
