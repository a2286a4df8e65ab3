"""What a pooled connection is keyed by.

Two requests may share a connection only when every field of their :class:`PoolKey` is
equal: scheme, host, port, the full TLS identity and the proxy. Changing any one field
gives a different key, so a connection opened with certificate verification off is never
reused by a request that asked for verification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import ssl

__all__ = ["PoolKey", "ProxyIdentity", "TLSIdentity"]


@dataclass(frozen=True, slots=True)
class TLSIdentity:
    """Everything about TLS that decides whether a connection may be shared.

    Attributes:
        verify: whether the server certificate and host name are verified.
        ca_path: a CA bundle file or directory given by the caller, if any.
        client_cert: the client certificate (certfile, keyfile) given by the caller, if any.
        context: an ``ssl.SSLContext`` given by the caller; compared by identity.
        server_hostname: the name sent in SNI and checked against the certificate.
    """

    verify: bool = True
    ca_path: str | None = None
    client_cert: tuple[str, str | None] | None = None
    context: ssl.SSLContext | None = None
    server_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class ProxyIdentity:
    """The proxy a connection goes through, part of its :class:`PoolKey`.

    Two proxies are the same only if every field is equal, credentials included, so
    connections opened with different proxy credentials are never shared. ``str()`` and
    ``repr()`` never show the password (``***``).

    Attributes:
        scheme: ``http``, ``https`` (TLS to the proxy), ``socks5`` or ``socks5h``.
        host: the proxy's host name or IP address (IPv6 without brackets).
        port: the proxy's port.
        username: the user name of the proxy's credentials, if any.
        password: the password of the proxy's credentials, if any (never shown).
        tls: for an ``https`` proxy, how the proxy's certificate is checked.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: TLSIdentity | None = None

    @property
    def url(self) -> str:
        """``scheme://[user:***@]host:port``: the proxy's URL with the password hidden."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username is not None or self.password is not None:
            user = (self.username or "") + (":***" if self.password is not None else "") + "@"
        return f"{self.scheme}://{user}{host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ProxyIdentity({self.url!r})"


@dataclass(frozen=True, slots=True)
class PoolKey:
    """The identity of a pool of interchangeable connections.

    ``str(key)`` looks like ``https://example.org:443``; IPv6 hosts are bracketed. Through
    a proxy it looks like ``https://example.org:443 via http://user:***@proxy:3128``.

    >>> str(PoolKey("http", "127.0.0.1", 8080))
    'http://127.0.0.1:8080'
    >>> PoolKey("https", "::1", 443, TLSIdentity()).origin
    'https://[::1]:443'
    """

    scheme: str
    host: str
    port: int
    tls: TLSIdentity | None = None
    proxy: ProxyIdentity | None = None
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # Keys are looked up in the pool's dicts several times per request: hash once.
        fields = (self.scheme, self.host, self.port, self.tls, self.proxy)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[PoolKey], tuple[object, ...]]:
        # Rebuilt through __init__, so the cached hash is this process's (string hashes
        # differ between processes), not the pickling one's.
        return (PoolKey, (self.scheme, self.host, self.port, self.tls, self.proxy))

    @property
    def origin(self) -> str:
        """``scheme://host:port`` with IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        if self.proxy is None:
            return self.origin
        return f"{self.origin} via {self.proxy.url}"
