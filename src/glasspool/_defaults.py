"""What an option is when the caller leaves it out: the ``UNSET`` sentinel and the defaults
of the pool's limits and timers, shared by ``Client``, ``Pool``, ``PoolState`` and the CLI.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "DEFAULT_EVICT_GRACE",
    "DEFAULT_KEEPALIVE_EXPIRY",
    "DEFAULT_LIMIT",
    "DEFAULT_LIMIT_PER_HOST",
    "DEFAULT_MAX_CHUNK_EXT_BYTES",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_PASSOVERS",
    "UNSET",
    "Unset",
    "default_limit_per_host",
]


class Unset(enum.Enum):
    """The type of :data:`UNSET`: an argument that was not given.

    Kept apart from ``None``, which for many options means "no limit".
    """

    UNSET = "unset"


UNSET: Final = Unset.UNSET

DEFAULT_LIMIT: Final = 100
"""The most connections open at once across all keys (``limit``)."""

DEFAULT_LIMIT_PER_HOST: Final = 10
"""The client's per-key limit when ``limit_per_host`` is left out (see
:func:`default_limit_per_host`); a bare ``Pool`` has none."""

DEFAULT_KEEPALIVE_EXPIRY: Final = 15.0
"""Seconds an idle connection is kept (``keepalive_expiry``)."""

DEFAULT_EVICT_GRACE: Final = 0.5
"""Seconds an idle connection must have idled before it may be evicted for a key that
already has a connection (``evict_grace``)."""

DEFAULT_MAX_PASSOVERS: Final = 16
"""How often a waiter of another key may be passed over for a same-key handover."""

DEFAULT_MAX_HEADER_BYTES: Final = 65536
"""Bytes of one response head, or one trailer section (``max_header_bytes``)."""

DEFAULT_MAX_HEADERS: Final = 100
"""Header lines in one response head, or one trailer section (``max_headers``)."""

DEFAULT_MAX_LINE_BYTES: Final = 8192
"""Bytes of one status, header or trailer line (``max_line_bytes``)."""

DEFAULT_MAX_CHUNK_EXT_BYTES: Final = 4096
"""Bytes of one chunk extension (``max_chunk_ext_bytes``)."""


def default_limit_per_host(limit: int) -> int:
    """The per-key limit when none is given: :data:`DEFAULT_LIMIT_PER_HOST`, or ``limit``
    if that is lower.

    >>> default_limit_per_host(100), default_limit_per_host(4)
    (10, 4)
    """
    return min(DEFAULT_LIMIT_PER_HOST, limit)
