"""Opening connections: name resolution, happy eyeballs, TLS, and the SSL context cache.

``open_connection()`` resolves the host with ``loop.getaddrinfo`` (IP literals skip the
resolver thread), races the addresses with happy eyeballs (RFC 8305, by aiohappyeyeballs),
wraps the winning socket with ``loop.create_connection(sock=...)`` and runs the TLS handshake with
``loop.start_tls``. Failures are translated once, here, into :class:`ConnectError`,
:class:`TLSError` or :class:`ConnectTimeout`, each naming host and port and chained to the
original error. Cancelling at any point closes every socket it opened.

SSL contexts are expensive (loading a CA bundle takes milliseconds), so
:func:`make_ssl_context` builds one per distinct ``(verify, cert)`` and reuses it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohappyeyeballs

from ._dns import DNSCache
from ._exceptions import ConnectError, ConnectTimeout, TLSError
from ._http11 import HTTP11Connection, ParserLimits, ReceiveBuffer
from ._pool.asyncio import connect_progress
from ._pool.key import PoolKey, TLSIdentity

__all__ = [
    "ConnectOptions",
    "context_for",
    "make_ssl_context",
    "open_connection",
    "os_reason",
    "tls_identity",
]

VerifyTypes = bool | str | ssl.SSLContext
CertTypes = str | tuple[str, str | None] | None

_DEFAULT_LIMITS = ParserLimits()

SocketOption = tuple[int, int, int | bytes]


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How a client opens its sockets (``Client(local_address=, socket_options=, uds=,
    resolve=)``); made and checked by :meth:`build`.

    Attributes:
        local_address: the source IP to bind before connecting; only addresses of its
            family are tried.
        socket_options: ``(level, option, value)`` triples set on every socket before it
            connects, after glasspool's own ``TCP_NODELAY``.
        uds: a Unix domain socket path every connection goes to (the URL still gives the
            ``Host`` header, the TLS name and the pool key).
        resolve: ``(host, port) -> address`` overrides, like curl's ``--resolve``; the URL's
            host still goes in ``Host`` and TLS SNI.
    """

    local_address: str | None = None
    socket_options: tuple[SocketOption, ...] = ()
    uds: str | None = None
    resolve: tuple[tuple[tuple[str, int], str], ...] = ()

    @classmethod
    def build(
        cls,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
        uds: str | os.PathLike[str] | None = None,
        resolve: Mapping[str, str] | None = None,
    ) -> ConnectOptions:
        """Check the options; errors name the argument and the bad value.

        Raises:
            TypeError: a value of the wrong type.
            ValueError: ``local_address`` or a ``resolve`` address that is not an IP
                address, a ``resolve`` key that is not ``host:port``, an empty ``uds``.
        """
        if local_address is not None:
            _check_ip("local_address", local_address)
        options: list[SocketOption] = []
        for option in socket_options or ():
            if (
                not isinstance(option, tuple)
                or len(option) != 3
                or not all(isinstance(x, int) for x in option[:2])
                or not isinstance(option[2], int | bytes)
            ):
                raise TypeError(
                    f"socket_options entries are (level, option, value) tuples of ints "
                    f"(value may be bytes), got {option!r}"
                )
            options.append(option)
        path: str | None = None
        if uds is not None:
            if not isinstance(uds, str | os.PathLike):
                raise TypeError(f"uds must be a path, got {type(uds).__name__}")
            path = os.fspath(uds)
            if not path:
                raise ValueError("uds must be a non-empty path")
        overrides: list[tuple[tuple[str, int], str]] = []
        for entry, address in (resolve or {}).items():
            host, colon, port = str(entry).rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"resolve keys are 'host:port', got {entry!r}")
            _check_ip(f"resolve[{entry!r}]", address)
            overrides.append(((host.strip("[]").lower(), int(port)), address.strip("[]")))
        return cls(local_address, tuple(options), path, tuple(overrides))

    def address_for(self, host: str, port: int) -> str:
        """The address to connect to for ``host:port`` (a ``resolve`` override, or host)."""
        for (name, number), address in self.resolve:
            if number == port and name == host.lower():
                return address
        return host


