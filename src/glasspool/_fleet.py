"""Fleet-wide per-host connection limits, shared by many workers through Redis.

A per-host limit in one process becomes ``limit x workers`` once a crawler runs many
processes. :class:`RedisLimits` keeps one budget per host name in Redis instead: before a
pool opens a connection it takes a *lease* on a shared slot, and it gives the lease back
when the connection closes. Reusing an idle connection never touches Redis.

Design (``docs/fleet.md`` has the long version):

* Per host, Redis holds a sorted set of leases scored by expiry time, a FIFO queue of
  tickets (a sorted set scored by arrival) and the tickets' expiry times. All keys of one
  host share a ``{host}`` hash tag. Time is always Redis' own ``TIME``, so worker clocks
  never matter.
* Acquire is one Lua script: purge expired leases and tickets, join the queue if not in it
  yet, and take a slot only if this ticket's rank in the queue is below the free capacity.
  So a waiter never jumps the queue, and a released slot goes to the oldest ticket.
* Release is one Lua script: remove the lease (and any ticket), then ``PUBLISH`` the
  ticket(s) the free capacity now admits, each on its owner's own channel, so exactly the
  waiter(s) next in line retry. Waiters also re-check every ``lease_ttl / 4`` seconds, so
  a lost message delays a waiter, never hangs it.
* One background task per :class:`RedisLimits` renews all live leases every
  ``lease_ttl / 3`` seconds in one script call. A worker that dies (even by SIGKILL)
  stops renewing, and its slots free themselves within ``lease_ttl``.

Invariants (checked by tests/test_fleet.py against a real redis-server):

* F1: for every host, the leases that have not expired number at most the limit that
  the granting worker passed, at the moment of every grant.
* F2: a ticket is granted only while fewer tickets are ahead of it than slots are free.
* F3: a waiter that times out or is cancelled leaves neither a ticket nor a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._exceptions import ClientClosed, PoolTimeout, SharedLimitsUnavailable
from ._pool.asyncio import Lease, SharedLimits  # Seam 4 protocols, defined by the pool
from ._pool.key import PoolKey
from ._redact import redact_url

if TYPE_CHECKING:  # pragma: no cover
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

__all__ = [
    "Lease",
    "RedisLease",
    "RedisLimits",
    "SharedLimits",
    "SharedLimitsUnavailable",
]

logger = logging.getLogger("glasspool.fleet")

OnUnavailable = Literal["fail", "local"]

_KEY_GRACE_MS = 1000  # a Redis key outlives its latest member's expiry by this much
_READ_S = 1.0  # longest single pub/sub read; bounds how late the reader notices close()
_RECONNECT_S = 0.25  # pause between pub/sub reconnect attempts while Redis is down
_RETRY_S = 0.25  # renewal retry interval after a failed renewal (if below lease_ttl / 3)
_CLOSE_WAIT_S = 5.0  # how long aclose() waits for acquirers to leave before closing Redis


class _RedisUnreachable(SharedLimitsUnavailable):
    """A connectivity failure (refused, reset, timed out), as opposed to a rejected script."""


# -- Lua scripts --------------------------------------------------------------------------
# Every script reads the clock from Redis (TIME), in milliseconds, so worker clocks never
# matter. Scores of the lease and ticket sets are expiry times; scores of the queue are
# arrival numbers. `keep_until` lets a key expire once its newest member has. `notify`
# tells the owner of each ticket that the free capacity now admits (the tickets at the
# head of the queue) to retry: it publishes "<ticket> <in use>" on the owner's own channel
# "<namespace>:wake:<worker id>" (a ticket is "<worker id>:<n>"). Nobody else wakes.

_PRELUDE = f"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function keep_until(key, source)
  local top = redis.call('ZRANGE', source, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', key, math.floor(tonumber(top[2])) + {_KEY_GRACE_MS})
  end
end
local function notify(queue, wake_prefix, in_use, limit)
  if in_use >= limit then return end
  local heads = redis.call('ZRANGE', queue, 0, limit - in_use - 1)
  for i = 1, #heads do
    local owner = string.match(heads[i], '^(.+):%d+$')
    if owner then redis.call('PUBLISH', wake_prefix .. owner, heads[i] .. ' ' .. in_use) end
  end
end
"""

