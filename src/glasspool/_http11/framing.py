"""The response side of HTTP/1.1, sans-IO: bytes in, events out, every framing rule here.

Rule 1: every rule about where a response starts and ends lives in this file: the status
line, the header fields and their caps, obs-folds, Content-Length, chunked framing and its
caps, trailers, and the no-body cases (HEAD, 204, 304). Rule 2: nothing here does I/O or
knows about an event loop; ``protocol.py`` moves the bytes and the timers.

Theory of operation
-------------------
A :class:`ResponseReader` reads the responses of one connection, one at a time (we never
pipeline). :meth:`~ResponseReader.start_response` says a request was sent;
:meth:`~ResponseReader.receive_data` takes the bytes that arrive, in pieces of any size,
and :meth:`~ResponseReader.next_event` hands out what they amount to: the final head
(:class:`ResponseHead`), the body in :class:`Data` pieces, then :class:`End`, and
:data:`NEED_DATA` while more bytes are needed. ``receive_data`` does the work at once and
keeps nothing of its argument (the caller's read buffer is reused for the next read), so
the events are ready when it returns. Its states (:class:`ReaderState`):

    IDLE --start_response--> STATUS_LINE -> HEADER_FIELDS --final head--> body --> DONE
                                 ^              |                                  |
                                 +----1xx-------+         End taken: IDLE <--------+

where the body is BODY (Content-Length, or until the connection closes), or
CHUNK_SIZE -> CHUNK_DATA -> CHUNK_END -> CHUNK_SIZE ... -> TRAILERS for chunked framing.
A head without a body (HEAD, 204, 304, Content-Length: 0) goes straight to DONE. Bytes in
IDLE or DONE are unsolicited: never parsed, they set :attr:`ResponseReader.unsolicited`.
Input that breaks a rule raises :class:`ProtocolError` or :class:`ResponseTooLarge`
naming the rule, the limit, and the state the reader was in ("... (in the chunk size
line)"); the reader is then in ERROR for good. Events that came before the error are still
handed out first; then ``next_event`` raises the error again.

1. **Head.** Bytes are collected until ``CRLF CRLF``, with caps checked while collecting
   (total head bytes, the current line). The complete head is pre-scanned (status line
   prefix, bare LF, NUL, line lengths, header count), its obs-folds are replaced with SP
   (RFC 9112 section 5.2; llhttp refuses them), and it is fed to llhttp in one piece, so
   llhttp never sees a byte past the head. 1xx heads are parsed and skipped; their bytes
   count against ``max_header_bytes`` together with the final head.
2. **Body.** We know where the body ends before llhttp does: a countdown for
   Content-Length, :class:`_ChunkScanner` for chunked framing (which also caps chunk
   extensions and trailers before llhttp would buffer them). A Content-Length body has no
   framing to validate, so llhttp never sees it: its bytes are sliced out of the input and
   queued, and a fresh parser reads the next head. A chunked body is fed to llhttp, which
   validates the framing and hands the payload to ``on_body``.
3. **After the end.** Any further byte is unsolicited.

llhttp is strict by default about most of RFC 9112 (see ``docs/transport-notes.md``); the
checks added here cover what it accepts: HTTP/0.9 and HTTP/2.0 status lines, status codes
outside 100..599, control characters in the reason phrase, Transfer-Encoding other than one
``chunked``, Transfer-Encoding in HTTP/1.0, and every size cap.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import httptools

from .._defaults import (
    DEFAULT_MAX_CHUNK_EXT_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_LINE_BYTES,
)
from .._exceptions import (
    GlasspoolError,
    IncompleteBody,
    ProtocolError,
    ReadError,
    ResponseTooLarge,
    ServerDisconnected,
)
from .._validate import check_int

__all__ = [
    "DEFAULT_LIMITS",
    "END",
    "NEED_DATA",
    "PAUSED",
    "Data",
    "End",
    "Event",
    "ParserLimits",
    "Phase",
    "ReaderState",
    "ResponseHead",
    "ResponseReader",
    "Sentinel",
]

_JOIN_BELOW = 16 * 1024  # next_event joins queued pieces smaller than this ...
_JOIN_MAX = 64 * 1024  # ... up to this many bytes, to save the caller awaits on tiny pieces
_MAX_SIZE_DIGITS = 64  # room for chunk-size digits (leading zeros included) in a size line

_VERSIONS = {b"HTTP/1.1 ": "HTTP/1.1", b"HTTP/1.0 ": "HTTP/1.0"}
_SPECIAL_LENGTHS = frozenset({10, 14, 16, 17})  # connection/keep-alive, c-length, c-encoding, t-e
_REASON_CTL = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"
_NEVER_UNFOLDED = frozenset({b"content-length", b"transfer-encoding"})  # they frame the body
_HEX = b"0123456789abcdefABCDEF"


# ------------------------------------------------------------------------ limits, events


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

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_chunk_ext_bytes: int = DEFAULT_MAX_CHUNK_EXT_BYTES

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_line_bytes", "max_chunk_ext_bytes"):
            check_int(f"ParserLimits.{name}", getattr(self, name))


DEFAULT_LIMITS: Final = ParserLimits()


@dataclass(slots=True)
class ResponseHead:
    """The parsed head of a final (non-1xx) response: the reader's first event.

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


