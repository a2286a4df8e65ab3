"""Incremental Content-Encoding decoders that work in bounded steps, with size and ratio caps.

``make_decoder(header_value)`` returns a :class:`Decoder`. For each raw body chunk,
``decode_steps(chunk)`` returns an iterator of *steps*; at the end of the body,
``flush_steps()`` does. ``decode(chunk)`` and ``flush()`` join the steps, for callers that
want bytes. :func:`paced` (streaming) and :func:`collect` (a body read whole) drive the
steps from a coroutine without holding the event loop.

Rules of a step (every coding, every layer of a chain):

- R1. A step consumes at most ``_IN_STEP`` (64 KiB) of a layer's input and yields at most
  ``STEP_BYTES`` (64 KiB) of output: zlib ``decompress(data, max_length)`` with
  ``unconsumed_tail``; brotli ``process(data, output_buffer_limit=...)`` until
  ``can_accept_more_data()`` (its output, up to ~96 KiB, is cut into pieces); zstd is fed
  one block at a time, never past a block boundary, so a call yields at most one block
  (<= 128 KiB, cut into pieces). Work per step is therefore bounded, whatever the ratio.
- R2. A step that only consumed input still yields (``b""``), so work that produces no
  output (empty deflate blocks, skippable frames) returns control between steps too.
- R3. The caps are checked after every step, before the next one runs, for *every layer*:
  each layer's output counts against ``max_size`` (an inner layer gets 1/256 + 4 KiB of
  slack, for the framing of incompressible data) and against the ratio guard, relative to
  the raw bytes received. So a chain cannot do more than ``layers * max_ratio`` bytes of
  decompression per received byte, even when its last layer outputs nothing.
- R4. A zstd frame asking for a window above ``ZSTD_MAX_WINDOW`` (8 MiB, RFC 9659) is
  refused before anything is allocated for it. Memory per stream is thus O(step + window):
  32 KiB (zlib), up to 16 MiB (brotli), up to 8 MiB + 128 KiB (zstd).

Caps:

- ``max_size``: decoded bytes; more raises :class:`ResponseTooLarge` naming the cap.
- ``max_ratio``: once a layer's output passes ``min_ratio_bytes``, output / raw input
  above ``max_ratio`` raises :class:`ResponseTooLarge` naming the ratio.
- At most ``MAX_CODINGS`` (5) codings in one header; more raises :class:`ResponseTooLarge`
  naming the count.
- gzip members: at most ``MAX_EMPTY_MEMBERS`` (16) members that decode to nothing, and at
  most ``MAX_MEMBERS_PER_CALL`` (1024) members started within one chunk; more raises
  :class:`ResponseTooLarge`. zstd frames (skippable ones included) count the same way.

``identity`` (or no header) returns the bytes unchanged and is not capped here. Bad data, a
truncated stream, or bytes after the end of a deflate/brotli stream raise
:class:`ProtocolError` naming the coding.

An iterator of steps that is abandoned half-way (an error, a timeout, a cancellation)
leaves the decoder unusable: a later call raises :class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import zlib
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any, Protocol

from ._exceptions import ProtocolError, ResponseTooLarge

__all__ = [
    "MAX_CODINGS",
    "MAX_EMPTY_MEMBERS",
    "MAX_MEMBERS_PER_CALL",
    "STEP_BYTES",
    "ZSTD_MAX_WINDOW",
    "Decoder",
    "DecodeCheck",
    "collect",
    "make_decoder",
    "paced",
    "supported_encodings",
]

MAX_CODINGS = 5
MAX_EMPTY_MEMBERS = 16
MAX_MEMBERS_PER_CALL = 1024
STEP_BYTES = 64 * 1024  # the most output one step yields
ZSTD_MAX_WINDOW = 8 * 1024 * 1024  # RFC 9659: "8 MB", 2**23 bytes
_IN_STEP = 64 * 1024  # the most input one step consumes
_ZSTD_BLOCK_MAX = 128 * 1024  # RFC 8878 Block_Maximum_Size
_EXTRA = "glasspool[compression]"

DecodeCheck = Callable[[float, float], None]
"""``check(now, idle_since)``: raise if a deadline passed; loop times in seconds."""


class Decoder(Protocol):
    """Turns raw body chunks into decoded bytes, in bounded steps."""

    def decode_steps(self, data: bytes) -> Iterator[bytes]:
        """The steps of decoding the next raw chunk: each item is one step's output."""
        ...

    def flush_steps(self) -> Iterator[bytes]:
        """The last steps, at the end of the body; checks the body was complete."""
        ...

    def decode(self, data: bytes) -> bytes:
        """Decode the next raw chunk whole; may return ``b""`` while input is buffered."""
        ...

    def flush(self) -> bytes:
        """Return the last decoded bytes at the end of the body and check it was complete."""
        ...


