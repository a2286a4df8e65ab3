"""One request and its response on a pooled connection: :class:`Exchange`.

An exchange owns its connection from the moment the pool hands it over
(:meth:`Exchange.start`) until the connection goes back to the pool or is closed. Nothing
else gives a connection back: every way a request can end reaches the pool through one
method, :meth:`Exchange._end`, the only caller of ``Pool.release`` in glasspool, which
states the reason as the table in ``docs/pool.md`` says:

- ``eof``: the body was read to its end. The connection is reused, unless the response
  does not allow it (``Connection: close``, HTTP/1.0 without keep-alive, bytes after the
  body): then it is closed ``not_reusable``.
- ``closed``: a streamed body was closed before its end, or a redirect's body was too long
  to drain. The connection is closed ``not_reusable``: unread bytes are never pooled.
- ``error``: an error or a cancellation while the connection was held. It is closed with
  :func:`close_reason_for` the exception: ``cancelled``, ``server_closed``,
  ``client_closed`` or ``error``.

Who reads the body decides what an early end means, so an exchange is in one of four
phases (:class:`Phase`): the client holds the response (``CLIENT``: the request, the head,
a redirect's body); the client reads the whole body as part of the request (``READING``:
``client.get()``), where any failure is the request's (``error``); the caller reads it
(``CALLER``: ``client.stream()``), where closing it early, for whatever reason, is
``closed``, and each read runs under the ``total`` deadline (the client's deadline scope
has ended); ``RELEASED``: the connection went back, and the exchange holds nothing.

Every step that can fail (:meth:`Exchange.send`, :meth:`Exchange.read_body`,
:meth:`Exchange.read_chunk`, :meth:`Exchange.read_rest`) hands its exception to one
handler, :meth:`Exchange._fail`, which releases the connection (``error``) before the
exception goes on, and turns an error caused by ``client.aclose()`` into ``ClientClosed``:
urllib3's ``urlopen`` with its ``clean_exit`` flag and one ``finally``, spread over the
awaits of a response whose body may be read long after the request returned.

The exchange is the :class:`~glasspool._response.BodyStream` of its response; the response
decodes the body (the one decode loop, ``Response._decoded_chunks``).
"""

from __future__ import annotations

import asyncio
import enum
import sys
import time
import warnings
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from ._exceptions import (
    ClientClosed,
    ReadError,
    ServerDisconnected,
    UnclosedResponseWarning,
    WriteError,
)
from ._redact import redact_url
from ._response import Response
from ._timeouts import Timeout, decode_check, within_deadline

if TYPE_CHECKING:  # pragma: no cover
    from ._http11 import HTTP11Connection
    from ._pool.asyncio import Pool
    from ._pool.key import PoolKey
    from ._pool.state import Waiter
    from ._request import Request

__all__ = ["Exchange", "Phase", "call_site", "close_reason_for"]

_STALE_ERRORS = (ServerDisconnected, ReadError, WriteError)

Reason = Literal["eof", "closed", "error"]  # the ``released`` event's reason