@dataclass(slots=True)  # not frozen: one is made per body piece, and frozen costs 2x
class Data:
    """Body bytes, framing removed (chunk sizes and CRLFs are not in ``data``)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    """The body ended (trailers, if any, were checked and dropped)."""


END: Final = End()
"""The :class:`End` event the reader hands out (any ``End()`` compares equal)."""


class Sentinel(enum.Enum):
    """Why :meth:`ResponseReader.next_event` has no event."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
"""``next_event()``: no event until more bytes arrive (or the connection ends)."""
PAUSED: Final = Sentinel.PAUSED
"""``next_event()``: the response was handed out whole; nothing until ``start_response``."""

Event = ResponseHead | Data | End


class ReaderState(enum.Enum):
    """Where a :class:`ResponseReader` is; the value is how errors name it."""

    IDLE = "idle"  # no response expected; bytes now are unsolicited
    STATUS_LINE = "the status line"
    HEADER_FIELDS = "the header fields"
    BODY = "the body"  # Content-Length, or until the connection closes
    CHUNK_SIZE = "the chunk size line"  # its extensions included
    CHUNK_DATA = "chunk data"
    CHUNK_END = "the CRLF after chunk data"
    TRAILERS = "the trailer section"
    DONE = "done"  # the body ended; its events may still be waiting
    ERROR = "error"  # input was rejected; the reader is spent


class Phase(enum.Enum):
    """Which part of an exchange a :class:`ResponseReader` is in (its ``phase``).

    Coarser than :class:`ReaderState`, and kept as it changes, so it is cheap to look at.
    """

    IDLE = "idle"  # no response expected (none yet, or the last one was handed out whole)
    HEAD = "head"  # a request was sent; its final head is not complete yet
    BODY = "body"  # the final head was parsed; the body is still arriving
    DONE = "done"  # the body ended; its pieces and End may still wait for next_event


STATUS_LINE = ReaderState.STATUS_LINE
HEADER_FIELDS = ReaderState.HEADER_FIELDS
CHUNK_SIZE = ReaderState.CHUNK_SIZE
CHUNK_END = ReaderState.CHUNK_END
TRAILERS = ReaderState.TRAILERS

_E = TypeVar("_E", bound=GlasspoolError)


def _reject(cls: type[_E], message: str, where: ReaderState) -> _E:
    """The error for rejected input: ``message``, then the state the reader was in."""
    return cls(f"{message} (in {where.value})")


