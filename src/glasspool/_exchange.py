"""One request/response exchange on a pooled connection, and the body stream it leaves.

The rules for giving a connection back live here, in one place:

- a body read to its end is released with reason ``eof``; the connection is reused if the
  response allows it (``Connection: close``, HTTP/1.0 without keep-alive, or bytes after
  the body make it ``not_reusable``);
- a streamed body closed before its end is released with reason ``closed`` and its
  connection closed: unread bytes are never left on a pooled connection;
- any error or cancellation while the connection is held is released with reason
  ``error`` and the connection closed (``cancelled`` / ``server_closed`` / ``error``).
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    ClientClosed,
    ReadError,
    ReadTimeout,
    ServerDisconnected,
    TotalTimeout,
    UnclosedResponseWarning,
    WriteError,
)
from ._redact import redact_url

if TYPE_CHECKING:  # pragma: no cover
    from ._pool.asyncio import Pool
    from ._pool.state import Waiter

__all__ = [
    "ConnectionStream",
    "close_reason_for",
    "decode_check",
    "is_stale_failure",
    "total_timeout",
]

_STALE_ERRORS = (ServerDisconnected, ReadError, WriteError)


def close_reason_for(exc: BaseException) -> str:
    """The ``closed`` reason for a connection whose request failed with ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ServerDisconnected):
        return "server_closed"
    return "error"


def is_stale_failure(exc: BaseException, lease: Waiter, conn: Any) -> bool:
    """Whether ``exc`` looks like a reused connection the server had already closed.

    Only then may an idempotent request with a replayable body be sent again: the
    connection was reused, and not a single byte of a response arrived on it.
    """
    return (
        lease.reused
        and isinstance(exc, _STALE_ERRORS)
        and not getattr(conn, "response_started", True)
    )


def total_timeout(url: object, total: float | None) -> TotalTimeout:
    """The error for a request that passed its ``total`` deadline."""
    return TotalTimeout(f"request to {redact_url(url)} passed its total timeout of {total:g}s")


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


def call_site() -> str:
    """``file:line`` of the first caller outside glasspool (for unclosed-resource warnings)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("glasspool"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class ConnectionStream:
    """The unread body of a streamed response; holds its pooled connection until the end.

    Implements the ``BodyStream`` protocol of ``_response.Response``.
    """

    __slots__ = (
        "__weakref__",
        "_conn",
        "_deadline",
        "_done",
        "_lease",
        "_pool",
        "_read_timeout",
        "_site",
        "_total",
        "_url",
    )

    def __init__(
        self,
        pool: Pool,
        lease: Waiter,
        conn: Any,
        *,
        read_timeout: float | None,
        deadline: float | None,
        total: float | None,
        url: object,
        site: str,
    ) -> None:
        self._pool = pool
        self._lease = lease
        self._conn = conn
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._total = total
        self._url = url
        self._site = site
        self._done = False

    async def read_chunk(self) -> bytes:
        """The next raw body chunk; ``b""`` at the end, when the connection goes back.

        Raises:
            ReadTimeout, TotalTimeout, IncompleteBody, ProtocolError, ClientClosed.
        """
        if not self._readable():
            return b""
        chunk = await self._receive(self._conn.receive_body)
        if not chunk:
            self._finish("eof", None if self._conn.is_reusable() else "not_reusable")
        return chunk

    async def read_rest(self) -> bytes:
        """The whole rest of the raw body at once (``receive_all``); the connection goes back.

        Raises:
            ReadTimeout, TotalTimeout, IncompleteBody, ProtocolError, ClientClosed.
        """
        if not self._readable():
            return b""
        body = await self._receive(self._conn.receive_all)
        self._finish("eof", None if self._conn.is_reusable() else "not_reusable")
        return body

    def _readable(self) -> bool:
        """False once the body has ended; ``ClientClosed`` (connection let go) after aclose."""
        if self._done:
            return False
        if self._pool.closed:
            self._finish("error", "client_closed")
            raise ClientClosed(
                f"the client was closed while reading the body from {redact_url(self._url)}"
            )
        return True

    async def _receive(self, receive: Callable[..., Awaitable[bytes]]) -> bytes:
        """Run ``receive`` under the read timeout and the total deadline; fail cleanly."""
        try:
            if self._deadline is None:
                return await receive(read_timeout=self._read_timeout)
            try:
                async with asyncio.timeout_at(self._deadline) as scope:
                    return await receive(read_timeout=self._read_timeout)
            except TimeoutError as exc:
                if scope.expired():
                    raise total_timeout(self._url, self._total) from exc
                raise
        except BaseException as exc:
            self._finish("error", close_reason_for(exc))
            if self._pool.closed and not isinstance(exc, asyncio.CancelledError):
                raise ClientClosed(
                    f"the client was closed while reading {redact_url(self._url)}"
                ) from exc
            raise

    def decode_check(self) -> Callable[[float, float], None] | None:
        """The timeouts to check between decoding steps (see :func:`decode_check`)."""
        return decode_check(self._url, self._deadline, self._total, self._read_timeout)

    async def aclose(self) -> None:
        """Give the connection back: closed, unless the body had already ended."""
        if not self._done:
            self._finish("closed", "not_reusable")

    def _finish(self, reason: str, close_reason: str | None) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._lease, reason=reason, close_reason=close_reason)

    def __del__(self) -> None:
        if self._done:
            return
        warnings.warn(
            f"a streamed response from {redact_url(self._url)} was never closed; the request "
            f"was made at {self._site}. Use 'async with client.stream(...)' or 'await "
            "response.aclose()'. Its connection is closed, not reused.",
            UnclosedResponseWarning,
            stacklevel=1,
        )
        self._conn.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self._finish, "closed", "not_reusable")
