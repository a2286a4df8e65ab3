"""A Prometheus collector of the pool: what a /metrics endpoint would serve.

    python examples/prometheus_collector.py URL

Needs glasspool[prometheus]. In a service, register the collector once and serve
prometheus_client's registry (e.g. prometheus_client.start_http_server).
"""

import asyncio
import sys

from prometheus_client import CollectorRegistry, generate_latest

import glasspool
import glasspool.prometheus


async def main(url: str) -> None:
    registry = CollectorRegistry()
    async with glasspool.Client() as client:
        registry.register(glasspool.prometheus.PoolCollector(client))
        await client.get(url)
        text = generate_latest(registry).decode()
    print("\n".join(line for line in text.splitlines() if line.startswith("glasspool_pool_open")))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
