"""glasspool's pool under httpx: :class:`AsyncTransport`.

``httpx.AsyncClient(transport=glasspool.httpx.AsyncTransport(limit=25, limit_per_host=5))``
keeps what httpx owns (redirects, auth, cookies, content decoding, default headers) and puts
glasspool's pool underneath: its limits (which count idle connections), keep-alive,
lifetimes, stale-connection retry and response-head checks. The transport sends httpx's
headers as given, follows no redirect, and returns the raw, still-encoded body as a stream
whose ``aclose()`` releases the connection the usual way (``eof`` at the end, ``closed``
before it). See docs/httpx.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without httpx installed
    raise ImportError("glasspool.httpx needs httpx: pip install 'glasspool[httpx]'") from exc

from . import _exceptions as gx
from ._exchange import Exchange
from ._headers import Headers
from ._pool.asyncio import Pool
from ._request import Request
from ._timeouts import Timeout
from ._urls import parse_url, pool_key_for
from .client import Client, _Route

__all__ = ["AsyncTransport"]

# glasspool exception -> httpx exception; the first match wins (subclasses first).
_EXCEPTIONS: tuple[tuple[type[BaseException], type[httpx.HTTPError]], ...] = (
    (gx.PoolTimeout, httpx.PoolTimeout),
    (gx.ConnectTimeout, httpx.ConnectTimeout),
    (gx.ReadTimeout, httpx.ReadTimeout),
    (gx.WriteTimeout, httpx.WriteTimeout),
    (gx.TotalTimeout, httpx.ReadTimeout),
    (gx.TimeoutError, httpx.TimeoutException),
    (gx.ConnectError, httpx.ConnectError),  # TLSError too, as httpcore does
    (gx.ServerDisconnected, httpx.RemoteProtocolError),
    (gx.ReadError, httpx.ReadError),
    (gx.WriteError, httpx.WriteError),
    (gx.NetworkError, httpx.NetworkError),
    (gx.ProtocolError, httpx.RemoteProtocolError),  # IncompleteBody too
    (gx.ResponseTooLarge, httpx.RemoteProtocolError),
    (gx.InvalidURL, httpx.UnsupportedProtocol),
    (gx.InvalidRequest, httpx.LocalProtocolError),
    (gx.ClientClosed, httpx.TransportError),
    (gx.GlasspoolError, httpx.TransportError),
)


def map_exception(exc: BaseException) -> BaseException:
    """The httpx exception for glasspool's ``exc`` (``exc`` itself when none applies)."""
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            mapped = target(str(exc))
            mapped.__cause__ = exc
            return mapped
    return exc


def _timeout(extensions: Mapping[str, Any]) -> Timeout:
    """httpx's ``timeout`` extension (connect/read/write/pool) as a glasspool Timeout."""
    t = extensions.get("timeout") or {}
    return Timeout(
        connect=t.get("connect"), read=t.get("read"), write=t.get("write"), pool=t.get("pool")
    )


