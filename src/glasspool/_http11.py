"""One HTTP/1.1 connection: an asyncio protocol around httptools plus strict framing checks.

Theory of operation
-------------------
``HTTP11Connection`` owns one transport and runs one request/response exchange at a time
(we never pipeline). Bytes from the peer are read into a buffer the connections of a client
share (:class:`ReceiveBuffer`, via ``get_buffer``/``buffer_updated``) and pass through
three stages, chosen by ``_phase``:

1. **Head** (``_HEAD``). Bytes are collected until ``CRLF CRLF``, with caps checked while
   collecting (total head bytes, the current line). The complete head is pre-scanned (status
   line prefix, bare LF, NUL, line lengths, header count), its obs-folds are replaced with
   SP (RFC 9112 section 5.2; llhttp refuses them), and it is fed to llhttp in one piece, so
   llhttp never sees a byte past the head. 1xx heads are parsed and skipped;
   their bytes count against ``max_header_bytes`` together with the final head.
2. **Body** (``_BODY``). We know where the body ends before llhttp does: a countdown for
   Content-Length, :class:`_ChunkScanner` for chunked framing (which also caps chunk
   extensions and trailers before llhttp would buffer them). A Content-Length body has no
   framing to validate, so llhttp never sees it: its bytes are sliced out of the read
   buffer and queued, and a fresh parser reads the next head. A chunked body is fed to
   llhttp, which validates the framing and hands the payload to ``on_body``. Queued pieces
   are never copied again unless many small ones are joined.

   A caller that wants the whole body (:meth:`HTTP11Connection.receive_all`) and whose
   Content-Length body is still arriving gets a *sink*: the rest of the body is read by
   the transport straight into a preallocated ``bytearray`` (``get_buffer`` hands out the
   sink instead of the shared buffer, never more than the bytes still due), in segments of
   at most ``SINK_SEGMENT`` bytes, and the reader wakes once, when the body is complete.
   Every body byte is then copied once after the kernel's copy (into the final ``bytes``)
   instead of two or three times, and a read never reaches past the body's end.
3. **After the end** (``_DONE``/``_IDLE``). Any further byte is unsolicited: the connection is
   marked not reusable and the bytes are dropped, never fed to a parser.

llhttp is strict by default about most of RFC 9112 (see ``docs/transport-notes.md``); the
checks added here cover what it accepts: HTTP/0.9 and HTTP/2.0 status lines, status codes
outside 100..599, control characters in the reason phrase, Transfer-Encoding other than one
``chunked``, Transfer-Encoding in HTTP/1.0, and every size cap.

Waiting is future-based: a reader parks on ``_waiter`` and ``buffer_updated`` /
``connection_lost`` wake it. Errors found while parsing are stored in ``_error`` and raised
to the reader after it has drained any body bytes that arrived before the error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import cast

import httptools

from ._exceptions import (
    IncompleteBody,
    PoolMisuse,
    ProtocolError,
    ReadError,
    ReadTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    WriteError,
    WriteTimeout,
)
from ._pool.key import PoolKey

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "RECV_BUFFER_SIZE",
    "SINK_SEGMENT",
    "HTTP11Connection",
    "ParserLimits",
    "ReceiveBuffer",
    "ResponseHead",
]

HIGH_WATER = 256 * 1024
"""Pause reading when more unread body bytes than this are buffered."""
LOW_WATER = 64 * 1024
"""Resume reading once the buffered body bytes fall below this."""

RECV_BUFFER_SIZE = 256 * 1024
"""Bytes read from the socket at most per read (as asyncio's own reads)."""
_OWN_BUFFER_SIZE = 16 * 1024  # the buffer of a connection given no shared one

SINK_SEGMENT = 1024 * 1024
"""The largest buffer :meth:`HTTP11Connection.receive_all` allocates ahead of the bytes.

A declared Content-Length is the peer's claim, not bytes received: a larger body is read
into further segments as it arrives, so a lying header costs at most this much memory.
"""
_SINK_MIN = 8 * 1024  # receive_all reads a smaller rest of a body the ordinary way

_JOIN_BELOW = 16 * 1024  # receive_body joins queued chunks smaller than this ...
_JOIN_MAX = 64 * 1024  # ... up to this many bytes, to save awaits on tiny chunks
_WRITE_JOIN_MAX = 64 * 1024  # a body or chunk up to this size: one write with its framing
_MAX_SIZE_DIGITS = 64  # room for chunk-size digits (leading zeros included) in a size line

# Phases of the exchange.
_IDLE = 0  # no exchange in progress; unsolicited bytes make the connection unusable
_HEAD = 1  # request started; waiting for (the rest of) the response head
_BODY = 2  # final head parsed; body bytes are arriving
_DONE = 3  # the body ended; queued chunks may still be waiting for receive_body

# Body framing of the current response.
_F_NONE = 0
_F_LENGTH = 1
_F_CHUNKED = 2
_F_CLOSE = 3

_VERSIONS = {b"HTTP/1.1 ": "HTTP/1.1", b"HTTP/1.0 ": "HTTP/1.0"}
_SPECIAL_LENGTHS = frozenset({10, 14, 16, 17})  # connection/keep-alive, c-length, c-encoding, t-e
_REASON_CTL = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"
_NEVER_UNFOLDED = frozenset({b"content-length", b"transfer-encoding"})  # they frame the body
_HEX = b"0123456789abcdefABCDEF"


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Size caps applied to every response head, 1xx head and trailer section.

    Attributes:
        max_header_bytes: all head bytes of one response, 1xx heads included (status lines,
            header lines and CRLFs); also the cap for one trailer section.
        max_headers: header lines in one head, or trailer lines in one trailer section.
        max_line_bytes: one status line, header line or trailer line, without its CRLF.
        max_chunk_ext_bytes: one chunk extension, from its ``;`` to the end of the line.
    """

    max_header_bytes: int = 65536
    max_headers: int = 100
    max_line_bytes: int = 8192
    max_chunk_ext_bytes: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_line_bytes", "max_chunk_ext_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParserLimits.{name} must be a positive int, got {value!r}")


@dataclass(slots=True)
class ResponseHead:
    """The parsed head of a final (non-1xx) response.

    Attributes:
        status: the status code, 100..599.
        reason: the reason phrase, latin-1 decoded (may be empty).
        http_version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
        headers: (name, value) pairs in the order and case received, latin-1 decoded,
            trailing whitespace removed from values.
        has_content_encoding: whether a ``Content-Encoding`` field is among ``headers``
            (so a reader with none to undo need not look).
    """

    status: int
    reason: str
    http_version: str
    headers: list[tuple[str, str]]
    has_content_encoding: bool = False


class _ChunkScanner:
    """Finds where a chunked body ends and enforces the chunk-extension and trailer caps.

    It reads only size lines and trailer lines (chunk data is skipped by count), so it costs
    a few operations per chunk. llhttp still parses every byte; this scanner exists because
    httptools exposes neither llhttp's error position nor chunk-extension callbacks, and it
    concatenates trailer values without bound.
    """

    __slots__ = (
        "_count",
        "_limits",
        "_line",
        "_line_len",
        "_remaining",
        "_state",
        "_step_start",
        "_total",
        "stopped_at",
    )

    _SIZE = 0
    _DATA = 1
    _DATA_CRLF = 2
    _TRAILER = 3
    _END = 4

    def __init__(self, limits: ParserLimits) -> None:
        self._limits = limits
        self._state = self._SIZE
        self._remaining = 0  # bytes left of the current chunk's data (or of its CRLF)
        self._line = bytearray()  # partial size line
        self._line_len = 0  # bytes so far of the current trailer line, CR included
        self._total = 0  # trailer section bytes
        self._count = 0  # trailer lines
        self.stopped_at = 0  # after an error: where the offending step began in ``data``
        self._step_start = 0

    def scan(self, data: bytes | bytearray, pos: int, n: int) -> int:
        """Scan ``data[pos:n]`` for the end of the chunked body.

        Args:
            data: bytes just received (only ``data[:n]`` is valid).
            pos: where the body's bytes start in ``data``.
            n: where the received bytes end.

        Returns:
            The offset just past the last byte of the body, or -1 if the body continues.

        Raises:
            ProtocolError: a malformed chunk size line (``stopped_at`` says where).
            ResponseTooLarge: a chunk extension or the trailer section passed its cap.
        """
        try:
            return self._scan(data, pos, n)
        except (ProtocolError, ResponseTooLarge):
            self.stopped_at = self._step_start
            raise

    def _scan(self, data: bytes | bytearray, pos: int, n: int) -> int:
        while pos < n:
            self._step_start = pos
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, n - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state, self._remaining = self._DATA_CRLF, 2
            elif state == self._DATA_CRLF:
                if data[pos] != b"\r\n"[2 - self._remaining]:
                    raise ProtocolError(
                        "chunk data not followed by CRLF: got "
                        f"{bytes(data[pos : min(n, pos + 8)])!r}"
                    )
                pos += 1
                self._remaining -= 1
                if not self._remaining:
                    self._state = self._SIZE
            elif state == self._SIZE:
                pos = self._size_line(data, pos, n)
            else:
                pos = self._trailer_line(data, pos, n)
                if self._state == self._END:
                    return pos
        return -1

    def _size_line(self, data: bytes | bytearray, pos: int, n: int) -> int:
        nl = data.find(b"\n", pos, n)
        line = self._line
        if nl < 0:
            line += memoryview(data)[pos:n]
            cap = self._limits.max_chunk_ext_bytes + _MAX_SIZE_DIGITS
            if len(line) > cap:
                raise ResponseTooLarge(
                    f"chunk size line longer than {cap} bytes and still no end "
                    f"(max_chunk_ext_bytes={self._limits.max_chunk_ext_bytes})"
                )
            return n
        if line:
            line += memoryview(data)[pos:nl]
            text = bytes(line)
            line.clear()
        else:
            text = bytes(data[pos:nl])
        size = self._parse_size(text)
        if size:
            self._state, self._remaining = self._DATA, size
        else:
            self._state = self._TRAILER
        return nl + 1

    def _parse_size(self, line: bytes) -> int:
        if not line.endswith(b"\r"):
            raise ProtocolError(f"chunk size line {line[:40]!r} ends in a bare LF, not CRLF")
        size, semi, ext = line[:-1].partition(b";")
        if semi and len(ext) + 1 > self._limits.max_chunk_ext_bytes:
            raise ResponseTooLarge(
                f"chunk extension of {len(ext) + 1} bytes exceeds "
                f"max_chunk_ext_bytes={self._limits.max_chunk_ext_bytes}"
            )
        if not size or size.strip(_HEX):
            raise ProtocolError(f"bad chunk size {size[:40]!r}: expected hex digits only")
        if len(size.lstrip(b"0")) > 16:
            raise ProtocolError(f"chunk size {size[:40]!r} does not fit in 64 bits")
        return int(size, 16)

    def _trailer_line(self, data: bytes | bytearray, pos: int, n: int) -> int:
        lim = self._limits
        nl = data.find(b"\n", pos, n)
        stop = n if nl < 0 else nl
        self._line_len += stop - pos
        self._total += stop - pos + (nl >= 0)
        if self._line_len - 1 > lim.max_line_bytes:
            raise ResponseTooLarge(
                f"trailer line longer than max_line_bytes={lim.max_line_bytes} "
                f"({self._line_len} bytes so far)"
            )
        if self._total > lim.max_header_bytes:
            raise ResponseTooLarge(
                f"trailer section larger than max_header_bytes={lim.max_header_bytes} "
                f"({self._total} bytes so far)"
            )
        if nl < 0:
            return n
        if self._line_len <= 1:  # the empty line ("\r\n"; a bare "\n" is left to llhttp)
            self._state = self._END
            return nl + 1
        self._line_len = 0
        self._count += 1
        if self._count > lim.max_headers:
            raise ResponseTooLarge(
                f"more than max_headers={lim.max_headers} trailer lines ({self._count})"
            )
        return nl + 1


_DEFAULT_LIMITS = ParserLimits()


class ReceiveBuffer:
    """A read buffer that the connections of one client share (one event loop).

    asyncio reads into it (``HTTP11Connection.get_buffer``) and at once hands the bytes
    to that connection (``buffer_updated``), before any other read, so one buffer
    serves them all. Reading into it, rather than letting asyncio allocate a fresh
    256 KiB bytes object per read and shrink it, keeps large allocations (and the page
    faults and mmap/munmap calls glibc makes for them) off the receive path.

    Attributes:
        data: the bytes; only the first ``nbytes`` of a read are valid.
        view: a memoryview of ``data`` (what the transport reads into).
    """

    __slots__ = ("data", "view")

    def __init__(self, size: int = RECV_BUFFER_SIZE) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)


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


class _SinkBuffer(io.BytesIO):
    """The ``BytesIO`` a whole body is read into, through its ``getbuffer()`` view.

    Closing it while a view is alive raises ``BufferError``. That happens when the garbage
    collector finalizes it together with a view nobody can release any more: a failed read
    keeps the transport's slice of it in its traceback's frame, which the connection keeps
    (``connection_lost(exc)``). Python 3.13's ``IOBase`` finalizer reports that error as
    unraisable (3.12 ignored it); the memory goes with the view in the same collection.
    """

    __slots__ = ()

    def close(self) -> None:
        """Close, unless a view is still alive (see the class docstring)."""
        with contextlib.suppress(BufferError):
            super().close()


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


def _keepalive_timeout(value: bytes) -> float | None:
    """Return the ``timeout=N`` seconds of a Keep-Alive header value, if valid."""
    for part in value.split(b","):
        name, eq, number = part.partition(b"=")
        if eq and name.strip().lower() == b"timeout":
            try:
                seconds = float(number.strip())
            except ValueError:
                return None
            return seconds if 0 <= seconds < float("inf") else None
    return None


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
        "_buffered",
        "_chunks",
        "_cl",
        "_closed",
        "_coded",
        "_conn_close",
        "_conn_keep_alive",
        "_drain_waiter",
        "_error",
        "_expected",
        "_extra",
        "_framing",
        "_head",
        "_head_buf",
        "_head_total",
        "_headers",
        "_is_head_request",
        "_ka_timeout",
        "_keep_alive",
        "_limits",
        "_loop",
        "_lost",
        "_lost_exc",
        "_lost_notified",
        "_origin",
        "_parser",
        "_parser_done",
        "_phase",
        "_read_deadline",
        "_read_timer",
        "_read_timer_at",
        "_read_what",
        "_reading_paused",
        "_reason",
        "_received",
        "_recv",
        "_remaining",
        "_scanner",
        "_sink_parts",
        "_sink_pos",
        "_sink_view",
        "_sink_whole",
        "_te",
        "_te_count",
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
        limits: ParserLimits = _DEFAULT_LIMITS,
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
        self._limits = limits
        self._recv = recv_buffer  # made on the first read when None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._phase = _IDLE
        self._head_buf = bytearray()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._read_deadline: float | None = None  # of the wait in progress, if it has one
        self._read_timer: asyncio.TimerHandle | None = None  # fires at or before it
        self._read_timer_at = 0.0  # the time it was armed for (not its when(): see below)
        self._read_what = ("", 0.0)  # what the wait is for, and its timeout (the message)
        self._drain_waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._lost_exc: BaseException | None = None
        self._buffered = 0
        self._reading_paused = self._write_paused = False
        self._lost = self._lost_notified = self._closed = False
        self._extra = self._broken = False
        self._keep_alive = True
        self._sink_view: memoryview | None = None  # what receive_all's reads fill
        self._sink_pos = 0  # bytes of it filled
        self._sink_parts: list[bytes | memoryview] = []  # body pieces before it
        self._sink_whole: io.BytesIO | None = None  # holds it when it is the whole body
        self._reset_response(is_head=False)
        self._reset_head_state()

    def __repr__(self) -> str:
        names = {_IDLE: "idle", _HEAD: "head", _BODY: "body", _DONE: "done"}
        return (
            f"<HTTP11Connection {self._origin} {names[self._phase]} "
            f"reusable={self.is_reusable()} closed={self.is_closed()}>"
        )

    # ----------------------------------------------------------------- public API

    @property
    def buffered_body_bytes(self) -> int:
        """Body bytes received but not yet returned by :meth:`receive_body`.

        Bytes already read into :meth:`receive_all`'s buffer are not counted: they are
        not subject to flow control (that buffer never grows past the declared length).
        """
        return self._buffered

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
            (self._phase == _IDLE or self._phase == _DONE)
            and not self._chunks
            and self._keep_alive
            and not (self._extra or self._lost or self._closed or self._broken)
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
        if self._error is None and (self._phase == _HEAD or self._phase == _BODY):
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
        while self._head is None:
            if self._error is not None:
                raise self._error
            if self._phase != _HEAD:
                raise PoolMisuse("receive_head() called without send_request()")
            await self._wait_readable(read_timeout, "the response head")
        return self._head

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
        if self._chunks:
            return self._pop_chunk()
        phase = self._phase
        if phase in (_DONE, _IDLE):
            self._phase = _IDLE
            self._drop_fields()
            return b""
        if self._error is not None:
            raise self._error
        if phase != _BODY:
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
        if (
            self._framing == _F_LENGTH
            and self._phase == _BODY
            and self._remaining >= _SINK_MIN
            and self._error is None
        ):
            self._start_sink()
            try:
                while self._sink_view is not None:
                    if self._error is not None:
                        raise self._error
                    await self._wait_readable(read_timeout, "the response body")
            except BaseException:
                self._drop_sink()
                raise
            whole, self._sink_whole = self._sink_whole, None
            # getvalue() here, not when the last read came in: the transport's slice of
            # the buffer is gone now, so the buffer is unexported and is not copied.
            body = whole.getvalue() if whole is not None else b"".join(self._sink_parts)
            self._sink_parts = []
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
        phase = self._phase
        if phase in (_DONE, _IDLE):
            chunks = self._chunks
            if not chunks:
                body = b""
            elif len(chunks) == 1:
                body = chunks.popleft()
            else:
                body = b"".join(chunks)
                chunks.clear()
            self._buffered = 0
            if self._reading_paused:  # the body's last read passed the high-water mark
                self._resume_reading()
            self._phase = _IDLE
            self._drop_fields()
            return body
        if phase != _BODY:
            raise PoolMisuse("receive_all() called before receive_head()")
        return None

    def _start_sink(self) -> None:
        """Open the sink: the queued body moves into it, the rest is read into it."""
        queued, total = self._buffered, self._buffered + self._remaining
        if total <= SINK_SEGMENT:
            # One buffer for the whole body, inside a BytesIO: CPython's getvalue() hands
            # out an unexported buffer of exactly the right size as the bytes object
            # itself, so the body is never copied again once the kernel has written it.
            whole = _SinkBuffer(bytes(total))  # its only reference: getbuffer() won't copy
            view = whole.getbuffer()
            pos = 0
            for chunk in self._chunks:
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            self._sink_whole, self._sink_view, self._sink_pos = whole, view, queued
            self._sink_parts = []
        else:  # segments of at most SINK_SEGMENT, joined at the end
            self._sink_parts = list(self._chunks)
            self._new_segment()
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused:
            self._resume_reading()

    def _drop_sink(self) -> None:
        """Let go of an unfinished sink (the read failed or was cancelled) now, not with
        the connection: its view first, then the buffer (see :class:`_SinkBuffer`)."""
        view, self._sink_view = self._sink_view, None
        if view is not None:
            view.release()
        self._sink_whole = None
        self._sink_parts = []

    def _new_segment(self) -> None:
        self._sink_view = memoryview(bytearray(min(self._remaining, SINK_SEGMENT)))
        self._sink_pos = 0

    def _sink_filled(self, nbytes: int) -> None:
        """``nbytes`` more body bytes are in the sink's segment."""
        self._sink_pos += nbytes
        self._remaining -= nbytes
        self._received += nbytes
        view = self._sink_view
        assert view is not None
        if self._sink_pos == len(view):
            if self._remaining:
                self._sink_parts.append(view)
                self._new_segment()
            else:
                self._sink_done(view)
                self._end_message()
                self._wake()
                return
        if self._read_deadline is not None:  # progress: the read timeout starts again
            self._read_deadline = self._loop.time() + self._read_what[1]

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
        the read, and whatever outlives it is copied out of the buffer (head bytes,
        partial lines and Content-Length body pieces by us, chunked body bytes by llhttp's
        ``on_body``). While :meth:`receive_all` has a sink open, the rest of its segment
        is returned instead, so the body lands where it will stay.
        """
        view = self._sink_view
        if view is not None:
            return view[self._sink_pos :]
        recv = self._recv
        if recv is None:
            recv = self._recv = ReceiveBuffer(_OWN_BUFFER_SIZE)
        return recv.view

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` bytes were read into the buffer (called by the event loop)."""
        if self._sink_view is not None:  # get_buffer handed out the sink, just before
            self._sink_filled(nbytes)
            return
        assert self._recv is not None
        self._receive(self._recv.data, nbytes)

    def data_received(self, data: bytes) -> None:
        """Route received bytes by phase (the ``asyncio.Protocol`` way in; for tests)."""
        self._receive(data, len(data))

    def _receive(self, data: bytes | bytearray, n: int) -> None:
        """Route ``data[:n]`` by phase; nothing of ``data`` is kept once this returns."""
        if self._error is not None:
            return
        try:
            pos = 0
            while pos < n:
                phase = self._phase
                if phase == _BODY:
                    pos = self._take_body(data, pos, n)
                elif phase == _HEAD:
                    self.response_started = True
                    pos = self._take_head(data, pos, n)
                else:
                    self._unsolicited()
                    break
        except (ProtocolError, ResponseTooLarge) as exc:
            self._fail(exc)
        if self._waiter is not None:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        """Record the loss, fail or finish the exchange, call ``on_lost`` once."""
        self._lost = True
        self._lost_exc = exc
        if self._error is None:
            self._error = self._loss_error(exc)
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
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ---------------------------------------------------------- httptools callbacks

    # No on_status/on_header: llhttp validates the head, and _read_fields takes the reason
    # and fields from it in one pass afterwards (trailer fields are dropped unread).

    def on_body(self, body: bytes) -> None:
        """llhttp: payload bytes, queued as the object llhttp made."""
        self._chunks.append(body)
        self._buffered += len(body)
        self._received += len(body)

    def on_message_complete(self) -> None:
        """llhttp: the message ended (checked against our own framing)."""
        self._parser_done = True

    # --------------------------------------------------------------- sending

    def _start_exchange(self, head: bytes) -> None:
        self.response_started = False  # about this request, even if it fails right here
        if self._closed or self._lost:
            raise ServerDisconnected(f"{self._origin} closed the connection before the request")
        if self._extra:
            raise ServerDisconnected(
                f"connection to {self._origin} is unusable: the server sent bytes after its "
                "last response"
            )
        if self._broken or self._error is not None:
            raise PoolMisuse(f"connection to {self._origin} failed earlier and cannot be reused")
        if self._phase == _HEAD or self._phase == _BODY or self._chunks:
            raise PoolMisuse(
                f"send_request() on {self._origin} while the previous response is unfinished"
            )
        self._reset_response(is_head=head.startswith(b"HEAD "))
        self._phase = _HEAD

    def _reset_response(self, *, is_head: bool) -> None:
        self.response_started = False
        self._is_head_request = is_head
        self._head: ResponseHead | None = None
        self._head_total = 0
        self._framing = _F_NONE
        self._remaining = 0
        self._received = 0
        self._expected: int | None = None
        self._scanner: _ChunkScanner | None = None
        self._sink_view = self._sink_whole = None
        self._sink_pos = 0
        self._sink_parts = []
        self._head_buf.clear()

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
        head = self._head
        return (
            self._lost
            or self._error is not None
            or (head is not None and (head.status >= 300 or not self._keep_alive))
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
        """Record a parse error, stop the upload and abort the transport."""
        if self._error is None:
            self._error = exc
        self._broken = True
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)  # the upload loop sees _error and stops
        if self._transport is not None:
            self._transport.abort()

    def _unsolicited(self) -> None:
        """Bytes after the end of the response: never parsed, the connection is spent."""
        self._extra = True
        if self._phase == _IDLE and self._transport is not None:
            self._transport.abort()  # nobody is reading: let the pool hear about it now

    def _loss_error(self, exc: BaseException | None) -> BaseException | None:
        """The error a reader should see after the transport was lost, if any."""
        phase = self._phase
        if phase == _HEAD:
            got = self._head_total + len(self._head_buf)
            what = f"after {got} bytes of the response head" if got else "before any response"
            err: BaseException = ServerDisconnected(
                f"{self._origin} closed the connection {what}" + (f": {exc!r}" if exc else "")
            )
        elif phase != _BODY:
            return None
        elif exc is not None:
            err = ReadError(
                f"reading the response body from {self._origin} failed after "
                f"{self._received} bytes: {exc!r}"
            )
        elif self._framing == _F_CLOSE:
            self._end_message()
            return None
        else:
            err = self._incomplete()
        err.__cause__ = exc
        return err

    def _incomplete(self) -> IncompleteBody:
        got, expected = self._received, self._expected
        if expected is None:
            msg = f"{got} body bytes of a chunked body, before its last chunk"
        else:
            msg = f"{got} of {expected} body bytes (Content-Length)"
        return IncompleteBody(
            f"{self._origin} closed the connection after {msg}", expected=expected, received=got
        )

    # ------------------------------------------------------------------ head

    def _take_head(self, data: bytes | bytearray, pos: int, n: int) -> int:
        """Collect head bytes; parse the head once complete. Return where parsing stopped."""
        buf = self._head_buf
        if buf:
            old = len(buf)
            buf += memoryview(data)[pos:n]
            end = buf.find(b"\r\n\r\n", max(0, old - 3))
            if end < 0:
                self._check_partial_head(buf, old)
                return n
            head = bytes(buf[: end + 4])
            buf.clear()
            new_pos = pos + end + 4 - old
        else:
            end = data.find(b"\r\n\r\n", pos, n)
            if end < 0:
                buf += memoryview(data)[pos:n]
                self._check_partial_head(buf)
                return n
            new_pos = end + 4
            head = bytes(data[pos:new_pos])  # a copy: data may be the shared read buffer
        self._on_head(head)
        return new_pos

    def _check_partial_head(self, buf: bytearray, start: int = 0) -> None:
        """Check an unfinished head whose bytes from ``start`` on are new.

        Only the new bytes and the line that was open at ``start`` are scanned, so a head
        trickled in one byte at a time costs time linear in its size, not quadratic.
        """
        lim = self._limits
        size = self._head_total + len(buf)
        if size > lim.max_header_bytes:
            raise ResponseTooLarge(
                f"response head from {self._origin} is larger than "
                f"max_header_bytes={lim.max_header_bytes} ({size} bytes and no end yet)"
            )
        line_start = buf.rfind(b"\n", 0, start) + 1  # the line that was open at ``start``
        while (nl := buf.find(b"\n", line_start)) >= 0:  # lines the new bytes completed
            if nl - line_start - 1 > lim.max_line_bytes:
                self._check_line_lengths(bytes(buf[line_start : nl + 1]))
            line_start = nl + 1
        line = len(buf) - line_start
        if line > lim.max_line_bytes:
            raise ResponseTooLarge(
                f"response head line from {self._origin} is longer than "
                f"max_line_bytes={lim.max_line_bytes} ({line} bytes and no end yet)"
            )
        if len(buf) >= 9 and bytes(buf[:9]) not in _VERSIONS:
            raise self._bad_start(bytes(buf))
        self._check_bytes(buf, start)

    def _check_bytes(self, head: bytes | bytearray, start: int = 0) -> None:
        """Reject what llhttp would reject anyway, early and with a clearer message.

        Bytes before ``start`` were checked already; the one just before it is looked at
        again for a CRLF that straddles ``start``.
        """
        back = max(0, start - 1)
        if head.count(b"\n", start) != head.count(b"\r\n", back):
            raise ProtocolError(
                f"bare LF line ending in the response head from {self._origin} "
                "(RFC 9112 requires CRLF)"
            )
        if head.find(b"\0", start) >= 0:
            raise ProtocolError(f"NUL byte in the response head from {self._origin}")

    def _bad_start(self, head: bytes) -> ProtocolError:
        line = head.split(b"\r\n", 1)[0][:60]
        if line.startswith(b"HTTP/"):
            return ProtocolError(
                f"unsupported HTTP version in status line {line!r} from {self._origin}: "
                "only HTTP/1.0 and HTTP/1.1 are accepted"
            )
        return ProtocolError(
            f"response from {self._origin} does not start with an HTTP/1.x status line: {line!r}"
        )

    def _on_head(self, head: bytes) -> None:
        """Check and parse one complete head (1xx or final)."""
        lim = self._limits
        total = self._head_total + len(head)
        if total > lim.max_header_bytes:
            raise ResponseTooLarge(
                f"response head from {self._origin} is {total} bytes, more than "
                f"max_header_bytes={lim.max_header_bytes} (1xx heads included)"
            )
        self._head_total = total
        version = _VERSIONS.get(head[:9])
        if version is None:
            raise self._bad_start(head)
        self._check_bytes(head)
        if len(head) > lim.max_line_bytes:
            self._check_line_lengths(head)
        count = head.count(b"\r\n") - 2
        if count > lim.max_headers:
            raise ResponseTooLarge(
                f"response head from {self._origin} has {count} header lines, more than "
                f"max_headers={lim.max_headers}"
            )
        status = self._status_code(head)
        if head.find(b"\n ") >= 0 or head.find(b"\n\t") >= 0:
            head = self._unfold(head)
        self._reset_head_state()
        self._feed(head)
        if status < 200:
            self._parser = None  # a fresh parser for the next head (HTTP/1.0 1xx "closes")
            return
        self._read_fields(head)
        self._final_head(status, version)

    def _unfold(self, head: bytes) -> bytes:
        """Replace each obs-fold (OWS CRLF RWS) in the header fields with one SP.

        RFC 9112 section 5.2 asks a user agent to do this before interpreting a field;
        llhttp refuses folds, so the head it is fed is the unfolded one.

        Raises:
            ProtocolError: a line starting with whitespace right after the status line
                (RFC 9112 section 2.2), or a fold in Content-Length or Transfer-Encoding,
                the fields that frame the body: there a fold is refused, not interpreted.
        """
        lines = head[:-4].split(b"\r\n")  # a complete head ends with CRLF CRLF
        fields = lines[:1]
        for line in lines[1:]:
            if line[:1] not in (b" ", b"\t"):
                fields.append(line)
                continue
            if len(fields) == 1:
                raise ProtocolError(
                    f"the first header line from {self._origin} starts with whitespace, "
                    "right after the status line (RFC 9112 section 2.2)"
                )
            name = fields[-1].partition(b":")[0].rstrip(b" \t")
            if name.lower() in _NEVER_UNFOLDED:
                raise ProtocolError(
                    f"obs-fold in {name.decode('latin-1')} from {self._origin}: a field that "
                    "frames the body is never unfolded"
                )
            fields[-1] = fields[-1].rstrip(b" \t") + b" " + line.lstrip(b" \t")
        return b"\r\n".join(fields) + b"\r\n\r\n"

    def _read_fields(self, head: bytes) -> None:
        """Take the reason phrase and the fields of a final head that llhttp accepted.

        One decode and one split per head instead of a callback per field. llhttp has
        checked every line: a field is ``name ":" OWS value OWS`` and a name holds no
        colon, so splitting at the first colon and stripping SP/HTAB yields exactly the
        name and value llhttp would report (``tests/test_hot_path.py`` checks this).
        """
        self._reason = head[13 : head.find(b"\r\n")]  # after "HTTP/1.x NNN "; may be empty
        headers = self._headers
        for line in head.decode("latin-1").split("\r\n")[1:-2]:
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            if len(name) in _SPECIAL_LENGTHS:
                self._special_header(name.lower(), value.encode("latin-1"))
            headers.append((name, value))

    def _check_line_lengths(self, head: bytes) -> None:
        cap = self._limits.max_line_bytes
        start = 0
        while (end := head.find(b"\r\n", start)) > start:
            if end - start > cap:
                raise ResponseTooLarge(
                    f"response head line of {end - start} bytes from {self._origin} exceeds "
                    f"max_line_bytes={cap}: {head[start : start + 40]!r}..."
                )
            start = end + 2

    def _status_code(self, head: bytes) -> int:
        code = head[9:12]
        if not code.isdigit() or head[12:13] not in (b" ", b"\r"):
            line = head.split(b"\r\n", 1)[0][:60]
            raise ProtocolError(f"malformed status line {line!r} from {self._origin}")
        status = int(code)
        if not 100 <= status <= 599:
            raise ProtocolError(f"status code {status} from {self._origin} is outside 100..599")
        if status == 101:
            raise ProtocolError(
                f"unexpected 101 Switching Protocols from {self._origin}: no upgrade was asked for"
            )
        return status

    def _reset_head_state(self) -> None:
        self._headers: list[tuple[str, str]] = []
        self._reason = b""
        self._cl: int | None = None
        self._te: bytes | None = None
        self._te_count = 0
        self._conn_close = self._conn_keep_alive = False
        self._ka_timeout: float | None = None
        self._coded = False
        self._parser_done = False

    def _drop_fields(self) -> None:
        """The exchange is over: an idle connection keeps no fields of its last response."""
        self._head = None
        self._headers = []

    def _special_header(self, name: str, value: bytes) -> None:
        if name == "content-length":
            if value.isdigit():  # llhttp rejects anything else, and repeats
                self._cl = int(value)
        elif name == "transfer-encoding":
            self._te_count += 1
            self._te = value
        elif name == "connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token == b"close":
                    self._conn_close = True
                elif token == b"keep-alive":
                    self._conn_keep_alive = True
        elif name == "keep-alive":
            self._ka_timeout = _keepalive_timeout(value)
        elif name == "content-encoding":
            self._coded = True

    def _final_head(self, status: int, version: str) -> None:
        reason = self._reason
        if len(reason.translate(None, _REASON_CTL)) != len(reason):
            raise ProtocolError(
                f"control character in the reason phrase {reason[:60]!r} from {self._origin}"
            )
        if version == "HTTP/1.1":
            self._keep_alive = not self._conn_close
        else:
            self._keep_alive = self._conn_keep_alive and not self._conn_close
        if self._ka_timeout is not None:
            self.keepalive_hint_s = self._ka_timeout
        framing = self._choose_framing(status, version)
        self._head = ResponseHead(
            status, reason.decode("latin-1"), version, self._headers, self._coded
        )
        self._framing = framing
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)  # an upload in progress re-checks whether to stop
        if framing == _F_NONE:
            self._end_message()
        elif framing == _F_LENGTH:
            assert self._cl is not None
            self._parser = None  # llhttp never sees this body; a fresh one reads the next head
            self._phase = _BODY
            self._remaining = self._expected = self._cl
        else:
            self._phase = _BODY
            if framing == _F_CHUNKED:
                self._scanner = _ChunkScanner(self._limits)
            else:
                self._keep_alive = False

    def _choose_framing(self, status: int, version: str) -> int:
        if self._is_head_request or status == 204 or status == 304:
            if self._is_head_request:
                self._parser = None  # llhttp waits for a body that will never come
            return _F_NONE
        if self._te_count:
            self._check_transfer_encoding(version)
            return _F_CHUNKED
        if self._cl is not None:
            return _F_LENGTH if self._cl else _F_NONE
        return _F_CLOSE

    def _check_transfer_encoding(self, version: str) -> None:
        te = self._te or b""
        if version == "HTTP/1.0":
            raise ProtocolError(
                f"Transfer-Encoding in an HTTP/1.0 response from {self._origin}: "
                "its framing is ambiguous (RFC 9112 section 6.1)"
            )
        if self._te_count > 1:
            raise ProtocolError(
                f"Transfer-Encoding header repeated {self._te_count} times by {self._origin}"
            )
        if te.strip().lower() != b"chunked":
            raise ProtocolError(
                f"unsupported Transfer-Encoding {te[:60]!r} from {self._origin}: "
                "only a single 'chunked' coding is accepted"
            )
        if self._cl is not None:
            raise ProtocolError(
                f"both Content-Length and Transfer-Encoding in a response from {self._origin}"
            )

    # ------------------------------------------------------------------ body

    def _take_body(self, data: bytes | bytearray, pos: int, n: int) -> int:
        """Take the body's share of ``data[pos:n]``; return where it ended."""
        framing = self._framing
        if framing == _F_LENGTH:
            return self._take_sized(data, pos, n)
        if framing == _F_CHUNKED:
            scanner = self._scanner
            assert scanner is not None
            try:
                end = scanner.scan(data, pos, n)
            except (ProtocolError, ResponseTooLarge):
                if scanner.stopped_at > pos:  # hand out the body that came before the error
                    self._feed(memoryview(data)[pos : scanner.stopped_at])
                raise
            done = end >= 0
            if not done:
                end = n
        else:
            end, done = n, False
        self._feed(memoryview(data)[pos:end])  # llhttp's on_body copies what it hands out
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._pause_reading()
        if done:
            if not self._parser_done:
                raise ProtocolError(
                    f"framing disagreement on the response from {self._origin}: the body "
                    "should have ended but the parser did not finish it"
                )
            self._end_message()
        return end

    def _take_sized(self, data: bytes | bytearray, pos: int, n: int) -> int:
        """A Content-Length body: queue (a copy of) its share of ``data[pos:n]``."""
        end = min(n, pos + self._remaining)
        if self._sink_view is not None:  # bytes given to data_received while a sink is open
            self._sink_write(data, pos, end)
            return end
        chunk = bytes(memoryview(data)[pos:end])  # data may be the shared read buffer
        size = end - pos
        self._chunks.append(chunk)
        self._buffered += size
        self._received += size
        self._remaining -= size
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._pause_reading()
        if not self._remaining:
            self._end_message()
        return end

    def _sink_done(self, view: memoryview) -> None:
        """Close the sink once its last byte is in."""
        self._sink_view = None
        if self._sink_whole is None:
            self._sink_parts.append(view)
        else:
            view.release()  # receive_all takes the body out of _sink_whole

    def _sink_write(self, data: bytes | bytearray, pos: int, end: int) -> None:
        while pos < end and (view := self._sink_view) is not None:
            start = self._sink_pos
            take = min(len(view) - start, end - pos)
            view[start : start + take] = memoryview(data)[pos : pos + take]
            self._sink_filled(take)
            pos += take

    def _feed(self, data: bytes | memoryview) -> None:
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpResponseParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            raise ProtocolError(f"unexpected protocol upgrade from {self._origin}") from exc
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"malformed response from {self._origin}: {exc}") from exc

    def _end_message(self) -> None:
        self._phase = _DONE
        self._scanner = None

    def _pop_chunk(self) -> bytes:
        chunks = self._chunks
        chunk = chunks.popleft()
        if len(chunk) < _JOIN_BELOW and chunks and len(chunks[0]) < _JOIN_BELOW:
            parts = [chunk]
            size = len(chunk)
            while chunks and size < _JOIN_MAX and len(chunks[0]) < _JOIN_BELOW:
                part = chunks.popleft()
                parts.append(part)
                size += len(part)
            chunk = b"".join(parts)
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered < LOW_WATER:
            self._resume_reading()
        return chunk

    def _pause_reading(self) -> None:
        self._reading_paused = True
        if self._transport is not None and not self._lost:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        """Read again: every place that empties the body queue calls this when paused."""
        self._reading_paused = False
        if self._transport is not None and not self._lost:
            self._transport.resume_reading()