class _Stage(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


def make_decoder(
    content_encoding: str | None,
    *,
    max_size: int | None,
    max_ratio: float = 1000.0,
    min_ratio_bytes: int = 1 << 20,
) -> Decoder:
    """Return a decoder for a ``Content-Encoding`` header value.

    Args:
        content_encoding: the header value, e.g. ``"gzip"`` or ``"gzip, br"``; None, empty
            or ``identity`` means no decoding.
        max_size: the most decoded bytes allowed in total, or None for no cap.
        max_ratio: the most decoded bytes allowed per compressed byte ...
        min_ratio_bytes: ... once more than this many bytes were decoded.

    Returns:
        A :class:`Decoder`.

    Raises:
        ProtocolError: an unknown coding, or a coding whose optional module (``brotli``
            >= 1.2, ``zstandard``) is not installed.
        ResponseTooLarge: more than ``MAX_CODINGS`` codings.
        ValueError: a cap that is not positive.
    """
    if max_size is not None and max_size < 0:
        raise ValueError(f"max_size must be >= 0 or None, got {max_size!r}")
    if not max_ratio > 0 or min_ratio_bytes < 0:
        raise ValueError(f"bad ratio guard: max_ratio={max_ratio!r}, min={min_ratio_bytes!r}")
    codings = _parse(content_encoding)
    if not codings:
        return _Identity()
    stages = [_make_stage(name) for name in reversed(codings)]
    return _Chain(stages, codings, max_size, max_ratio, min_ratio_bytes)


async def paced(steps: Iterator[bytes], check: DecodeCheck | None) -> AsyncGenerator[bytes, None]:
    """Run decoding steps without holding the event loop; yield the non-empty outputs.

    After each step but the first, this yields to the event loop (``asyncio.sleep(0)``) and
    then calls ``check(now, idle_since)``, where ``idle_since`` is when the steps started or
    last yielded output. So the loop is never held for more than two steps, deadlines are
    seen between steps, and cancellation lands within a step.

    Cancellation or an error from ``check`` leaves the decoder unusable (see the module
    docstring); the response it belongs to is closed anyway.
    """
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    first = True
    for piece in steps:
        if first:
            first = False
        else:
            await asyncio.sleep(0)
            if check is not None:
                check(loop.time(), idle_since)
        if piece:
            yield piece
            idle_since = loop.time()


async def collect(steps: Iterator[bytes], check: DecodeCheck | None, out: list[bytes]) -> None:
    """:func:`paced` for a body read whole: append the non-empty outputs to ``out``."""
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    first = True
    for piece in steps:
        if first:
            first = False
        else:
            await asyncio.sleep(0)
            if check is not None:
                check(loop.time(), idle_since)
        if piece:
            out.append(piece)
            idle_since = loop.time()


@functools.lru_cache(maxsize=1)
def supported_encodings() -> tuple[str, ...]:
    """Return the codings this installation can decode, for ``Accept-Encoding``."""
    found = ["gzip", "deflate"]
    for coding, module in (("br", "brotli"), ("zstd", "zstandard")):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(coding)
    return tuple(found)


def _parse(value: str | None) -> list[str]:
    if not value:
        return []
    codings = [c for c in (p.strip().lower() for p in value.split(",")) if c and c != "identity"]
    if len(codings) > MAX_CODINGS:
        raise ResponseTooLarge(
            f"Content-Encoding {value[:100]!r} lists {len(codings)} codings; "
            f"at most {MAX_CODINGS} are decoded"
        )
    return codings


def _make_stage(name: str) -> _Stage:
    if name in ("gzip", "x-gzip"):
        return _GzipStage(name)
    if name == "deflate":
        return _DeflateStage()
    if name == "br":
        return _BrotliStage(_optional("brotli", name))
    if name == "zstd":
        return _ZstdStage(_optional("zstandard", name))
    raise ProtocolError(f"unsupported Content-Encoding {name!r}")


def _optional(module: str, coding: str) -> Any:
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise ProtocolError(
            f"Content-Encoding {coding!r} needs the optional {module!r} module: "
            f"pip install '{_EXTRA}'"
        ) from exc
    if module == "brotli" and not hasattr(found.Decompressor, "can_accept_more_data"):
        raise ProtocolError(
            f"Content-Encoding 'br' needs brotli >= 1.2 (bounded output): pip install '{_EXTRA}'"
        )
    return found


def _pieces(out: bytes) -> Iterator[bytes]:
    """``out`` as one step, or cut into steps of at most ``STEP_BYTES``."""
    if len(out) <= STEP_BYTES:
        yield out
        return
    view = memoryview(out)
    for start in range(0, len(out), STEP_BYTES):
        yield bytes(view[start : start + STEP_BYTES])


class _Identity:
    """No coding: bytes pass through untouched."""

    __slots__ = ()

    def decode_steps(self, data: bytes) -> Iterator[bytes]:
        return iter((data,))

    def flush_steps(self) -> Iterator[bytes]:
        return iter(())

    def decode(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Chain:
    """One or more stages, applied in order, with the caps checked on every layer's steps."""

    __slots__ = (
        "_busy",
        "_codings",
        "_in",
        "_inner_cap",
        "_max_ratio",
        "_max_size",
        "_min_ratio",
        "_out",
        "_stages",
    )

    def __init__(
        self,
        stages: list[_Stage],
        codings: list[str],
        max_size: int | None,
        max_ratio: float,
        min_ratio_bytes: int,
    ) -> None:
        self._stages = stages
        self._codings = codings
        self._max_size = max_size
        # An inner layer is compressed data: incompressible content makes it a little
        # larger than the final body, so it gets some slack over the cap.
        self._inner_cap = None if max_size is None else max_size + max_size // 256 + 4096
        self._max_ratio = max_ratio
        self._min_ratio = min_ratio_bytes
        self._in = 0
        self._out = [0] * len(stages)
        self._busy = False

    def decode_steps(self, data: bytes) -> Iterator[bytes]:
        self._enter()
        if not data:
            self._busy = False
            return iter(())
        self._in += len(data)
        return self._run(self._pipe(0, data))

    def flush_steps(self) -> Iterator[bytes]:
        self._enter()
        return self._run(self._finish_all())

    def decode(self, data: bytes) -> bytes:
        return b"".join(self.decode_steps(data))

    def flush(self) -> bytes:
        return b"".join(self.flush_steps())

    def _enter(self) -> None:
        if self._busy:
            raise ProtocolError(
                f"the {', '.join(self._codings)} decoder was interrupted mid-chunk; "
                "it cannot continue"
            )
        self._busy = True

    def _run(self, steps: Iterator[bytes]) -> Iterator[bytes]:
        yield from steps
        self._busy = False

    def _finish_all(self) -> Iterator[bytes]:
        for i, stage in enumerate(self._stages):
            yield from self._guard(i, stage.finish())

    def _pipe(self, i: int, data: bytes) -> Iterator[bytes]:
        return self._guard(i, self._stages[i].feed(data))

    def _guard(self, i: int, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """Check the caps on each of stage ``i``'s steps, then pass it on (R2: always yield)."""
        last = i == len(self._stages) - 1
        for piece in pieces:
            self._check(i, len(piece))
            if last:
                yield piece
            elif piece:
                yield from self._pipe(i + 1, piece)
            else:
                yield b""

    def _check(self, i: int, size: int) -> None:
        total = self._out[i] = self._out[i] + size
        last = i == len(self._stages) - 1
        cap = self._max_size if last else self._inner_cap
        if cap is None and total <= self._min_ratio:
            return
        label = ", ".join(self._codings)
        n = len(self._codings)
        where = "" if last else f" in an inner layer (coding {n - i} of {n} undone)"
        if cap is not None and total > cap:
            raise ResponseTooLarge(
                f"decoded body ({label}) exceeds max_decompressed_size={self._max_size} "
                f"bytes{where}: {total} bytes so far"
            )
        if total > self._min_ratio and total > self._max_ratio * self._in:
            raise ResponseTooLarge(
                f"decompression ratio {total / self._in:.1f}:1 exceeds max_ratio="
                f"{self._max_ratio:g}{where} ({total} bytes from {self._in} {label} bytes)"
            )


class _Members:
    """Counts gzip members or zstd frames and enforces the member caps."""

    __slots__ = ("_empty", "_kind", "_output", "_started")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._empty = 0
        self._output = 0  # bytes decoded from the current member
        self._started = 0  # members started within the current feed() call

    def begin_call(self) -> None:
        self._started = 0

    def add_output(self, size: int) -> None:
        self._output += size

    def next_member(self) -> None:
        """Account for the end of one member and the start of the next."""
        if not self._output:
            self._empty += 1
            if self._empty > MAX_EMPTY_MEMBERS:
                raise ResponseTooLarge(
                    f"{self._kind} body has more than {MAX_EMPTY_MEMBERS} empty members"
                )
        self._started += 1
        if self._started > MAX_MEMBERS_PER_CALL:
            raise ResponseTooLarge(
                f"{self._kind} body starts more than {MAX_MEMBERS_PER_CALL} members in one chunk"
            )
        self._output = 0


#: the most input a deflate body keeps to read again as raw deflate (see _DeflateStage)
_PROBE_MAX = 64 * 1024


class _ZlibStage:
    """Shared zlib stepping: bounded input per call, bounded output via ``max_length``."""

    __slots__ = ("_name", "_obj", "_started", "_wbits")

    def __init__(self, name: str, wbits: int) -> None:
        self._name = name
        self._wbits = wbits
        self._obj = zlib.decompressobj(wbits)
        self._started = False

    def _inflate(self, view: memoryview, rest: list[memoryview]) -> Iterator[bytes]:
        """Inflate ``view`` step by step (R1); at the stream's end, put what follows in ``rest``."""
        obj = self._obj
        size = len(view)
        try:
            for start in range(0, size, _IN_STEP):
                end = min(start + _IN_STEP, size)
                data: bytes | memoryview = view[start:end]
                while True:
                    out = obj.decompress(data, STEP_BYTES)
                    yield out
                    if obj.eof:
                        rest.append(view[end - len(obj.unused_data) :])
                        return
                    data = obj.unconsumed_tail
                    if not data and len(out) < STEP_BYTES:
                        break
        except zlib.error as exc:
            raise ProtocolError(f"invalid {self._name} data: {exc}") from exc

    def finish(self) -> Iterator[bytes]:
        if self._started and not self._obj.eof:
            raise ProtocolError(
                f"truncated {self._name} data: the body ended before the compressed stream did"
            )
        return iter(())


class _GzipStage(_ZlibStage):
    """gzip / x-gzip, with multiple members (RFC 1952 section 2.2)."""

    __slots__ = ("_members",)

    def __init__(self, name: str) -> None:
        super().__init__(name, 16 + zlib.MAX_WBITS)
        self._members = _Members(name)

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._started = True
        members = self._members
        members.begin_call()
        view = memoryview(data)
        while view:
            if self._obj.eof:  # the previous member ended exactly where a chunk did
                members.next_member()
                self._obj = zlib.decompressobj(self._wbits)
            rest: list[memoryview] = []
            for piece in self._inflate(view, rest):
                members.add_output(len(piece))
                yield piece
            if not rest:
                return
            view = rest[0]


class _DeflateStage(_ZlibStage):
    """deflate: zlib-wrapped (RFC 1950) as specified, or raw (RFC 1951) as often sent."""

    __slots__ = ("_head", "_probe")

    def __init__(self) -> None:
        super().__init__("deflate", zlib.MAX_WBITS)
        self._head = b""
        # The input so far, kept while a zlib header may be a raw stream's first two bytes
        # (a raw stream may start with 78 9C): if the zlib reading fails before it gave any
        # output, the input is read again as raw deflate. At most _PROBE_MAX bytes.
        self._probe: bytearray | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not self._started:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._started = True
            self._head = b""
            cmf, flg = data[0], data[1]
            if cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0:
                self._probe = bytearray()
            else:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        probe = self._probe
        if probe is None:
            yield from self._feed(data)
            return
        probe += data
        if len(probe) > _PROBE_MAX:
            self._probe = probe = None
        try:
            for piece in self._feed(data):
                if piece:
                    self._probe = probe = None  # output given: it was zlib after all
                yield piece
        except ProtocolError:
            if probe is None:
                raise
            self._probe = None
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            yield from self._feed(bytes(probe))

    def _feed(self, data: bytes) -> Iterator[bytes]:
        if self._obj.eof:
            raise ProtocolError(f"{len(data)} bytes after the end of the deflate stream")
        rest: list[memoryview] = []
        yield from self._inflate(memoryview(data), rest)
        if rest and rest[0]:
            raise ProtocolError(f"{len(rest[0])} bytes after the end of the deflate stream")

    def finish(self) -> Iterator[bytes]:
        if self._head:
            raise ProtocolError("truncated deflate data: the body ended after 1 byte")
        return super().finish()


class _BrotliStage:
    """br (RFC 7932) via the optional ``brotli`` module (>= 1.2, for bounded output)."""

    __slots__ = ("_error", "_obj", "_started")

    def __init__(self, module: Any) -> None:
        self._obj = module.Decompressor()
        self._error: type[Exception] = module.error
        self._started = False

    def _process(self, data: bytes | memoryview) -> bytes:
        try:
            return bytes(self._obj.process(data, output_buffer_limit=STEP_BYTES))
        except self._error as exc:
            raise ProtocolError(f"invalid br data: {exc}") from exc

    def _drain(self) -> Iterator[bytes]:
        """Take out what the decoder holds (``process(b"")`` until it has no more)."""
        obj = self._obj
        while True:
            out = self._process(b"")
            if not out and obj.can_accept_more_data():
                return
            yield from _pieces(out)

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._started = True
        view = memoryview(data)
        for start in range(0, len(view), _IN_STEP):
            if self._obj.is_finished():
                raise ProtocolError(f"{len(view) - start} bytes after the end of the br stream")
            yield from _pieces(self._process(view[start : start + _IN_STEP]))
            yield from self._drain()

    def finish(self) -> Iterator[bytes]:
        if self._started and not self._obj.is_finished():
            raise ProtocolError(
                "truncated br data: the body ended before the compressed stream did"
            )
        return iter(())


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE = 0xFFFFFFF0, 0x184D2A50
# Where the stage is in the frame format (RFC 8878 section 3.1): what the next bytes are.
_FRAME, _BLOCK, _CONTENT, _CHECKSUM, _SKIP = range(5)


class _ZstdStage:
    """zstd (RFC 8878) via the optional ``zstandard`` module; frames may follow frames.

    The stage reads the frame format itself, just enough to know where each block ends,
    and feeds the library one block at a time (R1), so that one call decodes at most one
    block (<= 128 KiB). It reads the window size from each frame header and refuses one
    above ``ZSTD_MAX_WINDOW`` (R4). Skippable frames are skipped here.
    """

    __slots__ = (
        "_checksum",
        "_dctx",
        "_error",
        "_frames",
        "_frames_seen",
        "_head",
        "_last",
        "_left",
        "_module",
        "_obj",
        "_started",
        "_state",
    )

    def __init__(self, module: Any) -> None:
        self._module = module
        self._dctx = module.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._error: type[Exception] = module.ZstdError
        self._obj: Any = None
        self._frames = _Members("zstd")
        self._frames_seen = False
        self._state = _FRAME
        self._head = bytearray()  # the header being read (frame, skippable or block)
        self._left = 0  # bytes left of the current block content, checksum or skipped frame
        self._last = False  # the current block is the frame's last
        self._checksum = False  # the current frame ends with a 4-byte checksum
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._started = True
        self._frames.begin_call()
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._state in (_FRAME, _BLOCK):
                pos = yield from self._read_header(view, pos)
                continue
            take = min(self._left, _IN_STEP, end - pos)
            piece = view[pos : pos + take]
            pos += take
            self._left -= take
            if self._state == _SKIP:
                yield b""
            else:
                yield from self._decompress(piece)
            if not self._left:
                self._end_of_part()

    def _read_header(self, view: memoryview, pos: int) -> Generator[bytes, None, int]:
        """Read (the rest of) a frame or block header from ``view[pos:]``; return the new pos."""
        head = self._head
        while len(head) < (need := self._header_size()):
            if pos == len(view):
                return pos
            take = min(need - len(head), len(view) - pos)
            head += view[pos : pos + take]
            pos += take
        header = bytes(head)
        head.clear()
        if self._state == _BLOCK:
            self._start_block(header)
            yield from self._decompress(header)
        else:
            yield from self._start_frame(header)
        if self._state in (_CONTENT, _SKIP) and not self._left:
            self._end_of_part()  # an empty block, or an empty skippable frame
        return pos

    def _header_size(self) -> int:
        """How many bytes the header being read has in all (as far as known yet)."""
        head = self._head
        if self._state == _BLOCK:
            return 3
        if len(head) < 4:
            return 4
        magic = int.from_bytes(head[:4], "little")
        if magic & _SKIPPABLE_MASK == _SKIPPABLE:
            return 8
        if magic != _ZSTD_MAGIC:
            raise ProtocolError(f"invalid zstd data: unknown frame magic number {magic:#010x}")
        if len(head) < 5:
            return 5
        fhd = head[4]
        single = fhd >> 5 & 1
        fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
        return 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs

    def _start_frame(self, header: bytes) -> Iterator[bytes]:
        if self._frames_seen:
            self._frames.next_member()
        self._frames_seen = True
        if int.from_bytes(header[:4], "little") != _ZSTD_MAGIC:
            self._state, self._left, self._obj = _SKIP, int.from_bytes(header[4:8], "little"), None
            return
        try:
            window = self._module.get_frame_parameters(header).window_size
        except self._error as exc:
            raise ProtocolError(f"invalid zstd data: {exc}") from exc
        if window > ZSTD_MAX_WINDOW:
            raise ResponseTooLarge(
                f"zstd frame asks for a window of {window} bytes; the limit for the zstd "
                f"content coding is {ZSTD_MAX_WINDOW} bytes (8 MiB, RFC 9659)"
            )
        self._checksum = bool(header[4] >> 2 & 1)
        self._obj = self._dctx.decompressobj(write_size=STEP_BYTES)
        self._state = _BLOCK
        yield from self._decompress(header)

    def _start_block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        self._last = bool(value & 1)
        kind, size = value >> 1 & 3, value >> 3
        if kind == 3 or size > _ZSTD_BLOCK_MAX:
            raise ProtocolError(
                f"invalid zstd data: block type {kind} of {size} bytes "
                f"(types 0-2 of at most {_ZSTD_BLOCK_MAX} bytes are valid)"
            )
        self._left = 1 if kind == 1 else size  # RLE: one byte, repeated `size` times
        self._state = _CONTENT

    def _end_of_part(self) -> None:
        """A block's content, a checksum or a skipped frame was read whole: what is next."""
        if self._state == _CONTENT and not self._last:
            self._state = _BLOCK
        elif self._state == _CONTENT and self._checksum:
            self._state, self._left = _CHECKSUM, 4
        else:
            if self._obj is not None and not self._obj.eof:
                raise ProtocolError("invalid zstd data: the frame did not end after its last block")
            self._state = _FRAME

    def _decompress(self, data: bytes | memoryview) -> Iterator[bytes]:
        try:
            out = self._obj.decompress(data)
        except self._error as exc:
            raise ProtocolError(f"invalid zstd data: {exc}") from exc
        self._frames.add_output(len(out))
        yield from _pieces(out)

    def finish(self) -> Iterator[bytes]:
        if self._started and (self._state != _FRAME or self._head):
            raise ProtocolError(
                "truncated zstd data: the body ended before the compressed stream did"
            )
        return iter(())
