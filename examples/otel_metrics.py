"""OpenTelemetry metrics of the pool, read with the SDK's in-memory reader.

    python examples/otel_metrics.py URL

Needs glasspool[otel] and opentelemetry-sdk. In production, use a
PeriodicExportingMetricReader with an OTLP exporter instead of the in-memory reader.
"""

import asyncio
import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import glasspool
import glasspool.otel


async def main(url: str) -> None:
    reader = InMemoryMetricReader()
    async with glasspool.Client(limit_per_host=2) as client:
        handle = glasspool.otel.instrument(client, meter_provider=MeterProvider([reader]))
        await asyncio.gather(*(client.get(url) for _ in range(5)))
        handle.uninstrument()
    data = reader.get_metrics_data()
    names = sorted(
        metric.name
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )
    print("\n".join(names))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
