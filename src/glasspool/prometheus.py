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

    Args:
        client: the client whose pool is read (anything with ``.pool.stats()``).
        namespace: the metric name prefix.
        labels: constant labels added to every sample (e.g. ``{"client": "api"}``), to
            tell the clients of one process apart when each has a collector in its own
            registry, or a namespace of its own.
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
        self._pool = client.pool
        self._namespace = namespace
        self._labels = dict(labels or {})
        if _KEY in self._labels:
            raise ValueError(f"the label {_KEY!r} is the pool key's; choose another name")
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<glasspool.prometheus.PoolCollector namespace={self._namespace!r} {self._pool!r}>"

    # --------------------------------------------------------------- the snapshot

    def snapshot(self) -> PoolStats:
        """``pool.stats()``, taken on the loop's thread when called from another one."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or _runs(loop):
            return self._read()
        answer: concurrent.futures.Future[PoolStats] = concurrent.futures.Future()

        def take() -> None:
            if answer.set_running_or_notify_cancel():
                try:
                    answer.set_result(self._pool.stats())
                except BaseException as exc:
                    answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # the loop closed meanwhile
            return self._read()
        try:
            return answer.result(self._timeout)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            return self._read()

    def _read(self) -> PoolStats:
        """``stats()`` from this thread; retried if the loop changed the pool under it."""
        for _ in range(_RETRIES - 1):
            try:
                return self._pool.stats()
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return self._pool.stats()

    # ---------------------------------------------------------- prometheus_client

    def describe(self) -> list[Metric]:
        """The metric families without samples (for the registry's name check)."""
        return self._families(None)

    def collect(self) -> list[Metric]:
        """The metric families with a sample per key, from one ``stats()`` snapshot."""
        return self._families(self.snapshot())

    def _families(self, stats: PoolStats | None) -> list[Metric]:
        names = [*self._labels, _KEY]
        fixed = list(self._labels.values())
        hosts = _by_label(stats)
        families: list[Metric] = []
        for table, kind in ((_GAUGES, GaugeMetricFamily), (_COUNTERS, CounterMetricFamily)):
            for suffix, doc, value in table:
                family = kind(self._name(suffix), doc, labels=names)
                _fill(family, hosts, value, fixed)
                families.append(family)
        for suffix, doc, value in _FLEET:
            family = GaugeMetricFamily(self._name(suffix), doc, labels=names)
            fleet = {k: hs for k, hs in hosts.items() if hs[0].shared_limit is not None}
            _fill(family, fleet, value, fixed)
            families.append(family)
        for suffix, doc, number in (
            ("pool_limit", "The global connection limit.", stats and stats.limit),
            ("pool_global_available", "Connections that may be opened now without waiting "
             "(limit - open).", stats and stats.available),
        ):  # fmt: skip
            family = GaugeMetricFamily(self._name(suffix), doc, labels=list(self._labels))
            if stats is not None:
                family.add_metric(fixed, float(number or 0))
            families.append(family)
        return families

    def _name(self, suffix: str) -> str:
        return f"{self._namespace}_{suffix}" if self._namespace else suffix


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
