"""One HTTP/1.1 connection: the asyncio shell around a :class:`ResponseReader`.

Theory of operation
-------------------
``HTTP11Connection`` owns one transport and runs one request/response exchange at a time
(we never pipeline). It moves bytes and keeps time; every rule about what the bytes mean
is in ``framing.py``:

- **In.** The loop reads into a buffer the connections of a client share
  (:class:`ReceiveBuffer`, via ``get_buffer``/``buffer_updated``), and the bytes go
  straight to the reader (``receive_data``), which keeps what it needs. A caller that wants
  the whole body (:meth:`HTTP11Connection.receive_all`) and whose Content-Length body is
  still arriving gets a :class:`BodySink`: ``get_buffer`` hands out the sink instead of the
  shared buffer, never more than the bytes still due, the reader only counts them, and the
  caller wakes once, when the body is complete.
- **Out.** The request head and body are written with ``transport.write()``; the upload
  waits while the transport's buffer is full (``pause_writing``), with a write timeout, and
  stops early when a response that refuses it arrives.
- **Flow control.** Reading pauses while more than :data:`HIGH_WATER` body bytes wait
  in the reader, and resumes below :data:`LOW_WATER`.
- **Waiting.** A reader parks on ``_waiter``; ``buffer_updated``/``connection_lost`` wake
  it. One lazy timer per connection enforces the read timeout. An error (rejected input,
  the connection's loss, a local close) is stored in ``_error`` and raised to the reader
  once it has taken the body bytes that arrived before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Callable
from typing import cast

from .._exceptions import (
    PoolMisuse,
    ProtocolError,
    ReadError,
    ReadTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    WriteError,
    WriteTimeout,
)
from .._pool.key import PoolKey
from .buffers import OWN_BUFFER_SIZE, SINK_MIN, BodySink, ReceiveBuffer
from .framing import (
    DEFAULT_LIMITS,
    END,
    PAUSED,
    Data,
    ParserLimits,
    Phase,
    ResponseHead,
    ResponseReader,
)

__all__ = ["HIGH_WATER", "LOW_WATER", "HTTP11Connection"]

HIGH_WATER = 256 * 1024
"""Pause reading when more unread body bytes than this are buffered."""
LOW_WATER = 64 * 1024
"""Resume reading once the buffered body bytes fall below this."""

_WRITE_JOIN_MAX = 64 * 1024  # a body or chunk up to this size: one write with its framing
_IDLE, _HEAD, _BODY = Phase.IDLE, Phase.HEAD, Phase.BODY


def _close_after_loop(transport: asyncio.Transport) -> None:
    """Close the socket under ``transport`` although its event loop is already closed.

    That happens when a client is collected after its loop was closed without
    ``loop.shutdown_asyncgens()`` (``asyncio.run()`` and ``asyncio.Runner`` run it, and the
    client closes itself there: ``client._watch_loop``): ``abort()`` then raises "Event loop
    is closed" from ``call_soon`` and leaves the socket to an unclosed-transport warning.
    For CPython's selector transports (under TLS too) the transport's own last step closes
    the socket at once, found by duck typing on their private attributes; other transports
    are left to their ``__del__`` (uvloop closes its own when its loop closes).
    """
    with contextlib.suppress(RuntimeError):  # "Event loop is closed", after marking it
        transport.abort()
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None) or transport
    last_step = getattr(inner, "_call_connection_lost", None)
    if last_step is not None and getattr(inner, "_sock", None) is not None:
        with contextlib.suppress(RuntimeError):  # TLS: handing on the loss needs the loop
            last_step(None)


def _write_framed(
    transport: asyncio.Transport,
    prefix: bytes,
    data: bytes | bytearray | memoryview,
    suffix: bytes,
) -> None:
    """Write ``prefix + data + suffix``: in one write while ``data`` is small, else in three.

    Only ``write()``, never ``writelines()``: the selector transport's ``writelines()`` of
    CPython 3.12 and 3.13 neither calls the protocol's ``pause_writing()`` at the high-water
    mark nor stops buffering once the connection is lost, so an upload through it was never
    held back: no write timeout, and no pause in which an early response or a reset could be
    noticed. ``write()`` does both on every loop; a large ``data`` is not copied.
    """
    if len(data) <= _WRITE_JOIN_MAX:
        transport.write(b"".join((prefix, data, suffix)))
        return
    transport.write(prefix)
    transport.write(data)
    if suffix:
        transport.write(suffix)


class HTTP11Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection: send a request, then receive its head and body.

    Satisfies the pool's ``PoolConnection`` protocol. One exchange at a time: call
    :meth:`send_request`, :meth:`receive_head`, then :meth:`receive_body` until it returns
    ``b""``; after that :meth:`is_reusable` says whether another exchange may follow.

    Attributes:
        key: the pool key this connection was opened for.
        keepalive_hint_s: the last ``Keep-Alive: timeout=N`` the server sent, or None.
        on_lost: called once (from ``connection_lost``) when the transport is gone, whoever
            closed it. Set by the pool.
        response_started: whether any byte of the current response arrived. A request that
            failed while this is False may be retried on another connection.
    """

    __slots__ = (
        "_broken",
        "_closed",
        "_drain_waiter",
        "_error",
        "_head",
        "_is_head_request",
        "_loop",
        "_lost",
        "_lost_exc",
        "_lost_notified",
        "_origin",
        "_read_deadline",
        "_read_timer",
        "_read_timer_at",
        "_read_what",
        "_reader",
        "_reading_paused",
        "_recv",
        "_sink",
        "_transport",
        "_waiter",
        "_write_paused",
        "keepalive_hint_s",
        "key",
        "on_lost",
        "response_started",
    )

    def __init__(
        self,
        key: PoolKey,
        *,
        limits: ParserLimits = DEFAULT_LIMITS,
        recv_buffer: ReceiveBuffer | None = None,
    ) -> None:
        """Create an unconnected protocol; ``open_connection`` hands it to the event loop.

        Args:
            key: the pool key; its origin is named in error messages.
            limits: header and chunk caps for every response on this connection.
            recv_buffer: the read buffer shared with the other connections of a client
                (same event loop); ``None`` gives this connection a small one of its own.
        """
        self.key = key
        self.keepalive_hint_s: float | None = None
        self.on_lost: Callable[[], None] | None = None
        self.response_started = False
        self._origin = key.origin
        self._reader = ResponseReader(key.origin, limits)
        self._recv = recv_buffer  # made on the first read when None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._head: ResponseHead | None = None  # the head handed to the caller
        self._is_head_request = False
        self._waiter: asyncio.Future[None] | None = None
        self._read_deadline: float | None = None  # of the wait in progress, if it has one
        self._read_timer: asyncio.TimerHandle | None = None  # fires at or before it
        self._read_timer_at = 0.0  # the time it was armed for (not its when(): see below)
        self._read_what = ("", 0.0)  # what the wait is for, and its timeout (the message)
        self._drain_waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._lost_exc: BaseException | None = None
        self._reading_paused = self._write_paused = False
        self._lost = self._lost_notified = self._closed = False
        self._broken = False
        self._sink: BodySink | None = None  # what receive_all's reads fill, while open

    def __repr__(self) -> str:
        return (
            f"<HTTP11Connection {self._origin} {self._reader.phase.value} "
            f"reusable={self.is_reusable()} closed={self.is_closed()}>"
        )

    # ----------------------------------------------------------------- public API

    @property
    def buffered_body_bytes(self) -> int:
        """Body bytes received but not yet returned by :meth:`receive_body`.

        Bytes already read into :meth:`receive_all`'s buffer are not counted: they are
        not subject to flow control (that buffer never grows past the declared length).
        """
        return self._reader.buffered

    @property
    def reading_paused(self) -> bool:
        """Whether reading from the socket is paused because too much body is buffered."""
        return self._reading_paused

    def get_extra_info(self, name: str, default: object = None) -> object:
        """Return transport information such as ``"peername"`` or ``"ssl_object"``."""
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def is_reusable(self) -> bool:
        """Whether another exchange may follow on this connection.

        True only when the last response ended cleanly and was fully handed out, it allowed
        keep-alive, no unsolicited bytes arrived, and the connection is still open.
        """
        return (
            self._reader.reusable()
            and not (self._lost or self._closed or self._broken)
            and self._error is None
        )

    def is_closed(self) -> bool:
        """Whether the connection was closed by us or lost."""
        return self._closed or self._lost

    def close(self) -> None:
        """Abort the connection now. Synchronous and idempotent.

        A reader waiting on this connection gets :class:`ReadError`; ``on_lost`` runs when
        the event loop reports the transport gone.
        """
        if self._closed:
            return
        self._closed = True
        phase = self._reader.phase
        if self._error is None and (phase is _HEAD or phase is _BODY):
            self._error = ReadError(
                f"connection to {self._origin} was closed locally while a response was due"
            )
        self._wake()
        self._cancel_read_timer()
        if self._transport is not None:
            if self._loop.is_closed():
                _close_after_loop(self._transport)
            else:
                self._transport.abort()

    async def send_request(
        self,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        *,
        chunked: bool,
        write_timeout: float | None,
    ) -> None:
        """Send one request: the serialised head, then the body.

        Blocks only while the transport's write buffer is above its high-water mark. If the
        server starts answering while the body is being sent (an early 413, say) and then
        closes, fails, or sends a final response that is an error or not keep-alive, the
        upload stops and this returns normally so the caller can read that response; the
        connection is then not reusable.

        Args:
            head: the request line and headers, ending in CRLF CRLF.
            body: None, bytes, or an async iterable of bytes (empty chunks are skipped).
            chunked: frame the body with chunked transfer coding and send the last chunk.
            write_timeout: the longest wait for the socket to accept more bytes, or None.

        Raises:
            ServerDisconnected: the server closed the connection before, or while, the
                request was sent and no response byte arrived.
            WriteError: the socket failed (chained from the OS error).
            WriteTimeout: the socket accepted no bytes for ``write_timeout`` seconds.
            PoolMisuse: the previous exchange on this connection is unfinished or failed.

        Cancellation leaves the connection not reusable.
        """
        self._start_exchange(head)
        transport = self._transport
        assert transport is not None
        try:
            if body is None or isinstance(body, bytes | bytearray | memoryview):
                self._write_fixed(transport, head, body, chunked)
            else:
                transport.write(head)
                await self._send_stream(transport, body, chunked, write_timeout)
            if self._write_paused or self._lost:  # else _drain() has nothing to wait for
                await self._drain(write_timeout)
        except (WriteError, WriteTimeout, ServerDisconnected):
            self._broken = True
            if self.response_started:
                return  # the response that arrived explains the failure; let it be read
            raise
        except BaseException:
            self._broken = True
            raise

    async def receive_head(self, *, method: str, read_timeout: float | None) -> ResponseHead:
        """Wait for the final response head; 1xx heads are skipped.

        Args:
            method: the request's method; must agree with the request line sent.
            read_timeout: the longest wait for the next bytes, or None.

        Returns:
            The head. HEAD requests and 204/304 responses have no body: the next
            :meth:`receive_body` returns ``b""``.

        Raises:
            ServerDisconnected: the peer closed before the head was complete (check
                :attr:`response_started`).
            ReadTimeout: no bytes for ``read_timeout`` seconds.
            ProtocolError: malformed or ambiguous framing.
            ResponseTooLarge: a header cap from :class:`ParserLimits` was passed.
            PoolMisuse: no request was sent, or ``method`` disagrees with it.
        """
        if (method == "HEAD") != self._is_head_request:
            raise PoolMisuse(f"receive_head(method={method!r}) does not match the request sent")
        reader = self._reader
        while (head := self._head) is None:
            if reader.head is not None:  # parsed, and not handed out: it is the next event
                event = reader.next_event()
                assert isinstance(event, ResponseHead)
                self._head = event
                if reader.keepalive_hint_s is not None:
                    self.keepalive_hint_s = reader.keepalive_hint_s
                return event
            if self._error is not None:
                raise self._error
            if reader.phase is not _HEAD:
                raise PoolMisuse("receive_head() called without send_request()")
            await self._wait_readable(read_timeout, "the response head")
        return head

    async def receive_body(self, *, read_timeout: float | None) -> bytes:
        """Return the next piece of the body (framing removed), or ``b""`` at its end.

        Body bytes that arrived before an error are returned before the error is raised.

        Args:
            read_timeout: the longest wait for the next bytes, or None.

        Raises:
            IncompleteBody: the peer closed before the framing said the body ended.
            ReadError: the socket failed mid-body (chained from the OS error).
            ReadTimeout: no bytes for ``read_timeout`` seconds.
            ProtocolError: malformed chunked framing or trailers.
            ResponseTooLarge: a chunk extension or the trailers passed their caps.
        """
        while (chunk := self.receive_body_nowait()) is None:
            await self._wait_readable(read_timeout, "the response body")
        return chunk

    def receive_body_nowait(self) -> bytes | None:
        """:meth:`receive_body` without the wait: ``None`` when no body bytes are here yet.

        Not a checkpoint. A caller reading a whole body calls this first and awaits
        :meth:`receive_body` only on ``None``, so pieces that already arrived (often the
        whole body, with the head) cost no coroutine.

        Raises:
            The errors of :meth:`receive_body`, except ``ReadTimeout``.
        """
        reader = self._reader
        event = reader.next_event()  # raises the error once the pieces before it are out
        if isinstance(event, Data):
            if self._reading_paused and reader.buffered < LOW_WATER:
                self._resume_reading()
            return event.data
        if event is END or event is PAUSED:
            self._head = None
            return b""
        if isinstance(event, ResponseHead):  # called before receive_head took it
            self._head = event
            if reader.keepalive_hint_s is not None:
                self.keepalive_hint_s = reader.keepalive_hint_s
            return self.receive_body_nowait()
        if self._error is not None:
            raise self._error
        if reader.phase is not _BODY:
            raise PoolMisuse("receive_body() called before receive_head()")
        return None

    async def receive_all(self, *, read_timeout: float | None) -> bytes:
        """Return the rest of the body in one piece (``b""`` if there is none).

        The same as calling :meth:`receive_body` until it returns ``b""`` and joining the
        pieces, but a Content-Length body still arriving is read straight into one
        buffer and the caller wakes once, when it is complete. ``read_timeout`` still
        bounds the wait for each read, not the whole body.

        Raises:
            The errors of :meth:`receive_body`. Body bytes received before an error are
            discarded with it.
        """
        done = self.receive_all_nowait()
        if done is not None:
            return done
        reader = self._reader
        if reader.length_remaining >= SINK_MIN and self._error is None:
            queued = reader.buffered
            sink = self._sink = BodySink(reader.take_queued(), queued, reader.length_remaining)
            if self._reading_paused:
                self._resume_reading()
            try:
                while self._sink is not None:
                    if self._error is not None:
                        raise self._error
                    await self._wait_readable(read_timeout, "the response body")
            except BaseException:
                self._sink = None
                sink.drop()
                raise
            body = sink.result()
            self.receive_all_nowait()  # returns b"" (nothing is queued): ends the exchange
            return body
        chunks: list[bytes] = []
        while chunk := await self.receive_body(read_timeout=read_timeout):
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def receive_all_nowait(self) -> bytes | None:
        """:meth:`receive_all` without the wait: ``None`` unless the whole body is here.

        Not a checkpoint; a caller awaits :meth:`receive_all` only on ``None``.

        Raises:
            The errors of :meth:`receive_body`, except ``ReadTimeout``.
        """
        body = self._reader.read_all_nowait()
        if body is not None:
            self._head = None
            if self._reading_paused:  # the body's last read passed the high-water mark
                self._resume_reading()
            return body
        if self._reader.phase is not _BODY:
            raise PoolMisuse("receive_all() called before receive_head()")
        return None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (called by the event loop).

        Any loop's stream transport will do: uvloop's implement ``asyncio.Transport``'s
        methods without subclassing it, so its class is not checked.
        """
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads to (called by the event loop).

        Possibly shared with other connections: :meth:`buffer_updated` runs right after
        the read, and the reader copies out whatever outlives it. While
        :meth:`receive_all` has a sink open, the rest of its segment is returned instead,
        so the body lands where it will stay.
        """
        sink = self._sink
        if sink is not None:
            return sink.view[sink.pos :]
        recv = self._recv
        if recv is None:
            recv = self._recv = ReceiveBuffer(OWN_BUFFER_SIZE)
        return recv.view

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` bytes were read into the buffer (called by the event loop)."""
        if self._sink is not None:  # get_buffer handed out the sink, just before
            self._sink_filled(nbytes)
            return
        assert self._recv is not None
        self._receive(self._recv.data, nbytes)

    def data_received(self, data: bytes) -> None:
        """Take received bytes (the ``asyncio.Protocol`` way in; for tests)."""
        n = len(data)
        pos = 0
        while self._sink is not None and pos < n and self._error is None:  # into a sink
            take = self._sink.write(data, pos, n)
            self._sink_filled(take)
            pos += take
        if pos < n:
            self._receive(data if not pos else data[pos:], n - pos)

    def _receive(self, data: bytes | bytearray, n: int) -> None:
        """Hand ``data[:n]`` to the reader; nothing of ``data`` is kept once this returns."""
        if self._error is not None:
            return
        reader = self._reader
        if not self.response_started and reader.phase is _HEAD:
            self.response_started = True
        try:
            reader.receive_data(data, n)
        except (ProtocolError, ResponseTooLarge) as exc:
            self._fail(exc)
        else:
            if reader.buffered > HIGH_WATER and not self._reading_paused:
                self._pause_reading()
            if reader.unsolicited:
                self._unsolicited()
            if self._drain_waiter is not None and reader.head is not None:
                self._wake_drain()  # an upload in progress re-checks whether to stop
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        """Record the loss, fail or finish the exchange, call ``on_lost`` once."""
        self._lost = True
        if exc is not None:
            # The transport's error carries the frame that read into this connection's
            # buffer, with a slice of it still exported. Kept (as the cause of our errors),
            # it would keep that buffer alive until the garbage collector breaks the cycle,
            # and CPython 3.12 can crash finalizing a BytesIO with a live export. The error's
            # type, text and errno are what matter; its asyncio frames go.
            exc.__traceback__ = None
        self._lost_exc = exc
        if self._error is None:
            try:
                self._reader.receive_eof(exc)
            except (ProtocolError, ServerDisconnected, ReadError) as err:
                self._error = err
        self._wake()
        self._cancel_read_timer()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(self._write_failure(exc))
        callback = self.on_lost
        if callback is not None and not self._lost_notified:
            self._lost_notified = True
            callback()

    def pause_writing(self) -> None:
        """The transport's write buffer is full (called by the event loop)."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport's write buffer drained (called by the event loop)."""
        self._write_paused = False
        self._wake_drain()

    # --------------------------------------------------------------- sending

    def _start_exchange(self, head: bytes) -> None:
        self.response_started = False  # about this request, even if it fails right here
        reader = self._reader
        if self._closed or self._lost:
            raise ServerDisconnected(f"{self._origin} closed the connection before the request")
        if reader.unsolicited:
            raise ServerDisconnected(
                f"connection to {self._origin} is unusable: the server sent bytes after its "
                "last response"
            )
        if self._broken or self._error is not None:
            raise PoolMisuse(f"connection to {self._origin} failed earlier and cannot be reused")
        is_head = head.startswith(b"HEAD ")
        try:
            reader.start_response(head_request=is_head)
        except RuntimeError:  # the previous response is still arriving, or not all taken
            raise PoolMisuse(
                f"send_request() on {self._origin} while the previous response is unfinished"
            ) from None
        self._is_head_request = is_head
        self._head = None
        self._sink = None

    def _write_fixed(
        self, transport: asyncio.Transport, head: bytes, body: bytes | None, chunked: bool
    ) -> None:
        if not body:
            transport.write(head + b"0\r\n\r\n" if chunked else head)
        elif chunked:
            _write_framed(transport, head + b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n")
        else:
            _write_framed(transport, head, body, b"")

    async def _send_stream(
        self,
        transport: asyncio.Transport,
        body: AsyncIterable[bytes],
        chunked: bool,
        timeout: float | None,
    ) -> None:
        async for chunk in body:
            if chunk.__class__ is not bytes and not isinstance(chunk, bytearray | memoryview):
                raise TypeError(
                    f"content= must yield bytes (encode text first), not {type(chunk).__name__}"
                )
            if self._upload_should_stop():
                self._broken = True
                return
            if not chunk:
                continue
            if chunked:
                _write_framed(transport, b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                transport.write(chunk)
            if self._write_paused or self._lost:
                await self._drain(timeout)
        if chunked and not self._upload_should_stop():
            transport.write(b"0\r\n\r\n")

    def _upload_should_stop(self) -> bool:
        """Whether sending more of the body is pointless: lost, failed, or refused early."""
        reader = self._reader
        head = reader.head
        return (
            self._lost
            or self._error is not None
            or (head is not None and (head.status >= 300 or not reader.keep_alive))
        )

    async def _drain(self, timeout: float | None) -> None:
        """Wait until the write buffer is below its high-water mark (or the upload stops)."""
        while self._write_paused or self._lost:
            if self._lost:
                raise self._write_failure(self._lost_exc)
            if self._upload_should_stop():
                self._broken = True
                return
            fut = self._loop.create_future()
            self._drain_waiter = fut
            handle = None
            if timeout is not None:
                handle = self._loop.call_later(timeout, self._on_write_timeout, fut, timeout)
            try:
                await fut
            finally:
                self._drain_waiter = None
                if handle is not None:
                    handle.cancel()

    def _wake_drain(self) -> None:
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _on_write_timeout(self, fut: asyncio.Future[None], timeout: float) -> None:
        if not fut.done():
            fut.set_exception(
                WriteTimeout(
                    f"sending the request to {self._origin} stalled: the socket accepted no "
                    f"bytes for {timeout}s (write timeout)"
                )
            )

    def _write_failure(self, exc: BaseException | None) -> Exception:
        if self._closed:
            return WriteError(f"connection to {self._origin} was closed locally during the send")
        if exc is None:
            return ServerDisconnected(
                f"{self._origin} closed the connection while the request was being sent"
            )
        err = WriteError(f"sending the request to {self._origin} failed: {exc!r}")
        err.__cause__ = exc
        return err

    # --------------------------------------------------------------- waiting

    async def _wait_readable(self, timeout: float | None, what: str) -> None:
        """Park until ``data_received``/``connection_lost`` wakes us, or ``timeout`` passes.

        The read timer is lazy: one ``TimerHandle`` per connection, armed only when none
        is pending at or before this wait's deadline. A timer left over from an earlier
        wait fires early, finds the deadline of the current wait (if any) still ahead
        and re-arms itself there, so a read costs a clock read, not a timer, while the
        same timeout is used again and again. The time a timer was armed for is kept
        here: ``TimerHandle.when()`` need not return it exactly (uvloop's counts whole
        milliseconds, so it can lie a hair after a deadline computed in the same
        millisecond, and every wait would arm a new timer).
        """
        fut = self._loop.create_future()
        self._waiter = fut
        if timeout is not None:
            deadline = self._loop.time() + timeout
            self._read_deadline = deadline
            self._read_what = (what, timeout)
            timer = self._read_timer
            if timer is None or self._read_timer_at > deadline:
                if timer is not None:
                    timer.cancel()
                self._arm_read_timer(deadline)
        try:
            await fut
        finally:
            self._waiter = None
            self._read_deadline = None

    def _on_read_timer(self) -> None:
        """The read timer fired: fail the wait in progress if its deadline has passed."""
        self._read_timer = None
        deadline = self._read_deadline
        fut = self._waiter
        if deadline is None or fut is None or fut.done():
            return  # no timed wait in progress; the next one arms a new timer
        if self._loop.time() < deadline:
            self._arm_read_timer(deadline)
            return
        what, timeout = self._read_what
        self._broken = True
        fut.set_exception(
            ReadTimeout(
                f"timed out waiting for {what}: no data from {self._origin} for "
                f"{timeout}s (read timeout)"
            )
        )

    def _arm_read_timer(self, deadline: float) -> None:
        self._read_timer = self._loop.call_at(deadline, self._on_read_timer)
        self._read_timer_at = deadline

    def _cancel_read_timer(self) -> None:
        timer = self._read_timer
        if timer is not None:
            self._read_timer = None
            timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        """Record rejected input, stop the upload and abort the transport."""
        if self._error is None:
            self._error = exc
        self._broken = True
        self._wake_drain()  # the upload loop sees _error and stops
        if self._transport is not None:
            self._transport.abort()

    def _unsolicited(self) -> None:
        """Bytes after the end of the response: never parsed, the connection is spent."""
        if self._reader.phase is _IDLE and self._transport is not None:
            self._transport.abort()  # nobody is reading: let the pool hear about it now

    # --------------------------------------------------------- body: the sink

    def _sink_filled(self, nbytes: int) -> None:
        """``nbytes`` more body bytes are in the sink's segment."""
        sink = self._sink
        assert sink is not None
        reader = self._reader
        reader.receive_body_in_place(nbytes)
        if sink.filled(nbytes, reader.length_remaining):
            self._sink = None
            self._wake()
            return
        if self._read_deadline is not None:  # progress: the read timeout starts again
            self._read_deadline = self._loop.time() + self._read_what[1]

    # --------------------------------------------------------- flow control

    def _pause_reading(self) -> None:
        self._reading_paused = True
        if self._transport is not None and not self._lost:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        """Read again: every place that empties the body queue calls this when paused."""
        self._reading_paused = False
        if self._transport is not None and not self._lost:
            self._transport.resume_reading()
