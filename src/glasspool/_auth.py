"""Authentication: the :class:`Auth` flow interface, Basic, Digest (RFC 7616) and .netrc.

An auth flow is a generator: it is given the request, yields the request to send (with its
credentials), and is sent back the response. It may yield another request (to answer a
challenge, such as a 401 with ``WWW-Authenticate``); the client drains the previous response
so its connection goes back to the pool, then sends that one. When the generator returns,
the last response is the result. The client runs a flow on the original origin only: a
redirect to another scheme, host or port gets no credentials.
"""

from __future__ import annotations

import base64
import hashlib
import netrc
import os
import re
import secrets
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import yarl

from ._request import Request
from ._response import Response

__all__ = ["Auth", "AuthTypes", "BasicAuth", "DigestAuth", "coerce_auth", "netrc_auth", "url_auth"]

MAX_CHALLENGE_BYTES = 8192  # a WWW-Authenticate value longer than this is not parsed


class Auth:
    """Base class of authentication schemes: override :meth:`auth_flow`.

    ``auth_flow(request)`` is a generator that yields requests and receives responses;
    requests it yields after the first are sent only when the body can be replayed
    (bytes or none), else the last response is returned as it is.
    """

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        """Yield ``request`` with credentials; receive its response; optionally yield more.

        The default sends the request unchanged.
        """
        yield request


class BasicAuth(Auth):
    """HTTP Basic authentication (RFC 7617), credentials encoded as UTF-8.

    ``auth=("user", "pass")`` is the same as ``auth=BasicAuth("user", "pass")``.
    """

    __slots__ = ("_header",)

    def __init__(self, username: str, password: str) -> None:
        _check_credentials(username, password, "BasicAuth")
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        """Send the request once with ``Authorization: Basic ...``."""
        yield with_header(request, "Authorization", self._header)

    def __repr__(self) -> str:
        return "<BasicAuth [redacted]>"


