"""Requests and responses: headers, URL rules, request heads, bodies and the Response.

This module sits between the caller and the wire. Everything here is synchronous, has no
sockets and keeps no module-level mutable state, except :class:`Response`, which pulls its
body from a :class:`BodyStream` the client hands it (Seam 3 in ``docs/internals.md``).

Two third-party types carry the data:

* ``yarl.URL`` holds every URL: it parses, percent-encodes, IDNA-encodes hosts and joins.
  glasspool adds the rules yarl does not enforce (scheme, host, port, control characters).
* ``multidict.CIMultiDict`` is the case-insensitive index behind :class:`Headers`. It is
  built only when someone looks a header up, so a response whose headers nobody reads
  never pays for one.

Validation uses precomputed byte tables with ``bytes.translate(None, delete=...)``: a
valid string leaves nothing (tokens) or loses nothing (values), and only the error path
walks characters one by one to name the culprit.
"""

from __future__ import annotations

import codecs
import datetime
import http
import importlib
import json as jsonlib
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import aclosing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TypeAlias

import yarl
from multidict import CIMultiDict

from ._exceptions import GlasspoolError, HTTPStatusError, InvalidRequest, InvalidURL
from ._pool.key import PoolKey, TLSIdentity
from ._redact import redact_url, safe_text
from ._version import __version__

__all__ = [
    "ACCEPT_ENCODING",
    "USER_AGENT",
    "BodyStream",
    "HeaderTypes",
    "Headers",
    "ParamTypes",
    "Request",
    "RequestBody",
    "RequestTarget",
    "Response",
    "ResponseNotRead",
    "StreamConsumed",
    "build_request_head",
    "default_headers",
    "encode_body",
    "parse_url",
    "pool_key_for",
    "request_target",
]


class ResponseNotRead(GlasspoolError, RuntimeError):
    """``Response.content`` (or ``text``/``json()``) was used before the body was read.

    A streamed response's body is read with ``await response.read()`` or consumed with
    ``aiter_bytes()``; ``content`` is only available after ``read()``.
    """


class StreamConsumed(GlasspoolError, RuntimeError):
    """A response body was iterated after it had already been consumed or closed.

    A streamed body can be read once. ``read()`` keeps the decoded bytes, so
    ``aiter_bytes()`` works any number of times after it, but ``aiter_raw()`` does not.
    """


# --------------------------------------------------------------------------- tables

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# C0 controls except HTAB, and DEL: forbidden in header values.
_VALUE_FORBIDDEN = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
# C0 controls, SPACE and DEL: forbidden anywhere in a URL we are given.
_URL_FORBIDDEN = bytes([*range(0x00, 0x21), 0x7F])
# The same minus SPACE: a redirect Location may carry raw spaces, which yarl encodes.
_LOCATION_FORBIDDEN = bytes([*range(0x00, 0x20), 0x7F])

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# RFC 9110 methods: tokens, so a method in here needs no character check.
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def _accept_encoding() -> str:
    codings = ["gzip", "deflate"]
    for module, coding in (("brotli", "br"), ("zstandard", "zstd")):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        codings.append(coding)
    return ", ".join(codings)


USER_AGENT = f"glasspool/{__version__}"
"""The default ``User-Agent`` value, ``glasspool/<installed version>``."""

ACCEPT_ENCODING = _accept_encoding()
"""The default ``Accept-Encoding``: gzip and deflate, plus br and zstd when they import."""


def _first_bad_char(text: str, forbidden: bytes) -> int:
    """Return the index of the first character of ``text`` whose code is in ``forbidden``."""
    bad = frozenset(chr(b) for b in forbidden)
    return next((i for i, ch in enumerate(text) if ch in bad), -1)


def _has_forbidden(text: str, forbidden: bytes) -> bool:
    """Tell whether ``text`` holds a character from ``forbidden`` (all below 0x80).

    UTF-8 never uses bytes below 0x80 inside a multi-byte sequence, so checking the
    UTF-8 bytes is exact, and ``surrogatepass`` lets lone surrogates through unharmed.
    """
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw.translate(None, forbidden)) != len(raw)


def _is_token(text: str) -> bool:
    """Tell whether ``text`` is a non-empty RFC 9110 token."""
    return text.isascii() and text != "" and not text.encode("ascii").translate(None, _TCHAR)


# --------------------------------------------------------------------------- Headers


