"""Proxies: choosing one for a request, and opening connections through it.

- :func:`parse_proxy` turns a proxy URL (``http://``, ``https://``, ``socks5://``,
  ``socks5h://``) into a :class:`ProxyIdentity`, the proxy part of a pool key.
- :class:`NoProxy` is the ``NO_PROXY`` matching rule; :class:`ProxyChoice` picks the proxy
  of a request from the ``proxy=`` argument or the environment.
- :func:`forward_target` writes the absolute-form request line (plus
  ``Proxy-Authorization``) of a plain-``http`` request sent to an HTTP proxy.
- :func:`open_via_proxy` opens a connection for a key that has a proxy: the TCP (and TLS)
  connection to an HTTP proxy comes from the caller's ``open_tcp`` (the same code that
  opens direct connections), then a ``CONNECT`` tunnel and TLS to the origin inside it for
  ``https``; SOCKS5 goes through python-socks (the ``socks`` extra).

Proxy credentials are sent to the proxy only (the ``CONNECT`` request, or the
``Proxy-Authorization`` line of a forwarded request), and shown nowhere: every message
names the proxy by :attr:`ProxyIdentity.url`, which hides the password.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import yarl

from ._exceptions import ConnectError, ConnectTimeout, InvalidURL, ProxyError, TLSError
from ._http11 import HTTP11Connection, ParserLimits, ReceiveBuffer
from ._http11.request_head import RequestTarget, request_target
from ._pool.asyncio import connect_progress
from ._pool.key import PoolKey, ProxyIdentity, TLSIdentity
from ._redact import redact_url, safe_text

__all__ = [
    "NoProxy",
    "ca_from_env",
    "ProxyChoice",
    "env_proxies",
    "forward_target",
    "open_via_proxy",
    "parse_proxy",
]

PROXY_SCHEMES: Final = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
SOCKS_SCHEMES: Final = frozenset({"socks5", "socks5h"})
MAX_CONNECT_REPLY: Final = 65536  # bytes of a proxy's reply head to CONNECT
SOCKS_HINT: Final = "pip install 'glasspool[socks]'"

OpenTCP = Callable[[PoolKey, "ssl.SSLContext | None"], Awaitable[HTTP11Connection]]


# ------------------------------------------------------------------ parsing


def parse_proxy(value: str, *, source: str, tls: TLSIdentity | None) -> ProxyIdentity:
    """Parse a proxy URL into a :class:`ProxyIdentity`.

    ``host:port`` without a scheme means ``http://host:port``. The port defaults to 80
    (``http``), 443 (``https``) or 1080 (SOCKS). User name and password are
    percent-decoded.

    Args:
        value: the proxy URL.
        source: where it came from, named in errors (``"proxy="``, ``"HTTPS_PROXY"``).
        tls: how an ``https`` proxy's certificate is checked.

    Raises:
        InvalidURL: not a URL, an unsupported scheme, no host, a bad port, or a path,
            query or fragment; names ``source``, never the password.
        ImportError: a SOCKS proxy without python-socks installed (names the extra).
    """
    if not isinstance(value, str):
        raise TypeError(f"{source}: a proxy URL must be a str, not {type(value).__name__}")
    shown = redact_url(value, quoted=True)
    text = value.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        url = yarl.URL(text)
        port = url.port
    except (ValueError, TypeError) as exc:
        raise InvalidURL(f"{source}: {shown} is not a valid proxy URL ({exc})") from None
    scheme = url.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise InvalidURL(
            f"{source}: {shown} has an unsupported proxy scheme {scheme!r} "
            "(use http, https, socks5 or socks5h)"
        )
    host = (url.raw_host or "").lower()
    if not host or any(c in host for c in " \t\r\n/\\@"):
        raise InvalidURL(f"{source}: {shown} has no valid proxy host")
    if url.raw_path not in ("", "/") or url.raw_query_string or url.raw_fragment:
        raise InvalidURL(f"{source}: {shown}: a proxy URL has no path, query or fragment")
    if port is None:
        port = PROXY_SCHEMES[scheme]
    if scheme in SOCKS_SCHEMES and importlib.util.find_spec("python_socks") is None:
        raise ImportError(
            f"{source}: {shown} is a SOCKS proxy, which needs python-socks: {SOCKS_HINT}"
        )
    return ProxyIdentity(
        scheme,
        host,
        port,
        url.user,
        url.password,
        tls if scheme == "https" else None,
    )


def proxy_authorization(proxy: ProxyIdentity) -> str | None:
    """The ``Proxy-Authorization`` value (Basic) for an HTTP proxy with credentials."""
    if proxy.username is None and proxy.password is None:
        return None
    pair = f"{proxy.username or ''}:{proxy.password or ''}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


# ----------------------------------------------------------------- NO_PROXY

_SPLIT = re.compile(r"[,\s]+")
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class NoProxy:
    """The hosts a ``NO_PROXY`` value sends direct.

    Entries are separated by commas or white space and compared without case:

    - ``*`` alone: every host.
    - a host name, optionally with a leading ``.`` or ``*.``: that name and every name
      under it (``example.org`` matches ``example.org`` and ``api.example.org``, not
      ``badexample.org``).
    - an IP address, or a CIDR range (``10.0.0.0/8``, ``fd00::/8``): a request whose URL
      host is an address in it. Names are never resolved to be compared with addresses.
    - any of these with ``:port`` (IPv6 in brackets: ``[::1]:8080``): only that port.
    """

    __slots__ = ("_all", "_names", "_nets")

    def __init__(self, value: str) -> None:
        self._all = False
        self._names: list[tuple[str, int | None]] = []
        self._nets: list[tuple[_Net, int | None]] = []
        for entry in _SPLIT.split(value.strip().lower()):
            if not entry:
                continue
            if entry == "*":
                self._all = True
                continue
            host, port = _split_port(entry)
            try:
                self._nets.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                name = host.removeprefix("*").lstrip(".").rstrip(".")
                if name:
                    self._names.append((name, port))

    def __bool__(self) -> bool:
        return self._all or bool(self._names) or bool(self._nets)

    def matches(self, host: str, port: int) -> bool:
        """Whether a request to ``host:port`` (a URL's host) bypasses the proxy."""
        if self._all:
            return True
        host = host.lower().strip("[]").rstrip(".")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            return any(
                ip in net and (p is None or p == port)
                for net, p in self._nets
                if net.version == ip.version
            )
        for name, p in self._names:
            if (p is None or p == port) and (host == name or host.endswith("." + name)):
                return True
        return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``[v6]``, a bare IPv6 address or CIDR, or a name."""
    if entry.startswith("["):
        end = entry.find("]")
        if end > 0:
            rest = entry[end + 1 :]
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
            return entry[1:end], port
    if entry.count(":") == 1:
        host, _, digits = entry.partition(":")
        if digits.isdigit():
            return host, int(digits)
    return entry, None


# --------------------------------------------------------------- the choice


def _env_value(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The (variable, value) of ``name`` in lower case, else upper case; empty is unset.

    Upper-case ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set (a CGI script,
    where a request's ``Proxy:`` header becomes ``HTTP_PROXY``).
    """
    for var in (name.lower(), name.upper()):
        if var == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
            continue
        value = environ.get(var)
        if value is not None and value.strip():
            return var, value
    return None


class EnvProxies:
    """The proxies the environment names, read once."""

    __slots__ = ("all", "http", "https", "no_proxy")

    def __init__(self, environ: Mapping[str, str], tls: TLSIdentity | None) -> None:
        found: dict[str, ProxyIdentity | None] = {}
        for name in ("http_proxy", "https_proxy", "all_proxy"):
            got = _env_value(environ, name)
            found[name] = None
            if got is not None:
                var, value = got
                found[name] = parse_proxy(value, source=f"environment variable {var}", tls=tls)
        self.http = found["http_proxy"]
        self.https = found["https_proxy"]
        self.all = found["all_proxy"]
        no_proxy = _env_value(environ, "no_proxy")
        self.no_proxy = NoProxy(no_proxy[1] if no_proxy else "")


def env_proxies(environ: Mapping[str, str], tls: TLSIdentity | None) -> EnvProxies | None:
    """The environment's proxies, or ``None`` when it names none."""
    env = EnvProxies(environ, tls)
    if env.http is None and env.https is None and env.all is None:
        return None
    return env


class ProxyChoice:
    """Which proxy a request goes through: ``proxy=`` if given, else the environment's."""

    __slots__ = ("env", "explicit")

    def __init__(self, explicit: ProxyIdentity | None, env: EnvProxies | None) -> None:
        self.explicit = explicit
        self.env = env

    def select(self, url: yarl.URL) -> ProxyIdentity | None:
        """The proxy for a request to ``url`` (absolute), or ``None`` to go direct."""
        if self.explicit is not None:
            return self.explicit
        env = self.env
        if env is None:
            return None
        chosen = env.http if url.scheme == "http" else env.https
        if chosen is None:
            chosen = env.all
        if chosen is None:
            return None
        port = url.port if url.port is not None else PROXY_SCHEMES.get(url.scheme, 0)
        if env.no_proxy and env.no_proxy.matches(url.raw_host or "", port):
            return None
        return chosen


def ca_from_env(verify: bool, environ: Mapping[str, str], trust_env: bool) -> bool | str:
    """What ``verify=True`` means: ``SSL_CERT_FILE``, else ``SSL_CERT_DIR`` (the first
    existing entry of a ``:``-separated list) when ``trust_env``; without ``trust_env``,
    the system's CA file or directory (OpenSSL's built-in paths, whatever the environment
    says), or ``True`` (the platform default) when neither exists.

    Raises:
        ValueError: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` names nothing that exists.
    """
    if not verify:
        return verify
    if trust_env:
        for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            value = environ.get(var, "").strip()
            if not value:
                continue
            paths = [value] if var == "SSL_CERT_FILE" else value.split(os.pathsep)
            for path in paths:
                if path and os.path.exists(path):
                    return path
            raise ValueError(
                f"environment variable {var}={value!r}: no such CA bundle file or directory"
            )
        return True
    defaults = ssl.get_default_verify_paths()
    for path in (defaults.openssl_cafile, defaults.openssl_capath):
        if path and os.path.exists(path):
            return path
    return True


# --------------------------------------------------------- forwarded requests


def forwards(key: PoolKey) -> bool:
    """Whether requests on ``key`` are sent to an HTTP proxy in absolute form."""
    proxy = key.proxy
    return proxy is not None and key.scheme == "http" and proxy.scheme not in SOCKS_SCHEMES


def forward_target(
    url: yarl.URL, proxy: ProxyIdentity, target: RequestTarget | None
) -> RequestTarget:
    """The request line in absolute form for an HTTP proxy, with ``Proxy-Authorization``.

    ``target`` is ``request_target(url)`` if the caller has it (it is checked here
    otherwise); the absolute URI is built from its checked host and path, so it holds
    no userinfo and no fragment.
    """
    if target is None:
        target = request_target(url)
    host = target.host_line[len(b"Host: ") : -2]
    tail = target.line_tail  # b" /path?q HTTP/1.1\r\n"
    line = b" http://" + host + tail[1:]
    auth = proxy_authorization(proxy)
    if auth is not None:
        line += f"Proxy-Authorization: {auth}\r\n".encode("latin-1")
    return RequestTarget(line, target.host_line)


# ------------------------------------------------------------------ opening


async def open_via_proxy(
    key: PoolKey,
    *,
    open_tcp: OpenTCP,
    proxy_context: ssl.SSLContext | None,
    origin_context: ssl.SSLContext | None,
    connect_timeout: float | None,
    limits: ParserLimits,
    recv_buffer: ReceiveBuffer | None,
) -> HTTP11Connection:
    """Open a connection for ``key`` through ``key.proxy``.

    ``connect_timeout`` covers everything: the connection to the proxy, the ``CONNECT``
    or SOCKS handshake and the TLS handshake with the origin.

    Raises:
        ProxyError: the proxy refused (407, another non-2xx reply to ``CONNECT``, a
            SOCKS error) or answered something that is not HTTP.
        ConnectError, TLSError, ConnectTimeout: as for a direct connection; a failure to
            reach the proxy names the proxy.
    """
    proxy = key.proxy
    assert proxy is not None
    try:
        async with asyncio.timeout(connect_timeout):
            if proxy.scheme in SOCKS_SCHEMES:
                return await _via_socks(
                    key, proxy, origin_context, connect_timeout, limits, recv_buffer
                )
            pkey = PoolKey(proxy.scheme, proxy.host, proxy.port, proxy.tls)
            try:
                conn = await open_tcp(pkey, proxy_context)
            except ConnectError as exc:
                raise type(exc)(f"proxy {proxy.url}: {exc}") from exc
            if key.scheme == "http":
                conn.key = key
                return conn
            return await _tunnel(conn, key, proxy, origin_context, limits, recv_buffer)
    except (ConnectTimeout, ConnectError, ProxyError):
        raise
    except TimeoutError as exc:
        raise ConnectTimeout(
            f"connecting to {key.origin} through proxy {proxy.url} took longer than "
            f"{connect_timeout}s (connect timeout)"
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        raise TLSError(
            f"TLS certificate verification failed for {_sni(key)} ({key.origin} through "
            f"proxy {proxy.url}): {exc.verify_message or exc.reason}"
        ) from exc
    except ssl.SSLError as exc:
        raise TLSError(
            f"TLS handshake with {key.origin} through proxy {proxy.url} failed: {exc.reason or exc}"
        ) from exc
    except OSError as exc:
        raise ConnectError(
            f"cannot connect to {key.origin} through proxy {proxy.url}: {exc.strerror or exc}"
        ) from exc


def _sni(key: PoolKey) -> str:
    return (key.tls and key.tls.server_hostname) or key.host


class _ReplyHead(asyncio.Protocol):
    """Reads the proxy's reply head to ``CONNECT``, up to the blank line (bounded)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.buf = bytearray()
        self.done: asyncio.Future[bytes] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if (end < 0 and len(self.buf) > MAX_CONNECT_REPLY) or end + 4 > MAX_CONNECT_REPLY:
            self.done.set_exception(ValueError(f"over {MAX_CONNECT_REPLY} bytes"))
        elif end >= 0:
            self.done.set_result(bytes(self.buf[: end + 4]))
            del self.buf[: end + 4]

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("the proxy closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionResetError("the proxy closed the connection"))


_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?\r\n")


async def _tunnel(
    pconn: HTTP11Connection,
    key: PoolKey,
    proxy: ProxyIdentity,
    context: ssl.SSLContext | None,
    limits: ParserLimits,
    recv_buffer: ReceiveBuffer | None,
) -> HTTP11Connection:
    """``CONNECT`` through the proxy connection ``pconn``, then TLS to the origin."""
    loop = asyncio.get_running_loop()
    transport = pconn._transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the proxy closed the connection")
    reply = _ReplyHead(loop)
    host = f"[{key.host}]" if ":" in key.host else key.host
    lines = [f"CONNECT {host}:{key.port} HTTP/1.1", f"Host: {host}:{key.port}"]
    auth = proxy_authorization(proxy)
    if auth is not None:
        lines.append(f"Proxy-Authorization: {auth}")
    try:
        transport.set_protocol(reply)
        transport.resume_reading()
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            head = await reply.done
        except ValueError as exc:
            raise ProxyError(
                f"proxy {proxy.url} sent a reply head to CONNECT {host}:{key.port} {exc}",
                proxy=proxy.url,
            ) from None
        except TimeoutError:
            raise
        except OSError as exc:  # closed or reset before its reply
            raise ProxyError(
                f"proxy {proxy.url} closed the connection without answering CONNECT "
                f"{host}:{key.port}",
                proxy=proxy.url,
            ) from exc
        match = _STATUS.match(head)
        if match is None:
            first = head.split(b"\r\n", 1)[0][:200].decode("latin-1")
            raise ProxyError(
                f"proxy {proxy.url} did not answer CONNECT {host}:{key.port} with HTTP: {first!r}",
                proxy=proxy.url,
            )
        status = int(match.group(1))
        if not 200 <= status < 300:
            reason = safe_text((match.group(2) or b"")[:200].decode("latin-1"))
            what = "requires authentication" if status == 407 else "refused"
            raise ProxyError(
                f"proxy {proxy.url} {what}: CONNECT {host}:{key.port} answered "
                f"{status} {reason}".rstrip(),
                proxy=proxy.url,
                status=status,
            )
        if reply.buf:
            raise ProxyError(
                f"proxy {proxy.url} sent data after its CONNECT reply, before the origin spoke",
                proxy=proxy.url,
            )
        connect_progress("tunnel", "connect")
        conn = HTTP11Connection(key, limits=limits, recv_buffer=recv_buffer)
        if context is None:
            transport.set_protocol(conn)
            conn.connection_made(transport)
            return conn
        transport.pause_reading()
        connect_progress("tls", "origin")
        tls = await loop.start_tls(transport, conn, context, server_hostname=_sni(key))
        if tls is None:
            raise ConnectError(f"TLS to {key.origin}: the event loop returned no transport")
    except BaseException:
        transport.abort()
        raise
    conn.connection_made(tls)
    return conn


async def _via_socks(
    key: PoolKey,
    proxy: ProxyIdentity,
    context: ssl.SSLContext | None,
    timeout: float | None,
    limits: ParserLimits,
    recv_buffer: ReceiveBuffer | None,
) -> HTTP11Connection:
    """A SOCKS5 connection (python-socks), then TLS to the origin for ``https``."""
    try:
        from python_socks import ProxyConnectionError, ProxyTimeoutError, ProxyType
        from python_socks import ProxyError as SocksError
        from python_socks.async_.asyncio import Proxy
    except ImportError as exc:  # pragma: no cover - parse_proxy checked already
        raise ImportError(f"SOCKS proxies need python-socks: {SOCKS_HINT}") from exc
    loop = asyncio.get_running_loop()
    socks = Proxy(
        ProxyType.SOCKS5,
        proxy.host,
        proxy.port,
        proxy.username,
        proxy.password,
        rdns=proxy.scheme == "socks5h",
        loop=loop,
    )
    try:
        sock = await socks.connect(dest_host=key.host, dest_port=key.port, timeout=timeout)
    except ProxyTimeoutError as exc:
        raise TimeoutError() from exc
    except ProxyConnectionError as exc:
        raise ConnectError(
            f"proxy {proxy.url}: cannot connect: {exc.strerror or 'connection failed'}"
        ) from exc
    except SocksError as exc:
        raise ProxyError(
            f"proxy {proxy.url} refused to connect to {key.origin}: {safe_text(str(exc))}",
            proxy=proxy.url,
        ) from exc
    connect_progress("tunnel", "socks")
    conn = HTTP11Connection(key, limits=limits, recv_buffer=recv_buffer)
    try:
        sock.setblocking(False)
        with_nodelay(sock)
        transport, _ = await loop.create_connection(lambda: conn, sock=sock)
    except BaseException:
        sock.close()
        raise
    if context is None:
        return conn
    try:
        connect_progress("tls", "origin")
        tls = await loop.start_tls(transport, conn, context, server_hostname=_sni(key))
        if tls is None:
            raise ConnectError(f"TLS to {key.origin}: the event loop returned no transport")
    except BaseException:
        transport.abort()
        raise
    conn.connection_made(tls)
    return conn


def with_nodelay(sock: socket.socket) -> None:
    """Set ``TCP_NODELAY`` on a TCP socket (as direct connections have it)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
