"""Cookies: :class:`Cookies`, a jar over the standard library's ``http.cookiejar``.

The RFC 6265 rules (domain, path, secure, expiry, host-only) are the standard library's
``DefaultCookiePolicy``; this module only adapts glasspool's requests and responses to it.
"""

from __future__ import annotations

import http.cookiejar
import urllib.request
from collections.abc import Iterator, Mapping
from typing import TypeAlias

import yarl

__all__ = [
    "MAX_COOKIES",
    "MAX_COOKIES_PER_DOMAIN",
    "MAX_COOKIE_BYTES",
    "MAX_SET_COOKIES",
    "Cookies",
    "CookieTypes",
]

# What servers can make the jar hold, after RFC 6265 section 6.1 (which asks a client for
# at least 4096 bytes per cookie, 50 cookies per domain and 3000 cookies in all).
MAX_SET_COOKIES = 50
"""Set-Cookie fields read from one response; later ones are ignored (bounds memory)."""
MAX_COOKIE_BYTES = 4096
"""A longer Set-Cookie field (name, value and attributes) is ignored."""
MAX_COOKIES_PER_DOMAIN = 50
"""Cookies kept per domain; a server setting more pushes out that domain's oldest."""
MAX_COOKIES = 3000
"""Cookies kept in all; past it, the oldest-set domains' cookies go first."""

_OWN = "x-glasspool-set-by-user"  # marks a cookie set through Cookies.set(): never pushed out


class _ResponseInfo:
    """What ``CookieJar.extract_cookies`` reads of a response: its Set-Cookie fields."""

    __slots__ = ("_values",)

    def __init__(self, values: list[str]) -> None:
        self._values = values

    def get_all(self, name: str, default: list[str]) -> list[str]:
        return self._values if name.lower() == "set-cookie" else default


class _Response:
    __slots__ = ("_info",)

    def __init__(self, values: list[str]) -> None:
        self._info = _ResponseInfo(values)

    def info(self) -> _ResponseInfo:
        return self._info


def _stdlib_request(url: yarl.URL) -> urllib.request.Request:
    """A ``urllib.request.Request`` for ``url`` (no userinfo, no fragment): the request
    adapter ``CookieJar`` understands."""
    clean = url.with_user(None).with_fragment(None)
    return urllib.request.Request(str(clean))


class Cookies:
    """A cookie jar: ``client.cookies``. Dict-like by cookie name, over a
    ``http.cookiejar.CookieJar`` (``.jar``), which applies RFC 6265's domain, path,
    secure, expiry and host-only rules.

    A cookie set here without ``domain`` is sent to every host; one set by a server's
    ``Set-Cookie`` goes only where that server allowed.

    Args:
        cookies: initial cookies: a mapping of name to value, a :class:`Cookies`, or a
            ``CookieJar`` (used as is, not copied).
    """

    def __init__(self, cookies: CookieTypes = None) -> None:
        if isinstance(cookies, http.cookiejar.CookieJar):
            self.jar = cookies
            return
        self.jar = http.cookiejar.CookieJar()
        if isinstance(cookies, Cookies):
            for cookie in cookies.jar:
                self.jar.set_cookie(cookie)
        elif isinstance(cookies, Mapping):
            for name, value in cookies.items():
                self.set(name, value)
        elif cookies is not None:
            raise TypeError(
                "cookies= must be a dict of name to value, a glasspool.Cookies or an "
                f"http.cookiejar.CookieJar, not {type(cookies).__name__}"
            )

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        """Set a cookie; ``domain=""`` sends it to every host."""
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"a cookie's name and value must be str, not {type(name).__name__} "
                f"and {type(value).__name__}"
            )
        if any(c in name + value for c in ";\r\n\x00") or not name or "=" in name:
            raise ValueError(f"cookie {name[:40]!r} has a character not allowed in a cookie")
        cookie = http.cookiejar.Cookie(
            version=0, name=name, value=value, port=None, port_specified=False,
            domain=domain, domain_specified=bool(domain),
            domain_initial_dot=domain.startswith("."), path=path, path_specified=True,
            secure=False, expires=None, discard=True, comment=None, comment_url=None,
            rest={_OWN: ""}, rfc2109=False,
        )  # fmt: skip
        self.jar.set_cookie(cookie)

    def get(self, name: str, default: str | None = None, domain: str | None = None) -> str | None:
        """The value of the first cookie called ``name`` (on ``domain`` if given)."""
        for cookie in self.jar:
            if cookie.name == name and (domain is None or cookie.domain == domain):
                return cookie.value
        return default

    def delete(self, name: str, domain: str | None = None) -> None:
        """Remove every cookie called ``name`` (on ``domain`` if given)."""
        doomed = [c for c in self.jar if c.name == name and domain in (None, c.domain)]
        for cookie in doomed:
            self.jar.clear(cookie.domain, cookie.path, cookie.name)

    def clear(self, domain: str | None = None) -> None:
        """Remove every cookie, or every cookie of ``domain``."""
        self.jar.clear(domain)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if self.get(name) is None:
            raise KeyError(name)
        self.delete(name)

    def __contains__(self, name: object) -> bool:
        return any(cookie.name == name for cookie in self.jar)

    def __iter__(self) -> Iterator[str]:
        return iter([cookie.name for cookie in self.jar])

    def __len__(self) -> int:
        return len(self.jar)

    def __repr__(self) -> str:
        return f"<Cookies {len(self.jar)} cookie(s)>"  # values are secrets

    # -------------------------------------------------------------- client side

    def _held(self) -> bool:
        """Whether the jar may hold a cookie (cheap: no walk over the cookies)."""
        return bool(getattr(self.jar, "_cookies", True))  # CookieJar's own store

    def _header_for(self, url: yarl.URL) -> str | None:
        """The ``Cookie`` value for a request to ``url``, or ``None``."""
        if not self._held():
            return None
        request = _stdlib_request(url)
        self.jar.add_cookie_header(request)
        return request.get_header("Cookie")

    def _extract(self, url: yarl.URL, values: list[str]) -> None:
        """Store the Set-Cookie fields of a response, within the jar's caps: at most
        ``MAX_SET_COOKIES`` fields of ``MAX_COOKIE_BYTES`` each, then
        ``MAX_COOKIES_PER_DOMAIN`` and ``MAX_COOKIES`` (oldest pushed out)."""
        kept = [v for v in values[:MAX_SET_COOKIES] if len(v) <= MAX_COOKIE_BYTES]
        if kept:
            response = _Response(kept)
            self.jar.extract_cookies(response, _stdlib_request(url))  # type: ignore[arg-type]
            _trim(self.jar)


