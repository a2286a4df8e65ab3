"""Incremental Content-Encoding decoders with a size cap and an expansion-ratio guard.

``make_decoder(header_value)`` returns an object with ``decode(data) -> bytes`` (call it
for each raw body chunk) and ``flush() -> bytes`` (call it once at the end of the body).

Bounded work per call. Every decompression step produces at most about ``_STEP`` bytes
(zlib ``max_length``/``unconsumed_tail``, brotli ``output_buffer_limit``, zstd input fed in
``_SLICE``-byte slices) and the caps are checked after every step, so a small input
that would expand to gigabytes is stopped after one step past the cap. Chains such as
``Content-Encoding: gzip, br`` are decoded in reverse order, one stage feeding the next
step by step, so an intermediate stage cannot balloon either.

Caps:

- ``max_size``: total decoded bytes; more raises :class:`ResponseTooLarge` naming the cap.
- ``max_ratio``: once the output passes ``min_ratio_bytes``, output / compressed input
  above ``max_ratio`` raises :class:`ResponseTooLarge` naming the ratio.
- At most ``MAX_CODINGS`` (5) codings in one header; more raises :class:`ResponseTooLarge`
  naming the count (a framing problem of the response, not a size one).
- gzip members: at most ``MAX_EMPTY_MEMBERS`` (16) members that decode to nothing, and at
  most ``MAX_MEMBERS_PER_CALL`` (1024) members started within one ``decode()`` call; more
  raises :class:`ResponseTooLarge`. Without these, a body of 20-byte empty members costs a
  decompressor set-up per 20 bytes while producing no output the ratio guard could see.

``identity`` (or no header) returns the bytes unchanged and is not capped here. Bad data, a
truncated stream, or bytes after the end of a deflate/brotli stream raise
:class:`ProtocolError` naming the coding.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

from ._exceptions import ProtocolError, ResponseTooLarge

__all__ = [
    "MAX_CODINGS",
    "MAX_EMPTY_MEMBERS",
    "MAX_MEMBERS_PER_CALL",
    "Decoder",
    "make_decoder",
    "supported_encodings",
]

MAX_CODINGS = 5
MAX_EMPTY_MEMBERS = 16
MAX_MEMBERS_PER_CALL = 1024
_STEP = 64 * 1024  # the most output one decompression step may produce (brotli: ~1.5x)
_SLICE = 128  # zstd input per step: at most ~4 MiB of output even from RLE blocks
_EXTRA = "glasspool[compression]"


class Decoder(Protocol):
    """Turns raw body chunks into decoded bytes."""

    def decode(self, data: bytes) -> bytes:
        """Decode the next raw chunk; may return ``b""`` while input is buffered."""
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
        ProtocolError: an unknown coding, more than ``MAX_CODINGS`` codings, or a coding
            whose optional module (``brotli``, ``zstandard``) is not installed.
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
    label = ", ".join(codings)
    return _Chain(stages, label, max_size, max_ratio, min_ratio_bytes)


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
        return importlib.import_module(module)
    except ImportError as exc:
        raise ProtocolError(
            f"Content-Encoding {coding!r} needs the optional {module!r} module: "
            f"pip install '{_EXTRA}'"
        ) from exc


class _Identity:
    """No coding: bytes pass through untouched."""

    __slots__ = ()

    def decode(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Chain:
    """One or more stages, applied in order, with the caps checked after every step."""

    __slots__ = ("_in", "_label", "_max_ratio", "_max_size", "_min_ratio", "_out", "_stages")

    def __init__(
        self,
        stages: list[_Stage],
        label: str,
        max_size: int | None,
        max_ratio: float,
        min_ratio_bytes: int,
    ) -> None:
        self._stages = stages
        self._label = label
        self._max_size = max_size
        self._max_ratio = max_ratio
        self._min_ratio = min_ratio_bytes
        self._in = 0
        self._out = 0

    def decode(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._in += len(data)
        return self._collect(self._pipe(0, data))

    def flush(self) -> bytes:
        return self._collect(self._finish_all())

    def _finish_all(self) -> Iterator[bytes]:
        last = len(self._stages) - 1
        for i, stage in enumerate(self._stages):
            for piece in stage.finish():
                yield from self._pipe(i + 1, piece) if i < last else (piece,)

    def _pipe(self, i: int, data: bytes) -> Iterator[bytes]:
        stage = self._stages[i]
        if i == len(self._stages) - 1:
            yield from stage.feed(data)
            return
        for piece in stage.feed(data):
            yield from self._pipe(i + 1, piece)

    def _collect(self, pieces: Iterator[bytes]) -> bytes:
        out = []
        for piece in pieces:
            if piece:
                self._check(len(piece))
                out.append(piece)
        return out[0] if len(out) == 1 else b"".join(out)

    def _check(self, size: int) -> None:
        self._out += size
        total = self._out
        if self._max_size is not None and total > self._max_size:
            raise ResponseTooLarge(
                f"decoded body ({self._label}) exceeds max_decompressed_size="
                f"{self._max_size} bytes: {total} bytes so far"
            )
        if total > self._min_ratio and total > self._max_ratio * self._in:
            raise ResponseTooLarge(
                f"decompression ratio {total / self._in:.1f}:1 exceeds max_ratio="
                f"{self._max_ratio:g} ({total} bytes from {self._in} {self._label} bytes)"
            )


class _ZlibStage:
    """Shared zlib stepping: bounded output per call via ``max_length``."""

    __slots__ = ("_name", "_obj", "_started")

    def __init__(self, name: str, wbits: int) -> None:
        self._name = name
        self._obj = zlib.decompressobj(wbits)
        self._started = False

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        obj = self._obj
        try:
            while True:
                out = obj.decompress(data, _STEP)
                if out:
                    yield out
                data = obj.unconsumed_tail
                if obj.eof or (not data and len(out) < _STEP):
                    return
        except zlib.error as exc:
            raise ProtocolError(f"invalid {self._name} data: {exc}") from exc

    def _finish(self) -> Iterator[bytes]:
        if not self._started:
            return
        yield from self._inflate(b"")
        if not self._obj.eof:
            raise ProtocolError(
                f"truncated {self._name} data: the body ended before the compressed stream did"
            )


class _Members:
    """Counts gzip members or zstd frames and enforces the member caps."""

    __slots__ = ("_empty", "_kind", "_output", "_started")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._empty = 0
        self._output = 0  # bytes decoded from the current member
        self._started = 0  # members started within the current decode() call

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
        while data:
            for piece in self._inflate(data):
                members.add_output(len(piece))
                yield piece
            if not self._obj.eof:
                return
            data = self._obj.unused_data
            if data:
                members.next_member()
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self) -> Iterator[bytes]:
        return self._finish()


class _DeflateStage(_ZlibStage):
    """deflate: zlib-wrapped (RFC 1950) as specified, or raw (RFC 1951) as often sent."""

    __slots__ = ("_head",)

    def __init__(self) -> None:
        super().__init__("deflate", zlib.MAX_WBITS)
        self._head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not self._started:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._started = True
            self._head = b""
            cmf, flg = data[0], data[1]
            if not (cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0):
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        if self._obj.eof:
            raise ProtocolError(f"{len(data)} bytes after the end of the deflate stream")
        yield from self._inflate(data)
        if self._obj.unused_data:
            raise ProtocolError(
                f"{len(self._obj.unused_data)} bytes after the end of the deflate stream"
            )

    def finish(self) -> Iterator[bytes]:
        if self._head:
            raise ProtocolError("truncated deflate data: the body ended after 1 byte")
        return self._finish()


class _BrotliStage:
    """br (RFC 7932) via the optional ``brotli`` module.

    brotli >= 1.2 bounds each step's output with ``output_buffer_limit``; older versions
    cannot, so their input is fed in small slices (which bounds typical data, not bombs).
    """

    __slots__ = ("_bounded", "_error", "_obj", "_started")

    def __init__(self, module: Any) -> None:
        self._obj = module.Decompressor()
        self._error: type[Exception] = module.error
        self._started = False
        try:
            self._obj.process(b"", output_buffer_limit=_STEP)
            self._bounded = True
        except TypeError:
            self._bounded = False

    def _process(self, data: bytes) -> bytes:
        try:
            if self._bounded:
                return bytes(self._obj.process(data, output_buffer_limit=_STEP))
            return bytes(self._obj.process(data))
        except self._error as exc:
            raise ProtocolError(f"invalid br data: {exc}") from exc

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._started = True
        if self._obj.is_finished():
            raise ProtocolError(f"{len(data)} bytes after the end of the br stream")
        if not self._bounded:
            for start in range(0, len(data), _SLICE):
                yield self._process(data[start : start + _SLICE])
            return
        out = self._process(data)
        while out:
            yield out
            if self._obj.is_finished():
                return
            out = self._process(b"")

    def finish(self) -> Iterator[bytes]:
        if self._started and not self._obj.is_finished():
            raise ProtocolError(
                "truncated br data: the body ended before the compressed stream did"
            )
        return iter(())


class _ZstdStage:
    """zstd (RFC 8878) via the optional ``zstandard`` module; frames may follow frames."""

    __slots__ = ("_dctx", "_error", "_frames", "_obj", "_started")

    def __init__(self, module: Any) -> None:
        self._dctx = module.ZstdDecompressor()
        self._obj = self._dctx.decompressobj(write_size=_STEP)
        self._error: type[Exception] = module.ZstdError
        self._frames = _Members("zstd")
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._started = True
        self._frames.begin_call()
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._obj.eof:  # the next frame starts
                self._frames.next_member()
                self._obj = self._dctx.decompressobj(write_size=_STEP)
            piece = view[pos : pos + _SLICE]
            try:
                out = self._obj.decompress(piece)
            except self._error as exc:
                raise ProtocolError(f"invalid zstd data: {exc}") from exc
            used = len(piece) - (len(self._obj.unused_data) if self._obj.eof else 0)
            if used <= 0:  # cannot happen with a sane library; never spin on it
                raise ProtocolError("zstd decoder made no progress on its input")
            pos += used
            if out:
                self._frames.add_output(len(out))
                yield out

    def finish(self) -> Iterator[bytes]:
        if self._started and not self._obj.eof:
            raise ProtocolError(
                "truncated zstd data: the body ended before the compressed stream did"
            )
        return iter(())