# ------------------------------------------------------------------------ chunked framing


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
    STATES = (CHUNK_SIZE, ReaderState.CHUNK_DATA, CHUNK_END, TRAILERS, ReaderState.DONE)

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

    @property
    def state(self) -> ReaderState:
        """The reader state this scanner is in."""
        return self.STATES[self._state]

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
                    raise _reject(
                        ProtocolError,
                        "chunk data not followed by CRLF: got "
                        f"{bytes(data[pos : min(n, pos + 8)])!r}",
                        CHUNK_END,
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
                raise _reject(
                    ResponseTooLarge,
                    f"chunk size line longer than {cap} bytes and still no end "
                    f"(max_chunk_ext_bytes={self._limits.max_chunk_ext_bytes})",
                    CHUNK_SIZE,
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
            raise _reject(
                ProtocolError,
                f"chunk size line {line[:40]!r} ends in a bare LF, not CRLF",
                CHUNK_SIZE,
            )
        size, semi, ext = line[:-1].partition(b";")
        if semi and len(ext) + 1 > self._limits.max_chunk_ext_bytes:
            raise _reject(
                ResponseTooLarge,
                f"chunk extension of {len(ext) + 1} bytes exceeds "
                f"max_chunk_ext_bytes={self._limits.max_chunk_ext_bytes}",
                CHUNK_SIZE,
            )
        if not size or size.strip(_HEX):
            raise _reject(
                ProtocolError, f"bad chunk size {size[:40]!r}: expected hex digits only", CHUNK_SIZE
            )
        if len(size.lstrip(b"0")) > 16:
            raise _reject(
                ProtocolError, f"chunk size {size[:40]!r} does not fit in 64 bits", CHUNK_SIZE
            )
        return int(size, 16)

    def _trailer_line(self, data: bytes | bytearray, pos: int, n: int) -> int:
        lim = self._limits
        nl = data.find(b"\n", pos, n)
        stop = n if nl < 0 else nl
        self._line_len += stop - pos
        self._total += stop - pos + (nl >= 0)
        if self._line_len - 1 > lim.max_line_bytes:
            raise _reject(
                ResponseTooLarge,
                f"trailer line longer than max_line_bytes={lim.max_line_bytes} "
                f"({self._line_len} bytes so far)",
                TRAILERS,
            )
        if self._total > lim.max_header_bytes:
            raise _reject(
                ResponseTooLarge,
                f"trailer section larger than max_header_bytes={lim.max_header_bytes} "
                f"({self._total} bytes so far)",
                TRAILERS,
            )
        if nl < 0:
            return n
        if self._line_len <= 1:  # the empty line ("\r\n"; a bare "\n" is left to llhttp)
            self._state = self._END
            return nl + 1
        self._line_len = 0
        self._count += 1
        if self._count > lim.max_headers:
            raise _reject(
                ResponseTooLarge,
                f"more than max_headers={lim.max_headers} trailer lines ({self._count})",
                TRAILERS,
            )
        return nl + 1


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


def _llhttp_place(reason: str, fallback: ReaderState) -> ReaderState:
    """The state a reason llhttp gave for refusing a chunked body points at."""
    if "chunk size" in reason or "chunk extension" in reason:
        return CHUNK_SIZE
    if "chunk data" in reason:
        return CHUNK_END
    if "header" in reason:
        return TRAILERS
    return fallback


# ------------------------------------------------------------------------ the reader

_IDLE = Phase.IDLE  # module names: read on every call of the hot paths
_HEAD = Phase.HEAD
_BODY = Phase.BODY
_DONE = Phase.DONE

# Body framing of the current response.
_F_NONE = 0
_F_LENGTH = 1
_F_CHUNKED = 2
_F_CLOSE = 3


class ResponseReader:
    """Reads the responses of one HTTP/1.1 connection: bytes in, events out. No I/O.

    Call :meth:`start_response` once the request is sent, then feed what arrives to
    :meth:`receive_data` (and :meth:`receive_eof` when the connection ends) and take
    events with :meth:`next_event`: one :class:`ResponseHead`, :class:`Data` pieces, one
    :class:`End`. After that, :meth:`reusable` says whether another exchange may follow.

    Attributes:
        phase: which part of an exchange the reader is in (:class:`Phase`); :attr:`state`
            says exactly where.
        origin: who sends the responses, as error messages name it.
        limits: the caps on heads, lines, chunk extensions and trailers.
        head: the final head of the current response once parsed, whether or not
            ``next_event`` has handed it out yet; None again once ``End`` is taken.
        keep_alive: whether the current response lets the connection be reused (its
            version and ``Connection`` field; a body read until close never does).
        keepalive_hint_s: the last ``Keep-Alive: timeout=N`` seen, in seconds, or None.
        buffered: body bytes received and queued but not yet handed out.
        body_received: body bytes of the current response received so far.
        unsolicited: bytes arrived while no response was due (after the end of one, or
            before a request); they were dropped. Stays True: the stream is out of step.
    """

    __slots__ = (
        "_chunks",
        "_cl",
        "_coded",
        "_conn_close",
        "_conn_keep_alive",
        "_error",
        "_expected",
        "_framing",
        "_head_buf",
        "_head_event",
        "_head_total",
        "_headers",
        "_is_head_request",
        "_ka_timeout",
        "_parser",
        "_parser_done",
        "_reason",
        "_remaining",
        "_scanner",
        "_te",
        "_te_count",
        "body_received",
        "buffered",
        "head",
        "keep_alive",
        "keepalive_hint_s",
        "limits",
        "origin",
        "phase",
        "unsolicited",
    )

    def __init__(self, origin: str = "the server", limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self.origin = origin
        self.limits = limits
        self.keep_alive = True
        self.keepalive_hint_s: float | None = None
        self.buffered = 0
        self.unsolicited = False
        self._parser: httptools.HttpResponseParser | None = None
        self.phase = _IDLE
        self._error: GlasspoolError | None = None  # input or an end that was rejected
        self._head_buf = bytearray()
        self._chunks: collections.deque[bytes] = collections.deque()
        # Per response (start_response resets them):
        self._is_head_request = False
        self.head: ResponseHead | None = None
        self._head_event: ResponseHead | None = None  # the head, until next_event hands it out
        self._head_total = 0  # bytes of the heads before the one in _head_buf (1xx)
        self._framing = _F_NONE
        self._remaining = 0  # of a Content-Length body
        self.body_received = 0
        self._expected: int | None = None  # the Content-Length
        self._scanner: _ChunkScanner | None = None
        self._reset_head_state()

    def __repr__(self) -> str:
        return f"<ResponseReader {self.origin} in {self.state.value}, {self.buffered} bytes queued>"

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ReaderState:
        """Where the reader is (see the module docstring for the transitions)."""
        if self._error is not None:
            return ReaderState.ERROR
        phase = self.phase
        if phase is _HEAD:
            return HEADER_FIELDS if self._head_buf.find(b"\n") >= 0 else STATUS_LINE
        if phase is _BODY:
            scanner = self._scanner
            return ReaderState.BODY if scanner is None else scanner.state
        return ReaderState.DONE if phase is _DONE else ReaderState.IDLE

    @property
    def error(self) -> BaseException | None:
        """The error input was rejected with, if any (the reader is then in ERROR)."""
        return self._error

    @property
    def length_remaining(self) -> int:
        """Bytes of a Content-Length body still due (0 for any other framing)."""
        return self._remaining if self._framing == _F_LENGTH and self.phase is _BODY else 0

    def reusable(self) -> bool:
        """Whether another exchange may follow on this byte stream.

        True when the last response ended and was handed out whole (its ``End`` may still be
        waiting), it allowed keep-alive, no unsolicited bytes arrived and no input was
        rejected.
        """
        return (
            (self.phase is _IDLE or self.phase is _DONE)
            and not self._chunks
            and self.keep_alive
            and not self.unsolicited
            and self._error is None
        )

    # ------------------------------------------------------------------ input

    def start_response(self, *, head_request: bool) -> None:
        """A request was sent: expect its response (``head_request``: it had no body).

        Raises:
            RuntimeError: the previous response is unfinished (the caller checks first).
        """
        if self.phase is _HEAD or self.phase is _BODY or self._chunks:
            raise RuntimeError(f"{self!r}: the previous response is unfinished")
        self._is_head_request = head_request
        self.head = self._head_event = None
        self._head_total = self._remaining = self.body_received = 0
        self._framing = _F_NONE
        self._expected = None
        self._scanner = None
        self._head_buf.clear()
        self.phase = _HEAD

    def receive_data(self, data: bytes | bytearray, end: int | None = None) -> None:
        """Take the bytes ``data[:end]`` that arrived (all of ``data`` when ``end`` is None).

        Nothing of ``data`` is kept once this returns, so the caller may reuse its buffer.
        Bytes that arrive when no response is due are dropped (:attr:`unsolicited`).

        Raises:
            ProtocolError: malformed or ambiguous framing, naming the state it was found in.
            ResponseTooLarge: a cap from :class:`ParserLimits` was passed, naming it.
                After either, the reader is in ERROR; events before the error remain.
        """
        if self._error is not None:
            raise self._error
        n = len(data) if end is None else end
        try:
            pos = 0
            while pos < n:
                phase = self.phase
                if phase is _BODY:
                    if self._framing == _F_LENGTH:
                        pos = self._take_sized(data, pos, n)
                    else:
                        pos = self._take_body(data, pos, n)
                elif phase is _HEAD:
                    pos = self._take_head(data, pos, n)
                else:
                    self.unsolicited = True
                    break
        except (ProtocolError, ResponseTooLarge) as exc:
            self._error = exc
            raise

    def receive_body_in_place(self, nbytes: int) -> None:
        """``nbytes`` more bytes of a Content-Length body arrived in the caller's own buffer.

        For a caller that reads the rest of a body straight into a buffer of its own (see
        ``buffers.BodySink``): the bytes are only counted, never queued as events. At most
        :attr:`length_remaining` bytes.
        """
        if not 0 <= nbytes <= self.length_remaining:
            raise ValueError(f"{nbytes} body bytes, but {self.length_remaining} are due")
        self._remaining -= nbytes
        self.body_received += nbytes
        if not self._remaining:
            self._end_message()

    def receive_eof(self, cause: BaseException | None = None) -> None:
        """The connection ended (``cause``: the error it failed with, or None for a close).

        A body read until the connection closes ends here (``End`` is queued).

        Raises:
            ServerDisconnected: the head was not complete (chained from ``cause``).
            ReadError: the connection failed mid-body (chained from ``cause``).
            IncompleteBody: it closed before the framing said the body ended.
        """
        if self._error is not None:
            return
        phase = self.phase
        if phase is _HEAD:
            got = self._head_total + len(self._head_buf)
            what = f"after {got} bytes of the response head" if got else "before any response"
            err: GlasspoolError = ServerDisconnected(
                f"{self.origin} closed the connection {what}" + (f": {cause!r}" if cause else "")
            )
        elif phase is not _BODY:
            return
        elif cause is not None:
            err = ReadError(
                f"reading the response body from {self.origin} failed after "
                f"{self.body_received} bytes: {cause!r}"
            )
        elif self._framing == _F_CLOSE:
            self._end_message()
            return
        else:
            err = self._incomplete()
        err.__cause__ = cause
        self._error = err
        raise err

    # ------------------------------------------------------------------ output

    def next_event(self) -> Event | Literal[Sentinel.NEED_DATA, Sentinel.PAUSED]:
        """The next event: the head, a body piece, or the end; else why there is none.

        Consecutive body pieces smaller than 16 KiB are joined (up to 64 KiB) into one
        :class:`Data`; larger ones are handed out as they came, never copied.

        Returns:
            :class:`ResponseHead`, :class:`Data` or :data:`END` in that order;
            :data:`NEED_DATA` until more bytes arrive; :data:`PAUSED` once ``End`` was
            taken (until :meth:`start_response`).

        Raises:
            The error input was rejected with, once the events before it were taken.
        """
        head = self._head_event
        if head is not None:
            self._head_event = None
            return head
        if self._chunks:
            return Data(self._pop_chunk())
        phase = self.phase
        if phase is _DONE:
            self.phase = _IDLE
            self._drop_fields()
            return END
        if phase is _IDLE:
            return PAUSED
        if self._error is not None:
            raise self._error
        return NEED_DATA

    def read_all_nowait(self) -> bytes | None:
        """The rest of the body in one piece and its ``End`` taken, if the body has ended.

        The same as taking :class:`Data` events up to :data:`END` and joining them (a head
        not yet taken is dropped); ``b""`` if the response was already handed out whole.

        Returns:
            The bytes, or None while the body has not ended (nothing is taken then).
        """
        phase = self.phase
        if phase is not _DONE and phase is not _IDLE:
            return None
        chunks = self._chunks
        if not chunks:
            body = b""
        elif len(chunks) == 1:
            body = chunks.popleft()
        else:
            body = b"".join(chunks)
            chunks.clear()
        self.buffered = 0
        self._head_event = None
        self.phase = _IDLE
        self._drop_fields()
        return body

    def take_queued(self) -> list[bytes]:
        """Take every queued body piece (they are handed out nowhere else)."""
        pieces = list(self._chunks)
        self._chunks.clear()
        self.buffered = 0
        return pieces

    # ------------------------------------------------------------ llhttp callbacks

    # No on_status/on_header: llhttp validates the head, and _read_fields takes the reason
    # and fields from it in one pass afterwards (trailer fields are dropped unread).

    def on_body(self, body: bytes) -> None:
        """llhttp: payload bytes, queued as the object llhttp made."""
        self._chunks.append(body)
        self.buffered += len(body)
        self.body_received += len(body)

    def on_message_complete(self) -> None:
        """llhttp: the message ended (checked against our own framing)."""
        self._parser_done = True

    # ------------------------------------------------------------------ resets

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
        """The response was handed out: keep none of its fields."""
        self.head = None
        self._headers = []

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
            head = bytes(data[pos:new_pos])  # a copy: data may be the caller's read buffer
        self._on_head(head)
        return new_pos

    def _check_partial_head(self, buf: bytearray, start: int = 0) -> None:
        """Check an unfinished head whose bytes from ``start`` on are new.

        Only the new bytes and the line that was open at ``start`` are scanned, so a head
        trickled in one byte at a time costs time linear in its size, not quadratic.
        """
        lim = self.limits
        size = self._head_total + len(buf)
        if size > lim.max_header_bytes:
            raise _reject(
                ResponseTooLarge,
                f"response head from {self.origin} is larger than "
                f"max_header_bytes={lim.max_header_bytes} ({size} bytes and no end yet)",
                self.state,
            )
        line_start = buf.rfind(b"\n", 0, start) + 1  # the line that was open at ``start``
        while (nl := buf.find(b"\n", line_start)) >= 0:  # lines the new bytes completed
            if nl - line_start - 1 > lim.max_line_bytes:
                self._check_line_lengths(bytes(buf[line_start : nl + 1]), first=not line_start)
            line_start = nl + 1
        line = len(buf) - line_start
        if line > lim.max_line_bytes:
            raise _reject(
                ResponseTooLarge,
                f"response head line from {self.origin} is longer than "
                f"max_line_bytes={lim.max_line_bytes} ({line} bytes and no end yet)",
                HEADER_FIELDS if line_start else STATUS_LINE,
            )
        if len(buf) >= 9 and bytes(buf[:9]) not in _VERSIONS:
            raise self._bad_start(bytes(buf))
        self._check_bytes(buf, start)

    def _check_bytes(self, head: bytes | bytearray, start: int = 0) -> None:
        """Reject what llhttp would reject anyway, early and with a clearer message.

        Bytes before ``start`` were checked already; the one just before it is looked at
        again for a CRLF that straddles ``start``.
        """
        back = start - 1 if start else 0
        if head.count(b"\n", start) != head.count(b"\r\n", back):
            first_lf = head.find(b"\n")
            raise _reject(
                ProtocolError,
                f"bare LF line ending in the response head from {self.origin} "
                "(RFC 9112 requires CRLF)",
                STATUS_LINE if first_lf == 0 or head[first_lf - 1] != 0x0D else HEADER_FIELDS,
            )
        nul = head.find(b"\0", start)
        if nul >= 0:
            first_lf = head.find(b"\n")
            raise _reject(
                ProtocolError,
                f"NUL byte in the response head from {self.origin}",
                STATUS_LINE if first_lf < 0 or nul < first_lf else HEADER_FIELDS,
            )

    def _bad_start(self, head: bytes) -> ProtocolError:
        line = head.split(b"\r\n", 1)[0][:60]
        if line.startswith(b"HTTP/"):
            return _reject(
                ProtocolError,
                f"unsupported HTTP version in status line {line!r} from {self.origin}: "
                "only HTTP/1.0 and HTTP/1.1 are accepted",
                STATUS_LINE,
            )
        return _reject(
            ProtocolError,
            f"response from {self.origin} does not start with an HTTP/1.x status line: {line!r}",
            STATUS_LINE,
        )

    def _on_head(self, head: bytes) -> None:
        """Check and parse one complete head (1xx or final)."""
        lim = self.limits
        total = self._head_total + len(head)
        if total > lim.max_header_bytes:
            raise _reject(
                ResponseTooLarge,
                f"response head from {self.origin} is {total} bytes, more than "
                f"max_header_bytes={lim.max_header_bytes} (1xx heads included)",
                HEADER_FIELDS,
            )
        self._head_total = total
        version = _VERSIONS.get(head[:9])
        if version is None:
            raise self._bad_start(head)
        self._check_bytes(head)
        if len(head) > lim.max_line_bytes:
            self._check_line_lengths(head, first=True)
        count = head.count(b"\r\n") - 2
        if count > lim.max_headers:
            raise _reject(
                ResponseTooLarge,
                f"response head from {self.origin} has {count} header lines, more than "
                f"max_headers={lim.max_headers}",
                HEADER_FIELDS,
            )
        status = self._status_code(head)
        if head.find(b"\n ") >= 0 or head.find(b"\n\t") >= 0:
            head = self._unfold(head)
        self._reset_head_state()
        try:
            self._feed(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            raise self._head_rejected(head, exc) from exc
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
                raise _reject(
                    ProtocolError,
                    f"the first header line from {self.origin} starts with whitespace, "
                    "right after the status line (RFC 9112 section 2.2)",
                    HEADER_FIELDS,
                )
            name = fields[-1].partition(b":")[0].rstrip(b" \t")
            if name.lower() in _NEVER_UNFOLDED:
                raise _reject(
                    ProtocolError,
                    f"obs-fold in {name.decode('latin-1')} from {self.origin}: a field that "
                    "frames the body is never unfolded",
                    HEADER_FIELDS,
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

    def _check_line_lengths(self, head: bytes, *, first: bool) -> None:
        """Check each line of ``head`` (``first``: it starts with the status line)."""
        cap = self.limits.max_line_bytes
        start = 0
        while (end := head.find(b"\r\n", start)) > start:
            if end - start > cap:
                raise _reject(
                    ResponseTooLarge,
                    f"response head line of {end - start} bytes from {self.origin} exceeds "
                    f"max_line_bytes={cap}: {head[start : start + 40]!r}...",
                    STATUS_LINE if first and not start else HEADER_FIELDS,
                )
            start = end + 2

    def _status_code(self, head: bytes) -> int:
        code = head[9:12]
        if not code.isdigit() or head[12:13] not in (b" ", b"\r"):
            line = head.split(b"\r\n", 1)[0][:60]
            raise _reject(
                ProtocolError, f"malformed status line {line!r} from {self.origin}", STATUS_LINE
            )
        status = int(code)
        if not 100 <= status <= 599:
            raise _reject(
                ProtocolError,
                f"status code {status} from {self.origin} is outside 100..599",
                STATUS_LINE,
            )
        if status == 101:
            raise _reject(
                ProtocolError,
                f"unexpected 101 Switching Protocols from {self.origin}: no upgrade was asked for",
                STATUS_LINE,
            )
        return status

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
        if reason.translate(None, _REASON_CTL) != reason:
            raise _reject(
                ProtocolError,
                f"control character in the reason phrase {reason[:60]!r} from {self.origin}",
                STATUS_LINE,
            )
        if version == "HTTP/1.1":
            self.keep_alive = not self._conn_close
        else:
            self.keep_alive = self._conn_keep_alive and not self._conn_close
        if self._ka_timeout is not None:
            self.keepalive_hint_s = self._ka_timeout
        framing = self._choose_framing(status, version)
        self.head = self._head_event = ResponseHead(
            status, reason.decode("latin-1"), version, self._headers, self._coded
        )
        self._framing = framing
        if framing == _F_NONE:
            self._end_message()
        elif framing == _F_LENGTH:
            assert self._cl is not None
            self._parser = None  # llhttp never sees this body; a fresh one reads the next head
            self.phase = _BODY
            self._remaining = self._expected = self._cl
        else:
            self.phase = _BODY
            if framing == _F_CHUNKED:
                self._scanner = _ChunkScanner(self.limits)
            else:
                self.keep_alive = False

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
            raise _reject(
                ProtocolError,
                f"Transfer-Encoding in an HTTP/1.0 response from {self.origin}: "
                "its framing is ambiguous (RFC 9112 section 6.1)",
                HEADER_FIELDS,
            )
        if self._te_count > 1:
            raise _reject(
                ProtocolError,
                f"Transfer-Encoding header repeated {self._te_count} times by {self.origin}",
                HEADER_FIELDS,
            )
        if te.strip().lower() != b"chunked":
            raise _reject(
                ProtocolError,
                f"unsupported Transfer-Encoding {te[:60]!r} from {self.origin}: "
                "only a single 'chunked' coding is accepted",
                HEADER_FIELDS,
            )
        if self._cl is not None:
            raise _reject(
                ProtocolError,
                f"both Content-Length and Transfer-Encoding in a response from {self.origin}",
                HEADER_FIELDS,
            )

    def _head_rejected(self, head: bytes, exc: Exception) -> ProtocolError:
        """The error for a head llhttp refused (``exc``), naming the line it is in."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            return _reject(
                ProtocolError, f"unexpected protocol upgrade from {self.origin}", HEADER_FIELDS
            )
        # Which line? Fed the status line alone, a fresh parser refuses it or waits for more.
        where = HEADER_FIELDS
        try:
            httptools.HttpResponseParser(object()).feed_data(head[: head.find(b"\r\n") + 2])
        except httptools.HttpParserError:
            where = STATUS_LINE
        return _reject(ProtocolError, f"malformed response from {self.origin}: {exc}", where)

    # ------------------------------------------------------------------ body

    def _take_body(self, data: bytes | bytearray, pos: int, n: int) -> int:
        """Take the share of a chunked or read-until-close body; return where it ended."""
        scanner = self._scanner
        if scanner is not None:
            try:
                end = scanner.scan(data, pos, n)
            except (ProtocolError, ResponseTooLarge):
                if scanner.stopped_at > pos:  # hand out the body that came before the error
                    self._feed_body(memoryview(data)[pos : scanner.stopped_at], scanner)
                raise
            done = end >= 0
            if not done:
                end = n
        else:
            end, done = n, False
        self._feed_body(memoryview(data)[pos:end], scanner)  # on_body copies what it queues
        if done:
            if not self._parser_done:
                raise _reject(
                    ProtocolError,
                    f"framing disagreement on the response from {self.origin}: the body "
                    "should have ended but the parser did not finish it",
                    TRAILERS,
                )
            self._end_message()
        return end

    def _take_sized(self, data: bytes | bytearray, pos: int, n: int) -> int:
        """A Content-Length body: queue (a copy of) its share of ``data[pos:n]``."""
        end = pos + self._remaining
        if end > n:  # (not min(): a call less on every read of a body)
            end = n
        chunk = bytes(memoryview(data)[pos:end])  # data may be the caller's read buffer
        size = end - pos
        self._chunks.append(chunk)
        self.buffered += size
        self.body_received += size
        self._remaining -= size
        if not self._remaining:
            self._end_message()
        return end

    def _feed_body(self, data: memoryview, scanner: _ChunkScanner | None) -> None:
        """Feed chunked (or read-until-close) body bytes to llhttp."""
        try:
            self._feed(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            where = ReaderState.BODY if scanner is None else scanner.state
            raise _reject(
                ProtocolError,
                f"malformed response from {self.origin}: {exc}",
                _llhttp_place(str(exc), where),
            ) from exc

    def _feed(self, data: bytes | memoryview) -> None:
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpResponseParser(self)
        parser.feed_data(data)

    def _end_message(self) -> None:
        self.phase = _DONE
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
        self.buffered -= len(chunk)
        return chunk

    def _incomplete(self) -> IncompleteBody:
        got, expected = self.body_received, self._expected
        if expected is None:
            msg = f"{got} body bytes of a chunked body, before its last chunk"
        else:
            msg = f"{got} of {expected} body bytes (Content-Length)"
        return IncompleteBody(
            f"{self.origin} closed the connection after {msg}", expected=expected, received=got
        )
