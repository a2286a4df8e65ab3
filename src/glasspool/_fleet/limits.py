"""RedisLimits, the fleet-wide per-host limits kept in Redis, and the RedisLease it grants.

The package docstring (``glasspool._fleet``) gives the design; ``scripts.py`` holds what
runs inside Redis, ``connection.py`` the client and the pub/sub wake-ups.
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
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import ClientClosed, PoolTimeout, SharedLimitsUnavailable
from .._pool.key import PoolKey
from .._redact import redact_url
from .._validate import check_limit
from .connection import Waker, import_redis
from .scripts import (
    ACQUIRE_LUA,
    RELEASE_ALL_LUA,
    RELEASE_LUA,
    RENEW_LUA,
    Attempt,
    HostKeys,
    Scripts,
)

if TYPE_CHECKING:  # pragma: no cover
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["OnUnavailable", "RedisLease", "RedisLimits"]

logger = logging.getLogger("glasspool.fleet")

OnUnavailable = Literal["fail", "local"]

_RETRY_S = 0.25  # renewal retry interval after a failed renewal (if below lease_ttl / 3)
_CLOSE_WAIT_S = 5.0  # how long aclose() waits for acquirers to leave before closing Redis


class _RedisUnreachable(SharedLimitsUnavailable):
    """A connectivity failure (refused, reset, timed out), as opposed to a rejected script."""


# -- settings -----------------------------------------------------------------------------


def _normalise_host(name: str) -> str:
    """The form a host name is compared and stored in: lower case, no brackets, no final dot.

    >>> _normalise_host("API.Example.org.")
    'api.example.org'
    >>> _normalise_host("[::1]")
    '::1'
    """
    return name.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()


def _check_overrides(overrides: Mapping[str, int] | None) -> dict[str, int]:
    """Validate per-host overrides and key them by normalised host name."""
    result: dict[str, int] = {}
    for host, limit in (overrides or {}).items():
        if not isinstance(host, str) or not _normalise_host(host):
            raise ValueError(f"overrides keys must be host names, got {host!r}")
        result[_normalise_host(host)] = check_limit(f"overrides[{host!r}]", limit)
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
        api = import_redis()
        _check_config(namespace, lease_ttl, on_unavailable)
        self._limit = check_limit("limit_per_host", limit_per_host)
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
        self._scripts = Scripts(
            register(ACQUIRE_LUA),
            register(RELEASE_LUA),
            register(RENEW_LUA),
            register(RELEASE_ALL_LUA),
        )
        machine = "_".join(socket.gethostname().split()) or "host"  # no spaces: notices split
        self._worker_id = f"{machine}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake_prefix = f"{namespace}:wake:"
        self._waker = Waker(
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
        self._keys: dict[str, HostKeys] = {}  # host -> its Redis keys
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
        in_flight: asyncio.Task[Attempt] | None = None
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

    async def _attempt(self, keys: HostKeys, lease_id: str, limit: int) -> Attempt:
        """Run the acquire script once for ``lease_id``'s ticket."""
        reply = await self._run(
            self._scripts.acquire,
            [keys.leases, keys.queue, keys.tickets],
            [lease_id, limit, self._ttl_ms, self._wake_prefix],
        )
        granted, in_use, rank, waiting = (int(x) for x in reply)
        self._fleet_seen[keys.host], self._fleet_waiting[keys.host] = in_use, waiting
        return Attempt(bool(granted), in_use, rank, waiting)

    async def _abandon(
        self,
        keys: HostKeys,
        lease_id: str,
        limit: int,
        in_flight: asyncio.Task[Attempt] | None,
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
        self, key: PoolKey, host: str, limit: int, waited: float, last: Attempt
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

    async def _release_in_redis(self, keys: HostKeys, lease_id: str, limit: int) -> None:
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

    def _keys_for(self, host: str) -> HostKeys:
        keys = self._keys.get(host)
        if keys is None:
            keys = self._keys[host] = HostKeys.build(self._namespace, host)
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