def _check_ip(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be an IP address string, got {type(value).__name__}")
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise ValueError(f"{name} must be an IP address, got {value!r}") from None


_NO_OPTIONS = ConnectOptions()


async def open_connection(
    key: PoolKey,
    *,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float | None,
    happy_eyeballs_delay: float | None = 0.25,
    limits: ParserLimits = _DEFAULT_LIMITS,
    recv_buffer: ReceiveBuffer | None = None,
    options: ConnectOptions = _NO_OPTIONS,
    dns: DNSCache | None = None,
    tls_reason: str = "origin",
) -> HTTP11Connection:
    """Open a TCP (and, with ``ssl_context``, TLS) connection for ``key``.

    A checkpoint; cancelling it closes whatever socket was being opened.

    Args:
        key: scheme, host (an IPv6 literal with or without brackets) and port; for TLS,
            ``key.tls.server_hostname`` overrides the name sent in SNI and verified.
        ssl_context: a client context (see :func:`make_ssl_context`); None for plain TCP.
            Our contexts offer ALPN ``http/1.1``.
        connect_timeout: seconds for resolving, connecting and the TLS handshake together.
        happy_eyeballs_delay: seconds before racing the next address; None tries the
            addresses one after another.
        limits: header and chunk caps for every response on the connection.
        recv_buffer: the read buffer the connections of one client share (same event
            loop); None gives the connection a small one of its own.
        options: source address, socket options, a Unix socket, name overrides.
        dns: the client's name cache and resolver; None asks ``getaddrinfo`` each time.
        tls_reason: the reason of the ``tls`` pool event reported when the handshake
            begins: ``origin``, or ``proxy`` for the connection to an ``https://`` proxy.

    Returns:
        A connected :class:`HTTP11Connection` with ``TCP_NODELAY`` set.

    Raises:
        ConnectError: the name did not resolve, or every address refused or failed.
        TLSError: certificate verification or the handshake failed (names the host).
        ConnectTimeout: ``connect_timeout`` passed.
    """
    loop = asyncio.get_running_loop()
    host = key.host[1:-1] if key.host.startswith("[") else key.host
    conn = HTTP11Connection(key, limits=limits, recv_buffer=recv_buffer)
    try:
        async with asyncio.timeout(connect_timeout):
            if options.uds is not None:
                transport, _ = await loop.create_unix_connection(lambda: conn, options.uds)
            else:
                target = options.address_for(host, key.port)
                sock = await _connect_socket(
                    loop, target, key.port, happy_eyeballs_delay, options, dns
                )
                try:
                    transport, _ = await loop.create_connection(lambda: conn, sock=sock)
                except BaseException:
                    sock.close()
                    raise
            if ssl_context is not None:
                connect_progress("tls", tls_reason)
                await _start_tls(loop, conn, transport, ssl_context, key, host)
    except Exception as exc:
        err = _connect_failure(exc, key, host, ssl_context, connect_timeout, options)
        if err is exc:
            raise
        raise err from exc
    return conn


_AddrInfo = tuple[int, int, int, str, tuple[object, ...]]


async def _connect_socket(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    delay: float | None,
    options: ConnectOptions = _NO_OPTIONS,
    dns: DNSCache | None = None,
) -> socket.socket:
    """Resolve ``host`` and return a connected non-blocking socket with ``TCP_NODELAY``.

    Addresses are tried in turn, or raced with happy eyeballs by aiohappyeyeballs (RFC
    8305: families interleaved, the next attempt starts after ``delay`` or as soon as one
    fails; losing sockets are closed, also when cancelled).
    """
    literal = _literal(host, port)
    if literal is not None:
        infos: list[_AddrInfo] = literal
    elif dns is not None:
        infos = await dns.lookup(host, port)
    else:
        found = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        infos = [(f, t, p, c, tuple(a)) for f, t, p, c, a in found]
    local: list[_AddrInfo] | None = None
    if options.local_address is not None:
        local = _literal(options.local_address, 0)
        assert local is not None  # checked by ConnectOptions.build
        family = local[0][0]
        infos = [info for info in infos if info[0] == family]
        if not infos:
            raise OSError(
                errno.EAFNOSUPPORT,
                f"{host} has no address of the family of local_address={options.local_address}",
            )
    if not infos:
        raise OSError(f"no addresses for {host!r}")

    def make_socket(info: _AddrInfo) -> socket.socket:
        sock = socket.socket(info[0], info[1], info[2])
        try:
            if info[0] in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, option, value in options.socket_options:
                sock.setsockopt(level, option, value)
        except BaseException:
            sock.close()
            raise
        return sock

    return await aiohappyeyeballs.start_connection(
        infos,
        local_addr_infos=local,
        happy_eyeballs_delay=delay,
        interleave=1 if delay is not None else None,
        socket_factory=make_socket,
    )


def _literal(host: str, port: int) -> list[_AddrInfo] | None:
    """The address of an IP literal, without a trip to the resolver thread."""
    if "%" in host:  # a scoped IPv6 address: let getaddrinfo find the scope id
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


def os_reason(exc: OSError) -> str:
    """A socket error in words: "connection refused" said so, also when the event loop's
    message is only "Connect call failed"."""
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    return str(exc.strerror or exc)


async def _start_tls(
    loop: asyncio.AbstractEventLoop,
    conn: HTTP11Connection,
    transport: asyncio.Transport,
    ssl_context: ssl.SSLContext,
    key: PoolKey,
    host: str,
) -> None:
    """Run the TLS handshake over an open TCP transport and hand ``conn`` the TLS transport.

    ``start_tls`` closes the TCP transport on any failure or cancellation; the ``abort()``
    below covers a failure before it got that far.
    """
    sni = (key.tls and key.tls.server_hostname) or host
    try:
        tls = await loop.start_tls(transport, conn, ssl_context, server_hostname=sni)
    except BaseException:
        transport.abort()  # start_tls closed it already, unless it failed before starting
        raise
    if tls is None:
        transport.abort()
        raise ConnectError(f"TLS to {host}:{key.port}: the event loop returned no transport")
    conn.connection_made(tls)


def _connect_failure(
    exc: Exception,
    key: PoolKey,
    host: str,
    ssl_context: ssl.SSLContext | None,
    timeout: float | None,
    options: ConnectOptions = _NO_OPTIONS,
) -> Exception:
    """Translate an error from ``create_connection`` into glasspool's tree."""
    where = f"{host}:{key.port}"
    if options.uds is not None:
        where = f"{where} over the Unix socket {options.uds}"
    if isinstance(exc, TimeoutError):
        phase = "connecting or the TLS handshake" if ssl_context else "connecting"
        return ConnectTimeout(f"{phase} to {where} took longer than {timeout}s (connect timeout)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        name = (key.tls and key.tls.server_hostname) or host
        return TLSError(
            f"TLS certificate verification failed for {name} ({where}): "
            f"{exc.verify_message or exc.reason}"
        )
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS handshake with {host} ({where}) failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"could not resolve host {host!r} (port {key.port}): {exc}")
    if isinstance(exc, OSError):
        return ConnectError(f"cannot connect to {where}: {os_reason(exc)}")
    return exc


def make_ssl_context(verify: VerifyTypes = True, cert: CertTypes = None) -> ssl.SSLContext:
    """Return a client SSL context, built once per distinct ``(verify, cert)``.

    Args:
        verify: True verifies against the system CAs; a str is a CA bundle file or a
            directory of CA certificates; False turns off certificate and host name checks;
            an ``ssl.SSLContext`` is returned unchanged.
        cert: a client certificate: a PEM file holding certificate and key, or a
            (certfile, keyfile) pair.

    Returns:
        A context offering ALPN ``http/1.1``. Cached contexts are shared: do not modify
        them. A CA file that changes on disk is not reloaded.

    Raises:
        ValueError: the CA path does not exist, or ``cert`` was combined with a context.
    """
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ValueError(
                "cert= cannot be combined with an SSLContext: load it into the context"
            )
        return verify
    return _build_context(verify, _cert_pair(cert))


def _cert_pair(cert: CertTypes) -> tuple[str, str | None] | None:
    if cert is None or isinstance(cert, tuple):
        return cert
    return (cert, None)


@functools.lru_cache(maxsize=32)
def _build_context(verify: bool | str, cert: tuple[str, str | None] | None) -> ssl.SSLContext:
    if isinstance(verify, str):
        if not os.path.exists(verify):
            raise ValueError(f"verify={verify!r}: no such CA bundle file or directory")
        if os.path.isdir(verify):
            ctx = ssl.create_default_context(capath=verify)
        else:
            ctx = ssl.create_default_context(cafile=verify)
    else:
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_identity(verify: VerifyTypes, cert: CertTypes, server_hostname: str | None) -> TLSIdentity:
    """Describe the TLS settings of a request for its :class:`PoolKey`.

    Args:
        verify: as for :func:`make_ssl_context`.
        cert: as for :func:`make_ssl_context`.
        server_hostname: the name to send in SNI and verify, if not the URL's host.

    Returns:
        A hashable identity: two requests share connections only if these are equal.
    """
    pair = _cert_pair(cert)
    if isinstance(verify, ssl.SSLContext):
        return TLSIdentity(
            verify=verify.verify_mode != ssl.CERT_NONE,
            client_cert=pair,
            context=verify,
            server_hostname=server_hostname,
        )
    if isinstance(verify, str):
        return TLSIdentity(
            verify=True, ca_path=verify, client_cert=pair, server_hostname=server_hostname
        )
    return TLSIdentity(verify=bool(verify), client_cert=pair, server_hostname=server_hostname)


def context_for(identity: TLSIdentity) -> ssl.SSLContext:
    """Return the SSL context that matches a :class:`TLSIdentity` (cached as above).

    Args:
        identity: from :func:`tls_identity`.

    Returns:
        The caller's own context if it gave one, else a cached context.

    Raises:
        ValueError: as :func:`make_ssl_context`, e.g. a client certificate with a context.
    """
    if identity.context is not None:
        return make_ssl_context(identity.context, identity.client_cert)
    verify: bool | str = identity.ca_path if identity.ca_path is not None else identity.verify
    return make_ssl_context(verify, identity.client_cert)
