"""Pool statistics: frozen snapshots returned by ``client.pool.stats()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar, overload

from ._pool.key import PoolKey

_T = TypeVar("_T")

__all__ = ["TABLE_COLUMNS", "DNSStats", "HostStats", "HostsView", "PoolStats"]

TABLE_COLUMNS: Final = ("open", "in use", "idle", "connecting", "waiting", "available")
"""The count columns of :meth:`PoolStats.table`, left to right."""


@dataclass(frozen=True, slots=True)
class HostStats:
    """A snapshot of one pool key.

    Attributes:
        limit: the connection limit for this key (``limit_per_host``, a ``host_limits``
            override, or ``None`` when only the global limit applies).
        connecting: connections being opened (TCP connect and TLS handshake).
        in_use: connections carrying a request whose response is not finished.
        idle: open connections waiting in the pool for reuse. They still count.
        waiting: requests queued for a slot.
        available: how many more requests of this key could get a connection right now
            without waiting: bounded by the per-key headroom and by the global headroom
            plus idle connections of other keys that could be evicted.
        opened: connections opened so far (counter).
        reused: requests served by an already open connection (counter).
        closed: connections closed so far (counter).
        requests: requests that asked this key for a connection (counter).
        shared_limit: the fleet-wide limit for this host when shared limits are on.
        fleet_in_use: fleet-wide slots in use as last seen by this worker, or ``None``.
        leases: fleet slots this worker holds for this key.
        fleet_waiting: requests of this worker waiting for a fleet-wide slot; each holds a
            reserved local slot, so it is also counted in ``connecting``.
        effective_limit: with adaptive limits on, the per-key limit in force now (``limit``
            or the global limit, or less after an overload signal); ``None`` when off.
        limit_reason: why the effective limit last changed (``status_503``,
            ``retry_after``, ``recovered``...), or ``None`` if it never did.
    """

    limit: int | None
    connecting: int
    in_use: int
    idle: int
    waiting: int
    available: int
    opened: int
    reused: int
    closed: int
    requests: int
    shared_limit: int | None = None
    fleet_in_use: int | None = None
    leases: int = 0
    fleet_waiting: int = 0
    effective_limit: int | None = None
    limit_reason: str | None = None

    @property
    def open(self) -> int:
        """Connections counted against the limits: connecting + in use + idle."""
        return self.connecting + self.in_use + self.idle


class HostsView(dict[PoolKey, HostStats]):
    """``PoolStats.hosts``: a dict keyed by :class:`PoolKey` that also accepts strings.

    ``hosts[key]`` with the exact key, or ``hosts["http://127.0.0.1:8080"]`` (the key's
    ``str()``), or ``hosts["127.0.0.1"]`` (a host name, when only one key has it).

    """

    def __missing__(self, key: object) -> HostStats:
        if isinstance(key, str):
            found = [v for k, v in self.items() if str(k) == key]
            if not found:
                found = [v for k, v in self.items() if k.host == key]
            if len(found) == 1:
                return found[0]
            if found:
                raise KeyError(f"{key!r} matches {len(found)} pool keys; use the PoolKey")
        raise KeyError(key)

    @overload
    def get(self, key: PoolKey | str, default: None = None, /) -> HostStats | None: ...
    @overload
    def get(self, key: PoolKey | str, default: HostStats | _T, /) -> HostStats | _T: ...
    def get(self, key: object, default: object = None, /) -> object:
        """``hosts[key]`` (a key, its ``str()`` or a host name), or ``default``."""
        try:
            return self[key]  # type: ignore[index]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        if isinstance(key, str):
            return any(str(k) == key or k.host == key for k in self)
        return False


@dataclass(frozen=True, slots=True)
class DNSStats:
    """The client's name cache, in ``PoolStats.dns``.

    Attributes:
        ttl: seconds an answer is kept (``None``: names are looked up every time).
        entries: names cached now (expired ones included until they are looked up again).
        hits: lookups answered from the cache (or by joining a lookup in flight).
        misses: lookups that went to the resolver.
    """

    ttl: float | None
    entries: int
    hits: int
    misses: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the whole pool.

    Attributes:
        limit: the global connection limit.
        limit_per_host: the default per-key limit (``None`` = none).
        open: connections counted against ``limit`` (connecting + in use + idle).
        connecting, in_use, idle, waiting: totals across keys.
        available: how many more connections may be opened right now without waiting
            (``limit - open``; an idle connection of another key may also be evicted).
        hosts: per-key snapshots for every key with a connection, a waiter or history;
            also indexable by ``str(key)`` or a host name (see :class:`HostsView`).
        dns: the client's name cache (``ttl``, ``entries``, ``hits``, ``misses``), or
            ``None`` for a pool without one.
    """

    limit: int
    limit_per_host: int | None
    open: int
    connecting: int
    in_use: int
    idle: int
    waiting: int
    available: int
    hosts: HostsView = field(default_factory=HostsView)
    dns: DNSStats | None = None

    def host(self, host: str, port: int | None = None) -> HostStats | None:
        """The stats of the first key whose host (and port, if given) match, or ``None``."""
        for key, stats in self.hosts.items():
            if key.host == host and (port is None or key.port == port):
                return stats
        return None

    def table(self, names: Callable[[PoolKey], str | None] | None = None) -> str:
        """A plain-text table of the counts: all keys, then one row per key.

        The columns are :data:`TABLE_COLUMNS`; a key's row is labelled ``str(key)`` and its
        limit when it has one. ``glasspool demo`` prints this table after every step.

        >>> key = PoolKey("http", "127.0.0.1", 8001)
        >>> host = HostStats(5, 0, 1, 2, 0, 3, 1, 4, 0, 5)
        >>> print(PoolStats(25, 5, 3, 0, 1, 2, 0, 22, HostsView({key: host})).table())
                                         open  in use  idle  connecting  waiting  available
        all hosts (limit 25)                3       1     2           0        0         22
        http://127.0.0.1:8001 (limit 5)     3       1     2           0        0          3

        Args:
            names: gives a key a short label shown before ``str(key)`` ("host A"), or
                ``None`` for none.

        Returns:
            The rows joined with newlines, without a trailing one.
        """
        rows: list[tuple[str, tuple[int, ...]]] = [
            (
                f"all hosts (limit {self.limit})",
                (self.open, self.in_use, self.idle, self.connecting, self.waiting, self.available),
            )
        ]
        for key, h in self.hosts.items():
            short = names(key) if names is not None else None
            label = f"{short} {key}" if short else str(key)
            limit = "" if h.limit is None else f" (limit {h.limit})"
            counts = (h.open, h.in_use, h.idle, h.connecting, h.waiting, h.available)
            rows.append((label + limit, counts))
        width = max(len(label) for label, _ in rows)
        sizes = [max(len(c), 4) for c in TABLE_COLUMNS]
        head = "  ".join(f"{c:>{n}}" for c, n in zip(TABLE_COLUMNS, sizes, strict=True))
        lines = [f"{'':<{width}}  {head}"]
        for label, values in rows:
            cells = "  ".join(f"{v:>{n}}" for v, n in zip(values, sizes, strict=True))
            lines.append(f"{label:<{width}}  {cells}")
        return "\n".join(lines)
