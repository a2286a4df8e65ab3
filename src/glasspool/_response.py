"""Responses: :class:`Response`, its body stream, charset and decoding.

A :class:`Response` pulls raw chunks from a :class:`BodyStream` the client hands it (Seam 3
in ``docs/internals.md``), undoes the Content-Encoding with ``_decoders`` in bounded steps,
and keeps the body once read.
"""

from __future__ import annotations

import codecs
import datetime
import http
import json as jsonlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from types import TracebackType
from typing import Any, Protocol

import yarl

from ._decoders import Decoder, make_decoder, paced
from ._exceptions import HTTPStatusError, ResponseNotRead, StreamConsumed
from ._headers import Headers, HeaderTypes
from ._redact import redact_url, safe_text
from ._redirects import REDIRECT_STATUSES
from ._request import Request
from ._retry import RetryAttempt

__all__ = ["BodyStream", "Response"]


class BodyStream(Protocol):
    """Where a :class:`Response` pulls its raw (still encoded) body from.

    ``read_chunk()`` returns the next chunk, ``b""`` once the body is complete.
    ``aclose()`` releases what the stream holds; it is idempotent, and is also called
    after the end was reached (then it has nothing left to do). A stream may also offer
    ``async read_rest() -> bytes``, the whole rest of the body at once, after which the stream
    has ended and holds nothing (``aclose()`` is not called then); :meth:`Response.read`
    uses it when there is no Content-Encoding to undo; and ``decode_check()``, the timeouts
    to check between the steps of decoding the body (see ``_timeouts.decode_check``).
    The client's stream is its ``_exchange.Exchange``, which owns the connection.
    """

    async def read_chunk(self) -> bytes: ...

    async def aclose(self) -> None: ...


_NOT_CHARSETS = frozenset({"undefined", "idna", "punycode"})  # text codecs, not charsets


def _charset_of(content_type: str | None) -> str | None:
    """Return the ``charset`` parameter of a Content-Type value, if it names a text codec.

    The server chooses the name, so Python codecs that are not text encodings (``rot13``,
    ``base64``, ``hex``, ``zlib``...), ``undefined`` (which fails on every input) and the
    host-name codecs ``idna`` and ``punycode`` are not taken.
    """
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip('"').strip("'")
            try:
                info = codecs.lookup(name)
            except (LookupError, ValueError):  # ValueError: a NUL or a lone surrogate
                return None
            text_codec = getattr(info, "_is_text_encoding", True)
            return info.name if text_codec and info.name not in _NOT_CHARSETS else None
    return None


