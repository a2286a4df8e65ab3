"""glasspool.prometheus.PoolCollector: the text exposition, parsed, against pool.stats()."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import glasspool
from glasspool.prometheus import PoolCollector
from tests.demoserver import DemoServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample as (name, sorted labels) -> value, and each family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    return parse(generate_latest(registry).decode())


def per_key(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["key"]: v for (n, labels), v in samples.items() if n == name}


async def test_gauges_and_counters_per_key_equal_stats() -> None:
    async with DemoServer() as a, DemoServer() as b:
        async with glasspool.Client(limit=10, limit_per_host=2) as client:
            registry = CollectorRegistry()
            registry.register(PoolCollector(client))
            await client.get(a.url("/hello"))
            await client.get(a.url("/hello"))
            await client.get(b.url("/hello"))
            held = [asyncio.create_task(client.get(a.url("/hold"))) for _ in range(2)]
            await a.wait_held(2)
            waits = asyncio.Event()
            client.pool.add_listener(lambda e: waits.set() if e.kind == "queued" else None)
            queued = asyncio.create_task(client.get(a.url("/hello")))
            await waits.wait()
            samples, types = scrape(registry)
            stats = client.pool.stats()
            ka, kb = a.url("/")[:-1], b.url("/")[:-1]
            assert per_key(samples, "glasspool_pool_in_use") == {ka: 2, kb: 0}
            assert per_key(samples, "glasspool_pool_idle") == {ka: 0, kb: 1}
            assert per_key(samples, "glasspool_pool_waiting") == {ka: 1, kb: 0}
            assert per_key(samples, "glasspool_pool_open") == {ka: 2, kb: 1}
            assert per_key(samples, "glasspool_pool_connecting") == {ka: 0, kb: 0}
            assert per_key(samples, "glasspool_pool_host_limit") == {ka: 2, kb: 2}
            for key, h in stats.hosts.items():
                assert per_key(samples, "glasspool_pool_available")[str(key)] == h.available
                for name, value in (
                    ("glasspool_pool_connections_opened_total", h.opened),
                    ("glasspool_pool_connections_closed_total", h.closed),
                    ("glasspool_pool_requests_total", h.requests),
                    ("glasspool_pool_requests_reused_total", h.reused),
                ):
                    assert per_key(samples, name)[str(key)] == value, name
            assert per_key(samples, "glasspool_pool_requests_reused_total")[ka] == 2
            assert samples[("glasspool_pool_limit", ())] == 10
            assert samples[("glasspool_pool_global_available", ())] == stats.available == 7
            assert types["glasspool_pool_open"] == "gauge"
            assert types["glasspool_pool_requests"] == "counter"
            assert not per_key(samples, "glasspool_pool_fleet_waiting")  # no fleet limits
            a.release_held()
            await asyncio.gather(*held, queued)
            samples, _ = scrape(registry)
            assert per_key(samples, "glasspool_pool_idle") == {ka: 2, kb: 1}
            assert per_key(samples, "glasspool_pool_waiting") == {ka: 0, kb: 0}
        samples, _ = scrape(registry)
        assert per_key(samples, "glasspool_pool_open") == {ka: 0, kb: 0}
        assert per_key(samples, "glasspool_pool_connections_closed_total") == {ka: 2, kb: 1}


class RecordingClient:
    """Stands in for a client: its pool records the thread each stats() runs on."""

    def __init__(self, client: glasspool.Client) -> None:
        self.pool = self
        self._pool = client.pool
        self.threads: list[int] = []

    def stats(self) -> glasspool.PoolStats:
        self.threads.append(threading.get_ident())
        return self._pool.stats()


async def test_a_scrape_from_the_http_thread_reads_on_the_loop() -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        await client.get(a.url("/hello"))
        recording = RecordingClient(client)
        registry = CollectorRegistry()
        registry.register(PoolCollector(recording))  # type: ignore[arg-type]
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        try:
            port = server.server_address[1]
            url = f"http://127.0.0.1:{port}/metrics"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
        samples, _ = parse(body.decode())
        assert per_key(samples, "glasspool_pool_idle") == {a.url("/")[:-1]: 1}
        assert recording.threads == [threading.get_ident()]  # the loop's thread


async def test_a_blocked_loop_is_read_from_the_scraping_thread() -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        await client.get(a.url("/hello"))
        recording = RecordingClient(client)
        collector = PoolCollector(recording, timeout=0.05)  # type: ignore[arg-type]
        loop_thread = threading.get_ident()
        result: list[Any] = []
        scraper = threading.Thread(target=lambda: result.append(collector.collect()))
        scraper.start()
        scraper.join(10)  # blocks the loop: the scrape cannot be answered on it
        assert not scraper.is_alive() and result
        assert recording.threads and loop_thread not in recording.threads
        await asyncio.sleep(0)  # the handed-over read runs now, and is dropped
        assert len(recording.threads) == 1


def test_without_a_running_loop_it_reads_directly() -> None:
    client = glasspool.Client()
    registry = CollectorRegistry()
    registry.register(PoolCollector(client))
    samples, _ = scrape(registry)
    assert samples[("glasspool_pool_limit", ())] == 100
    assert per_key(samples, "glasspool_pool_open") == {}


async def test_namespace_labels_and_registration_checks() -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        await client.get(a.url("/hello"))
        registry = CollectorRegistry()
        registry.register(PoolCollector(client, namespace="app", labels={"client": "api"}))
        samples, _ = scrape(registry)
        key = (("client", "api"), ("key", a.url("/")[:-1]))
        assert samples[("app_pool_idle", key)] == 1
        assert samples[("app_pool_limit", (("client", "api"),))] == 100
        with pytest.raises(ValueError, match="Duplicated"):
            registry.register(PoolCollector(client, namespace="app"))
        with pytest.raises(ValueError, match="'key' is the pool key's"):
            PoolCollector(client, labels={"key": "x"})


async def test_several_clients_share_one_collector() -> None:
    async with (
        DemoServer() as a,
        glasspool.Client(limit=7) as api,
        glasspool.Client(limit=9) as crawler,
    ):
        await api.get(a.url("/hello"))
        for _ in range(2):
            await crawler.get(a.url("/hello"))
        collector = PoolCollector(api, labels={"client": "api"})
        collector.add(crawler, labels={"client": "crawler"})
        registry = CollectorRegistry()
        registry.register(collector)
        samples, _ = scrape(registry)
        key = ("key", a.url("/")[:-1])
        assert samples[("glasspool_pool_requests_total", (("client", "api"), key))] == 1
        assert samples[("glasspool_pool_requests_total", (("client", "crawler"), key))] == 2
        assert samples[("glasspool_pool_limit", (("client", "api"),))] == 7
        assert samples[("glasspool_pool_limit", (("client", "crawler"),))] == 9
        with pytest.raises(ValueError, match="already name a client"):
            collector.add(crawler, labels={"client": "crawler"})
        with pytest.raises(ValueError, match=r"needs the labels \['client'\]"):
            collector.add(crawler, labels={"app": "x"})
        with pytest.raises(ValueError, match="needs a collector made with labels="):
            PoolCollector(api).add(crawler, labels={"client": "crawler"})


class FleetOfOne:
    """Shared limits of 1 per host that grant at once (enough to show the fleet gauges)."""

    used = 0

    def limit_for(self, key: glasspool.PoolKey) -> int | None:
        return 3

    async def acquire(self, key: glasspool.PoolKey, timeout: float | None) -> Any:
        self.used += 1
        fleet = self

        class Lease:
            async def release(self) -> None:
                fleet.used -= 1

        return Lease()

    def snapshot(self, key: glasspool.PoolKey) -> tuple[int | None, int]:
        return (self.used, self.used)

    async def aclose(self) -> None:
        return None


async def test_fleet_gauges_appear_with_shared_limits() -> None:
    async with DemoServer() as a, glasspool.Client(shared_limits=FleetOfOne()) as client:
        await client.get(a.url("/hello"))
        registry = CollectorRegistry()
        registry.register(PoolCollector(client))
        samples, _ = scrape(registry)
        key = a.url("/")[:-1]
        assert per_key(samples, "glasspool_pool_shared_limit") == {key: 3}
        assert per_key(samples, "glasspool_pool_fleet_leases") == {key: 1}
        assert per_key(samples, "glasspool_pool_fleet_in_use") == {key: 1}
        assert per_key(samples, "glasspool_pool_fleet_waiting") == {key: 0}


def test_import_without_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.metrics_core", None)
    monkeypatch.delitem(sys.modules, "glasspool.prometheus")
    with pytest.raises(ImportError, match=r"pip install 'glasspool\[prometheus\]'"):
        importlib.import_module("glasspool.prometheus")
