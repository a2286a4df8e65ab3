"""Opening connections: name resolution, happy eyeballs, TLS, and the SSL context cache.

``open_connection()`` hands everything to ``loop.create_connection``: it resolves the host
with ``loop.getaddrinfo`` (IP literals skip the resolver), races the addresses with happy
eyeballs (RFC 8305) when the loop supports it, and runs the TLS handshake. Failures are
translated once, here, into :class:`ConnectError`, :class:`TLSError` or
:class:`ConnectTimeout`, each naming host and port and chained to the original error.

SSL contexts are expensive (loading a CA bundle takes milliseconds), so
:func:`make_ssl_context` builds one per distinct ``(verify, cert)`` and reuses it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl

from ._exceptions import ConnectError, ConnectTimeout, TLSError
from ._http11 import HTTP11Connection, ParserLimits
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

    Returns:
        A connected :class:`HTTP11Connection` with ``TCP_NODELAY`` set.

    Raises:
        ConnectError: the name did not resolve, or every address refused or failed.
        TLSError: certificate verification or the handshake failed (names the host).
        ConnectTimeout: ``connect_timeout`` passed.
    """
    loop = asyncio.get_running_loop()
    host = key.host[1:-1] if key.host.startswith("[") else key.host
    conn = HTTP11Connection(key, limits=limits)
    sni = ((key.tls and key.tls.server_hostname) or host) if ssl_context is not None else None
    if isinstance(loop, asyncio.BaseEventLoop):
        opening = loop.create_connection(
            lambda: conn,
            host,
            key.port,
            ssl=ssl_context,
            server_hostname=sni,
            happy_eyeballs_delay=happy_eyeballs_delay,
            interleave=1,
        )
    else:  # uvloop takes no happy eyeballs arguments
        opening = loop.create_connection(
            lambda: conn, host, key.port, ssl=ssl_context, server_hostname=sni
        )
    try:
        async with asyncio.timeout(connect_timeout):
            await opening
    except Exception as exc:
        err = _connect_failure(exc, key, host, ssl_context, connect_timeout)
        if err is exc:
            raise
        raise err from exc
    _set_nodelay(conn)
    return conn


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
    """
    if identity.context is not None:
        return identity.context
    verify: bool | str = identity.ca_path if identity.ca_path is not None else identity.verify
    return make_ssl_context(verify, identity.client_cert)