def close_reason_for(exc: BaseException) -> str:
    """The ``closed`` reason for a connection whose request failed with ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ServerDisconnected):
        return "server_closed"
    if isinstance(exc, ClientClosed):
        return "client_closed"
    return "error"


def call_site() -> str:
    """``file:line`` of the first caller outside glasspool (for unclosed-resource warnings)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("glasspool"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Phase(enum.Enum):
    """Who holds an exchange's response, which decides what an early end means."""

    CLIENT = "client"  # the request, the head, a redirect's body: a failure is an error
    READING = "reading"  # the client reads the whole body (read_body): the same
    CALLER = "caller"  # handed over: the caller reads; an early close is ``closed``
    RELEASED = "released"  # the connection went back to the pool, or was closed


_CLIENT, _READING, _CALLER, _RELEASED = Phase  # the hot path compares these with ``is``


class Exchange:
    """One request/response on one pooled connection, from hand-over to release.

    Made by :meth:`start`. Then :meth:`send` sends the request and returns the
    :class:`Response` with its body unread, which reads through this exchange (it is the
    response's ``BodyStream``: :meth:`read_chunk`, :meth:`read_rest`, :meth:`decode_check`,
    :meth:`aclose`). The client then reads the body (:meth:`read_body`), drains a
    redirect's (``Response._drain``), or gives the response to the caller
    (:meth:`hand_over`). The connection goes back exactly once, through :meth:`_end`.
    """

    __slots__ = (
        "_conn",
        "_deadline",
        "_lease",
        "_phase",
        "_pool",
        "_site",
        "_timeout",
        "_url",
    )

    _site: str  # where the caller made a streamed request; set by hand_over()

    def __init__(
        self, pool: Pool, lease: Waiter, timeout: Timeout, deadline: float | None, url: object
    ) -> None:
        self._pool = pool
        self._lease = lease
        self._conn: HTTP11Connection = lease.conn.handle  # type: ignore[union-attr]
        self._timeout = timeout
        self._deadline = deadline  # loop time of the ``total`` deadline, or None
        self._url = url  # the request's, for messages
        self._phase = _CLIENT

    @property
    def phase(self) -> Phase:
        """Who holds the response now (see :class:`Phase`)."""
        return self._phase

    @classmethod
    async def start(
        cls, pool: Pool, key: PoolKey, timeout: Timeout, deadline: float | None, url: object
    ) -> Exchange:
        """Take a connection for ``key`` from ``pool``; the exchange owns it from here.

        A checkpoint when the pool must wait or connect; cancellation there leaves nothing
        behind (see ``Pool.acquire``). Nothing is awaited between the hand-over and the
        exchange taking it.

        Args:
            pool: where the connection comes from and goes back to.
            key: which connections may carry the request.
            timeout: the request's timeouts (``pool`` and ``connect`` here, the rest later).
            deadline: the loop time of the ``total`` deadline, or None.
            url: the request's URL, for messages.

        Raises:
            PoolTimeout, ConnectError, ConnectTimeout, TLSError, ClientClosed.
        """
        lease = await pool.acquire(key, timeout=timeout.pool, connect_timeout=timeout.connect)
        return cls(pool, lease, timeout, deadline, url)

    # ------------------------------------------------------------------ the request

    async def send(
        self,
        request: Request,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        *,
        chunked: bool,
        max_decompressed_size: int | None,
    ) -> Response:
        """Send the request and receive the response head; the body is left unread.

        Args:
            request: what is sent (its method and URL; the response keeps it).
            head: the serialised request head.
            body: the request body, as ``HTTP11Connection.send_request`` takes it.
            chunked: frame ``body`` with chunked transfer coding.
            max_decompressed_size: the response's cap on its decoded body.

        Returns:
            The response, reading its body through this exchange; ``elapsed`` is the time
            from the hand-over to the head.

        Raises:
            WriteTimeout, ReadTimeout, ServerDisconnected, WriteError, ReadError,
            ProtocolError, ResponseTooLarge, ClientClosed. The connection is released
            (``error``) first; :meth:`failed_stale` says whether to try again.
        """
        conn, timeout = self._conn, self._timeout
        started = time.perf_counter()
        try:
            await conn.send_request(head, body, chunked=chunked, write_timeout=timeout.write)
            rhead = await conn.receive_head(method=request.method, read_timeout=timeout.read)
        except BaseException as exc:
            self._fail(exc)
            raise
        response = Response(
            rhead.status,
            reason=rhead.reason,
            raw_headers=rhead.headers,
            url=request.url,
            http_version=rhead.http_version,
            request=request,
            stream=self,
            max_decompressed_size=max_decompressed_size,
        )
        response._set_received(
            time.perf_counter() - started, content_encoding=rhead.has_content_encoding
        )
        return response

    def failed_stale(self, exc: BaseException) -> bool:
        """Whether :meth:`send` failed with ``exc`` on a reused connection the server had
        already closed: reused, a network error, not one byte of a response, and not
        because the client was closed.

        Only then may an idempotent request with a replayable body be sent again, once.
        """
        return (
            self._lease.reused
            and isinstance(exc, _STALE_ERRORS)
            and not getattr(self._conn, "response_started", True)
            and not self._pool.closed
        )

    # ------------------------------------------------------------ who reads the body

    async def read_body(self, response: Response) -> None:
        """Read and decode ``response``'s whole body as part of the request (``get()``).

        Any failure is the request's: released ``error`` with its cause, although the
        response closes its stream on the way out (:meth:`aclose` leaves that to this
        method). A checkpoint while the body is still arriving.

        Raises:
            ReadTimeout, TotalTimeout, IncompleteBody, ProtocolError, ResponseTooLarge,
            ClientClosed.
        """
        self._phase = _READING
        try:  # either way the body is read to its end, released ``eof``
            if response._content_coding() is None:  # nothing to decode
                response._set_body(await self.read_rest())
            else:
                await response.read()  # the decode loop
        except BaseException as exc:
            self._fail(exc)
            raise

    def hand_over(self) -> None:
        """The response goes to the caller, who reads (or closes) its body from now on.

        Each body read then runs under the ``total`` deadline, and an exchange collected
        unfinished warns, naming the caller's line (:meth:`__del__`).
        """
        self._phase = _CALLER
        self._site = call_site()

    # ----------------------------------------------------- BodyStream (for Response)

    async def read_chunk(self) -> bytes:
        """The next raw body chunk; ``b""`` at the end, when the connection goes back.

        A checkpoint only when no body bytes are buffered.

        Raises:
            ReadTimeout, TotalTimeout, IncompleteBody, ProtocolError, ClientClosed.
        """
        if not self._readable():
            return b""
        conn = self._conn
        try:
            chunk = conn.receive_body_nowait()
            if chunk is None:  # nothing buffered: wait
                chunk = await self._timed(conn.receive_body(read_timeout=self._timeout.read))
        except BaseException as exc:
            self._fail(exc)
            raise
        if not chunk:
            self._end("eof")
        return chunk

    async def read_rest(self) -> bytes:
        """The whole rest of the raw body at once (``receive_all``); the connection goes back.

        A checkpoint only when the body is not all here.

        Raises:
            ReadTimeout, TotalTimeout, IncompleteBody, ProtocolError, ClientClosed.
        """
        if not self._readable():
            return b""
        conn = self._conn
        try:
            body = conn.receive_all_nowait()
            if body is None:  # not all here yet: wait
                body = await self._timed(conn.receive_all(read_timeout=self._timeout.read))
        except BaseException as exc:
            self._fail(exc)
            raise
        self._end("eof")
        return body

    def decode_check(self) -> Callable[[float, float], None] | None:
        """The timeouts to check between decoding steps (see ``_timeouts.decode_check``)."""
        timeout = self._timeout
        return decode_check(self._url, self._deadline, timeout.total, timeout.read)

    async def aclose(self) -> None:
        """The response is done with its body: release ``closed`` unless it had ended.

        Not while :meth:`read_body` runs: the response closes its stream there only on a
        failure, which :meth:`read_body` releases with its cause.
        """
        phase = self._phase
        if phase is not _RELEASED and phase is not _READING:
            self._end("closed")

    # ------------------------------------------------------------------- internals

    def _readable(self) -> bool:
        """False once the body has ended; ``ClientClosed`` (connection let go) after aclose."""
        if self._phase is _RELEASED:
            return False
        if self._pool.closed:
            exc = ClientClosed(
                f"the client was closed while reading the body from {redact_url(self._url)}"
            )
            self._end("error", exc)
            raise exc
        return True

    def _timed(self, waiting: Awaitable[bytes]) -> Awaitable[bytes]:
        """``waiting`` (a read), under the ``total`` deadline once the caller reads: before,
        the client's deadline scope (``Client._request``) is around it."""
        if self._phase is _CALLER and self._deadline is not None:
            return within_deadline(waiting, self._deadline, self._timeout.total, self._url)
        return waiting

    def _fail(self, exc: BaseException) -> None:
        """A step failed with ``exc``: release ``error``; after ``client.aclose()`` raise
        ``ClientClosed`` from it instead (a cancellation stays a cancellation)."""
        caller = self._phase is _CALLER
        self._end("error", exc)
        if self._pool.closed and not isinstance(exc, asyncio.CancelledError | ClientClosed):
            url = redact_url(self._url)
            if caller:
                raise ClientClosed(f"the client was closed while reading {url}") from exc
            raise ClientClosed(f"the client was closed while {url} was in flight") from exc

    def _end(self, reason: Reason, exc: BaseException | None = None) -> None:
        """Give the connection back to the pool, once, saying why (``docs/pool.md``).

        The only call of ``Pool.release`` for a request: every way an exchange ends comes
        here. ``exc``: what ended it, for reason ``error``.
        """
        if self._phase is _RELEASED:
            return
        self._phase = _RELEASED
        if reason == "eof":
            close_reason = None if self._conn.is_reusable() else "not_reusable"
        elif reason == "closed":
            close_reason = "not_reusable"
        else:
            close_reason = "error" if exc is None else close_reason_for(exc)
        self._pool.release(self._lease, reason=reason, close_reason=close_reason)

    def __del__(self) -> None:
        phase = self._phase
        if phase is _RELEASED:
            return
        if phase is _CALLER:
            warnings.warn(
                f"a streamed response from {redact_url(self._url)} was never closed; the "
                f"request was made at {self._site}. Use 'async with client.stream(...)' or "
                "'await response.aclose()'. Its connection is closed, not reused.",
                UnclosedResponseWarning,
                stacklevel=1,
            )
        self._conn.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self._end, "closed")
