"""Pool events: what the pool did, to which connection, and why.

Every change in the pool is reported as a :class:`PoolEvent` to the listeners added with
``client.pool.add_listener(fn)`` and logged at DEBUG on the ``glasspool.pool`` logger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ._pool.key import PoolKey

__all__ = ["EVENT_REASONS", "PoolEvent", "PoolListener"]

#: Every event kind and the reasons it can carry (``None`` where it carries none).
EVENT_REASONS: Final[dict[str, frozenset[str | None]]] = {
    "queued": frozenset({"limit", "limit_per_host", "shared_limit"}),
    "dequeued": frozenset({"cancelled", "timeout"}),
    "connecting": frozenset({None}),
    "tunnel": frozenset({"connect", "socks"}),
    "tls": frozenset({"origin", "proxy"}),
    "acquired": frozenset({"new", "reused"}),
    "released": frozenset({"eof", "closed", "error"}),
    "closed": frozenset(
        {
            "expired",
            "max_lifetime",
            "max_requests",
            "server_closed",
            "not_reusable",
            "evicted",
            "error",
            "cancelled",
            "client_closed",
            "limit_lowered",
        }
    ),
    # ``status_<code>`` for any status in ``Retry.statuses`` (the defaults are listed),
    # else the class name of the network error that was retried
    "retry": frozenset(
        {
            "status_429",
            "status_502",
            "status_503",
            "status_504",
            "ConnectError",
            "ConnectTimeout",
            "ServerDisconnected",
            "ReadError",
            "WriteError",
            "ReadTimeout",
            "WriteTimeout",
        }
    ),
    # lowered: ``status_<code>`` for a status in ``AdaptiveLimits.decrease_on`` (the
    # defaults are listed) or ``retry_after``; raised: ``recovered``
    "limit_changed": frozenset({"status_429", "status_503", "retry_after", "recovered"}),
}


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One thing the pool did.

    Attributes:
        kind: ``queued``, ``dequeued``, ``connecting``, ``tunnel`` (a proxy tunnel of a
            connection being opened is ready), ``tls`` (the TCP connection, or the tunnel,
            of a connection being opened is up and its TLS handshake begins: with the
            origin, or with an ``https://`` proxy), ``acquired``, ``released``, ``closed``,
            ``retry`` (a request is sent again after a wait) or ``limit_changed`` (an
            adaptive per-host limit moved).
        key: the pool key (scheme, host, port, TLS identity) the event concerns.
        connection_id: the connection, unique per client; ``None`` for ``queued`` and
            ``dequeued``.
        reason: why (see :data:`EVENT_REASONS`), or ``None``.
        time: ``time.monotonic()`` seconds (the pool's clock) when it happened.
        waiting: the number of requests queued for ``key`` after the event.
        limit: for ``limit_changed``, the key's effective limit after the change.
        delay: for ``retry``, the seconds waited before the next attempt.
        attempt: for ``retry``, the number of the attempt about to be made (2 for the
            first retry).
    """

    kind: str
    key: PoolKey
    connection_id: int | None
    reason: str | None
    time: float
    waiting: int
    limit: int | None = None
    delay: float | None = None
    attempt: int | None = None

    def __str__(self) -> str:
        conn = "" if self.connection_id is None else f" connection {self.connection_id}"
        why = "" if self.reason is None else f" ({self.reason})"
        extra = ""
        if self.attempt is not None:
            extra += f" attempt={self.attempt}"
        if self.delay is not None:
            extra += f" delay={self.delay:.3f}s"
        if self.limit is not None:
            extra += f" limit={self.limit}"
        return f"{self.kind}{why}{conn} {self.key} waiting={self.waiting}{extra}"


PoolListener = Callable[[PoolEvent], None]
