"""glasspool: an asyncio HTTP client built around a connection pool you can see through."""

from ._allocator import tune_allocator
from ._auth import Auth, BasicAuth, DigestAuth
from ._cookies import Cookies
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
    ProxyError,
    ReadError,
    ReadTimeout,
    ResponseNotRead,
    ResponseTooLarge,
    ServerDisconnected,
    SharedLimitsUnavailable,
    StreamConsumed,
    TimeoutError,
    TLSError,
    TooManyRedirects,
    TotalTimeout,
    UnclosedResponseWarning,
    WriteError,
    WriteTimeout,
)
from ._fleet import RedisLimits
from ._headers import Headers
from ._mock import MockResponse, MockTransport
from ._pool.adaptive import AdaptiveLimits
from ._pool.asyncio import Pool
from ._pool.key import PoolKey, ProxyIdentity, TLSIdentity
from ._request import Request
from ._response import Response
from ._retry import Retry, RetryAttempt
from ._stats import DNSStats, HostStats, PoolStats
from ._timeouts import Timeout
from ._version import __version__
from .client import Client
from .timeline import Timeline

__all__ = [
    "EVENT_REASONS",
    "DNSStats",
    "AdaptiveLimits",
    "Auth",
    "BasicAuth",
    "Client",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "Cookies",
    "DigestAuth",
    "GlasspoolError",
    "HTTPStatusError",
    "Headers",
    "HostStats",
    "IncompleteBody",
    "InvalidRequest",
    "InvalidURL",
    "MockResponse",
    "MockTransport",
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
    "ProxyError",
    "ProxyIdentity",
    "ReadError",
    "ReadTimeout",
    "RedisLimits",
    "Request",
    "Response",
    "Retry",
    "RetryAttempt",
    "ResponseNotRead",
    "ResponseTooLarge",
    "ServerDisconnected",
    "SharedLimitsUnavailable",
    "StreamConsumed",
    "TLSError",
    "TLSIdentity",
    "Timeline",
    "Timeout",
    "TimeoutError",
    "TooManyRedirects",
    "TotalTimeout",
    "UnclosedResponseWarning",
    "WriteError",
    "WriteTimeout",
    "__version__",
    "tune_allocator",
]
