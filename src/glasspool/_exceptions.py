"""The one exception hierarchy of glasspool.

Every error glasspool raises derives from :class:`GlasspoolError`. Errors from the socket,
TLS or parser layers are translated once, at the boundary where they happen, and chained
with ``from`` so the original cause stays visible in tracebacks.

::

    GlasspoolError
    ├── InvalidURL (also ValueError)
    ├── InvalidRequest (also ValueError)
    ├── PoolError
    │   └── PoolMisuse (also RuntimeError)
    ├── TimeoutError (also builtins.TimeoutError)
    │   ├── PoolTimeout (also PoolError)
    │   ├── ConnectTimeout, ReadTimeout, WriteTimeout, TotalTimeout
    ├── NetworkError
    │   ├── ConnectError, ReadError, WriteError
    │   ├── ServerDisconnected
    │   └── ProxyError
    ├── TLSError (also ConnectError)
    ├── ProtocolError
    │   └── IncompleteBody
    ├── ResponseTooLarge
    ├── TooManyRedirects
    ├── HTTPStatusError
    ├── ResponseNotRead (also RuntimeError)
    ├── StreamConsumed (also RuntimeError)
    ├── SharedLimitsUnavailable
    └── ClientClosed (also PoolError)
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from ._redact import safe_text

if TYPE_CHECKING:  # pragma: no cover
    from ._response import Response

__all__ = [
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "GlasspoolError",
    "HTTPStatusError",
    "IncompleteBody",
    "InvalidRequest",
    "InvalidURL",
    "NetworkError",
    "PoolError",
    "PoolMisuse",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "ResponseNotRead",
    "ResponseTooLarge",
    "ServerDisconnected",
    "SharedLimitsUnavailable",
    "StreamConsumed",
    "TLSError",
    "TimeoutError",
    "TooManyRedirects",
    "TotalTimeout",
    "UnclosedResponseWarning",
    "WriteError",
    "WriteTimeout",
]


class GlasspoolError(Exception):
    """Root of every exception glasspool raises.

    A message never holds a control character: whatever a server chose that ends up in
    one (a reason phrase, a header value) is escaped (see ``_redact.safe_text``).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(safe_text(a) if isinstance(a, str) else a for a in args))


class InvalidURL(GlasspoolError, ValueError):
    """A URL glasspool cannot use: bad scheme, host or port, or forbidden characters."""


class InvalidRequest(GlasspoolError, ValueError):
    """A request that must not be sent: bad method, header name or value, or body framing."""


class PoolError(GlasspoolError):
    """A problem with the connection pool itself."""


class PoolMisuse(PoolError, RuntimeError):
    """The pool was used in a way its rules forbid, e.g. a connection released twice."""


class TimeoutError(GlasspoolError, builtins.TimeoutError):
    """A timeout elapsed. Subclasses name the phase."""


class PoolTimeout(TimeoutError, PoolError):
    """No connection slot became free within the ``pool`` timeout.

    The message names the pool key, both limits, the queue length and the time waited.
    """


class ConnectTimeout(TimeoutError):
    """Opening the TCP connection (or the TLS handshake) took longer than ``connect``."""


class ReadTimeout(TimeoutError):
    """No response bytes arrived within ``read`` seconds."""


class WriteTimeout(TimeoutError):
    """Sending the request took longer than ``write`` seconds."""


class TotalTimeout(TimeoutError):
    """The whole request, body included, passed its ``total`` deadline."""


class NetworkError(GlasspoolError):
    """A socket-level failure."""


class ConnectError(NetworkError):
    """The connection could not be opened. The message names host and port."""


class ReadError(NetworkError):
    """Reading from the connection failed."""


class WriteError(NetworkError):
    """Writing to the connection failed."""


class ServerDisconnected(NetworkError):
    """The server closed the connection before a complete response head arrived."""


class ProxyError(NetworkError):
    """The proxy refused the request or failed: a ``407``, a refused ``CONNECT``, a
    SOCKS error, or a reply that is not HTTP.

    The message names the proxy (its password replaced by ``***``) and, when the proxy
    answered, its status.

    Attributes:
        proxy: the proxy's URL, password replaced by ``***``.
        status: the HTTP status the proxy answered with, or ``None``.
    """

    def __init__(self, message: str, *, proxy: str, status: int | None = None) -> None:
        super().__init__(message)
        self.proxy = proxy
        self.status = status


class TLSError(ConnectError):
    """TLS verification or handshake failed. The message names the host."""


class ProtocolError(GlasspoolError):
    """The server sent malformed or ambiguous HTTP/1.1 framing."""


class IncompleteBody(ProtocolError):
    """The connection ended before the whole body arrived.

    Attributes:
        expected: the byte count the framing promised, or ``None`` when it was chunked.
        received: the byte count that arrived.
    """

    def __init__(self, message: str, *, expected: int | None, received: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received


class ResponseTooLarge(GlasspoolError):
    """A response passed one of glasspool's size caps. The message names the cap."""


class TooManyRedirects(GlasspoolError):
    """More than ``max_redirects`` redirects were followed.

    Attributes:
        history: the redirect responses, oldest first.
    """

    def __init__(self, message: str, *, history: list[Response]) -> None:
        super().__init__(message)
        self.history = history


class HTTPStatusError(GlasspoolError):
    """Raised by :meth:`Response.raise_for_status` for a 4xx or 5xx response.

    Attributes:
        response: the response whose status was an error.
    """

    def __init__(self, message: str, *, response: Response) -> None:
        super().__init__(message)
        self.response = response

    @property
    def status(self) -> int:
        """The HTTP status code of :attr:`response`."""
        return self.response.status


class ResponseNotRead(GlasspoolError, RuntimeError):
    """``Response.content`` (or ``text``/``json()``) was used before the body was read.

    A streamed response's body is read with ``await response.read()`` or consumed with
    ``aiter_bytes()``; ``content`` is only available after ``read()``.
    """


class StreamConsumed(GlasspoolError, RuntimeError):
    """A response body was iterated after it had already been consumed or closed.

    A streamed body can be read once. ``read()`` keeps the decoded bytes, so
    ``aiter_bytes()`` works any number of times after it, but ``aiter_raw()`` does not.
    """


class SharedLimitsUnavailable(GlasspoolError):
    """Redis, which holds the fleet-wide limits, could not be used.

    Raised by ``acquire()`` when Redis is unreachable at first use (whatever the
    ``on_unavailable`` policy), when it is lost mid-run under ``on_unavailable="fail"``,
    and when Redis rejects a lease script (a misconfigured server, a key of the wrong type).

    Attributes:
        url: the Redis URL, with any password (in the userinfo, or a ``password`` or
            ``ssl_password`` query argument) replaced by ``***``.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class ClientClosed(PoolError):
    """A request was made on, or was in flight during, a closed client."""


class UnclosedResponseWarning(ResourceWarning):
    """A streamed response or a client was garbage-collected without being closed.

    The message names the file and line where the request (or the client) was made. The
    connection behind it is closed, never reused.
    """