# KEYS: leases, queue, tickets. ARGV: id, limit, ttl_ms, wake_prefix.
# Returns {granted, in_use, rank, waiting}.
_ACQUIRE_LUA = (
    _PRELUDE
    + """
local leases, queue, tickets = KEYS[1], KEYS[2], KEYS[3]
local id, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local purged = redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local stale = redis.call('ZRANGEBYSCORE', tickets, '-inf', now)
for i = 1, #stale do
  redis.call('ZREM', queue, stale[i])
  redis.call('ZREM', tickets, stale[i])
end
local rank = redis.call('ZRANK', queue, id)
if not rank then
  local last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')
  local seq = 1
  if last[2] then seq = tonumber(last[2]) + 1 end
  redis.call('ZADD', queue, seq, id)
  rank = redis.call('ZRANK', queue, id)
end
local in_use = redis.call('ZCARD', leases)
local granted = 0
if rank < limit - in_use then
  redis.call('ZREM', queue, id)
  redis.call('ZREM', tickets, id)
  redis.call('ZADD', leases, now + ttl, id)
  in_use = in_use + 1
  granted = 1
else
  redis.call('ZADD', tickets, now + ttl, id)
end
if purged + #stale > 0 then notify(queue, ARGV[4], in_use, limit) end
keep_until(leases, leases)
keep_until(queue, tickets)
keep_until(tickets, tickets)
return {granted, in_use, rank, redis.call('ZCARD', queue)}
"""
)

# KEYS: leases, queue, tickets. ARGV: id, wake_prefix, limit. Returns {freed, in_use}.
# Removes a lease, or a waiter's ticket (and a lease granted to it at the same instant).
_RELEASE_LUA = (
    _PRELUDE
    + """
local freed = redis.call('ZREM', KEYS[1], ARGV[1])
local unqueued = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local in_use = redis.call('ZCARD', KEYS[1])
if freed + unqueued > 0 then notify(KEYS[2], ARGV[2], in_use, tonumber(ARGV[3])) end
return {freed, in_use}
"""
)

# KEYS: leases_1, queue_1, leases_2, queue_2, ... ARGV: ttl_ms, wake_prefix, then per host:
# n, limit, n lease ids. Upserts every lease (a lease that had expired and was purged comes
# back, since its connection is still open). Returns per host: n re-added flags, in_use,
# queue length.
_RENEW_LUA = (
    _PRELUDE
    + """
local now = now_ms()
local ttl, wake_prefix = tonumber(ARGV[1]), ARGV[2]
local out = {}
local pos = 3
for k = 1, #KEYS, 2 do
  local n, limit = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  local purged = redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  for i = 1, n do
    out[#out + 1] = redis.call('ZADD', KEYS[k], now + ttl, ARGV[pos])
    pos = pos + 1
  end
  local in_use = redis.call('ZCARD', KEYS[k])
  out[#out + 1] = in_use
  out[#out + 1] = redis.call('ZCARD', KEYS[k + 1])
  if purged > 0 then notify(KEYS[k + 1], wake_prefix, in_use, limit) end
  keep_until(KEYS[k], KEYS[k])
end
return out
"""
)

# KEYS: leases_1, queue_1, ... ARGV: wake_prefix, then per host: n, limit, n lease ids.
# Returns 1.
_RELEASE_ALL_LUA = (
    _PRELUDE
    + """
local wake_prefix = ARGV[1]
local pos = 2
for k = 1, #KEYS, 2 do
  local n, limit = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  local freed = 0
  for i = 1, n do
    freed = freed + redis.call('ZREM', KEYS[k], ARGV[pos])
    pos = pos + 1
  end
  if freed > 0 then notify(KEYS[k + 1], wake_prefix, redis.call('ZCARD', KEYS[k]), limit) end
end
return 1
"""
)


