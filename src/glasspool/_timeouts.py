"""Timeout settings: one value per phase of a request."""

from __future__ import annotations

from dataclasses import dataclass

from ._defaults import UNSET, Unset
from ._validate import check_seconds

__all__ = ["Timeout", "TimeoutTypes"]


@dataclass(frozen=True, slots=True)
class Timeout:
    """How long each phase of a request may take, in seconds; ``None`` means no limit.

    Args:
        connect: opening the TCP connection and the TLS handshake.
        read: the longest gap between two reads of response bytes (head or body). For a
            compressed body, decoding that produces no bytes for this long is a gap too.
        write: sending the request head and body.
        pool: waiting in the pool's queue for a connection slot.
        total: a deadline for the whole request, redirects and body included.

    Note:
        ``read`` does not bound the time a whole body takes: a server that trickles one byte
        just inside ``read`` keeps the request alive. Use ``total`` for a hard deadline; it
        is also checked between the steps of decoding a compressed body.

    >>> Timeout(5).connect, Timeout(5).total
    (5.0, None)
    >>> Timeout(connect=1, read=2).read
    2.0
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = None
    total: float | None = None

    def __init__(
        self,
        default: float | Unset | None = UNSET,
        *,
        connect: float | Unset | None = UNSET,
        read: float | Unset | None = UNSET,
        write: float | Unset | None = UNSET,
        pool: float | Unset | None = UNSET,
        total: float | None = None,
    ) -> None:
        base: tuple[float | None, ...] = (10.0, 30.0, 30.0, None)
        if not isinstance(default, Unset):
            base = (default, default, default, default)
        given = (connect, read, write, pool)
        values = [base[i] if isinstance(v, Unset) else v for i, v in enumerate(given)]
        names = ("connect", "read", "write", "pool")
        for name, v in zip(names, values, strict=True):
            object.__setattr__(self, name, check_seconds(f"Timeout {name}", v))
        object.__setattr__(self, "total", check_seconds("Timeout total", total))

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """Turn a number (all phases), ``None`` (no limits) or a :class:`Timeout` into one."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(None)
        return cls(value)


TimeoutTypes = Timeout | float | int | None
