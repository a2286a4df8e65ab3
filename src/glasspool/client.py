"""The Client: what users call. The request surface over the pool and its exchanges.

The client turns arguments into a :class:`Request`, follows redirects, retries a request
whose reused connection turned out stale, and holds the ``total`` deadline around it all.
Each attempt runs on a ``_exchange.Exchange``, which owns its connection from the pool's
hand-over to its release; the client never gives a connection back itself, and fills no
``Response`` attributes (see "The life of a request" in docs/internals.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, NamedTuple

import yarl

from ._auth import Auth, AuthTypes, BasicAuth, coerce_auth, netrc_auth, url_auth
from ._connect import ConnectOptions, context_for, open_connection, tls_identity
from ._cookies import Cookies, CookieTypes, cookie_header
from ._defaults import (
    DEFAULT_EVICT_GRACE,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_LIMIT,
    DEFAULT_LIMIT_PER_HOST,
    DEFAULT_MAX_CHUNK_EXT_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_LINE_BYTES,
    UNSET,
    Unset,
    default_limit_per_host,
)
from ._dns import DNSCache, Resolver
from ._exceptions import (
    ClientClosed,
    InvalidRequest,
    ProxyError,
    TooManyRedirects,
    UnclosedResponseWarning,
)
from ._exchange import Exchange, call_site
from ._headers import Headers, HeaderTypes, default_headers
from ._hooks import EventHooks, call_hooks, check_hooks
from ._http11 import HTTP11Connection, ParserLimits, ReceiveBuffer
from ._http11.request_head import RequestTarget, build_request_head, request_target
from ._mock import MockTransport
from ._multipart import FilesTypes
from ._pool.adaptive import AdaptiveLimits, AdaptiveLimitsTypes
from ._pool.asyncio import Pool, SharedLimits
from ._pool.key import PoolKey, ProxyIdentity, TLSIdentity
from ._proxy import (
    ProxyChoice,
    ca_from_env,
    env_proxies,
    forward_target,
    forwards,
    open_via_proxy,
    parse_proxy,
)
from ._redact import redact_url
from ._redirects import REDIRECT_STATUSES, redirect_request
from ._request import Request, RequestBody, declared_length, encode_body, sized_stream
from ._response import Response
from ._retry import Retry, RetryTypes, error_delay, method_allows_retry, status_delay
from ._timeouts import Timeout, TimeoutTypes, within_deadline
from ._urls import ParamTypes, parse_url, pool_key_for
from ._validate import check_int

__all__ = ["Client", "StreamContext"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
REDIRECT_DRAIN_BYTES: Final = 64 * 1024
DEFAULT_DNS_TTL: Final = 10.0  # seconds a resolved name is kept (as aiohttp)
MAX_AUTH_ROUNDS: Final = 4  # requests an auth flow may send for one hop
URL_CACHE_SIZE: Final = 1024  # parsed request URLs kept per client (see Client._target)
DEFAULT_TIMEOUT: Final = Timeout()

_log = logging.getLogger("glasspool")


class _Route(NamedTuple):
    """Where a request goes: its pool key, and its checked request target when known."""

    key: PoolKey
    target: RequestTarget | None


Content = str | bytes | bytearray | memoryview | AsyncIterable[bytes] | None


_UDS_AND_PROXY = "uds= and proxy= cannot be combined: uds connects to a local socket"


class Client:
    """An HTTP/1.1 client with a connection pool you can see through (``client.pool``).

    Use it as ``async with glasspool.Client(...) as client:``, or call :meth:`aclose`.

    Args:
        limit: the most connections open at once (connecting + in use + idle).
        limit_per_host: the same per pool key; ``None`` = only ``limit`` applies. Left
            out, it is 10, or ``limit`` if that is smaller.
        host_limits: per-host-name overrides of ``limit_per_host``.
        timeout: a :class:`Timeout`, or a number of seconds for every phase.
        keepalive_expiry: seconds an idle connection is kept before it is closed.
        max_lifetime: seconds since open after which a connection is not reused.
        max_requests_per_connection: requests after which a connection is not reused.
        evict_grace: seconds a connection must have been idle before it may be closed to
            make room for another host that already has connections, when ``limit`` is
            full; a host with no connection may close any idle one at once. ``0`` closes
            one whenever needed (may reconnect often); ``None`` only for hosts with none.
        verify: ``True`` (system trust store, via ``ssl.create_default_context``),
            ``False``, an ``ssl.SSLContext``, or a path to a CA bundle file or directory.
        cert: a client certificate file, or ``(certfile, keyfile)``.
        follow_redirects: follow 301/302/303/307/308 by default.
        max_redirects: the most redirects followed before ``TooManyRedirects``.
        headers: sent with every request (after the defaults, which they override).
        base_url: joined with relative request URLs, which always keep its scheme, host
            and port (one that names a host, like ``//host/x``, raises ``InvalidURL``). An
            absolute URL replaces it, and the client's ``headers`` go with it.
        max_header_bytes, max_headers: caps on a response head (``ResponseTooLarge``).
        max_line_bytes: cap on one status or header line of a response.
        max_chunk_ext_bytes: cap on one chunk-extension of a chunked response body.
        max_decompressed_size: cap on a decoded body in bytes; ``None`` = none (the
            expansion-ratio guard is always on).
        shared_limits: fleet-wide per-host limits, e.g. :class:`glasspool.RedisLimits`.
        happy_eyeballs_delay: seconds before trying the next address (RFC 8305).
        retry: retry failed requests: ``None`` (never), a number of retries, or a
            :class:`glasspool.Retry` (see docs/retries.md).
        proxy: send every request through this proxy: ``http://``, ``https://``,
            ``socks5://`` or ``socks5h://`` URL, credentials in its userinfo (see
            docs/proxies.md). ``None``: the environment's proxies if ``trust_env``.
        trust_env: read ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``
            (lower or upper case), and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` for
            ``verify=True``, when the client is created, and ``NETRC`` or ``~/.netrc`` for
            requests without credentials (read once per host); ``False`` ignores them all.
        adaptive_limits: lower a host's limit when it answers 429/503 or ``Retry-After``
            and raise it back after successes: ``True`` (the defaults), a
            :class:`glasspool.AdaptiveLimits`, or ``None`` (off; docs/pool.md).
        local_address: the source IP address to connect from (only addresses of its
            family are tried).
        socket_options: ``(level, option, value)`` triples set on every socket before
            it connects (``TCP_NODELAY`` is always set first).
        uds: connect every request to this Unix domain socket (e.g. a container engine's
            API socket); the URL still names the host for ``Host``, TLS and the pool.
            Proxies are not used with it.
        resolve: ``{"host:port": "address"}`` overrides, like curl's ``--resolve``: the
            connection goes to the address, ``Host`` and TLS keep the URL's host.
        resolver: ``async def resolver(host, port) -> list of IP address strings``,
            asked instead of the system resolver.
        dns_ttl: seconds a name's addresses are cached (``0`` or ``None``: not cached);
            the counters are in ``pool.stats().dns``.
        transport: a :class:`glasspool.MockTransport` answering requests without sockets,
            through the real pool (for tests; docs/testing.md); ``None``: real sockets.
        event_hooks: ``{"request": [fn, ...], "response": [fn, ...]}``, plain or async
            functions. Request hooks get each :class:`Request` before it is sent (once
            per attempt: retries and redirect hops included) and may change its headers;
            response hooks get each :class:`Response` when its head has arrived, body
            unread. Run in list order; an exception from a hook ends the request
            (docs/testing.md).
        auth: credentials for every request: ``("user", "pass")`` (Basic), a
            :class:`glasspool.DigestAuth` or another :class:`glasspool.Auth` (docs/auth.md).
            Without it, a URL's userinfo is sent as Basic, else ``.netrc`` if ``trust_env``.
        cookies: initial cookies for :attr:`cookies`: a dict, :class:`glasspool.Cookies`
            or ``http.cookiejar.CookieJar``.

    Raises:
        ValueError, TypeError: a limit, duration or cap is out of range (named).
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        limit_per_host: int | Unset | None = UNSET,
        host_limits: Mapping[str, int] | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY,
        max_lifetime: float | None = None,
        max_requests_per_connection: int | None = None,
        evict_grace: float | None = DEFAULT_EVICT_GRACE,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str | None] | None = None,
        follow_redirects: bool = True,
        max_redirects: int = 10,
        headers: HeaderTypes | None = None,
        base_url: str | yarl.URL | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_chunk_ext_bytes: int = DEFAULT_MAX_CHUNK_EXT_BYTES,
        max_decompressed_size: int | None = None,
        shared_limits: SharedLimits | None = None,
        happy_eyeballs_delay: float | None = 0.25,
        retry: RetryTypes = None,
        proxy: str | None = None,
        trust_env: bool = True,
        adaptive_limits: AdaptiveLimitsTypes = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes]] | None = None,
        uds: str | os.PathLike[str] | None = None,
        resolve: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
        dns_ttl: float | None = DEFAULT_DNS_TTL,
        transport: MockTransport | None = None,
        event_hooks: EventHooks | None = None,
        auth: AuthTypes = None,
        cookies: CookieTypes = None,
    ) -> None:
        self._site = call_site()
        self._closed = False
        self._loop_watch: AsyncGenerator[None, None] | None = None  # see _watch_loop
        self._dns = DNSCache(dns_ttl, resolver)
        self._pool = Pool(
            _weak_factory(self),
            dns_stats=self._dns.stats,
            limit=limit,
            limit_per_host=_default_per_host(limit, limit_per_host),
            host_limits=host_limits,
            keepalive_expiry=keepalive_expiry,
            max_lifetime=max_lifetime,
            max_requests_per_connection=max_requests_per_connection,
            evict_grace=evict_grace,
            shared_limits=shared_limits,
            adaptive_limits=AdaptiveLimits.coerce(adaptive_limits),
        )
        self.timeout = Timeout.coerce(timeout)
        self.follow_redirects = follow_redirects
        self.max_redirects = check_int("max_redirects", max_redirects, minimum=0)
        self.max_decompressed_size = max_decompressed_size
        self.base_url = None if base_url is None else parse_url(base_url)
        self._headers = default_headers()
        if headers is not None:
            self._headers.update(headers)
        self._limits = ParserLimits(
            max_header_bytes=check_int("max_header_bytes", max_header_bytes),
            max_headers=check_int("max_headers", max_headers),
            max_line_bytes=check_int("max_line_bytes", max_line_bytes),
            max_chunk_ext_bytes=check_int("max_chunk_ext_bytes", max_chunk_ext_bytes),
        )
        self._cert = (cert, None) if isinstance(cert, str) else cert
        if verify is True:
            verify = ca_from_env(verify, os.environ, trust_env)
        self._tls = tls_identity(verify, self._cert, None)
        self.trust_env = trust_env
        explicit = None if proxy is None else parse_proxy(proxy, source="proxy=", tls=self._tls)
        self._connect_options = ConnectOptions.build(local_address, socket_options, uds, resolve)
        if uds is not None and explicit is not None:
            raise ValueError(_UDS_AND_PROXY)
        env = env_proxies(os.environ, self._tls) if trust_env and uds is None else None
        self._proxies = ProxyChoice(explicit, env)
        self._proxy_urls: dict[str, ProxyIdentity] = {}  # per-request proxy= strings
        self._happy_eyeballs_delay = happy_eyeballs_delay
        if transport is not None and not isinstance(transport, MockTransport):
            raise TypeError(
                f"transport= must be a glasspool.MockTransport or None, not "
                f"{type(transport).__name__}"
            )
        self._mock_transport = transport
        self._request_hooks, self._response_hooks = check_hooks(event_hooks)
        self.retry = Retry.coerce(retry)
        self._retry_rng = random.Random()  # the backoff's jitter; tests replace it
        self._retry_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # and this
        self._recv_buffer: ReceiveBuffer | None = None  # shared by all its connections
        # URL string -> (base_url, TLS identity, parsed URL, route) they gave; see _target
        self._urls: dict[str, tuple[yarl.URL | None, TLSIdentity, yarl.URL, _Route]] = {}
        self.auth = coerce_auth(auth)
        self._cookies = Cookies(cookies)
        self._netrc: dict[str, BasicAuth | None] = {}  # host -> its .netrc entry (trust_env)

    # ------------------------------------------------------------- properties

    @property
    def pool(self) -> Pool:
        """The connection pool: ``stats()``, ``add_listener()``, ``remove_listener()``."""
        return self._pool

    @property
    def headers(self) -> Any:
        """The headers sent with every request (defaults plus the ``headers`` argument)."""
        return self._headers

    @property
    def cookies(self) -> Cookies:
        """The cookie jar: cookies given as ``cookies=`` and every ``Set-Cookie`` received."""
        return self._cookies

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"<glasspool.Client {self._pool!r}>"

    # --------------------------------------------------------------- requests

    async def request(
        self,
        method: str,
        url: str | yarl.URL,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        content: Content = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        timeout: TimeoutTypes | Unset = UNSET,
        follow_redirects: bool | Unset = UNSET,
        retry: RetryTypes | Unset = UNSET,
        proxy: str | Unset | None = UNSET,
        files: FilesTypes | None = None,
        auth: AuthTypes | Unset = UNSET,
        cookies: CookieTypes = None,
    ) -> Response:
        """Send a request and read the whole response body.

        The connection goes back to the pool (reason ``eof``) before this returns.

        Args:
            method: e.g. ``"GET"``; any RFC 9110 token, sent as given.
            url: absolute, or relative to ``base_url``.
            params: query parameters to add to the URL.
            headers: headers for this request (override the client's).
            content: bytes, str (UTF-8) or an async iterable of bytes (sent chunked, or
                with the length of a ``Content-Length`` header, which it must match).
            json: a value sent as JSON.
            data: a form sent as ``application/x-www-form-urlencoded``.
            timeout: overrides the client's timeout for this request.
            follow_redirects: overrides the client's setting for this request.
            retry: overrides the client's ``retry`` for this request (``None``: none).
            proxy: a proxy URL for this request (and its redirects), or ``None`` to go
                direct; left out, the client's ``proxy`` or the environment's.
            files: files sent as ``multipart/form-data``, with ``data`` fields alongside:
                ``{"name": content | (filename, content[, content_type])}``, the content
                bytes, a binary file object or a ``pathlib.Path``; a ``None`` filename sends
                a plain field (see ``docs/uploads.md``).
            auth: credentials for this request; ``None`` sends it without the client's
                ``auth`` (URL userinfo and ``.netrc`` still apply); left out, the client's.
            cookies: cookies sent with this request, besides the jar's (they replace jar
                cookies of the same name); not stored in :attr:`cookies`, and not sent to
                another origin after a redirect.

        Returns:
            The :class:`Response`, body read (``content``, ``text``, ``json()``).

        Raises:
            InvalidURL, InvalidRequest: before any connection is taken.
            PoolTimeout, ConnectError, TLSError, ConnectTimeout, ReadTimeout,
            WriteTimeout, TotalTimeout, ServerDisconnected, ProtocolError,
            IncompleteBody, ResponseTooLarge, TooManyRedirects, ClientClosed,
            ProxyError.
        """
        return await self._request(
            method,
            url,
            params,
            headers,
            content,
            json,
            data,
            timeout,
            follow_redirects,
            False,
            retry,
            proxy,
            files,
            auth,
            cookies,
        )

    def stream(
        self,
        method: str,
        url: str | yarl.URL,
        *,
        params: ParamTypes | None = None,
        headers: HeaderTypes | None = None,
        content: Content = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        timeout: TimeoutTypes | Unset = UNSET,
        follow_redirects: bool | Unset = UNSET,
        retry: RetryTypes | Unset = UNSET,
        proxy: str | Unset | None = UNSET,
        files: FilesTypes | None = None,
        auth: AuthTypes | Unset = UNSET,
        cookies: CookieTypes = None,
    ) -> StreamContext:
        """Send a request and give the response with its body unread: ``async with``.

        ``async with client.stream("GET", url) as response:`` sends the request on entry.
        The connection is held until the body is read to its end (released ``eof``) or
        the block exits (released ``closed``; the connection is closed if unread bytes
        remain). Same arguments and errors as :meth:`request`; retries happen only before
        the response is handed over.
        """
        call = (
            method, url, params, headers, content, json, data, timeout, follow_redirects, retry,
            proxy, files, auth, cookies,
        )  # fmt: skip
        return StreamContext(self, call)

    async def get(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("GET", url, ...)``."""
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("HEAD", url, ...)``."""
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("OPTIONS", url, ...)``."""
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("POST", url, ...)``."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("PUT", url, ...)``."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("PATCH", url, ...)``."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str | yarl.URL, **kwargs: Any) -> Response:
        """``request("DELETE", url, ...)``."""
        return await self.request("DELETE", url, **kwargs)

    # ------------------------------------------------------------ internals

    async def _request(
        self,
        method: str,
        url: str | yarl.URL,
        params: ParamTypes | None,
        headers: HeaderTypes | None,
        content: Content,
        json: Any,
        data: Mapping[str, Any] | None,
        timeout: TimeoutTypes | Unset,
        follow_redirects: bool | Unset,
        stream: bool,
        retry: RetryTypes | Unset = UNSET,
        proxy: str | Unset | None = UNSET,
        files: FilesTypes | None = None,
        auth: AuthTypes | Unset = UNSET,
        cookies: CookieTypes = None,
    ) -> Response:
        if self._closed:
            raise ClientClosed(f"the client is closed; cannot send {method} {redact_url(url)}")
        t = self.timeout if isinstance(timeout, Unset) else Timeout.coerce(timeout)
        follow = self.follow_redirects if isinstance(follow_redirects, Unset) else follow_redirects
        policy = self.retry if isinstance(retry, Unset) else Retry.coerce(retry)
        flow = self.auth if isinstance(auth, Unset) else coerce_auth(auth)
        extra = None if cookies is None else Cookies(cookies)
        request, route = self._build_request(
            method, url, params, headers, content, json, data, proxy, files
        )
        if flow is None:
            flow = self._implicit_auth(request.url)
        creds = None if flow is None and extra is None else _Credentials(flow, extra)
        if t.total is None:
            return await self._send_following(
                request, route, t, None, follow, stream, policy, proxy, creds
            )
        deadline = asyncio.get_running_loop().time() + t.total
        following = self._send_following(
            request, route, t, deadline, follow, stream, policy, proxy, creds
        )
        return await within_deadline(following, deadline, t.total, request.url)

    def _build_request(
        self,
        method: str,
        url: str | yarl.URL,
        params: ParamTypes | None,
        headers: HeaderTypes | None,
        content: Content,
        json: Any,
        data: Mapping[str, Any] | None,
        proxy: str | Unset | None = UNSET,
        files: FilesTypes | None = None,
    ) -> tuple[Request, _Route]:
        full, route = self._target(url, params, proxy)
        body: RequestBody = None
        body_headers: Headers | None = None
        merged = self._headers
        if headers is not None:
            merged = self._headers.copy()
            merged.update(headers)
        if content is not None or json is not None or data is not None or files is not None:
            own_type = merged.get("content-type") if files is not None else None
            body, body_headers = encode_body(content, json, data, files, own_type)
            if body_headers and merged is self._headers:
                merged = self._headers.copy()
            for name, value in body_headers.items():
                if files is not None and name.lower() == "content-type":
                    merged[name] = value  # the multipart type must name the body's boundary
                else:
                    merged.setdefault(name, value)
        if isinstance(body, bytes) or body is None:
            return Request._trusted(method, full, merged, body, None), route
        return Request._trusted(method, full, merged, None, body), route

    def _target(
        self, url: str | yarl.URL, params: ParamTypes | None, proxy: str | Unset | None = UNSET
    ) -> tuple[yarl.URL, _Route]:
        """The validated URL of a request and its route (pool key, checked request target).

        A URL given as a string without ``params`` is remembered (up to ``URL_CACHE_SIZE``
        strings per client, then the cache starts over): parsing and validation depend only
        on the string, ``base_url`` and the TLS identity, all three part of the cache check,
        and a string that fails validation is never stored.

        Raises:
            InvalidURL: see :func:`parse_url`.
        """
        if params is not None or type(url) is not str or not isinstance(proxy, Unset):
            full = parse_url(url, base_url=self.base_url, params=params)
            return full, _Route(pool_key_for(full, self._tls, self._proxy_for(full, proxy)), None)
        hit = self._urls.get(url)
        if hit is not None and hit[0] is self.base_url and hit[1] is self._tls:
            return hit[2], hit[3]
        full = parse_url(url, base_url=self.base_url)
        try:
            target: RequestTarget | None = request_target(full)
        except InvalidRequest:
            target = None  # build_request_head raises it, after any earlier error
        route = _Route(pool_key_for(full, self._tls, self._proxies.select(full)), target)
        if len(self._urls) >= URL_CACHE_SIZE:
            self._urls.clear()
        self._urls[url] = (self.base_url, self._tls, full, route)
        return full, route

    async def _send_following(
        self,
        request: Request,
        route: _Route,
        t: Timeout,
        deadline: float | None,
        follow: bool,
        stream: bool,
        retry: Retry | None = None,
        proxy: str | Unset | None = UNSET,
        creds: _Credentials | None = None,
    ) -> Response:
        """Send ``request`` and follow its redirects; the last response's body is read
        (``stream`` false) or handed to the caller unread. ``retry`` counts over all hops;
        ``proxy`` (a per-request choice) applies to every hop; ``creds`` (auth and
        per-request cookies) only to hops while no redirect has left the origin."""
        history: list[Response] = []
        stripped = False
        while True:
            if creds is None and not self._cookies._held():  # the common case, kept short
                if retry is None:
                    exchange, response = await self._send(request, route, t, deadline)
                else:
                    exchange, response, retry = await self._send_attempts(
                        request, route, t, deadline, retry
                    )
            else:
                exchange, response, retry = await self._send_authed(
                    request, route, t, deadline, retry, None if stripped else creds
                )
            # The status first: most responses are no redirect, and need no header index.
            if not follow or response.status not in REDIRECT_STATUSES:
                location = None
            else:
                location = response.headers.get("location")
            if location is None:  # a 3xx without Location is a final response
                if stream:
                    exchange.hand_over()
                else:
                    await exchange.read_body(response)
                response.history = history
                return response
            await response._drain(REDIRECT_DRAIN_BYTES)  # so its connection can be reused
            history.append(response)
            if len(history) > self.max_redirects:
                raise TooManyRedirects(
                    f"more than max_redirects={self.max_redirects} redirects, last from "
                    f"{redact_url(request.url)} to {redact_url(location, quoted=True)}",
                    history=history,
                )
            request, route, stripped = self._redirected(
                request, response, location, stripped, proxy
            )

    def _redirected(
        self,
        request: Request,
        response: Response,
        location: str,
        stripped: bool,
        proxy: str | Unset | None = UNSET,
    ) -> tuple[Request, _Route, bool]:
        """The request that follows ``response`` to ``location`` (``_redirects`` rules), its
        route, and whether credentials have been stripped on the way so far."""
        plan = redirect_request(
            response.status,
            request.method,
            request.url,
            location,
            request.headers,
            request.body_replayable,
            stripped,
        )
        content = request.content if plan.keep_body else None
        stream = request.stream if plan.keep_body else None  # only a replayable one is kept
        follow = Request(plan.method, plan.url, plan.headers, content=content, stream=stream)
        key = pool_key_for(plan.url, self._tls, self._proxy_for(plan.url, proxy))
        return follow, _Route(key, None), plan.stripped

    def _proxy_for(self, url: yarl.URL, proxy: str | Unset | None) -> ProxyIdentity | None:
        """The proxy of a request to ``url``: the per-request ``proxy`` if given, else the
        client's choice (``proxy=`` or the environment).

        Raises:
            InvalidURL: a per-request proxy URL that is not valid (named ``proxy=``).
            ValueError: a proxy on a request of a client made with ``uds=``.
        """
        if isinstance(proxy, Unset):
            return self._proxies.select(url)
        if proxy is None:
            return None
        if self._connect_options.uds is not None:
            raise ValueError(_UDS_AND_PROXY)
        found = self._proxy_urls.get(proxy)
        if found is None:
            found = parse_proxy(proxy, source="proxy=", tls=self._tls)
            if len(self._proxy_urls) >= 64:
                self._proxy_urls.clear()
            self._proxy_urls[proxy] = found
        return found

    def _implicit_auth(self, url: yarl.URL) -> Auth | None:
        """Credentials from the URL's userinfo, else from ``.netrc`` when ``trust_env``."""
        found = url_auth(url)
        if found is not None or not self.trust_env:
            return found
        host = url.host or ""
        if host not in self._netrc:
            if len(self._netrc) >= 64:
                self._netrc.clear()
            self._netrc[host] = netrc_auth(host, os.environ)
        return self._netrc[host]

    async def _send_authed(
        self,
        request: Request,
        route: _Route,
        t: Timeout,
        deadline: float | None,
        retry: Retry | None,
        creds: _Credentials | None,
    ) -> tuple[Exchange, Response, Retry | None]:
        """Send one hop with its cookies, through the auth flow if there is one.

        The flow may answer a response with another request (a 401 challenge): the
        response's body is drained so its connection goes back to the pool, and the new
        request is sent, at most ``MAX_AUTH_ROUNDS`` times, and only with a replayable body.
        """
        extra = creds.cookies if creds is not None else None
        value = cookie_header(self._cookies, extra, request.url)  # None at once if no cookies
        if value is not None and not request.headers._scan("cookie"):  # a given one wins
            request = _with_header(request, "Cookie", value)
        auth = creds.auth if creds is not None else None
        if auth is None:
            return await self._send_attempts(request, route, t, deadline, retry)
        return await self._run_auth_flow(auth, request, route, t, deadline, retry)

    async def _run_auth_flow(
        self, auth: Auth, request: Request, route: _Route, t: Timeout, deadline: float | None,
        retry: Retry | None,
    ) -> tuple[Exchange, Response, Retry | None]:  # fmt: skip
        """Send what ``auth.auth_flow(request)`` yields (see :meth:`_send_authed`)."""
        # The flow gets its own copy of the headers: they may be the client's, or the
        # ones the next redirect hop is planned from, and a flow may change them.
        mine = Request._trusted(
            request.method, request.url, request.headers.copy(), request.content, request.stream
        )
        flow = auth.auth_flow(mine)
        try:
            try:
                sent = next(flow)
            except StopIteration:
                raise TypeError(
                    f"{type(auth).__name__}.auth_flow() yielded no request; it must yield "
                    "the request to send"
                ) from None
            for rounds in range(1, MAX_AUTH_ROUNDS + 1):
                exchange, response, retry = await self._send_attempts(
                    sent, route, t, deadline, retry
                )
                try:
                    sent = flow.send(response)
                except StopIteration:
                    return exchange, response, retry
                except BaseException:
                    with contextlib.suppress(Exception):  # the flow's error is what matters
                        await response._drain(REDIRECT_DRAIN_BYTES)  # its connection goes back
                    raise
                if rounds == MAX_AUTH_ROUNDS or not request.body_replayable:
                    return exchange, response, retry  # what the flow last received
                await response._drain(REDIRECT_DRAIN_BYTES)  # its connection goes back
            raise AssertionError("unreachable: the last round returns")
        finally:
            flow.close()

    async def _send_attempts(
        self, request: Request, route: _Route, t: Timeout, deadline: float | None,
        retry: Retry | None,
    ) -> tuple[Exchange, Response, Retry | None]:  # fmt: skip
        """:meth:`_send`, or :meth:`_send_retrying` when there is a retry policy."""
        if retry is None:
            exchange, response = await self._send(request, route, t, deadline)
            return exchange, response, None
        exchange, response, retry = await self._send_retrying(request, route, t, deadline, retry)
        response.attempts = retry.attempts
        return exchange, response, retry

    async def _send_retrying(
        self, request: Request, route: _Route, t: Timeout, deadline: float | None, retry: Retry
    ) -> tuple[Exchange, Response, Retry]:
        """:meth:`_send`, again after a retryable status or network error (``_retry`` rules).

        A retried response's body is drained (at most 64 KiB, else its connection is
        closed) so its connection goes back before the wait; an error while draining it
        (the exchange has released the connection) does not stop the retry. A wait that
        would pass the ``total`` deadline is not made: the request ends as if the retries
        had run out (the response is returned, the error raised). Each retry is logged at
        DEBUG on the ``glasspool`` logger. Returns the policy with the attempts counted.
        """
        replayable = request.body_replayable
        method_ok = method_allows_retry(retry, request.method, request.headers, replayable)
        rng = self._retry_rng
        while True:
            try:
                exchange, response = await self._send(request, route, t, deadline)
            except Exception as exc:  # a cancellation is never retried
                delay = error_delay(retry, exc, method_ok=method_ok, replayable=replayable, rng=rng)
                if delay is None or not _fits(delay, deadline):
                    raise
                reason = type(exc).__name__
            else:
                delay = None
                if method_ok and response.status in retry.statuses:
                    after = response.headers.get("retry-after")
                    delay = status_delay(retry, response.status, after, now=time.time(), rng=rng)
                if delay is None or not _fits(delay, deadline):
                    return exchange, response, retry
                reason = str(response.status)
                with contextlib.suppress(Exception):  # a broken body we drop: still retried
                    await response._drain(REDIRECT_DRAIN_BYTES)  # its connection goes back
            retry = retry.increment(reason, delay)
            kind = reason if reason[0].isalpha() else f"status_{reason}"  # an error's class
            self._pool._retry_event(route.key, kind, delay, len(retry.attempts) + 1)
            _log.debug(
                "retry %d/%d of %s %s after %s, in %.3fs",
                len(retry.attempts),
                retry.total,
                request.method,
                redact_url(request.url),
                reason,
                delay,
            )
            await self._retry_sleep(delay)

    async def _send(
        self, request: Request, route: _Route, t: Timeout, deadline: float | None
    ) -> tuple[Exchange, Response]:
        """Send one request and receive its head, on an exchange that holds the connection.

        A request that fails on a reused connection before any response byte (the server
        closed it as the request went out) is sent once more, on a new connection, if its
        method is idempotent and its body can be replayed.
        """
        if self._request_hooks:  # on a copy: the hooks' changes are this attempt's only
            headers = request.headers.copy()
            request = Request._trusted(
                request.method, request.url, headers, request.content, request.stream
            )
            await call_hooks(self._request_hooks, request)
        body: bytes | AsyncIterable[bytes] | None = request.content
        if request.stream is not None:
            body = request.stream
        chunked = request.stream is not None
        length = None if body is None or chunked else len(request.content or b"")
        sized = request.stream is not None and "content-length" in request.headers
        if sized:  # a stream of a declared size: checked as it is sent
            length = declared_length(request.headers)
            chunked = False
        key = route.key
        target = route.target
        if key.proxy is not None and forwards(key):
            target = forward_target(request.url, key.proxy, target)
        head = build_request_head(
            request.method,
            request.url,
            request.headers,
            body_length=length,
            chunked=chunked,
            target=target,
        )
        retry_ok = request.method in IDEMPOTENT_METHODS and request.body_replayable
        for attempt in (0, 1):
            if sized:
                assert request.stream is not None and length is not None
                body = sized_stream(request.stream, length)
            exchange = await Exchange.start(self._pool, route.key, t, deadline, request.url)
            try:
                response = await exchange.send(
                    request,
                    head,
                    body,
                    chunked=chunked,
                    max_decompressed_size=self.max_decompressed_size,
                )
            except BaseException as exc:
                if attempt == 1 or not retry_ok or not exchange.failed_stale(exc):
                    raise
                continue
            if response.status == 407 and key.proxy is not None and forwards(key):
                await self._proxy_refused(request, response, key.proxy)
            set_cookies = response._header_values("set-cookie")
            if set_cookies:  # every hop's and attempt's cookies are kept
                self._cookies._extract(request.url, set_cookies)
            if self._pool._adaptive:  # adaptive limits hear of every response head
                after = response.headers.get("retry-after") is not None
                self._pool._response_seen(exchange._lease, response.status, after)
            if self._response_hooks:
                try:
                    await call_hooks(self._response_hooks, response)
                except BaseException:
                    await response.aclose()  # gives the connection back (closed if unread)
                    raise
            return exchange, response
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _proxy_refused(
        self, request: Request, response: Response, proxy: ProxyIdentity
    ) -> None:
        """Raise ProxyError for a 407 from an HTTP proxy, after giving its connection back."""
        with contextlib.suppress(Exception):  # the error below is what the caller needs
            await response._drain(REDIRECT_DRAIN_BYTES)
        raise ProxyError(
            f"proxy {proxy.url} requires authentication: {request.method} "
            f"{redact_url(request.url)} answered 407 {response.reason}".rstrip(),
            proxy=proxy.url,
            status=407,
        )

    async def _connect_via_proxy(
        self, key: PoolKey, connect_timeout: float | None
    ) -> HTTP11Connection:
        """Open a connection for a key with a proxy (``_proxy.open_via_proxy``); the
        connection to the proxy itself is opened by :meth:`_connect`, like any other."""
        proxy = key.proxy
        assert proxy is not None
        origin_context = None
        if key.scheme == "https":
            origin_context = context_for(key.tls if key.tls is not None else self._tls)
        proxy_context = None
        if proxy.scheme == "https":
            proxy_context = context_for(proxy.tls if proxy.tls is not None else self._tls)
        if self._recv_buffer is None:
            self._recv_buffer = ReceiveBuffer()

        async def open_tcp(pkey: PoolKey, _context: ssl.SSLContext | None) -> HTTP11Connection:
            return await self._connect(pkey, connect_timeout, tls_reason="proxy")

        return await open_via_proxy(
            key,
            open_tcp=open_tcp,
            proxy_context=proxy_context,
            origin_context=origin_context,
            connect_timeout=connect_timeout,
            limits=self._limits,
            recv_buffer=self._recv_buffer,
        )

    async def _connect(
        self, key: PoolKey, connect_timeout: float | None, tls_reason: str = "origin"
    ) -> HTTP11Connection:
        if self._mock_transport is not None:  # in memory, proxies included
            if self._loop_watch is None:
                self._loop_watch = _watch_loop(self)
            return await self._mock_transport._open(key, self._limits)
        if key.proxy is not None:
            return await self._connect_via_proxy(key, connect_timeout)
        # The key's TLS identity, not the client's, sets up the handshake: a connection is
        # always made the way its key says, so no key can borrow another's verification.
        context = None
        if key.scheme == "https":
            context = context_for(key.tls if key.tls is not None else self._tls)
        if self._recv_buffer is None:
            self._recv_buffer = ReceiveBuffer()
        if self._loop_watch is None:
            self._loop_watch = _watch_loop(self)
        return await open_connection(
            key,
            ssl_context=context,
            connect_timeout=connect_timeout,
            happy_eyeballs_delay=self._happy_eyeballs_delay,
            limits=self._limits,
            recv_buffer=self._recv_buffer,
            options=self._connect_options,
            dns=self._dns,
            tls_reason=tls_reason,
        )

    # ------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Close every connection; waiting and in-flight requests fail with ClientClosed.

        Idempotent.
        """
        self._closed = True
        _stop_watch(self)
        await self._pool.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A constructor that raised leaves a half-built object: with no ``_closed`` (an
        # unknown keyword fails before __init__'s body runs) or no ``_pool``.
        if getattr(self, "_closed", True) or not hasattr(self, "_pool"):
            return
        self._close_unclosed()

    def _close_unclosed(self) -> None:
        """Warn that this client was never closed, and close its connections now.

        Called when it is collected, or when its event loop shuts down (:func:`_watch_loop`).
        """
        self._closed = True
        _stop_watch(self)
        if self._pool._state.open:
            warnings.warn(
                f"glasspool.Client created at {self._site} was never closed; its "
                f"{self._pool._state.open} connection(s) are closed now. Use 'async with "
                "glasspool.Client() as client' or 'await client.aclose()'.",
                UnclosedResponseWarning,
                stacklevel=1,
            )
        self._pool._close_now()


class StreamContext:
    """What :meth:`Client.stream` returns: sends the request on ``__aenter__`` and closes
    the response on ``__aexit__``.

    A response taken out of the block and dropped unclosed warns
    (``UnclosedResponseWarning``) and its connection is closed.
    """

    __slots__ = ("_call", "_client", "_response")

    def __init__(self, client: Client, call: tuple[Any, ...]) -> None:
        self._client = client
        self._call = call
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        (
            method,
            url,
            params,
            headers,
            content,
            json,
            data,
            timeout,
            follow,
            retry,
            proxy,
            files,
            auth,
            cookies,
        ) = self._call
        self._response = await self._client._request(
            method, url, params, headers, content, json, data, timeout, follow, True, retry, proxy,
            files, auth, cookies,
        )  # fmt: skip
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            await self._response.aclose()


def _watch_loop(client: Client) -> AsyncGenerator[None, None]:
    """Start an async generator that closes ``client`` if its event loop shuts down first.

    The running loop keeps every async generator started on it (weakly), and
    ``asyncio.run()`` and ``asyncio.Runner`` close them (``loop.shutdown_asyncgens()``)
    before they close the loop, on any loop. A client still open then is closed with the
    usual warning while its transports can still close normally: after the loop closed,
    asyncio's can only fail ("Event loop is closed") and uvloop reports every one it has
    to close itself. The generator holds the client weakly, so a forgotten client is still
    collected while the loop runs; the client stops it when it is closed.
    """
    watch = _close_at_loop_shutdown(weakref.ref(client))
    with contextlib.suppress(StopIteration):
        watch.asend(None).send(None)  # runs to its yield; the loop's firstiter hook keeps it
    return watch


async def _close_at_loop_shutdown(ref: weakref.ref[Client]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:  # closed by the loop's shutdown_asyncgens(), or by _stop_watch()
        client = ref()
        if client is not None and client._loop_watch is not None:  # the loop closes us
            client._loop_watch = None
            client._close_unclosed()


def _stop_watch(client: Client) -> None:
    """Finish the client's loop watch now (it has nothing to do once the client is closed),
    so that it is not left for the loop to finalize, perhaps after the loop closed."""
    watch, client._loop_watch = client._loop_watch, None
    if watch is not None:
        with contextlib.suppress(StopIteration):
            watch.aclose().send(None)


class _Credentials(NamedTuple):
    """What a request sends only to its own origin: its auth flow and per-request cookies."""

    auth: Auth | None
    cookies: Cookies | None


def _with_header(request: Request, name: str, value: str) -> Request:
    headers = request.headers.copy()
    headers[name] = value
    return Request._trusted(request.method, request.url, headers, request.content, request.stream)


def _fits(delay: float, deadline: float | None) -> bool:
    """Whether waiting ``delay`` seconds now ends before the ``total`` deadline."""
    return deadline is None or asyncio.get_running_loop().time() + delay < deadline


def _weak_factory(client: Client) -> Callable[[PoolKey, float | None], Awaitable[Any]]:
    """The pool's connection factory, holding ``client`` weakly.

    Open connections are reachable from the event loop, and through them the pool. A
    strong reference from the pool back to the client would keep a forgotten client and
    its sockets alive until the loop closes, when closing them can only fail ("Event
    loop is closed"). Held weakly, the client is collected while the loop runs, and its
    ``__del__`` warns and closes them.
    """
    ref = weakref.WeakMethod(client._connect)

    async def connect(key: PoolKey, connect_timeout: float | None) -> Any:
        method = ref()
        if method is None:
            raise ClientClosed(f"the client was garbage-collected; cannot connect to {key}")
        return await method(key, connect_timeout)

    return connect


def _default_per_host(limit: int, limit_per_host: int | Unset | None) -> int | None:
    """``limit_per_host`` as given, or the default: 10, or ``limit`` if that is smaller."""
    if not isinstance(limit_per_host, Unset):
        return limit_per_host
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
        return default_limit_per_host(limit)
    return DEFAULT_LIMIT_PER_HOST  # the pool reports the bad limit by name