_ALGORITHMS = {
    "MD5": hashlib.md5,
    "MD5-SESS": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-256-SESS": hashlib.sha256,
}
_PARAM = re.compile(r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


class DigestAuth(Auth):
    """HTTP Digest authentication (RFC 7616): MD5 and SHA-256 (and their ``-sess``
    variants), ``qop=auth`` or no qop, nonce counting, ``opaque``.

    The first request goes without credentials; a 401 with a ``Digest`` challenge is
    answered once. A later 401 with ``stale=true`` (the nonce expired) is answered once
    more with the new nonce. The nonce is remembered, so later requests through the same
    ``DigestAuth`` answer at once with the next nonce count.
    """

    def __init__(self, username: str, password: str) -> None:
        _check_credentials(username, password, "DigestAuth")
        self._username = username
        self._password = password
        self._challenge: dict[str, str] | None = None
        self._nonce_count = 0

    def __repr__(self) -> str:
        return "<DigestAuth [redacted]>"

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        """Send, answer a Digest 401 challenge, and once more if the server says stale.

        Several requests may share this object at once: each flow remembers the nonce it
        answered with itself, so a challenge that another request has already taken up is
        answered, not mistaken for a refusal of this one's credentials.
        """
        answered: str | None = None  # the nonce this request's credentials were made with
        if self._challenge is not None:
            answered = self._challenge.get("nonce", "")
            response = yield with_header(request, "Authorization", self._answer(request))
        else:
            response = yield request
        for _ in range(2):
            if response.status != 401:
                return
            challenge = _digest_challenge(response.headers.get_all("www-authenticate"))
            if challenge is None:
                return
            nonce = challenge.get("nonce", "")
            stale = challenge.get("stale", "").lower() == "true"
            if answered == nonce and not stale:
                return  # the same nonce refused our answer: wrong credentials
            if self._challenge is None or self._challenge.get("nonce", "") != nonce:
                self._challenge, self._nonce_count = challenge, 0  # a new nonce counts anew
            answered = nonce
            response = yield with_header(request, "Authorization", self._answer(request))

    def _answer(self, request: Request) -> str:
        challenge = self._challenge
        assert challenge is not None
        algorithm = challenge.get("algorithm", "MD5").upper()
        hash_fn = _ALGORITHMS.get(algorithm)
        if hash_fn is None:
            raise ValueError(f"DigestAuth: unsupported algorithm {algorithm[:32]!r}")

        def h(text: str) -> str:
            return hash_fn(text.encode("utf-8")).hexdigest()

        realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
        self._nonce_count += 1
        nc = f"{self._nonce_count:08x}"
        cnonce = secrets.token_hex(16)
        ha1 = h(f"{self._username}:{realm}:{self._password}")
        if algorithm.endswith("-SESS"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        uri = request.url.raw_path_qs
        ha2 = h(f"{request.method}:{uri}")
        qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
        if "auth" in qops:
            digest = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        elif not qops:
            digest = h(f"{ha1}:{nonce}:{ha2}")
        else:
            raise ValueError("DigestAuth: the server offers only qop=auth-int, not supported")
        parts = [
            f'username="{_quote(self._username)}"',
            f'realm="{_quote(realm)}"',
            f'nonce="{_quote(nonce)}"',
            f'uri="{_quote(uri)}"',
            f'response="{digest}"',
            f"algorithm={algorithm}",
        ]
        if "opaque" in challenge:
            parts.append(f'opaque="{_quote(challenge["opaque"])}"')
        if "auth" in qops:
            parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _digest_challenge(values: list[str]) -> dict[str, str] | None:
    """The parameters of the first ``Digest`` challenge among ``WWW-Authenticate`` values."""
    for value in values:
        if len(value) > MAX_CHALLENGE_BYTES:
            continue
        start = value.lower().find("digest ")
        if start == -1:
            continue
        params: dict[str, str] = {}
        for name, raw in _PARAM.findall(value[start + 7 :]):
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params.setdefault(name.lower(), raw)
        if "nonce" in params:
            return params
    return None


def _check_credentials(username: object, password: object, what: str) -> None:
    if not isinstance(username, str) or not isinstance(password, str):
        raise TypeError(
            f"{what} takes a username and a password as str, not "
            f"{type(username).__name__} and {type(password).__name__}"
        )


def with_header(request: Request, name: str, value: str) -> Request:
    """A copy of ``request`` with header ``name`` set to ``value``."""
    headers = request.headers.copy()
    headers[name] = value
    return Request._trusted(request.method, request.url, headers, request.content, request.stream)


AuthTypes: TypeAlias = "tuple[str, str] | Auth | None"


def coerce_auth(auth: Any) -> Auth | None:
    """``auth=`` as an :class:`Auth`: a ``(user, password)`` pair is Basic.

    Raises:
        TypeError: anything else, named ``auth``.
    """
    if auth is None or isinstance(auth, Auth):
        return auth
    if (
        isinstance(auth, tuple)
        and len(auth) == 2
        and isinstance(auth[0], str)
        and isinstance(auth[1], str)
    ):
        return BasicAuth(auth[0], auth[1])
    shape = f"a tuple of {len(auth)}" if isinstance(auth, tuple) else type(auth).__name__
    raise TypeError(
        f"auth= must be a (username, password) tuple of str, a glasspool.Auth such as "
        f"DigestAuth, or None; got {shape}"
    )


def url_auth(url: yarl.URL) -> BasicAuth | None:
    """Basic credentials from a URL's userinfo (``http://user:pass@host/``), if any."""
    if url.raw_user is None and url.raw_password is None:
        return None
    return BasicAuth(url.user or "", url.password or "")


def netrc_auth(host: str, environ: Mapping[str, str]) -> BasicAuth | None:
    """Basic credentials for ``host`` from ``$NETRC`` or ``~/.netrc``; ``None`` if there is
    no file, it cannot be parsed, or it has no entry (nor ``default``) for the host."""
    path = environ.get("NETRC") or os.path.join(Path.home(), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if entry is None:
        return None
    login, _account, password = entry
    return BasicAuth(login or "", password or "")