def _trim(jar: http.cookiejar.CookieJar) -> None:
    """Hold ``jar`` to ``MAX_COOKIES_PER_DOMAIN`` and ``MAX_COOKIES``, dropping the oldest
    first (the order ``CookieJar`` stored them in: by domain, then path, then name).
    Cookies set through :meth:`Cookies.set` count but are never dropped.

    Works on ``CookieJar``'s own store, which every ``CookieJar`` keeps; a jar without it
    is left alone. Costs one pass over the domains, run only after a response set cookies.
    """
    store = getattr(jar, "_cookies", None)
    lock = getattr(jar, "_cookies_lock", None)
    if not isinstance(store, dict) or lock is None:
        return
    with lock:
        total = 0
        for domain in list(store):
            count = sum(len(names) for names in store[domain].values())
            if count > MAX_COOKIES_PER_DOMAIN:
                _drop_oldest(store, [domain], count - MAX_COOKIES_PER_DOMAIN)
                count = MAX_COOKIES_PER_DOMAIN
            total += count
        if total > MAX_COOKIES:
            _drop_oldest(store, list(store), total - MAX_COOKIES)


def _drop_oldest(
    store: dict[str, dict[str, dict[str, http.cookiejar.Cookie]]], domains: list[str], n: int
) -> None:
    """Remove ``n`` cookies from ``domains`` in stored order, and any store left empty."""
    for domain in domains:
        paths = store[domain]
        for path in list(paths):
            names = paths[path]
            for name in list(names):
                if n <= 0:
                    return
                if names[name].has_nonstandard_attr(_OWN):
                    continue
                del names[name]
                n -= 1
            if not names:
                del paths[path]
        if not paths:
            del store[domain]


CookieTypes: TypeAlias = "Cookies | http.cookiejar.CookieJar | Mapping[str, str] | None"


def _pairs(header: str | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in (header or "").split("; "):
        name, sep, value = part.partition("=")
        if sep:
            pairs[name] = value
    return pairs


def cookie_header(jar: Cookies, extra: Cookies | None, url: yarl.URL) -> str | None:
    """The ``Cookie`` value for ``url``: the jar's matching cookies, then those of
    ``extra`` (per-request cookies, which replace jar cookies of the same name)."""
    sent = jar._header_for(url)
    if extra is None:
        return sent
    more = extra._header_for(url)
    if more is None:
        return sent
    if sent is None:
        return more
    pairs = _pairs(sent)
    pairs.update(_pairs(more))
    return "; ".join(f"{k}={v}" for k, v in pairs.items())