# -- small values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HostKeys:
    """The Redis keys of one host; ``{host}`` is the Redis Cluster hash tag."""

    host: str
    leases: str
    queue: str
    tickets: str

    @classmethod
    def build(cls, namespace: str, host: str) -> _HostKeys:
        """Name the keys of ``host`` under ``namespace``."""
        prefix = f"{namespace}:{{{host}}}"
        return cls(host, f"{prefix}:leases", f"{prefix}:queue", f"{prefix}:tickets")


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one run of the acquire script saw."""

    granted: bool
    in_use: int
    rank: int
    waiting: int


@dataclass(frozen=True, slots=True)
class _Scripts:
    """The registered Lua scripts (EVALSHA, falling back to loading them on NOSCRIPT)."""

    acquire: AsyncScript
    release: AsyncScript
    renew: AsyncScript
    release_all: AsyncScript


@dataclass(frozen=True, slots=True)
class _RedisApi:
    """The parts of redis-py this module uses, imported only when RedisLimits is built."""

    make_client: Callable[[str, float], Redis]
    unreachable: tuple[type[BaseException], ...]
    redis_error: type[BaseException]


def _import_redis() -> _RedisApi:
    """Import redis-py's asyncio client, which is the optional ``glasspool[redis]`` extra.

    Returns:
        the constructors and exception classes RedisLimits needs.

    Raises:
        ImportError: redis-py is not installed; the message names the extra.
    """
    try:
        import redis.asyncio as aioredis
        from redis import exceptions
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        raise ImportError(
            "glasspool.RedisLimits needs redis-py (redis.asyncio), which is not installed; "
            "install the extra: pip install 'glasspool[redis]'"
        ) from exc

    def make_client(url: str, socket_timeout: float) -> Redis:
        # One immediate retry on a fresh connection: enough to get past a connection that
        # died with a restarted server, without hiding an outage behind back-off.
        return aioredis.Redis.from_url(
            url,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1),
        )

    unreachable = (exceptions.ConnectionError, exceptions.TimeoutError, OSError)
    return _RedisApi(make_client, unreachable, exceptions.RedisError)


def _normalise_host(name: str) -> str:
    """The form a host name is compared and stored in: lower case, no brackets, no final dot.

    >>> _normalise_host("API.Example.org.")
    'api.example.org'
    >>> _normalise_host("[::1]")
    '::1'
    """
    return name.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()


def _text(value: object) -> str:
    """Decode a pub/sub field that may be bytes (decode_responses=False) or str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _check_limit(what: str, value: object) -> int:
    """Validate a limit: an int of at least 1 (bools refused). Names ``what`` on error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= 1, not {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


def _check_overrides(overrides: Mapping[str, int] | None) -> dict[str, int]:
    """Validate per-host overrides and key them by normalised host name."""
    result: dict[str, int] = {}
    for host, limit in (overrides or {}).items():
        if not isinstance(host, str) or not _normalise_host(host):
            raise ValueError(f"overrides keys must be host names, got {host!r}")
        result[_normalise_host(host)] = _check_limit(f"overrides[{host!r}]", limit)
    return result


def _check_config(namespace: str, lease_ttl: float, on_unavailable: str) -> None:
    """Validate the scalar settings of RedisLimits, naming the bad one."""
    if not isinstance(namespace, str) or not namespace or "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace must be a non-empty string without braces, got {namespace!r}")
    if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float):
        raise TypeError(f"lease_ttl must be a number of seconds, not {lease_ttl!r}")
    if not math.isfinite(lease_ttl) or lease_ttl < 0.1:
        raise ValueError(f"lease_ttl must be a finite number of seconds >= 0.1, got {lease_ttl!r}")
    if on_unavailable not in ("fail", "local"):
        raise ValueError(f"on_unavailable must be 'fail' or 'local', got {on_unavailable!r}")


# -- the lease ----------------------------------------------------------------------------


class RedisLease:
    """One fleet-wide slot for one host, renewed in the background until released.

    Attributes:
        key: the pool key the slot was taken for (the limit is per ``key.host``).
        host: the normalised host name the slot counts against.
        lease_id: the member of the host's lease set in Redis; names the worker and pid.
        registered: False while the lease exists only locally (taken under
            ``on_unavailable="local"`` while Redis was down); the renewer registers it in
            Redis once Redis answers again.
    """

    __slots__ = ("_owner", "_released", "host", "key", "lease_id", "registered")

    def __init__(
        self, owner: RedisLimits, key: PoolKey, host: str, lease_id: str, *, registered: bool
    ) -> None:
        self._owner = owner
        self._released = False
        self.key = key
        self.host = host
        self.lease_id = lease_id
        self.registered = registered

    @property
    def released(self) -> bool:
        """Whether :meth:`release` has been called."""
        return self._released

    async def release(self) -> None:
        """Give the slot back and wake the next waiter of the host anywhere in the fleet.

        Idempotent: only the first call does anything. The removal from Redis runs in a
        task of its own, so cancelling the caller does not leave the slot taken. If Redis
        is unreachable the lease is dropped locally and expires in Redis within
        ``lease_ttl``; no error is raised.
        """
        if self._released:
            return
        self._released = True
        await self._owner._release(self)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        local = "" if self.registered else " local-only"
        return f"<RedisLease {self.lease_id} host={self.host!r} {state}{local}>"


# -- pub/sub wake-ups ---------------------------------------------------------------------


class _Waker:
    """Wakes the local task whose ticket a notice names; one pub/sub channel per worker.

    The scripts publish ``"<ticket> <in use>"`` on ``<namespace>:wake:<worker id>`` when a
    ticket of this worker reaches the head of its host's queue with a slot free, so a
    notice costs one delivery, to its owner only. The channel is subscribed the first time
    a task here has to wait and stays subscribed until :meth:`aclose` (redis-py
    resubscribes after a reconnect). Waiters must not rely on a notice arriving (one
    published while the subscription was down is lost), so they re-check on a timer too.
    """

    def __init__(
        self,
        pubsub: PubSub,
        channel: str,
        on_notice: Callable[[str, int], None],
        confirm_s: float,
    ) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._on_notice = on_notice  # (host, in use) from every notice
        self._confirm_s = confirm_s
        self._waiters: dict[str, tuple[str, asyncio.Event]] = {}  # ticket -> (host, event)
        self._confirmed = asyncio.Event()  # set once Redis confirmed the SUBSCRIBE
        self._reader: asyncio.Task[None] | None = None
        self._subscribing: asyncio.Task[None] | None = None
        self._closed = False

    def register(self, ticket: str, host: str) -> asyncio.Event:
        """Register a waiting ticket; its event is set when a notice names it."""
        event = asyncio.Event()
        self._waiters[ticket] = (host, event)
        return event

    def unregister(self, ticket: str) -> None:
        """Forget a ticket (granted, timed out or cancelled)."""
        self._waiters.pop(ticket, None)

    def is_listening(self) -> bool:
        """Whether Redis has confirmed the subscription (and it has not been lost since)."""
        return self._confirmed.is_set()

    async def ensure(self) -> None:
        """Subscribe unless Redis already confirmed it; wait at most ``confirm_s`` for that.

        A failure is left to the waiters' timers (the next ``ensure`` tries again).
        """
        if self._confirmed.is_set() or self._closed:
            return
        subscribing = self._subscribing
        if subscribing is None or subscribing.done():
            subscribing = asyncio.create_task(self._subscribe(), name="glasspool-fleet-subscribe")
            self._subscribing = subscribing
        # The SUBSCRIBE runs in a task of its own: it serves every waiter of this worker,
        # and redis-py (8.1) can swallow a cancellation that arrives during the command
        # (subscribe() then returns normally), which left a cancelled acquire() waiting
        # on. Shielded, a cancelled waiter stops here and the command finishes cleanly.
        try:
            await asyncio.shield(subscribing)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this waiter was cancelled
            return  # aclose() stopped the subscription; the waiter finds the limiter closed
        try:
            async with asyncio.timeout(self._confirm_s):
                await self._confirmed.wait()
        except TimeoutError:
            pass

    async def _subscribe(self) -> None:
        try:
            await self._pubsub.subscribe(self._channel)
        except Exception as exc:  # the waiter's timer covers a failed subscription
            logger.debug("SUBSCRIBE %s failed: %r", self._channel, exc)
            return
        if (self._reader is None or self._reader.done()) and not self._closed:
            self._reader = asyncio.create_task(self._read_loop(), name="glasspool-fleet-pubsub")

    def wake_all(self) -> None:
        """Set every waiter's event (on close, and when the subscription is lost)."""
        for _, event in self._waiters.values():
            event.set()

    async def _read_loop(self) -> None:
        """Read notices until closed; reconnect (redis-py resubscribes) after a failure."""
        while not self._closed:
            try:
                message = await self._pubsub.get_message(timeout=_READ_S)
            except Exception as exc:  # any failure: note it, back off, read again
                logger.debug("pub/sub read failed: %r", exc)
                self._confirmed.clear()
                self.wake_all()
                await asyncio.sleep(_RECONNECT_S)  # back-off between reconnect attempts
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        """Act on one pub/sub message: a notice, or a subscribe confirmation."""
        kind = _text(message.get("type"))
        if kind == "subscribe":
            self._confirmed.set()
        elif kind == "message":
            ticket, _, in_use = _text(message.get("data")).partition(" ")
            waiter = self._waiters.get(ticket)
            if waiter is not None:
                waiter[1].set()
                if in_use.isdigit():
                    self._on_notice(waiter[0], int(in_use))

    async def aclose(self) -> None:
        """Stop the reader and close the subscriber connection. Idempotent."""
        self._closed = True
        self.wake_all()
        for task in (self._subscribing, self._reader):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in newer redis-py
        except Exception as exc:  # closing must finish even if the socket is broken
            logger.debug("closing the pub/sub connection failed: %r", exc)


