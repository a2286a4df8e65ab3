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
        }
    ),
}


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One thing the pool did.

    Attributes:
        kind: ``queued``, ``dequeued``, ``connecting``, ``tunnel`` (a proxy tunnel of a
            connection being opened is ready), ``acquired``, ``released`` or ``closed``.
        key: the pool key (scheme, host, port, TLS identity) the event concerns.
        connection_id: the connection, unique per client; ``None`` for ``queued`` and
            ``dequeued``.
        reason: why (see :data:`EVENT_REASONS`), or ``None``.
        time: ``time.monotonic()`` seconds (the pool's clock) when it happened.
        waiting: the number of requests queued for ``key`` after the event.
    """

    kind: str
    key: PoolKey
    connection_id: int | None
    reason: str | None
    time: float
    waiting: int

    def __str__(self) -> str:
        conn = "" if self.connection_id is None else f" connection {self.connection_id}"
        why = "" if self.reason is None else f" ({self.reason})"
        return f"{self.kind}{why}{conn} {self.key} waiting={self.waiting}"


PoolListener = Callable[[PoolEvent], None]
