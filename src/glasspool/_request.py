"""Requests: :class:`Request` and the encoding of request bodies (content, json, form data)."""

from __future__ import annotations

import json as jsonlib
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import yarl

from ._exceptions import InvalidRequest
from ._headers import Headers
from ._multipart import FilesTypes, MultipartBody, multipart_body
from ._redact import redact_url
from ._urls import param_pairs

__all__ = ["Request", "RequestBody", "encode_body", "sized_stream"]


RequestBody: TypeAlias = bytes | AsyncIterable[bytes] | None
"""A request body as the connection takes it: bytes, a chunked stream, or none."""


def _form_body(data: object) -> bytes:
    if not isinstance(data, Mapping):
        raise TypeError(
            f"data= must be a mapping of form fields, not {type(data).__name__}; "
            "pass raw bytes or text as content="
        )
    return urllib.parse.urlencode(param_pairs(data, "form field")).encode("ascii")


def _json_body(value: object) -> bytes:
    try:
        text = jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except ValueError as exc:  # NaN/Infinity, circular references, lone surrogates
        raise InvalidRequest(f"json= body cannot be encoded as JSON: {exc}") from exc


def encode_body(
    content: str | bytes | bytearray | memoryview | AsyncIterable[bytes] | None = None,
    json: Any = None,
    data: Mapping[str, Any] | None = None,
    files: FilesTypes | None = None,
    content_type: str | None = None,
) -> tuple[RequestBody, Headers]:
    """Turn the body arguments of a request into bytes or a stream, plus headers to add.

    ``content`` bytes are sent as is; ``str`` as UTF-8 with ``Content-Type: text/plain;
    charset=utf-8``; an async iterable of bytes is streamed (chunked, or with the
    caller's ``Content-Length`` header when there is one). ``json`` is encoded
    compactly as UTF-8 with ``Content-Type: application/json`` (``None`` means "no JSON
    body"). ``data`` is a form (see :data:`ParamTypes` for the values) sent as
    ``application/x-www-form-urlencoded``; with ``files`` (and ``data`` fields alongside)
    it is a streamed ``multipart/form-data`` body, with ``Content-Length`` when every part's
    size is known (see :func:`multipart_body`). The caller adds the returned headers only
    where it has no header of that name (``Headers.setdefault``).

    >>> encode_body(json={"a": [1, 2]})
    (b'{"a":[1,2]}', Headers([('Content-Type', 'application/json')]))

    Args:
        content: raw body.
        json: a JSON-serialisable value.
        data: form fields.
        files: files for a multipart/form-data body.
        content_type: the caller's own ``Content-Type``, if any: a multipart one without a
            boundary gets the body's; one with a boundary has it used (see
            :func:`multipart_body`). The multipart ``Content-Type`` returned must replace
            the caller's.

    Returns:
        ``(body, headers)``: the body is ``None`` when no argument was given.

    Raises:
        InvalidRequest: more than one argument was given, or ``json`` holds NaN/Infinity.
        TypeError: ``content``/``data``/``json`` of an unsupported type.
    """
    if files is not None:
        if content is not None or json is not None:
            other = "content=" if content is not None else "json="
            raise InvalidRequest(f"give files= with data= fields or alone, not with {other}")
        multipart = multipart_body(files, data, content_type)
        added = [("Content-Type", multipart.content_type)]
        if multipart.length is not None:
            added.append(("Content-Length", str(multipart.length)))
        return multipart, Headers(added)
    given = [n for n, v in (("content", content), ("json", json), ("data", data)) if v is not None]
    if len(given) > 1:
        raise InvalidRequest(f"give only one of content=, json= and data=, not {', '.join(given)}")
    if json is not None:
        return _json_body(json), Headers([("Content-Type", "application/json")])
    if data is not None:
        form = _form_body(data)
        return form, Headers([("Content-Type", "application/x-www-form-urlencoded")])
    if content is None or isinstance(content, bytes):
        return content, Headers()
    if isinstance(content, bytearray | memoryview):
        return bytes(content), Headers()
    if isinstance(content, str):
        text_type = [("Content-Type", "text/plain; charset=utf-8")]
        return content.encode("utf-8"), Headers(text_type)
    if isinstance(content, AsyncIterable):
        return content, Headers()
    raise TypeError(
        f"content= must be bytes, str or an async iterable of bytes, not {type(content).__name__}"
    )


def declared_length(headers: Headers) -> int:
    """The ``Content-Length`` of a streamed body, checked.

    Raises:
        InvalidRequest: the header is not one non-negative decimal integer.
    """
    value = (headers.get("content-length") or "").strip()
    if not (value.isascii() and value.isdigit()):
        raise InvalidRequest(f"Content-Length {value!r} is not a non-negative integer")
    return int(value)


async def sized_stream(stream: AsyncIterable[bytes], declared: int) -> AsyncIterator[bytes]:
    """Yield the chunks of ``stream``, checking that they add up to ``declared`` bytes.

    A chunk that would pass the declared length is not yielded (so it is never sent).

    Raises:
        InvalidRequest: the stream yielded more or fewer bytes than ``declared``, naming
            both counts; the connection it was being sent on is then not reused.
    """
    sent = 0
    async for chunk in stream:
        sent += len(chunk)
        if sent > declared:
            raise InvalidRequest(
                f"the streamed body passed its Content-Length: {declared} bytes declared, "
                f"at least {sent} yielded"
            )
        yield chunk
    if sent != declared:
        raise InvalidRequest(
            f"the streamed body ended short of its Content-Length: {declared} bytes "
            f"declared, {sent} yielded"
        )


# --------------------------------------------------------------------------- Request


@dataclass(frozen=True, slots=True, repr=False)
class Request:
    """A request as it was (or will be) sent.

    Attributes:
        method: the method, e.g. ``"GET"``.
        url: the full ``yarl.URL``, fragment included (the fragment is not sent).
        headers: the :class:`Headers` sent, defaults included (``Host`` and framing lines
            are added when the head is written).
        content: the body when it is bytes; ``None`` when there is none or it is streamed.
        stream: the streamed body, when there is one; it can be sent only once.
    """

    method: str
    url: yarl.URL
    headers: Headers = field(default_factory=Headers)
    content: bytes | None = None
    stream: AsyncIterable[bytes] | None = None

    @classmethod
    def _trusted(
        cls,
        method: str,
        url: yarl.URL,
        headers: Headers,
        content: bytes | None,
        stream: AsyncIterable[bytes] | None,
    ) -> Request:
        """Build from values the client has already checked, skipping ``__init__``.

        A frozen dataclass's ``__init__`` costs about 0.7 us (a guarded ``setattr`` per
        field); the client builds one per request.
        """
        self = object.__new__(cls)
        _set_method(self, method)
        _set_url(self, url)
        _set_headers(self, headers)
        _set_content(self, content)
        _set_stream(self, stream)
        return self

    @property
    def body_replayable(self) -> bool:
        """Whether the body can be sent again (no body, a bytes body, or a multipart body
        of bytes, paths and seekable files)."""
        stream = self.stream
        return stream is None or (isinstance(stream, MultipartBody) and stream.replayable)

    def __repr__(self) -> str:
        return f"<Request({self.method!r}, {redact_url(self.url, quoted=True)})>"


_set_method = Request.__dict__["method"].__set__  # the slots' own setters (no frozen guard)
_set_url = Request.__dict__["url"].__set__
_set_headers = Request.__dict__["headers"].__set__
_set_content = Request.__dict__["content"].__set__
_set_stream = Request.__dict__["stream"].__set__