class Headers:
    """HTTP header fields: case-insensitive, multi-valued, in order, with original case.

    The pairs are kept exactly as given (order, case, repeats) and are what gets sent.
    Lookups go through a ``multidict.CIMultiDict`` index that is built on the first
    lookup, so headers built from a connection's raw pairs cost nothing until read.

    ``headers[name]`` and ``get(name)`` return the *first* value; ``get_all(name)`` returns
    every value. Iteration yields each distinct name once (in the case first seen) and
    ``len()`` counts distinct names; ``items()`` and ``raw`` list every pair.

    >>> h = Headers([("Cookie", "a=1"), ("Content-Type", "text/plain"), ("cookie", "b=2")])
    >>> h["content-type"], h.get_all("COOKIE"), list(h)
    ('text/plain', ['a=1', 'b=2'], ['Cookie', 'Content-Type'])
    >>> h
    Headers([('Cookie', '[hidden]'), ('Content-Type', 'text/plain'), ('cookie', '[hidden]')])

    Args:
        headers: a mapping (``dict``, ``CIMultiDict``: every pair of it), an iterable of
            ``(name, value)`` pairs, or another :class:`Headers` (copied).

    Raises:
        TypeError: a name or value is not a ``str``; the error names the header.
    """

    __slots__ = ("_block", "_index_md", "_pairs")

    def __init__(self, headers: HeaderTypes | None = None) -> None:
        self._pairs: list[tuple[str, str]] | None = _collect_pairs(headers)
        self._index_md: CIMultiDict[str] | None = None
        self._block: _Block | None = None  # validated wire form; every mutation drops it

    @classmethod
    def _from_raw(cls, pairs: list[tuple[str, str]]) -> Headers:
        """Wrap a connection's ``(name, value)`` list without copying or checking it."""
        self = cls.__new__(cls)
        self._pairs = pairs
        self._index_md = None
        self._block = None
        return self

    def _index(self) -> CIMultiDict[str]:
        if self._index_md is None:
            self._index_md = CIMultiDict(self._pairs or ())
        return self._index_md

    def _mutable(self) -> CIMultiDict[str]:
        """The index, about to be changed: every mutation comes through here."""
        index = self._index()
        self._pairs = None  # the index is now the only truth
        self._block = None  # so the next request head validates and encodes them again
        return index

    def _iter_pairs(self) -> Iterable[tuple[str, str]]:
        if self._pairs is not None:
            return self._pairs
        return self._index().items()

    def _scan(self, lower_name: str) -> list[str]:
        """Every value of ``lower_name`` (already lowercase), without building the index."""
        if self._index_md is not None:
            return self._index_md.getall(lower_name, [])
        size = len(lower_name)  # a length check first: most names are not lowered at all
        return [v for n, v in self._pairs or () if len(n) == size and n.lower() == lower_name]

    def __getitem__(self, name: str) -> str:
        return self._index()[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default`` when it is absent."""
        return self._index().get(name, default)

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; an empty list when it is absent."""
        return self._index().getall(name, [])

    getall = get_all

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """Return each distinct name once, in the case and order it was first seen."""
        seen: set[str] = set()
        names = []
        for name, _ in self._iter_pairs():
            lower = name.lower()
            if lower not in seen:
                seen.add(lower)
                names.append(str(name))
        return names

    def items(self) -> list[tuple[str, str]]:
        """Return every ``(name, value)`` pair in order, repeated names included."""
        return [(str(n), v) for n, v in self._iter_pairs()]

    @property
    def raw(self) -> list[tuple[str, str]]:
        """A new list of every ``(name, value)`` pair, exactly as it is (or was) sent."""
        return self.items()

    def copy(self) -> Headers:
        """Return an independent copy."""
        return Headers(self)

    def __setitem__(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with ``value`` (kept where the first one was)."""
        _check_pair(name, value)
        self._mutable()[name] = value

    def add(self, name: str, value: str) -> None:
        """Append a ``(name, value)`` pair, keeping any existing values of ``name``."""
        _check_pair(name, value)
        self._mutable().add(name, value)

    def setdefault(self, name: str, value: str) -> str:
        """Add ``name: value`` unless ``name`` is present; return its first value."""
        current = self.get(name)
        if current is not None:
            return current
        self.add(name, value)
        return value

    def __delitem__(self, name: str) -> None:
        """Remove every value of ``name``; ``KeyError`` when it is absent."""
        del self._mutable()[name]

    def discard(self, name: str) -> None:
        """Remove every value of ``name`` if it is present."""
        if name in self:
            del self[name]

    def update(self, other: HeaderTypes) -> None:
        """Replace, name by name, the values of every name ``other`` has with its values.

        Args:
            other: anything :class:`Headers` accepts; names it lacks are left alone.
        """
        incoming = Headers(other)
        index = self._mutable()
        for name in incoming:
            index.popall(name, None)
        for name, value in incoming._iter_pairs():
            index.add(name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            if not isinstance(other, Mapping | list | tuple):
                return NotImplemented
            try:
                other = Headers(other)
            except (TypeError, ValueError):
                return NotImplemented
        return _normalised(self) == _normalised(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = [
            (str(n), "[hidden]" if n.lower() in _SECRET_HEADERS else v)
            for n, v in self._iter_pairs()
        ]
        return f"Headers({shown!r})"


HeaderTypes: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]
"""What :class:`Headers` (and every ``headers=`` argument) accepts."""


def _check_pair(name: object, value: object) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(
            f"header {name!r}: names and values must be str, "
            f"got {type(name).__name__} and {type(value).__name__}"
        )


def _collect_pairs(headers: HeaderTypes | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return headers.items()
    if isinstance(headers, str | bytes):
        raise TypeError(f"headers must be a mapping or (name, value) pairs, not {headers!r}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for item in items:
        name, value = item
        _check_pair(name, value)
        pairs.append((name, value))
    return pairs


def _normalised(headers: Headers) -> list[tuple[str, str]]:
    # A stable sort on the name keeps the order of the values of each name.
    return sorted(((n.lower(), v) for n, v in headers._iter_pairs()), key=lambda p: p[0])


def default_headers() -> Headers:
    """Return a new :class:`Headers` with glasspool's defaults.

    ``User-Agent: glasspool/<version>``, ``Accept: */*`` and ``Accept-Encoding`` (gzip,
    deflate, and br/zstd when ``brotli``/``zstandard`` import). The client starts from
    these and ``update()``\\ s them with the caller's headers, so a caller can replace any.

    >>> default_headers()["accept"]
    '*/*'
    """
    return Headers(
        [("User-Agent", USER_AGENT), ("Accept", "*/*"), ("Accept-Encoding", ACCEPT_ENCODING)]
    )


# --------------------------------------------------------------------------- URLs

ParamValue: TypeAlias = str | int | float | bool | None
ParamTypes: TypeAlias = (
    Mapping[str, ParamValue | list[ParamValue] | tuple[ParamValue, ...]]
    | Iterable[tuple[str, ParamValue]]
    | str
)
"""What ``params=`` accepts: a mapping (list/tuple values repeat the key), pairs, or a
query string. ``None`` values drop the parameter; ``True``/``False`` become
``true``/``false``; numbers use ``str()``."""


def _url_field(text: str, index: int) -> str:
    """Name the URL component of ``text`` that holds position ``index``."""
    pos = 0
    scheme_end = text.find("://")
    if scheme_end != -1 and "/" not in text[:scheme_end]:
        if index < scheme_end + 3:
            return "scheme"
        pos = scheme_end + 3
    elif text.startswith("//"):
        pos = 2
    if pos:
        ends = [i for i in (text.find(c, pos) for c in "/?#") if i != -1]
        authority_end = min(ends, default=len(text))
        if index < authority_end:
            at = text.rfind("@", pos, authority_end)
            return "userinfo" if index < at else "host"
    query = text.find("?")
    fragment = text.find("#")
    if fragment != -1 and index > fragment:
        return "fragment"
    if query != -1 and index > query and (fragment == -1 or query < fragment):
        return "query"
    return "path"


def _check_raw_url(text: str, forbidden: bytes, what: str) -> None:
    """Reject control characters (and for user input, spaces) before yarl drops them.

    Raises:
        InvalidURL: naming the component, the character (repr) and its index.
    """
    if not _has_forbidden(text, forbidden):
        return
    index = _first_bad_char(text, forbidden)
    part = _url_field(text, index)
    raise InvalidURL(
        f"{what} {redact_url(text, quoted=True)} has the forbidden character "
        f"{text[index]!r} in its {part} "
        f"(index {index}); control characters and spaces must be percent-encoded"
    )


def _to_yarl(url: str | yarl.URL, what: str) -> yarl.URL:
    if isinstance(url, yarl.URL):
        return url
    if not isinstance(url, str):
        raise TypeError(f"{what} must be a str or yarl.URL, not {type(url).__name__}")
    _check_raw_url(url, _URL_FORBIDDEN, what)
    try:
        return yarl.URL(url)
    except ValueError as exc:  # includes UnicodeError from IDNA
        if "port" in str(exc).lower():
            raise InvalidURL(
                f"{what} {redact_url(url, quoted=True)} has an invalid port; ports are 1..65535"
            ) from exc
        raise InvalidURL(
            f"{what} {redact_url(url, quoted=True)} is not a valid URL: {exc}"
        ) from exc


def _validate_absolute(url: yarl.URL, what: str) -> None:
    """Check scheme, host, port and the wire form of host, path and query.

    Raises:
        InvalidURL: naming the field that is wrong and showing the URL.
    """
    if url.scheme not in _DEFAULT_PORTS:
        if not url.scheme:
            raise InvalidURL(
                f"{what} {redact_url(url, quoted=True)} has no scheme; use an absolute "
                "http:// or https:// URL, or set base_url"
            )
        raise InvalidURL(
            f"{what} {redact_url(url, quoted=True)} has the unsupported scheme {url.scheme!r}"
        )
    if not url.raw_host:
        raise InvalidURL(f"{what} {redact_url(url, quoted=True)} has no host")
    if url.explicit_port == 0:
        raise InvalidURL(f"{what} {redact_url(url, quoted=True)} has port 0; ports are 1..65535")
    for part, value in (
        ("host", url.raw_host),
        ("path", url.raw_path),
        ("query", url.raw_query_string),
    ):
        if _has_forbidden(value, _URL_FORBIDDEN):
            bad = value[_first_bad_char(value, _URL_FORBIDDEN)]
            raise InvalidURL(
                f"{what} {redact_url(url, quoted=True)} has the forbidden character "
                f"{bad!r} in its {part}"
            )


# Two leading characters that name a host in a relative reference: "//host" (RFC 3986), and
# the backslash forms WHATWG parsers (browsers, many servers and proxies) read the same way.
_NETWORK_PATH_STARTS = frozenset({"//", "\\\\", "/\\", "\\/"})


def _refuse_network_path(url: str | yarl.URL, rel: yarl.URL) -> None:
    """Refuse a relative ``url`` that names a host: with ``base_url`` it must keep its origin.

    Raises:
        InvalidURL: ``//host/path``, ``///path`` or a backslash form of them.
    """
    text = url if isinstance(url, str) else str(url)
    if rel.raw_authority or text[:2] in _NETWORK_PATH_STARTS:
        raise InvalidURL(
            f"URL {redact_url(text, quoted=True)} starts with {text[:2]!r}, which names a "
            "host, so it would leave base_url's origin; give a path to resolve under "
            "base_url, or an absolute http:// or https:// URL"
        )


def _merge_base(base: yarl.URL, rel: yarl.URL) -> yarl.URL:
    """Append ``rel``'s path to ``base``'s path (httpx style), taking ``rel``'s query.

    The result always has ``base``'s scheme and authority (``rel`` has none: see
    :func:`_refuse_network_path`).
    """
    path = base.raw_path
    if rel.raw_path:
        path = path.rstrip("/") + "/" + rel.raw_path.lstrip("/")
    return yarl.URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=path,
        query_string=rel.raw_query_string,
        fragment=rel.raw_fragment,
        encoded=True,
    )


def _param_str(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(
        f"query parameter {key!r} has a value of type {type(value).__name__}; "
        "use str, int, float, bool or None"
    )


def _param_pairs(params: ParamTypes) -> list[tuple[str, str]]:
    """Flatten ``params`` into ``(key, value)`` strings, dropping ``None`` values."""
    if isinstance(params, str):
        return urllib.parse.parse_qsl(params, keep_blank_values=True)
    raw: Iterable[tuple[str, object]]
    if isinstance(params, Mapping):
        raw = [
            (k, item)
            for k, v in params.items()
            for item in (v if isinstance(v, list | tuple) else (v,))
        ]
    else:
        raw = params
    pairs = []
    for key, value in raw:
        if not isinstance(key, str):
            raise TypeError(f"query parameter names must be str, got {key!r}")
        if value is not None:
            pairs.append((key, _param_str(key, value)))
    return pairs


def parse_url(
    url: str | yarl.URL,
    *,
    base_url: str | yarl.URL | None = None,
    params: ParamTypes | None = None,
) -> yarl.URL:
    """Parse, join and validate the URL of a request.

    A relative ``url`` is appended to ``base_url``'s path (``http://h/api`` + ``/users`` or
    ``users`` gives ``http://h/api/users``) and keeps its own query and fragment; the
    query and fragment of ``base_url`` are not used. A relative ``url`` never changes the
    origin: one that names a host (``//host/x``, or a backslash form such as ``\\host``)
    is refused. An absolute ``url`` (with a scheme) ignores ``base_url``. ``params`` are
    appended to the query (see :data:`ParamTypes`: ``None`` drops the parameter). Hosts
    are IDNA-encoded by yarl; IPv6 literals go in brackets.

    >>> str(parse_url("/v1/items", base_url="https://api.example.org/root", params={"q": 1}))
    'https://api.example.org/root/v1/items?q=1'

    Args:
        url: the request URL; a ``str`` must not contain spaces or control characters.
        base_url: used when ``url`` has no scheme.
        params: query parameters to add.

    Returns:
        The validated ``yarl.URL``, fragment included (it is never sent).

    Raises:
        InvalidURL: no scheme (and no base), a scheme other than http/https, an empty
            host, a port outside 1..65535, a control character or space in the URL
            (naming the field and showing the character), or a relative URL that names a
            host while ``base_url`` is set.
        TypeError: a parameter value of an unsupported type.
    """
    parsed = _to_yarl(url, "URL")
    if not parsed.scheme and base_url is not None:
        base = _to_yarl(base_url, "base_url")
        _validate_absolute(base, "base_url")
        _refuse_network_path(url, parsed)
        parsed = _merge_base(base, parsed)
    _validate_absolute(parsed, "URL")
    if params:
        parsed = parsed.extend_query(_param_pairs(params))
    return parsed


def _host_for(url: yarl.URL) -> str:
    host = url.raw_host or ""
    return f"[{host}]" if ":" in host else host


def pool_key_for(url: yarl.URL, tls: TLSIdentity | None) -> PoolKey:
    """Return the :class:`PoolKey` a request to ``url`` is pooled under.

    Args:
        url: a URL accepted by :func:`parse_url`.
        tls: the TLS identity of the client; used only for ``https`` (``http`` keys always
            get ``None``, so TLS settings never split plain-text pools).

    Returns:
        ``PoolKey(scheme, host, port, tls)`` with the host lowercased, IDNA-encoded and
        without IPv6 brackets, and the explicit port or the scheme's default.

    >>> pool_key_for(yarl.URL("http://[::1]/x"), None)
    PoolKey(scheme='http', host='::1', port=80, tls=None, proxy=None)
    """
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 0)
    return PoolKey(
        url.scheme,
        (url.raw_host or "").lower(),
        port,
        tls if url.scheme == "https" else None,
    )


# --------------------------------------------------------------------------- request head


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
    if method not in _STANDARD_METHODS and not _is_token(method):
        raise InvalidRequest(f"method {method!r} is not an RFC 9110 token")


def _check_target(url: yarl.URL, target: str) -> None:
    if not url.raw_host or url.scheme not in _DEFAULT_PORTS:
        raise InvalidRequest(
            f"request URL {redact_url(url, quoted=True)} must be absolute http:// or https://"
        )
    host = url.raw_host
    text = target + host
    if not text.isascii() or _has_forbidden(text, _URL_FORBIDDEN):
        raise InvalidRequest(
            f"request target {target!r} or host {host!r} holds a space, a control "
            "character or non-ASCII text; build the URL with parse_url()"
        )


def _check_names(names: list[str]) -> None:
    if not names or (_is_token("".join(names)) and "" not in names):
        return
    bad = next(n for n in names if not _is_token(n))
    raise InvalidRequest(f"header name {bad!r} is not an RFC 9110 token")


def _check_values(names: list[str], values: list[str]) -> None:
    if not _has_forbidden("".join(values), _VALUE_FORBIDDEN):
        return
    for name, value in zip(names, values, strict=True):
        index = _first_bad_char(value, _VALUE_FORBIDDEN)
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
    if block is None:
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


def request_target(url: yarl.URL) -> RequestTarget:
    """Check the request-target and host of ``url`` and encode them for a request head.

    Raises:
        InvalidRequest: the URL is not absolute http(s), or its target or host holds a
            space, a control character or non-ASCII text.
    """
    target = url.raw_path_qs or "/"
    _check_target(url, target)
    port = url.explicit_port
    suffix = "" if port is None or port == _DEFAULT_PORTS[url.scheme] else f":{port}"
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


# --------------------------------------------------------------------------- bodies

RequestBody: TypeAlias = bytes | AsyncIterable[bytes] | None
"""A request body as the connection takes it: bytes, a chunked stream, or none."""


def _form_body(data: object) -> bytes:
    if not isinstance(data, Mapping):
        raise TypeError(
            f"data= must be a mapping of form fields, not {type(data).__name__}; "
            "pass raw bytes or text as content="
        )
    return urllib.parse.urlencode(_param_pairs(data)).encode("ascii")


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
) -> tuple[RequestBody, Headers]:
    """Turn the body arguments of a request into bytes or a stream, plus headers to add.

    ``content`` bytes are sent as is; ``str`` as UTF-8 with ``Content-Type: text/plain;
    charset=utf-8``; an async iterable of bytes is streamed (chunked). ``json`` is encoded
    compactly as UTF-8 with ``Content-Type: application/json`` (``None`` means "no JSON
    body"). ``data`` is a form (see :data:`ParamTypes` for the values) sent as
    ``application/x-www-form-urlencoded``. The caller adds the returned headers only
    where it has no header of that name (``Headers.setdefault``).

    >>> encode_body(json={"a": [1, 2]})
    (b'{"a":[1,2]}', Headers([('Content-Type', 'application/json')]))

    Args:
        content: raw body.
        json: a JSON-serialisable value.
        data: form fields.

    Returns:
        ``(body, headers)``: the body is ``None`` when no argument was given.

    Raises:
        InvalidRequest: more than one argument was given, or ``json`` holds NaN/Infinity.
        TypeError: ``content``/``data``/``json`` of an unsupported type.
    """
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
        """Whether the body can be sent again (no body, or a bytes body)."""
        return self.stream is None

    def __repr__(self) -> str:
        return f"<Request({self.method!r}, {redact_url(self.url, quoted=True)})>"


_set_method = Request.__dict__["method"].__set__  # the slots' own setters (no frozen guard)
_set_url = Request.__dict__["url"].__set__
_set_headers = Request.__dict__["headers"].__set__
_set_content = Request.__dict__["content"].__set__
_set_stream = Request.__dict__["stream"].__set__


# --------------------------------------------------------------------------- Response


class BodyStream(Protocol):
    """Where a :class:`Response` pulls its raw (still encoded) body from.

    ``read_chunk()`` returns the next chunk, ``b""`` once the body is complete.
    ``aclose()`` releases what the stream holds; it is idempotent, and is also called
    after the end was reached (then it has nothing left to do). A stream may also offer
    ``async read_rest() -> bytes``, the whole rest of the body at once; :meth:`Response.read`
    uses it when there is no Content-Encoding to undo; and ``decode_check()``, the timeouts
    to check between the steps of decoding the body (see ``_exchange.decode_check``).
    """

    async def read_chunk(self) -> bytes: ...

    async def aclose(self) -> None: ...


class _Decoder(Protocol):
    def decode_steps(self, data: bytes) -> Iterator[bytes]: ...

    def flush_steps(self) -> Iterator[bytes]: ...


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


_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


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
        return self.status in _REDIRECT_STATUSES and bool(self._header_values("location"))

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
                self._content = await self._read_rest(read_rest)
            else:
                chunks = [chunk async for chunk in self.aiter_bytes()]
                self._content = b"".join(chunks)
        return self._content

    async def _read_rest(self, read_rest: Callable[[], Awaitable[bytes]]) -> bytes:
        """:meth:`read` of a body with no coding to undo, from a stream that reads it whole.

        The same checks and the same closing as iterating it (:meth:`_raw_chunks`).
        """
        self._claim_stream()
        try:
            body = await read_rest()
        finally:
            await self.aclose()
        self._num_bytes_downloaded += len(body)
        return body

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
        from ._decoders import paced

        decoder: _Decoder | None = None
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
        coding = ", ".join(self._header_values("content-encoding")).strip()
        return None if coding.lower() in ("", "identity") else coding

    def _new_decoder(self, coding: str) -> _Decoder:
        from ._decoders import make_decoder

        decoder: _Decoder = make_decoder(coding, max_size=self._max_decompressed_size)
        return decoder

    async def aclose(self) -> None:
        """Release the body stream; idempotent. Unread body bytes are discarded.

        Closing before the end makes the client close the connection (never pooled).
        """
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            await self._stream.aclose()

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
