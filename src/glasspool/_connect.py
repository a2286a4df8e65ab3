"""Opening connections: name resolution, happy eyeballs, TLS, and the SSL context cache.

``open_connection()`` resolves the host with ``loop.getaddrinfo`` (IP literals skip the
resolver thread), races the addresses with happy eyeballs (RFC 8305), wraps the winning
socket with ``loop.create_connection(sock=...)`` and runs the TLS handshake with
``loop.start_tls``. Failures are translated once, here, into :class:`ConnectError`,
:class:`TLSError` or :class:`ConnectTimeout`, each naming host and port and chained to the
original error. Cancelling at any point closes every socket it opened.

SSL contexts are expensive (loading a CA bundle takes milliseconds), so
:func:`make_ssl_context` builds one per distinct ``(verify, cert)`` and reuses it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import os
import socket
import ssl
from collections.abc import Sequence

from ._exceptions import ConnectError, ConnectTimeout, TLSError
from ._http11 import HTTP11Connection, ParserLimits, ReceiveBuffer
from ._pool.key import PoolKey, TLSIdentity

__all__ = ["context_for", "make_ssl_context", "open_connection", "tls_identity"]

VerifyTypes = bool | str | ssl.SSLContext
CertTypes = str | tuple[str, str | None] | None

_DEFAULT_LIMITS = ParserLimits()


async def open_connection(
    key: PoolKey,
    *,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float | None,
    happy_eyeballs_delay: float | None = 0.25,
    limits: ParserLimits = _DEFAULT_LIMITS,
    recv_buffer: ReceiveBuffer | None = None,
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
            sock = await _connect_socket(loop, host, key.port, happy_eyeballs_delay)
            try:
                transport, _ = await loop.create_connection(lambda: conn, sock=sock)
            except BaseException:
                sock.close()
                raise
            _set_nodelay(conn)
            if ssl_context is not None:
                await _start_tls(loop, conn, transport, ssl_context, key, host)
    except Exception as exc:
        err = _connect_failure(exc, key, host, ssl_context, connect_timeout)
        if err is exc:
            raise
        raise err from exc
    return conn


_AddrInfo = tuple[int, int, int, str, tuple[object, ...]]


async def _connect_socket(
    loop: asyncio.AbstractEventLoop, host: str, port: int, delay: float | None
) -> socket.socket:
    """Resolve ``host`` and return a connected non-blocking socket.

    Addresses are tried in turn, or raced with happy eyeballs (RFC 8305: families
    interleaved, the next attempt starts after ``delay`` or as soon as one fails).
    ``create_connection(happy_eyeballs_delay=...)`` is not used: on CPython 3.11 its
    ``staggered_race`` loses the winning socket if cancelled after the connect succeeded.
    """
    infos = _literal(host, port)
    if infos is None:
        infos = _interleave(
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        )
    if not infos:
        raise OSError(f"no addresses for {host!r}")
    if delay is None or len(infos) == 1:
        return await _connect_in_turn(loop, infos)
    return await _race(loop, infos, delay)


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


def _interleave(infos: Sequence[_AddrInfo]) -> list[_AddrInfo]:
    """Alternate address families, keeping the resolver's order within each."""
    families: dict[int, list[_AddrInfo]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    rounds = itertools.zip_longest(*families.values())
    return [info for group in rounds for info in group if info is not None]


async def _attempt(loop: asyncio.AbstractEventLoop, info: _AddrInfo) -> socket.socket:
    """Connect one socket to one address; the socket is closed on any failure."""
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_in_turn(
    loop: asyncio.AbstractEventLoop, infos: list[_AddrInfo]
) -> socket.socket:
    errors: list[OSError] = []
    for info in infos:
        try:
            return await _attempt(loop, info)
        except OSError as exc:
            errors.append(exc)
    raise _all_failed(errors)


async def _race(
    loop: asyncio.AbstractEventLoop, infos: list[_AddrInfo], delay: float
) -> socket.socket:
    """Happy eyeballs. Every socket but the winner is closed, even when cancelled."""
    waiting = list(reversed(infos))
    started: list[asyncio.Task[socket.socket]] = []
    pending: set[asyncio.Task[socket.socket]] = set()
    errors: list[OSError] = []
    winner: asyncio.Task[socket.socket] | None = None
    try:
        while waiting or pending:
            if waiting:
                task = loop.create_task(_attempt(loop, waiting.pop()))
                started.append(task)
                pending.add(task)
            timeout = delay if waiting else None
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (t for t in started if t in done):
                exc = task.exception()
                if exc is None:
                    winner = task
                    return task.result()
                if not isinstance(exc, OSError):
                    raise exc
                errors.append(exc)
        raise _all_failed(errors)
    finally:
        for task in started:
            if task is winner:
                continue
            if task.done():
                _close_connected(task)
            else:
                task.cancel()  # _attempt closes its socket when the cancel lands
                task.add_done_callback(_close_connected)


def _close_connected(task: asyncio.Task[socket.socket]) -> None:
    """Close the socket of a losing attempt that connected anyway."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()


def _all_failed(errors: list[OSError]) -> OSError:
    if len(errors) == 1:
        return errors[0]
    reasons = "; ".join(dict.fromkeys(str(e) for e in errors))
    err = OSError(f"all {len(errors)} addresses failed: {reasons}")
    err.__cause__ = errors[0]
    return err


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


def _set_nodelay(conn: HTTP11Connection) -> None:
    setsockopt = getattr(conn.get_extra_info("socket"), "setsockopt", None)
    if setsockopt is not None:
        try:
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # already closed by the peer: the first read will report it
            pass


def _connect_failure(
    exc: Exception,
    key: PoolKey,
    host: str,
    ssl_context: ssl.SSLContext | None,
    timeout: float | None,
) -> Exception:
    """Translate an error from ``create_connection`` into glasspool's tree."""
    where = f"{host}:{key.port}"
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
        return ConnectError(f"cannot connect to {where}: {exc.strerror or exc}")
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
