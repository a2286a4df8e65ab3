"""A Prometheus collector of a client's pool: :class:`PoolCollector`.

``PoolCollector(client)`` reads ``client.pool.stats()`` each time Prometheus scrapes (it
keeps nothing between scrapes and costs nothing in between) and reports, per pool key,
the connections open, in use, idle and connecting, the requests waiting, the headroom,
and the pool's counters. Needs ``prometheus_client`` (``pip install
'glasspool[prometheus]'``). See docs/observability.md for serving it.

Scrapes usually come from another thread (``prometheus_client.start_http_server`` serves
from one), while the pool belongs to the event loop's thread. A collector made while the
loop runs (or given ``loop=``) takes the snapshot on the loop's thread: the scrape hands
it over with ``call_soon_threadsafe`` and waits at most ``timeout`` seconds. A loop that
does not answer in time (blocked, which is when a scrape matters most) is read from the
scraping thread instead, as a collector without a loop always does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

try:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised without prometheus_client installed
    raise ImportError(
        "glasspool.prometheus needs prometheus_client: pip install 'glasspool[prometheus]'"
    ) from exc

from . import HostStats, PoolStats

if TYPE_CHECKING:  # pragma: no cover
    from . import Client

__all__ = ["PoolCollector"]

_KEY: Final = "key"
_RETRIES: Final = 3  # reads from the scraping thread while the loop may change the pool

# (suffix, help, value of a key's HostStats); gauges, then counters, then fleet gauges.
_GAUGES: Final[tuple[tuple[str, str, Callable[[HostStats], int | None]], ...]] = (
    ("pool_open", "Connections open (connecting + in use + idle), counted against the "
     "limits.", lambda h: h.open),
    ("pool_in_use", "Connections carrying a request.", lambda h: h.in_use),
    ("pool_idle", "Open connections waiting in the pool for reuse.", lambda h: h.idle),
    ("pool_connecting", "Connections being opened (TCP connect and TLS handshake).",
     lambda h: h.connecting),
    ("pool_waiting", "Requests waiting in the queue for a connection.", lambda h: h.waiting),
    ("pool_available", "Requests of this key that could get a connection now without "
     "waiting.", lambda h: h.available),
    ("pool_host_limit", "The connection limit of this key (limit_per_host or a host_limits "
     "override).", lambda h: h.limit),
    ("pool_effective_limit", "The per-key limit in force under adaptive limits (no sample "
     "when they are off).", lambda h: h.effective_limit),
)  # fmt: skip
_COUNTERS: Final[tuple[tuple[str, str, Callable[[HostStats], int | None]], ...]] = (
    ("pool_connections_opened", "Connections opened.", lambda h: h.opened),
    ("pool_connections_closed", "Connections closed, for any reason.", lambda h: h.closed),
    ("pool_requests", "Requests that asked the pool for a connection.", lambda h: h.requests),
    ("pool_requests_reused", "Requests served by an already open connection.",
     lambda h: h.reused),
)  # fmt: skip
_FLEET: Final[tuple[tuple[str, str, Callable[[HostStats], int | None]], ...]] = (
    ("pool_shared_limit", "The fleet-wide connection limit for this host.",
     lambda h: h.shared_limit),
    ("pool_fleet_in_use", "Fleet-wide slots in use, as last seen by this worker.",
     lambda h: h.fleet_in_use),
    ("pool_fleet_leases", "Fleet-wide slots this worker holds.", lambda h: h.leases),
    ("pool_fleet_waiting", "Requests of this worker waiting for a fleet-wide slot.",
     lambda h: h.fleet_waiting),
)  # fmt: skip

_GLOBAL: Final[tuple[tuple[str, str, Callable[[PoolStats], int]], ...]] = (
    ("pool_limit", "The global connection limit.", lambda s: s.limit),
    ("pool_global_available", "Connections that may be opened now without waiting "
     "(limit - open).", lambda s: s.available),
)  # fmt: skip


class PoolCollector:
    """A ``prometheus_client`` collector that reads a client's ``pool.stats()`` at scrape time.

    Register it: ``prometheus_client.REGISTRY.register(PoolCollector(client))``. Each
    per-key metric has the label ``key`` (``str(key)``, e.g. ``http://127.0.0.1:8080``);
    keys that print the same (they differ only in TLS identity, or in a proxy's password)
    are added up.
    Metric names are ``<namespace>_pool_open``, ``_pool_in_use``, ``_pool_idle``,
    ``_pool_connecting``, ``_pool_waiting``, ``_pool_available``, ``_pool_host_limit``
    (gauges), ``_pool_connections_opened_total``, ``_pool_connections_closed_total``,
    ``_pool_requests_total``, ``_pool_requests_reused_total`` (counters), the global
    ``_pool_limit`` and ``_pool_global_available``, and with fleet limits
    ``_pool_shared_limit``, ``_pool_fleet_in_use``, ``_pool_fleet_leases`` and
    ``_pool_fleet_waiting``.

    Several clients of one process share one collector (and so one registry): give the
    first ``labels`` such as ``{"client": "api"}`` and :meth:`add` the others with the
    same label names and other values.

    Args:
        client: the client whose pool is read (anything with ``.pool.stats()``).
        namespace: the metric name prefix.
        labels: constant labels added to every sample of this client (e.g.
            ``{"client": "api"}``), to tell the clients of one process apart.
        loop: the event loop the client runs on; default the running loop, if any.
        timeout: seconds a scrape from another thread waits for the loop.

    Raises:
        ValueError: a label is named ``key``.
    """

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "glasspool",
        labels: Mapping[str, str] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 2.0,
    ) -> None:
        self._namespace = namespace
        self._timeout = timeout
        first = _Source(client, dict(labels or {}), loop, timeout)
        if _KEY in first.labels:
            raise ValueError(f"the label {_KEY!r} is the pool key's; choose another name")
        self._label_names = list(first.labels)
        self._sources = [first]

    def __repr__(self) -> str:
        pools = " ".join(repr(source.pool) for source in self._sources)
        return f"<glasspool.prometheus.PoolCollector namespace={self._namespace!r} {pools}>"

    def add(
        self,
        client: Client,
        *,
        labels: Mapping[str, str],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Report another client's pool too, its samples told apart by ``labels``.

        Args:
            client: the client whose pool is read.
            labels: the same label names as the collector's own ``labels``, with values
                no other client of this collector has.
            loop: the event loop that client runs on; default the running loop, if any.

        Raises:
            ValueError: ``labels`` with other names than the collector's, or values that
                another client of this collector already has.
        """
        source = _Source(client, dict(labels), loop, self._timeout)
        if not self._label_names:
            raise ValueError(
                "add() needs a collector made with labels= (e.g. labels={'client': 'api'}): "
                "they tell its clients apart"
            )
        if sorted(source.labels) != sorted(self._label_names):
            raise ValueError(
                f"add() needs the labels {sorted(self._label_names)} (the collector's own, "
                f"with other values); got {sorted(source.labels)}"
            )
        if any(other.values(self._label_names) == source.values(self._label_names)
               for other in self._sources):  # fmt: skip
            raise ValueError(f"the labels {dict(labels)} already name a client here")
        self._sources.append(source)

    # --------------------------------------------------------------- the snapshot

    def snapshot(self) -> PoolStats:
        """``pool.stats()`` of the first client, taken on the loop's thread when called
        from another one."""
        return self._sources[0].snapshot()

    # ---------------------------------------------------------- prometheus_client

    def describe(self) -> list[Metric]:
        """The metric families without samples (for the registry's name check)."""
        return self._families(describe=True)

    def collect(self) -> list[Metric]:
        """The metric families with a sample per client and key, from one ``stats()``
        snapshot of each client."""
        return self._families(describe=False)

    def _families(self, *, describe: bool) -> list[Metric]:
        label_names = self._label_names
        names = [*label_names, _KEY]
        snapshots = [
            (source.values(label_names), None if describe else source.snapshot())
            for source in self._sources
        ]
        families: list[Metric] = []
        for table, kind in ((_GAUGES, GaugeMetricFamily), (_COUNTERS, CounterMetricFamily)):
            for suffix, doc, value in table:
                family = kind(self._name(suffix), doc, labels=names)
                for fixed, stats in snapshots:
                    _fill(family, _by_label(stats), value, fixed)
                families.append(family)
        for suffix, doc, value in _FLEET:
            family = GaugeMetricFamily(self._name(suffix), doc, labels=names)
            for fixed, stats in snapshots:
                hosts = _by_label(stats)
                fleet = {k: hs for k, hs in hosts.items() if hs[0].shared_limit is not None}
                _fill(family, fleet, value, fixed)
            families.append(family)
        for suffix, doc, number in _GLOBAL:
            family = GaugeMetricFamily(self._name(suffix), doc, labels=label_names)
            for fixed, stats in snapshots:
                if stats is not None:
                    family.add_metric(fixed, float(number(stats) or 0))
            families.append(family)
        return families

    def _name(self, suffix: str) -> str:
        return f"{self._namespace}_{suffix}" if self._namespace else suffix


class _Source:
    """One client's pool as the collector reads it: on its loop's thread when it can."""

    __slots__ = ("labels", "loop", "pool", "timeout")

    def __init__(
        self,
        client: Client,
        labels: dict[str, str],
        loop: asyncio.AbstractEventLoop | None,
        timeout: float,
    ) -> None:
        self.pool = client.pool
        self.labels = labels
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self.loop = loop
        self.timeout = timeout

    def values(self, names: list[str]) -> list[str]:
        return [self.labels[name] for name in names]

    def snapshot(self) -> PoolStats:
        """``pool.stats()``, taken on the loop's thread when called from another one."""
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running() or _runs(loop):
            return self._read()
        answer: concurrent.futures.Future[PoolStats] = concurrent.futures.Future()

        def take() -> None:
            if answer.set_running_or_notify_cancel():
                try:
                    answer.set_result(self.pool.stats())
                except BaseException as exc:
                    answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # the loop closed meanwhile
            return self._read()
        try:
            return answer.result(self.timeout)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            return self._read()

    def _read(self) -> PoolStats:
        """``stats()`` from this thread; retried if the loop changed the pool under it."""
        for _ in range(_RETRIES - 1):
            try:
                return self.pool.stats()
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return self.pool.stats()


def _runs(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the loop running in this thread."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _by_label(stats: PoolStats | None) -> dict[str, list[HostStats]]:
    """The keys' stats grouped by ``str(key)`` (the label value)."""
    grouped: dict[str, list[HostStats]] = {}
    if stats is not None:
        for key, host in stats.hosts.items():
            grouped.setdefault(str(key), []).append(host)
    return grouped


def _fill(
    family: Metric,
    hosts: Mapping[str, list[HostStats]],
    value: Callable[[HostStats], int | None],
    fixed: list[str],
) -> None:
    for label, group in hosts.items():
        values = [v for v in map(value, group) if v is not None]
        if values:
            family.add_metric([*fixed, label], float(sum(values)))  # type: ignore[attr-defined]
