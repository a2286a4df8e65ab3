"""The request head as it goes on the wire: checked and written into one buffer, sans-IO.

:func:`build_request_head` writes the request line, ``Host``, the caller's fields and the
framing line, and refuses anything that could split or smuggle a request: a method or
field name that is not a token, a control character in a value, a target or host that is
not plain ASCII, framing headers that disagree with the body. The URL part is checked and
encoded once per URL (:func:`request_target`), the fields once per :class:`Headers` until
it changes (cached on it). No sockets, no event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import yarl

from .._exceptions import InvalidRequest
from .._redact import redact_url
from .._syntax import (
    DEFAULT_PORTS,
    URL_FORBIDDEN,
    VALUE_FORBIDDEN,
    first_bad_char,
    has_forbidden,
    is_token,
)

if TYPE_CHECKING:  # pragma: no cover
    from .._headers import Headers

__all__ = ["RequestTarget", "build_request_head", "request_target"]

_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# RFC 9110 methods: tokens, so a method in here needs no character check.
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


@dataclass(slots=True)
class _Framing:
    """The framing headers a caller gave, collected while the head is written."""

    has_host: bool = False
    content_length: str | None = None
    transfer_encoding: str | None = None

    def note(self, lower_name: str, name: str, value: str) -> None:
        """Record one of ``Host``/``Content-Length``/``Transfer-Encoding``; no repeats."""
        if lower_name == "host":
            repeated, self.has_host = self.has_host, True
        elif lower_name == "content-length":
            repeated = self.content_length is not None
            self.content_length = value
        else:
            repeated = self.transfer_encoding is not None
            self.transfer_encoding = value
        if repeated:
            raise InvalidRequest(f"header {name!r} was given more than once; send it once")


def _check_method(method: str) -> None:
    if method not in _STANDARD_METHODS and not is_token(method):
        raise InvalidRequest(f"method {method!r} is not an RFC 9110 token")


def _check_target(url: yarl.URL, target: str) -> None:
    if not url.raw_host or url.scheme not in DEFAULT_PORTS:
        raise InvalidRequest(
            f"request URL {redact_url(url, quoted=True)} must be absolute http:// or https://"
        )
    host = url.raw_host
    text = target + host
    if not text.isascii() or has_forbidden(text, URL_FORBIDDEN):
        raise InvalidRequest(
            f"request target {target!r} or host {host!r} holds a space, a control "
            "character or non-ASCII text; build the URL with parse_url()"
        )


def _check_names(names: list[str]) -> None:
    if not names or (is_token("".join(names)) and "" not in names):
        return
    bad = next(n for n in names if not is_token(n))
    raise InvalidRequest(f"header name {bad!r} is not an RFC 9110 token")


def _check_values(names: list[str], values: list[str]) -> None:
    if not has_forbidden("".join(values), VALUE_FORBIDDEN):
        return
    for name, value in zip(names, values, strict=True):
        index = first_bad_char(value, VALUE_FORBIDDEN)
        if index != -1:
            raise InvalidRequest(
                f"header {name!r} has the forbidden character {value[index]!r} in its value "
                f"(index {index}); CR, LF, NUL and other control characters except HTAB "
                "are not allowed"
            )


def _framing_lines(method: str, body_length: int | None, chunked: bool, given: _Framing) -> str:
    """Return the ``Content-Length``/``Transfer-Encoding`` line to add, or ``""``.

    Raises:
        InvalidRequest: for any disagreement between the caller's headers and the body.
    """
    if given.transfer_encoding is not None:
        if given.content_length is not None:
            raise InvalidRequest(
                f"both Content-Length: {given.content_length} and Transfer-Encoding: "
                f"{given.transfer_encoding} were given; a request has one or the other"
            )
        if given.transfer_encoding.lower() != "chunked" or not chunked:
            raise InvalidRequest(
                f"Transfer-Encoding: {given.transfer_encoding} was given, but glasspool only "
                "sends 'chunked', and only for a streamed body; drop the header"
            )
        return ""
    if given.content_length is not None:
        _check_given_length(given.content_length, body_length, chunked)
        return ""
    if chunked:
        return "Transfer-Encoding: chunked\r\n"
    if body_length is not None:
        return f"Content-Length: {body_length}\r\n"
    return "Content-Length: 0\r\n" if method in _BODY_METHODS else ""


def _check_given_length(value: str, body_length: int | None, chunked: bool) -> None:
    if chunked:
        raise InvalidRequest(
            f"Content-Length: {value} was given for a streamed body, which is sent with "
            "Transfer-Encoding: chunked; drop the header or pass the body as bytes"
        )
    if not (value.isascii() and value.isdigit()):
        raise InvalidRequest(f"Content-Length {value!r} is not a non-negative integer")
    actual = body_length or 0
    if int(value) != actual:
        raise InvalidRequest(
            f"Content-Length header says {int(value)} bytes but the body has {actual} bytes"
        )


def _encode_head(parts: list[str], names: list[str], values: list[str]) -> bytes:
    """Encode the head: Latin-1 when it fits, else each value that needs it as UTF-8."""
    text = "".join(parts)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        pass
    encoded = bytearray()
    for part in parts:
        try:
            encoded += part.encode("latin-1")
        except UnicodeEncodeError:
            try:
                encoded += part.encode("utf-8")
            except UnicodeEncodeError as exc:
                name = next(n for n, v in zip(names, values, strict=True) if v == part)
                raise InvalidRequest(
                    f"header {name!r} has a value that cannot be encoded: {exc.reason}"
                ) from exc
    return bytes(encoded)


def build_request_head(
    method: str,
    url: yarl.URL,
    headers: Headers,
    *,
    body_length: int | None,
    chunked: bool,
    target: RequestTarget | None = None,
) -> bytes:
    """Validate a request and write its head (request line and fields) into one buffer.

    ``Host`` comes first, from the URL (port only when not the default, IPv6 bracketed),
    unless ``headers`` has one. Then every pair of ``headers`` in order, values stripped
    of leading and trailing SP/HTAB, then the framing line: ``Transfer-Encoding: chunked``
    when ``chunked``, else ``Content-Length: <body_length>``, else ``Content-Length: 0``
    for POST/PUT/PATCH without a body. A caller's ``Content-Length`` must match the body;
    a caller's ``Transfer-Encoding`` must be ``chunked`` and the body streamed. Values are
    sent as Latin-1, or as UTF-8 when a value does not fit Latin-1.

    Args:
        method: an RFC 9110 token, sent as given (case matters).
        url: an absolute URL from :func:`parse_url`; the target is its path and query.
        headers: the headers to send (defaults already merged in by the caller).
        body_length: the byte count of a ``bytes`` body, or ``None`` when there is none
            or it is streamed.
        chunked: whether the body is streamed with chunked framing.
        target: ``request_target(url)``, when the caller kept it from an earlier request
            to the same URL; made (and checked) here when ``None``.

    Returns:
        The head, ending with the blank line.

    Raises:
        InvalidRequest: naming the bad method, header name or header (for a bad value),
            or the conflicting framing headers and byte counts.
    """
    if body_length is not None and (chunked or body_length < 0):
        raise InvalidRequest(
            f"body_length={body_length} is invalid with chunked={chunked}: a bytes body has "
            "a length >= 0 and is never sent chunked"
        )
    _check_method(method)
    if target is None:
        target = request_target(url)
    block = headers._block
    if not isinstance(block, _Block):
        block = headers._block = _header_block(headers)
    framing = _framing_lines(method, body_length, chunked, block.given)
    # Only the fields can hold non-ASCII text: the method is a token, and the target, host
    # and framing lines were checked to be ASCII.
    host = b"" if block.given.has_host else target.host_line
    line = method.encode("ascii") + target.line_tail
    return b"".join((line, host, block.data, framing.encode("ascii"), b"\r\n"))


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """The part of a request head that depends only on the URL, checked and encoded.

    Made by :func:`request_target`. A client keeps one with each URL it remembers, so
    :func:`build_request_head` does not check and encode the same URL on every request.

    Attributes:
        line_tail: ``b" <path?query> HTTP/1.1\\r\\n"``, the request line after the method.
        host_line: ``b"Host: <host>[:<port>]\\r\\n"`` (port only when not the default).
    """

    line_tail: bytes
    host_line: bytes


def _host_for(url: yarl.URL) -> str:
    host = url.raw_host or ""
    return f"[{host}]" if ":" in host else host


def request_target(url: yarl.URL) -> RequestTarget:
    """Check the request-target and host of ``url`` and encode them for a request head.

    Raises:
        InvalidRequest: the URL is not absolute http(s), or its target or host holds a
            space, a control character or non-ASCII text.
    """
    target = url.raw_path_qs or "/"
    _check_target(url, target)
    port = url.explicit_port
    suffix = "" if port is None or port == DEFAULT_PORTS[url.scheme] else f":{port}"
    return RequestTarget(
        f" {target} HTTP/1.1\r\n".encode("ascii"),
        f"Host: {_host_for(url)}{suffix}\r\n".encode("ascii"),
    )


@dataclass(frozen=True, slots=True)
class _Block:
    """The validated, encoded field lines of a :class:`Headers`, cached on it.

    Attributes:
        given: the framing fields (Host, Content-Length, Transfer-Encoding) it holds.
        data: every ``name: value CRLF`` line, encoded as :func:`build_request_head` says.
    """

    given: _Framing
    data: bytes


def _header_block(headers: Headers) -> _Block:
    """Validate and encode the field lines of ``headers`` (see :func:`build_request_head`).

    Raises:
        InvalidRequest: a bad name or value, or a repeated framing field.
    """
    parts: list[str] = []
    names: list[str] = []
    values: list[str] = []
    given = _Framing()
    for name, raw_value in headers._iter_pairs():
        value = raw_value.strip(" \t")
        lower = name.lower()
        if lower in _FRAMING_HEADERS:
            given.note(lower, name, value)
        names.append(name)
        values.append(value)
        parts += (name, ": ", value, "\r\n")
    _check_names(names)
    _check_values(names, values)
    return _Block(given, _encode_head(parts, names, values))
