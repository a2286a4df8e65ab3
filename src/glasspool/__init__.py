"""glasspool: an asyncio HTTP client built around a connection pool you can see through."""

from ._events import EVENT_REASONS, PoolEvent, PoolListener
from ._exceptions import (
    ClientClosed,
    ConnectError,
    ConnectTimeout,
    GlasspoolError,
    HTTPStatusError,
    IncompleteBody,
    InvalidRequest,
    InvalidURL,
    NetworkError,
    PoolError,
    PoolMisuse,
    PoolTimeout,
    ProtocolError,
    ReadError,
    ReadTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    TimeoutError,
    TLSError,
    TooManyRedirects,
    TotalTimeout,
    WriteError,
    WriteTimeout,
)
from ._pool.asyncio import Pool
from ._pool.key import PoolKey, TLSIdentity
from ._stats import HostStats, PoolStats
from ._timeouts import Timeout

__version__ = "0.1.0"

__all__ = [
    "EVENT_REASONS",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "GlasspoolError",
    "HTTPStatusError",
    "HostStats",
    "IncompleteBody",
    "InvalidRequest",
    "InvalidURL",
    "NetworkError",
    "Pool",
    "PoolError",
    "PoolEvent",
    "PoolKey",
    "PoolListener",
    "PoolMisuse",
    "PoolStats",
    "PoolTimeout",
    "ProtocolError",
    "ReadError",
    "ReadTimeout",
    "ResponseTooLarge",
    "ServerDisconnected",
    "TLSError",
    "TLSIdentity",
    "Timeout",
    "TimeoutError",
    "TooManyRedirects",
    "TotalTimeout",
    "WriteError",
    "WriteTimeout",
    "__version__",
]