# -- the limiter --------------------------------------------------------------------------


class RedisLimits:
    """Per-host connection limits shared by every worker that points at the same Redis.

    Think of one bowl of tokens per host name, kept in Redis: a worker takes a token
    before it opens a connection to the host and puts it back when the connection closes.
    Tokens taken by a worker that dies flow back on their own within ``lease_ttl``.
    Workers that wait for a token are served first come, first served, fleet-wide.

    The limit counts per host *name*: ``http://h:80`` and ``https://h:443`` share one
    budget. Every worker should pass the same limits; each grant checks the limit of the
    worker asking.

    Args:
        url: the Redis URL (``redis://``, ``rediss://`` or ``unix://``). Messages, the
            repr and :attr:`url` show it with the password replaced by ``***``, whether
            it was given as userinfo (``user:pw@``, ``:pw@``) or as a ``password`` or
            ``ssl_password`` query argument.
        namespace: prefix of every Redis key and channel; workers that share limits must
            use the same one. No braces.
        limit_per_host: slots per host across the whole fleet (>= 1).
        overrides: per-host limits by host name, e.g. ``{"api.example.org": 2}``.
        lease_ttl: seconds a lease lives without renewal (>= 0.1). Leases are renewed every
            ``lease_ttl / 3``; a dead worker's slots come back within ``lease_ttl``; a
            waiter re-checks at least every ``lease_ttl / 4``.
        on_unavailable: what ``acquire()`` does when Redis is lost mid-run: ``"fail"``
            raises :class:`SharedLimitsUnavailable`; ``"local"`` grants a local-only
            lease (only the pool's local limits apply) and logs one warning per outage.
            Redis unreachable at first use raises under both.
        client: a ``redis.asyncio.Redis`` to use instead of building one from ``url``; it
            is not closed by :meth:`aclose`.

    Raises:
        ImportError: redis-py is not installed (``pip install 'glasspool[redis]'``).
        ValueError, TypeError: a setting is out of range; the message names it.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "glasspool",
        limit_per_host: int,
        overrides: Mapping[str, int] | None = None,
        lease_ttl: float = 10.0,
        on_unavailable: OnUnavailable = "fail",
        client: Redis | None = None,
    ) -> None:
        api = _import_redis()
        _check_config(namespace, lease_ttl, on_unavailable)
        self._limit = _check_limit("limit_per_host", limit_per_host)
        self._overrides = _check_overrides(overrides)
        self._api = api
        self._url = redact_url(url)
        self._namespace = namespace
        self._ttl_s = float(lease_ttl)
        self._ttl_ms = max(1, round(lease_ttl * 1000))
        self._poll_s = self._ttl_s / 4
        self._policy: OnUnavailable = on_unavailable
        self._owns_client = client is None
        self._redis: Redis = client or api.make_client(url, min(5.0, max(1.0, lease_ttl / 3)))
        register = self._redis.register_script
        self._scripts = _Scripts(
            register(_ACQUIRE_LUA),
            register(_RELEASE_LUA),
            register(_RENEW_LUA),
            register(_RELEASE_ALL_LUA),
        )
        machine = "_".join(socket.gethostname().split()) or "host"  # no spaces: notices split
        self._worker_id = f"{machine}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake_prefix = f"{namespace}:wake:"
        self._waker = _Waker(
            self._redis.pubsub(),
            self._wake_prefix + self._worker_id,
            self._on_notice,
            min(self._poll_s, 1.0),
        )
        self._ids = itertools.count(1)
        self._init_state()

    def _init_state(self) -> None:
        """Set up the mutable bookkeeping (all of it lives on the instance)."""
        self._live: dict[str, dict[str, RedisLease]] = {}  # host -> lease id -> live lease
        self._fleet_seen: dict[str, int] = {}  # host -> in use fleet-wide, as last seen
        self._fleet_waiting: dict[str, int] = {}  # host -> queued fleet-wide, as last seen
        self._keys: dict[str, _HostKeys] = {}  # host -> its Redis keys
        self._renewal: tuple[frozenset[str], asyncio.Future[None]] | None = None  # in flight
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()  # releases and abandoned tickets
        self._acquiring = 0  # calls inside acquire(), which aclose() lets finish first
        self._no_acquirers = asyncio.Event()
        self._no_acquirers.set()
        self._reached = False  # Redis answered at least once
        self._outage = False  # Redis is currently unreachable (warning already logged)
        self._closed = False

    # -- public API -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL, password replaced by ``***``."""
        return self._url

    @property
    def namespace(self) -> str:
        """The prefix of every Redis key and channel."""
        return self._namespace

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lives in Redis without renewal."""
        return self._ttl_s

    def limit_for(self, key: PoolKey) -> int | None:
        """The fleet-wide limit for ``key``'s host: its override, else ``limit_per_host``.

        >>> from glasspool._pool.key import PoolKey
        >>> limits = RedisLimits("redis://127.0.0.1:1", limit_per_host=4, overrides={"A.org": 2})
        >>> limits.limit_for(PoolKey("https", "a.org", 443))
        2
        >>> limits.limit_for(PoolKey("http", "b.org", 80))
        4
        """
        return self._overrides.get(_normalise_host(key.host), self._limit)

    def snapshot(self, key: PoolKey) -> tuple[int | None, int]:
        """Return (fleet-wide slots in use as last seen, this worker's live leases).

        No Redis round trip: the first value is what the last acquire, release, renewal
        or wake-up notice for the host reported, or ``None`` if none has yet.
        """
        host = _normalise_host(key.host)
        return self._fleet_seen.get(host), len(self._live.get(host, ()))

    def waiting(self, key: PoolKey) -> int | None:
        """Return how many requests wait for ``key``'s host fleet-wide, as last seen.

        No Redis round trip: refreshed by this worker's acquire attempts and, for hosts
        where it holds leases, by every renewal (``lease_ttl / 3``). ``None`` if never
        seen. A pool can use it to close idle connections that others are waiting for.
        """
        return self._fleet_waiting.get(_normalise_host(key.host))

    async def acquire(self, key: PoolKey, timeout: float | None) -> RedisLease:
        """Wait, first come first served fleet-wide, for a slot of ``key``'s host.

        Blocks until a slot is free and every earlier ticket for the host (from any
        worker) has been served. Makes at least one attempt even when ``timeout`` is 0.
        The wait may overrun ``timeout`` by one Redis round trip.

        Args:
            key: the pool key about to get a new connection; the limit is per host name.
            timeout: seconds to wait, or ``None`` to wait as long as it takes.

        Returns:
            the lease; call ``release()`` when the connection closes.

        Raises:
            PoolTimeout: no slot within ``timeout``; names the host, the shared limit, the
                fleet-wide use and queue. The ticket is removed.
            SharedLimitsUnavailable: Redis unreachable at first use, lost under
                ``on_unavailable="fail"``, or it rejected the script.
            ClientClosed: :meth:`aclose` was called before or during the wait.

        Cancellation removes this request's ticket (and a slot granted in the same
        instant) in a task of its own, so nothing is left behind in Redis.
        """
        self._check_open()
        host = _normalise_host(key.host)
        limit = self._limit_for_host(host)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        self._start_renewer()
        self._acquiring += 1
        self._no_acquirers.clear()
        try:
            return await self._wait_for_slot(key, host, limit, deadline)
        except _RedisUnreachable:
            if self._policy == "local" and self._reached:  # the outage is logged by _run
                return self._adopt(key, host, self._new_id(), registered=False)
            raise
        finally:
            self._acquiring -= 1
            if not self._acquiring:
                self._no_acquirers.set()

    async def ping(self) -> None:
        """Check that Redis answers; call at start-up to fail fast.

        Raises:
            SharedLimitsUnavailable: Redis is unreachable or refused; names the URL.
            ClientClosed: after :meth:`aclose`.
        """
        self._check_open()
        try:
            await self._redis.ping()
        except self._api.unreachable as exc:
            raise self._unreachable_error(exc) from exc
        except self._api.redis_error as exc:
            raise SharedLimitsUnavailable(
                f"Redis at {self._url} refused PING: {exc}", url=self._url
            ) from exc
        except TypeError as exc:
            raise self._unusable_url(exc) from exc
        self._note_reachable()

    async def aclose(self) -> None:
        """Release every lease in one script call, stop the renewer, close connections.

        Idempotent. Tasks waiting in :meth:`acquire` raise ``ClientClosed``. Closing
        finishes even if Redis is unreachable: the leases then expire within
        ``lease_ttl``. The Redis client is closed only if this object built it.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._waker.wake_all()
        try:
            await self._wait_for_acquirers()
            if self._renewer is not None:
                await self._renewer
            await self._release_all()
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            await self._waker.aclose()
            if self._owns_client:
                await self._redis.aclose()

    async def __aenter__(self) -> RedisLimits:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        leases = sum(len(v) for v in self._live.values())
        state = "closed" if self._closed else ("unreachable" if self._outage else "open")
        return (
            f"<RedisLimits {self._url} namespace={self._namespace!r} "
            f"limit_per_host={self._limit} leases={leases} hosts={len(self._live)} {state}>"
        )

    # -- acquire internals ----------------------------------------------------------------

    async def _wait_for_slot(
        self, key: PoolKey, host: str, limit: int, deadline: float | None
    ) -> RedisLease:
        """Loop: attempt, then wait for a notice naming the ticket or the poll timer."""
        keys = self._keys_for(host)
        ticket = self._new_id()
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Registered before the first attempt: if the channel is already subscribed, no
        # notice for this ticket can be missed, so a refusal needs no second attempt.
        event = self._waker.register(ticket, host)
        listening = self._waker.is_listening()
        in_flight: asyncio.Task[_Attempt] | None = None
        try:
            while True:
                event.clear()  # before the attempt: a notice during it is kept
                # Each attempt runs in a task of its own, shielded: a cancellation must not
                # land inside redis-py, which may swallow it mid-command (see ensure()).
                in_flight = asyncio.create_task(self._attempt(keys, ticket, limit))
                attempt = await asyncio.shield(in_flight)
                if attempt.granted:
                    return self._adopt(key, host, ticket, registered=True)
                self._check_open()
                remaining = math.inf if deadline is None else deadline - loop.time()
                if remaining <= 0:
                    waited = loop.time() - started
                    raise PoolTimeout(self._timeout_message(key, host, limit, waited, attempt))
                if not listening:  # subscribe, then re-check at once
                    await self._waker.ensure()
                    listening = True
                    continue
                await _wait_event(event, min(self._poll_s, remaining))
                self._check_open()
                listening = self._waker.is_listening()
        except _RedisUnreachable:
            self._spawn(self._release_in_redis(keys, ticket, limit))  # best effort
            raise
        except BaseException:  # clean-up after an error or cancellation, shielded
            await asyncio.shield(self._spawn(self._abandon(keys, ticket, limit, in_flight)))
            raise
        finally:
            self._waker.unregister(ticket)

    async def _attempt(self, keys: _HostKeys, lease_id: str, limit: int) -> _Attempt:
        """Run the acquire script once for ``lease_id``'s ticket."""
        reply = await self._run(
            self._scripts.acquire,
            [keys.leases, keys.queue, keys.tickets],
            [lease_id, limit, self._ttl_ms, self._wake_prefix],
        )
        granted, in_use, rank, waiting = (int(x) for x in reply)
        self._fleet_seen[keys.host], self._fleet_waiting[keys.host] = in_use, waiting
        return _Attempt(bool(granted), in_use, rank, waiting)

    async def _abandon(
        self,
        keys: _HostKeys,
        lease_id: str,
        limit: int,
        in_flight: asyncio.Task[_Attempt] | None,
    ) -> None:
        """Remove a waiter's ticket and any slot granted to it in the same instant.

        Run in a task of its own and awaited through ``shield()``, so a waiter cancelled
        (even twice) still leaves nothing behind. An attempt still in flight is let finish
        first, so a slot it grants is released too. If Redis is unreachable the ticket
        expires within ``lease_ttl``.
        """
        if in_flight is not None:
            with contextlib.suppress(Exception):  # its outcome is undone just below
                await in_flight
        await self._release_in_redis(keys, lease_id, limit)

    def _adopt(self, key: PoolKey, host: str, lease_id: str, *, registered: bool) -> RedisLease:
        """Record a granted lease so the renewer keeps it alive."""
        lease = RedisLease(self, key, host, lease_id, registered=registered)
        self._live.setdefault(host, {})[lease_id] = lease
        return lease

    def _timeout_message(
        self, key: PoolKey, host: str, limit: int, waited: float, last: _Attempt
    ) -> str:
        return (
            f"shared limit {limit} reached for host {host!r}: no fleet-wide slot for "
            f"{key} after {waited:.2f}s ({last.in_use} in use fleet-wide, {last.waiting} "
            f"queued, this request at position {last.rank + 1}; namespace "
            f"{self._namespace!r} on {self._url})"
        )

    # -- release and renewal --------------------------------------------------------------

    async def _release(self, lease: RedisLease) -> None:
        """Drop ``lease`` locally and remove it from Redis in a task of its own."""
        host_leases = self._live.get(lease.host)
        if host_leases is None or host_leases.pop(lease.lease_id, None) is None:
            return  # already released by aclose()
        if not host_leases:
            del self._live[lease.host]
        task = self._spawn(self._release_after_renewal(lease))
        await asyncio.shield(task)  # shield: the slot must go back even if we are cancelled

    async def _release_after_renewal(self, lease: RedisLease) -> None:
        """Remove the lease, after any renewal in flight that would otherwise re-add it."""
        renewal = self._renewal
        if renewal is not None and lease.lease_id in renewal[0]:
            await renewal[1]
        limit = self._limit_for_host(lease.host)
        await self._release_in_redis(self._keys_for(lease.host), lease.lease_id, limit)

    async def _release_in_redis(self, keys: _HostKeys, lease_id: str, limit: int) -> None:
        """Run the release script; an unreachable Redis is logged, not raised."""
        try:
            reply = await self._run(
                self._scripts.release,
                [keys.leases, keys.queue, keys.tickets],
                [lease_id, self._wake_prefix, limit],
            )
        except SharedLimitsUnavailable as exc:
            logger.debug("lease %s not released in Redis (%s); it expires by itself", lease_id, exc)
            return
        self._fleet_seen[keys.host] = int(reply[1])

    def _start_renewer(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="glasspool-fleet-renew")

    async def _renew_loop(self) -> None:
        """Renew every live lease every ``lease_ttl / 3`` until :meth:`aclose`."""
        interval = self._ttl_s / 3
        delay = interval
        while True:
            try:
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
                return
            except TimeoutError:
                pass
            try:
                ok = await self._renew_once()
            except Exception:  # never let the renewer die silently
                logger.exception("renewing shared-limit leases failed")
                ok = False
            delay = interval if ok else min(interval, _RETRY_S)

    async def _renew_once(self) -> bool:
        """Renew (or re-register) all live leases in one script call; False if Redis failed."""
        batch = [(host, list(leases.values())) for host, leases in self._live.items() if leases]
        if not batch:
            return True
        keys, args = self._batch_args(batch, first=[self._ttl_ms])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._renewal = (frozenset(lease.lease_id for _, ls in batch for lease in ls), done)
        try:
            reply = await self._run(self._scripts.renew, keys, args)
        except _RedisUnreachable:
            return False  # logged once per outage by _run; retried soon
        except SharedLimitsUnavailable as exc:  # Redis refused: retrying soon won't help
            logger.warning("renewing %d lease(s) failed: %s", len(self._renewal[0]), exc)
            return True
        finally:
            self._renewal = None
            done.set_result(None)
        self._apply_renewal(batch, [int(x) for x in reply])
        return True

    def _apply_renewal(self, batch: list[tuple[str, list[RedisLease]]], reply: list[int]) -> None:
        """Cache fleet counts and report leases Redis had lost (and that were re-added)."""
        pos = 0
        for host, leases in batch:
            flags, pos = reply[pos : pos + len(leases)], pos + len(leases)
            self._fleet_seen[host], self._fleet_waiting[host] = reply[pos], reply[pos + 1]
            pos += 2
            lost = sum(1 for lease, f in zip(leases, flags, strict=True) if f and lease.registered)
            for lease in leases:
                lease.registered = True
            if lost:
                logger.warning(
                    "%d lease(s) for host %r had expired in Redis %s before renewal (worker "
                    "stalled longer than lease_ttl=%.1fs, or Redis restarted); re-registered, "
                    "so the fleet may briefly exceed the shared limit",
                    lost,
                    host,
                    self._url,
                    self._ttl_s,
                )

    def _batch_args(
        self, batch: list[tuple[str, list[RedisLease]]], first: list[int]
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV for the multi-host scripts: per host n, limit and lease ids."""
        keys: list[str] = []
        args: list[str | int] = [*first, self._wake_prefix]
        for host, leases in batch:
            hk = self._keys_for(host)
            keys += [hk.leases, hk.queue]
            args += [len(leases), self._limit_for_host(host)]
            args += [lease.lease_id for lease in leases]
        return keys, args

    async def _release_all(self) -> None:
        """Release every live lease in one script call (used by aclose)."""
        batch = [(host, list(leases.values())) for host, leases in self._live.items() if leases]
        self._live.clear()
        for _, leases in batch:
            for lease in leases:
                lease._released = True
        if not batch:
            return
        keys, args = self._batch_args(batch, first=[])
        try:
            await self._run(self._scripts.release_all, keys, args)
        except SharedLimitsUnavailable as exc:
            logger.warning("could not release leases on close (%s); they expire by themselves", exc)

    # -- plumbing -------------------------------------------------------------------------

    async def _run(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """Run a script (EVALSHA, loading it on NOSCRIPT) and translate redis-py errors.

        Raises:
            _RedisUnreachable: a connectivity failure.
            SharedLimitsUnavailable: Redis answered with an error.
        """
        try:
            reply = await script(keys=keys, args=args)
        except self._api.unreachable as exc:
            error = self._unreachable_error(exc)
            if self._reached:
                self._note_unreachable(error)
            raise error from exc
        except self._api.redis_error as exc:
            raise SharedLimitsUnavailable(
                f"Redis at {self._url} rejected a shared-limit script: {exc}", url=self._url
            ) from exc
        except TypeError as exc:  # redis-py cannot connect with an argument of the URL
            raise self._unusable_url(exc) from exc
        self._note_reachable()
        return reply

    def _unusable_url(self, exc: TypeError) -> SharedLimitsUnavailable:
        """The error for a URL whose arguments this redis-py does not take (an older one
        refuses ``?ssl_password=``, for one)."""
        return SharedLimitsUnavailable(
            f"this redis-py cannot connect with the arguments of {self._url}: {exc}",
            url=self._url,
        )

    def _unreachable_error(self, exc: BaseException) -> _RedisUnreachable:
        when = "while running" if self._reached else "at first use (it never answered)"
        return _RedisUnreachable(
            f"Redis at {self._url} is unreachable {when}: {type(exc).__name__}: {exc}; "
            f"fleet-wide per-host limits (namespace {self._namespace!r}) cannot be enforced",
            url=self._url,
        )

    def _note_reachable(self) -> None:
        self._reached = True
        if self._outage:
            self._outage = False
            logger.warning("Redis at %s is reachable again; shared limits apply", self._url)

    def _note_unreachable(self, exc: BaseException) -> None:
        """Log the first failure of an outage, saying what the policy does meanwhile."""
        if self._outage:
            return
        self._outage = True
        if self._policy == "local":
            effect = "new connections are held only to the local limits until it returns"
        else:
            effect = "acquire() raises SharedLimitsUnavailable until it returns"
        logger.warning("%s; on_unavailable=%r: %s", exc, self._policy, effect)

    def _on_notice(self, host: str, in_use: int) -> None:
        """Cache the in-use count a notice carries."""
        self._fleet_seen[host] = in_use

    def _keys_for(self, host: str) -> _HostKeys:
        keys = self._keys.get(host)
        if keys is None:
            keys = self._keys[host] = _HostKeys.build(self._namespace, host)
        return keys

    def _limit_for_host(self, host: str) -> int:
        return self._overrides.get(host, self._limit)

    def _new_id(self) -> str:
        return f"{self._worker_id}:{next(self._ids)}"

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed(
                f"RedisLimits for {self._url} (namespace {self._namespace!r}) is closed"
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a background task that aclose() waits for."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _wait_for_acquirers(self) -> None:
        """Give calls inside acquire() a bounded time to notice the close and clean up."""
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await self._no_acquirers.wait()
        except TimeoutError:
            logger.warning("%d acquire() call(s) still running at close", self._acquiring)


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds pass, whichever is first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
