"""Timeout settings: one value per phase of a request."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

__all__ = ["Timeout", "TimeoutTypes"]


class _Unset(enum.Enum):
    UNSET = "unset"


_UNSET: Final = _Unset.UNSET


def _check(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Timeout {name} must be a number of seconds or None, not {value!r}")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"Timeout {name} must be > 0 seconds or None, got {value!r}")
    return float(value)


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
        default: float | _Unset | None = _UNSET,
        *,
        connect: float | _Unset | None = _UNSET,
        read: float | _Unset | None = _UNSET,
        write: float | _Unset | None = _UNSET,
        pool: float | _Unset | None = _UNSET,
        total: float | None = None,
    ) -> None:
        base: tuple[float | None, ...] = (10.0, 30.0, 30.0, None)
        if not isinstance(default, _Unset):
            base = (default, default, default, default)
        given = (connect, read, write, pool)
        values = [base[i] if isinstance(v, _Unset) else v for i, v in enumerate(given)]
        names = ("connect", "read", "write", "pool")
        for name, v in zip(names, values, strict=True):
            object.__setattr__(self, name, _check(name, v))
        object.__setattr__(self, "total", _check("total", total))

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """Turn a number (all phases), ``None`` (no limits) or a :class:`Timeout` into one."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(None)
        return cls(value)


TimeoutTypes = Timeout | float | int | None