def _slices(data: bytes, size: int | None) -> Iterator[bytes]:
    if not data:
        return
    if size is None:
        yield data
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Response:
    """An HTTP response: status line, headers and a body read once from a stream.

    A response from ``client.get()`` and friends has its body read already (``content``,
    ``text`` and ``json()`` work); one from ``client.stream()`` is unread, and holds its
    connection until the body is consumed or :meth:`aclose` is called (``async with``
    does that). The body is decoded per ``Content-Encoding`` by ``_decoders``, with the
    ``max_decompressed_size`` cap and a ratio guard.

    >>> r = Response(404, reason="Not Found", content=b"gone", url="http://h/x")
    >>> r, r.text, r.is_success
    (<Response [404 Not Found]>, 'gone', False)

    Args:
        status: the status code.
        reason: the reason phrase as sent (may be empty).
        headers: headers to copy, or
        raw_headers: the connection's ``(name, value)`` list, wrapped without copying.
        url: the URL the response came from; defaults to ``request.url``.
        http_version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
        request: the :class:`Request` that produced it.
        stream: the raw body; ``None`` with ``content`` for a response built in memory.
        content: the already decoded body (then ``Content-Encoding`` is not applied).
        max_decompressed_size: cap in bytes on the decoded body when a Content-Encoding
            applies; ``None`` for no cap (the decoders' ratio guard still applies).

    Attributes:
        history: the redirect responses that led here, oldest first.
        attempts: the retried attempts before this response (``RetryAttempt(reason,
            delay)``, oldest first), over all redirect hops; ``()`` without retries.
        elapsed: how long the request took, as measured and set by the client;
            ``timedelta(0)`` until it does.

    Raises:
        ValueError: both ``headers`` and ``raw_headers``, or both ``stream`` and
            ``content``, were given.
    """

    def __init__(
        self,
        status: int,
        *,
        reason: str = "",
        headers: HeaderTypes | None = None,
        raw_headers: list[tuple[str, str]] | None = None,
        url: yarl.URL | str | None = None,
        http_version: str = "HTTP/1.1",
        request: Request | None = None,
        stream: BodyStream | None = None,
        content: bytes | None = None,
        max_decompressed_size: int | None = None,
    ) -> None:
        if headers is not None and raw_headers is not None:
            raise ValueError("give headers= or raw_headers=, not both")
        if stream is not None and content is not None:
            raise ValueError("give stream= or content=, not both")
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.request = request
        self.url = _response_url(url, request)
        self.history: list[Response] = []
        self.attempts: tuple[RetryAttempt, ...] = ()  # set by the client when it retries
        self._elapsed: datetime.timedelta | float = 0.0  # seconds until first read
        self._headers = Headers(headers) if headers is not None else None
        self._raw_headers = raw_headers if raw_headers is not None else []
        self._stream = stream
        self._content = bytes(content) if content is not None else None
        if stream is None and content is None:
            self._content = b""
        self._closed = stream is None
        self._stream_consumed = False
        self._max_decompressed_size = max_decompressed_size
        self._num_bytes_downloaded = 0
        self._text: str | None = None
        self._may_be_coded = True  # False: the head had no Content-Encoding field

    # ----------------------------------------------------------------- metadata

    @property
    def elapsed(self) -> datetime.timedelta:
        """How long the request took (see the class docstring); made on first read."""
        value = self._elapsed
        if isinstance(value, float):
            value = self._elapsed = datetime.timedelta(seconds=value)
        return value

    @elapsed.setter
    def elapsed(self, value: datetime.timedelta) -> None:
        self._elapsed = value

    def _set_received(self, elapsed_s: float, *, content_encoding: bool) -> None:
        """What the client saw while receiving the head.

        Args:
            elapsed_s: :attr:`elapsed` in seconds (the ``timedelta`` is made if it is read).
            content_encoding: whether the head has a Content-Encoding field; without one,
                the headers are not searched for it.
        """
        self._elapsed = elapsed_s
        self._may_be_coded = content_encoding

    @property
    def headers(self) -> Headers:
        """The response :class:`Headers` (indexed on first lookup, not before)."""
        if self._headers is None:
            self._headers = Headers._from_raw(self._raw_headers)
        return self._headers

    def _header_values(self, lower_name: str) -> list[str]:
        if self._headers is not None:
            return self._headers._scan(lower_name)
        size = len(lower_name)  # a length check first: most names are not lowered at all
        return [v for n, v in self._raw_headers if len(n) == size and n.lower() == lower_name]

    @property
    def reason_phrase(self) -> str:
        """``reason``, or the standard phrase for ``status`` when the server sent none."""
        if self.reason:
            return self.reason
        try:
            return http.HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def is_redirect(self) -> bool:
        """Whether the status is 301/302/303/307/308 and a ``Location`` header is present."""
        return self.status in REDIRECT_STATUSES and bool(self._header_values("location"))

    @property
    def is_error(self) -> bool:
        """Whether the status is 4xx or 5xx."""
        return 400 <= self.status < 600

    def raise_for_status(self) -> Response:
        """Raise for a 4xx or 5xx status; otherwise return the response itself.

        Returns:
            ``self``, so ``(await client.get(url)).raise_for_status().json()`` chains.

        Raises:
            HTTPStatusError: naming the status, reason, method and URL; it carries the
                response as ``.response``.
        """
        if not self.is_error:
            return self
        kind = "Client error" if self.status < 500 else "Server error"
        method = f"{self.request.method} " if self.request is not None else ""
        reason = safe_text(self.reason_phrase)
        message = f"{kind} {self.status} {reason} for {method}{redact_url(self.url, quoted=True)}"
        raise HTTPStatusError(message.replace("  ", " "), response=self)

    @property
    def encoding(self) -> str:
        """The codec for :attr:`text`: the Content-Type charset if it names a text encoding,
        else ``utf-8``."""
        types = self._header_values("content-type")
        return _charset_of(types[0] if types else None) or "utf-8"

    # ----------------------------------------------------------------- body

    @property
    def content(self) -> bytes:
        """The decoded body.

        Raises:
            ResponseNotRead: a streamed body has not been read with :meth:`read` yet.
        """
        if self._content is None:
            raise ResponseNotRead(
                f"the body of {self!r} from {redact_url(self.url, quoted=True)} has not been read; "
                "call 'await response.read()' first"
            )
        return self._content

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding`; undecodable bytes become U+FFFD.

        A charset that is no text encoding (``base64``, ``rot13``...) is ignored, and one
        that cannot decode with replacement characters falls back to ``utf-8``: ``text``
        never raises for a server-chosen charset.
        """
        if self._text is None:
            content = self.content
            try:
                self._text = content.decode(self.encoding, errors="replace")
            except (UnicodeError, LookupError, ValueError):
                self._text = content.decode("utf-8", errors="replace")
        return self._text

    def json(self, **kwargs: Any) -> Any:
        """Parse the body as JSON (UTF-8/16/32 detected); ``kwargs`` go to ``json.loads``."""
        return jsonlib.loads(self.content, **kwargs)

    @property
    def is_closed(self) -> bool:
        """Whether the body stream was released (read to the end or closed)."""
        return self._closed

    @property
    def num_bytes_downloaded(self) -> int:
        """Body bytes received so far, as the server sent them.

        Counted before any ``Content-Encoding`` is undone (a gzip body counts its
        compressed size) and without chunked framing (chunk-size lines and trailers are
        not counted). After ``client.get()`` and friends it is the whole body's count; for
        a streamed response it grows as the body is read. 0 for a response without a
        body (HEAD, 204, 304) and for one built in memory.
        """
        return self._num_bytes_downloaded

    async def read(self) -> bytes:
        """Read, decode and keep the whole body; a checkpoint while the body streams.

        Returns:
            The decoded body, also kept as :attr:`content`.

        Raises:
            StreamConsumed: the body was already iterated or the response closed.
            ResponseTooLarge: the decoded body passed ``max_decompressed_size``.
        """
        if self._content is None:
            read_rest = getattr(self._stream, "read_rest", None)
            if read_rest is not None and self._content_coding() is None:
                # the body with no coding to undo, read whole: the same checks and the
                # same closing as iterating it (_raw_chunks)
                self._claim_stream()
                try:
                    body: bytes = await read_rest()
                except BaseException:
                    await self.aclose()
                    raise
                self._set_body(body)
                return body
            chunks = [chunk async for chunk in self.aiter_bytes()]
            self._content = b"".join(chunks)
        return self._content

    def _set_body(self, raw: bytes) -> None:
        """Keep ``raw``, the whole body with no coding to undo, as :attr:`content`.

        Its stream read it to the end (``read_rest()``), so the stream has ended and is
        let go without ``aclose()``.
        """
        self._stream_consumed = self._closed = True
        self._stream = None
        self._num_bytes_downloaded += len(raw)
        self._content = raw

    async def aiter_bytes(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield the decoded body; after :meth:`read`, yield the kept content again.

        Args:
            chunk_size: yield pieces of exactly this many bytes (the last may be shorter);
                ``None`` yields chunks as they are decoded.

        Raises:
            StreamConsumed: the body was already iterated, or the response was closed,
                before it was read.
            ValueError: ``chunk_size`` is not a positive integer.
        """
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive integer or None, not {chunk_size}")
        if self._content is not None:
            for piece in _slices(self._content, chunk_size):
                yield piece
            return
        source = self._decoded_chunks()
        async with aclosing(source):
            if chunk_size is None:
                async for chunk in source:
                    yield chunk
                return
            async for piece in _rechunk(source, chunk_size):
                yield piece

    async def aiter_raw(self) -> AsyncGenerator[bytes, None]:
        """Yield the body as it arrived, without Content-Encoding decoding.

        Raises:
            StreamConsumed: the body was already read, iterated, or the response closed.
        """
        if self._content is not None:
            raise StreamConsumed(
                f"the body of {self!r} was already read (and decoded); raw bytes are gone"
            )
        raw = self._raw_chunks()
        async with aclosing(raw):
            async for chunk in raw:
                yield chunk

    async def _raw_chunks(self) -> AsyncGenerator[bytes, None]:
        """Pull raw chunks from the stream once; close the response at the end or on error.

        Any exception here, cancellation or early ``aclose()`` of the generator included,
        closes the response: a half-read body can never be resumed.
        """
        self._claim_stream()
        stream = self._stream
        assert stream is not None  # _claim_stream: no content means a stream
        try:
            while chunk := await stream.read_chunk():
                self._num_bytes_downloaded += len(chunk)
                yield chunk
        except BaseException:
            await self.aclose()
            raise
        await self.aclose()

    async def _drain(self, limit: int) -> None:
        """Read and drop the raw body (a redirect's), so that its connection can be reused.

        A body longer than ``limit`` bytes is not read to its end: the response is closed
        after the chunk that passes ``limit`` (and its stream with it, before the end).
        Afterwards ``content`` is ``b""`` and ``num_bytes_downloaded`` counts what was read.
        """
        received = 0
        raw = self._raw_chunks()
        async with aclosing(raw):
            async for chunk in raw:
                received += len(chunk)
                if received > limit:
                    break
        self._content = b""

    def _claim_stream(self) -> None:
        if self._stream_consumed:
            raise StreamConsumed(f"the body of {self!r} was already streamed; it is read once")
        if self._closed:
            raise StreamConsumed(f"{self!r} was closed before its body was read")
        self._stream_consumed = True

    async def _decoded_chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the body with its Content-Encoding undone, one bounded step at a time.

        Decoding runs in steps of at most 64 KiB of output (``_decoders.paced``): between
        them the event loop runs, and the stream's total deadline and read timeout (when it
        has them: ``decode_check()``) are checked.
        """
        coding = self._content_coding()
        raw = self._raw_chunks()
        if coding is None:
            async with aclosing(raw):
                async for chunk in raw:
                    yield chunk
            return
        decoder: Decoder | None = None
        make_check = getattr(self._stream, "decode_check", None)
        check = make_check() if make_check is not None else None
        async with aclosing(raw):
            async for chunk in raw:
                if decoder is None:
                    decoder = self._new_decoder(coding)
                steps = paced(decoder.decode_steps(chunk), check)
                async with aclosing(steps):
                    async for piece in steps:
                        yield piece
        if decoder is not None:
            steps = paced(decoder.flush_steps(), check)
            async with aclosing(steps):
                async for piece in steps:
                    yield piece

    def _content_coding(self) -> str | None:
        """The Content-Encoding to undo, or ``None`` for identity."""
        if not self._may_be_coded:
            return None
        coding = ", ".join(self._header_values("content-encoding")).strip()
        return None if coding.lower() in ("", "identity") else coding

    def _new_decoder(self, coding: str) -> Decoder:
        return make_decoder(coding, max_size=self._max_decompressed_size)

    async def aclose(self) -> None:
        """Release the body stream; idempotent. Unread body bytes are discarded.

        Closing before the end makes the client close the connection (never pooled).
        """
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None  # what it held is let go with it
        if stream is not None:
            await stream.aclose()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        phrase = safe_text(self.reason_phrase)
        return f"<Response [{self.status}{' ' + phrase if phrase else ''}]>"


def _response_url(url: yarl.URL | str | None, request: Request | None) -> yarl.URL:
    if isinstance(url, str):
        return yarl.URL(url)
    if url is None:
        return request.url if request is not None else yarl.URL()
    return url


async def _rechunk(source: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup ``source`` into pieces of ``size`` bytes; the last may be shorter."""
    buffer = bytearray()
    async for chunk in source:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
