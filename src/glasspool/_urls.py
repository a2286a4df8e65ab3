"""URLs: parsing, joining with ``base_url``, validation, query parameters, the pool key.

``yarl.URL`` holds every URL: it parses, percent-encodes, IDNA-encodes hosts and joins.
glasspool adds the rules yarl does not enforce (scheme, host, port, control characters),
and the one rule of ``base_url``: a relative URL never leaves its origin.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import yarl

from ._exceptions import InvalidURL
from ._pool.key import PoolKey, ProxyIdentity, TLSIdentity
from ._redact import redact_url
from ._syntax import DEFAULT_PORTS, URL_FORBIDDEN, first_bad_char, has_forbidden

__all__ = [
    "ParamTypes",
    "ParamValue",
    "check_raw_url",
    "param_pairs",
    "parse_url",
    "pool_key_for",
    "validate_absolute",
]


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


def check_raw_url(text: str, forbidden: bytes, what: str) -> None:
    """Reject control characters (and for user input, spaces) before yarl drops them.

    Raises:
        InvalidURL: naming the component, the character (repr) and its index.
    """
    if not has_forbidden(text, forbidden):
        return
    index = first_bad_char(text, forbidden)
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
    check_raw_url(url, URL_FORBIDDEN, what)
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


def validate_absolute(url: yarl.URL, what: str) -> None:
    """Check scheme, host, port and the wire form of host, path and query.

    Raises:
        InvalidURL: naming the field that is wrong and showing the URL.
    """
    if url.scheme not in DEFAULT_PORTS:
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
        if has_forbidden(value, URL_FORBIDDEN):
            bad = value[first_bad_char(value, URL_FORBIDDEN)]
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


def _param_str(key: str, value: object, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(
        f"{what} {key!r} has a value of type {type(value).__name__}; "
        "use str, int, float, bool or None"
    )


def param_pairs(params: ParamTypes, what: str = "query parameter") -> list[tuple[str, str]]:
    """Flatten ``params`` into ``(key, value)`` strings, dropping ``None`` values.

    ``what`` names one of them in errors: ``query parameter`` (``params=``) or
    ``form field`` (``data=``).
    """
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
            raise TypeError(f"{what} names must be str, got {key!r}")
        if value is not None:
            pairs.append((key, _param_str(key, value, what)))
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
        validate_absolute(base, "base_url")
        _refuse_network_path(url, parsed)
        parsed = _merge_base(base, parsed)
    validate_absolute(parsed, "URL")
    if params:
        parsed = parsed.extend_query(param_pairs(params))
    return parsed


def pool_key_for(
    url: yarl.URL, tls: TLSIdentity | None, proxy: ProxyIdentity | None = None
) -> PoolKey:
    """Return the :class:`PoolKey` a request to ``url`` is pooled under.

    Args:
        url: a URL accepted by :func:`parse_url`.
        tls: the TLS identity of the client; used only for ``https`` (``http`` keys always
            get ``None``, so TLS settings never split plain-text pools).
        proxy: the proxy the request goes through, if any.

    Returns:
        ``PoolKey(scheme, host, port, tls)`` with the host lowercased, IDNA-encoded and
        without IPv6 brackets, and the explicit port or the scheme's default.

    >>> pool_key_for(yarl.URL("http://[::1]/x"), None)
    PoolKey(scheme='http', host='::1', port=80, tls=None, proxy=None)
    """
    port = url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme, 0)
    return PoolKey(
        url.scheme,
        (url.raw_host or "").lower(),
        port,
        tls if url.scheme == "https" else None,
        proxy,
    )
