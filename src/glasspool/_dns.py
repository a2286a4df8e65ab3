"""Name resolution for a client: a resolver hook, a cache with a TTL, and its counters.

A client asks :meth:`DNSCache.lookup` for the addresses of ``host:port``. A fresh entry
answers at once (a hit); otherwise one lookup runs (``loop.getaddrinfo``, or the user's
``resolver``) and every request for the same name waits for that one (a miss, then
joiners). Failures are not cached. Entries expire ``ttl`` seconds after the lookup
finished; the cache holds at most ``max_entries`` names (the oldest entry goes first).
IP literals never reach it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ._stats import DNSStats

__all__ = ["DNSCache", "Resolver"]

AddrInfo = tuple[int, int, int, str, tuple[object, ...]]

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``async def resolver(host, port) -> ["192.0.2.1", "2001:db8::1", ...]``."""

_MAX_ENTRIES = 1024


class DNSCache:
    """Addresses per ``(host, port)`` for ``ttl`` seconds; one lookup in flight per name."""

    def __init__(
        self,
        ttl: float | None,
        resolver: Resolver | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = _MAX_ENTRIES,
    ) -> None:
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0
        ):
            raise ValueError(f"dns_ttl must be None or a number of seconds >= 0, got {ttl!r}")
        if resolver is not None and not callable(resolver):
            raise TypeError(f"resolver must be an async callable, got {type(resolver).__name__}")
        self.ttl = ttl if ttl else None
        self.resolver = resolver
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int], tuple[float, list[AddrInfo]]] = OrderedDict()
        self._inflight: dict[tuple[str, int], asyncio.Future[list[AddrInfo]]] = {}
        self.hits = 0
        self.misses = 0

    def stats(self) -> DNSStats:
        return DNSStats(self.ttl, len(self._entries), self.hits, self.misses)

    async def lookup(self, host: str, port: int) -> list[AddrInfo]:
        """The addresses of ``host:port`` (``getaddrinfo`` tuples, resolver order).

        Raises:
            OSError: the name did not resolve (``socket.gaierror``) or the resolver failed.
            TypeError, ValueError: the resolver returned something that is not a list of
                IP address strings.
        """
        name = (host.lower(), port)
        if self.ttl is not None:
            entry = self._entries.get(name)
            if entry is not None and entry[0] > self._clock():
                self.hits += 1
                return entry[1]
        pending = self._inflight.get(name)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[list[AddrInfo]] = asyncio.get_running_loop().create_future()
        self._inflight[name] = future
        try:
            infos = await self._resolve(host, port)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: joiners re-raise it; no "never retrieved"
            raise
        else:
            future.set_result(infos)
            if self.ttl is not None:
                self._entries[name] = (self._clock() + self.ttl, infos)
                self._entries.move_to_end(name)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            return infos
        finally:
            del self._inflight[name]

    async def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        if self.resolver is None:
            loop = asyncio.get_running_loop()
            found = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
            return [(f, t, p, c, tuple(a)) for f, t, p, c, a in found]
        answer = await self.resolver(host, port)
        if isinstance(answer, str | bytes) or not isinstance(answer, Sequence):
            raise TypeError(
                f"resolver must return a list of IP address strings, got {type(answer).__name__}"
            )
        infos: list[AddrInfo] = []
        for address in answer:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"resolver returned {address!r} for {host!r}, which is not an IP address"
                ) from None
            if ip.version == 6:
                infos.append(
                    (
                        socket.AF_INET6,
                        socket.SOCK_STREAM,
                        socket.IPPROTO_TCP,
                        "",
                        (str(ip), port, 0, 0),
                    )
                )
            else:
                infos.append(
                    (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port))
                )
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, f"the resolver found no address for {host!r}")
        return infos