class _ResponseStream(httpx.AsyncByteStream):
    """The raw (still encoded) body, read through the exchange that holds the connection."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await self._exchange.read_chunk()
                if not chunk:
                    return
                yield chunk
        except gx.GlasspoolError as exc:
            raise map_exception(exc) from exc

    async def aclose(self) -> None:
        await self._exchange.aclose()  # released ``closed`` unless the body ended


class AsyncTransport(httpx.AsyncBaseTransport):
    """An httpx transport on glasspool's pool.

    Args:
        http2: must be False: glasspool speaks HTTP/1.1 only.
        **options: the pool options :class:`glasspool.Client` takes (``limit``,
            ``limit_per_host``, ``host_limits``, ``keepalive_expiry``, ``max_lifetime``,
            ``max_requests_per_connection``, ``evict_grace``, ``verify``, ``cert``,
            ``shared_limits``, ``happy_eyeballs_delay``, ``max_header_bytes``,
            ``max_headers``, ``max_line_bytes``, ``max_chunk_ext_bytes``, ``proxy``,
            ``trust_env``: see docs/proxies.md). Request-level
            options (timeouts, redirects, headers, retries) are httpx's.
            ``trust_env`` is False unless given: httpx applies no environment
            proxies to a transport of the user's own, and neither does this one
            (``trust_env=True`` reads ``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``,
            ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``).

    Raises:
        ValueError: ``http2=True``, or a limit out of range (named).
        TypeError: an option the transport does not take.
    """

    _CLIENT_ONLY = frozenset(
        {
            "timeout",
            "follow_redirects",
            "max_redirects",
            "headers",
            "base_url",
            "retry",
            "max_decompressed_size",
        }
    )

    def __init__(self, *, http2: bool = False, **options: Any) -> None:
        if http2:
            raise ValueError(
                "glasspool.httpx.AsyncTransport speaks HTTP/1.1 only: http2=True is not "
                "supported (use httpx's own transport for HTTP/2)"
            )
        wrong = sorted(self._CLIENT_ONLY.intersection(options))
        if wrong:
            raise TypeError(
                f"AsyncTransport does not take {', '.join(wrong)}: httpx.AsyncClient "
                "owns timeouts, redirects, headers and decoding"
            )
        limits = options.pop("limits", None)
        if limits is not None:
            options = _from_limits(limits, options)
        options.setdefault("trust_env", False)
        self._client = Client(follow_redirects=False, **options)

    @property
    def pool(self) -> Pool:
        """The connection pool: ``stats()``, ``add_listener()``, ``remove_listener()``."""
        return self._client.pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        ext = request.extensions
        if ext.get("http2") or ext.get("http_version") in (b"HTTP/2", "HTTP/2"):
            raise httpx.UnsupportedProtocol(
                "glasspool.httpx.AsyncTransport speaks HTTP/1.1 only; HTTP/2 was asked for"
            )
        sni = _sni_hostname(ext.get("sni_hostname"))
        client = self._client
        if client.is_closed:
            raise httpx.TransportError("the transport is closed") from gx.ClientClosed(
                "the client is closed"
            )
        try:
            return await self._send(client, request, _timeout(ext), sni)
        except gx.GlasspoolError as exc:
            raise map_exception(exc) from exc

    async def _send(
        self, client: Client, request: httpx.Request, timeout: Timeout, sni: str | None
    ) -> httpx.Response:
        url = parse_url(str(request.url))
        headers = Headers(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        )
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        content: bytes | None = None
        stream: AsyncIterable[bytes] | None = None
        if chunked:
            stream = _body(request)
        else:
            # A Content-Length body (httpx sets it for bytes, and for a streamed body it
            # knows the length of) is read first: glasspool sends a sized body as bytes.
            content = await request.aread()
            if not content and "content-length" not in request.headers:
                content = None
        greq = Request._trusted(request.method, url, headers, content, stream)
        # Client._send: the head, the hand-over, and the one resend of an idempotent
        # request whose reused connection the server had closed (stale-connection retry).
        tls = client._tls
        if sni is not None and url.scheme == "https":
            # The SNI name is part of the TLS identity, hence of the pool key: a connection
            # opened for one name is never lent to a request that asked for another.
            tls = dataclasses.replace(tls, server_hostname=sni)
        route = _Route(pool_key_for(url, tls, client._proxies.select(url)), None)
        exchange, response = await client._send(greq, route, timeout, None)
        exchange.hand_over()
        version = response.http_version
        return httpx.Response(
            status_code=response.status,
            headers=response.headers.items(),
            stream=_ResponseStream(exchange),
            extensions={
                "http_version": version.encode("ascii") if isinstance(version, str) else version,
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _sni_hostname(value: object) -> str | None:
    """The ``sni_hostname`` extension as a host name, or None; a clear error otherwise."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise httpx.LocalProtocolError("sni_hostname must be an ASCII host name") from None
    if not isinstance(value, str):
        raise httpx.LocalProtocolError(f"sni_hostname must be a str, not {type(value).__name__}")
    if not value or len(value) > 253 or not all(33 <= ord(c) < 127 for c in value):
        raise httpx.LocalProtocolError(
            "sni_hostname must be a non-empty ASCII host name of at most 253 characters "
            "without spaces or control characters"
        )
    return value


def _from_limits(limits: object, options: dict[str, Any]) -> dict[str, Any]:
    """Map ``httpx.Limits`` onto the pool's options (``limit``, ``keepalive_expiry``).

    ``max_connections`` becomes ``limit``; ``keepalive_expiry`` becomes
    ``keepalive_expiry``. ``max_keepalive_connections`` has no counterpart: glasspool's
    limit already counts idle connections, so it is accepted and not used.
    """
    if not isinstance(limits, httpx.Limits):
        raise TypeError(f"limits must be httpx.Limits, not {type(limits).__name__}")
    both = sorted({"limit", "keepalive_expiry"}.intersection(options))
    if both:
        raise TypeError(f"give either limits= or {', '.join(both)}, not both")
    mapped = dict(options)
    if limits.max_connections is not None:
        mapped["limit"] = limits.max_connections
    if limits.keepalive_expiry is not None:
        mapped["keepalive_expiry"] = limits.keepalive_expiry
    return mapped


async def _body(request: httpx.Request) -> AsyncIterator[bytes]:
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream | AsyncIterable)
    async for chunk in stream:
        yield chunk
