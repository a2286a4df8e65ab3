"""Timeout settings (one value per phase of a request), and the ``total`` deadline's rules.

The ``total`` deadline is a loop time (``loop.time() + total``) fixed when a request starts.
It is enforced in two ways, both here: :func:`within_deadline` around an await (the client
wraps a whole request in it, the exchange each body read of a streamed response), and
:func:`decode_check` between the steps of decoding a body, where no await would notice it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ._defaults import UNSET, Unset
from ._exceptions import ReadTimeout, TotalTimeout
from ._redact import redact_url
from ._validate import check_seconds

__all__ = ["Timeout", "TimeoutTypes", "decode_check", "total_timeout", "within_deadline"]

T = TypeVar("T")


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


def total_timeout(url: object, total: float | None) -> TotalTimeout:
    """The error for a request to ``url`` that passed its ``total`` deadline."""
    return TotalTimeout(f"request to {redact_url(url)} passed its total timeout of {total:g}s")


async def within_deadline(
    awaitable: Awaitable[T], deadline: float | None, total: float | None, url: object
) -> T:
    """Await ``awaitable``; at ``deadline`` (loop time) cancel it and raise ``TotalTimeout``.

    A checkpoint. What the cancellation leaves behind is the awaitable's business: inside,
    it sees a ``CancelledError``. An ``asyncio.timeout()`` of the caller's that expires
    first is not turned into ``TotalTimeout``.

    Raises:
        TotalTimeout: the deadline passed (chained from the ``TimeoutError``).
    """
    if deadline is None:
        return await awaitable
    try:
        async with asyncio.timeout_at(deadline) as scope:
            return await awaitable
    except TimeoutError as exc:
        if scope.expired():
            raise total_timeout(url, total) from exc
        raise


def decode_check(
    url: object, deadline: float | None, total: float | None, read_timeout: float | None
) -> Callable[[float, float], None] | None:
    """The timeouts that apply between the steps of decoding a body (``_decoders.paced``).

    ``deadline`` (loop time) is the ``total`` deadline. ``read_timeout`` bounds a gap in
    the response's progress: decoding that yields no bytes for that long (data that
    decompresses to nothing) is a gap like a silent socket. None when neither applies.
    """
    if deadline is None and read_timeout is None:
        return None

    def check(now: float, idle_since: float) -> None:
        if deadline is not None and now >= deadline:
            raise total_timeout(url, total)
        if read_timeout is not None and now - idle_since >= read_timeout:
            raise ReadTimeout(
                f"decoding the body from {redact_url(url)} produced no bytes for "
                f"{read_timeout:g}s "
                "(read timeout)"
            )

    return check
