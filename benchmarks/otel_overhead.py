"""What ``glasspool.otel.instrument()`` costs: requests/s at C=64 against a local nginx.

Five modes, each run in a fresh Python process, rounds alternating the order:

- ``none``: a plain ``glasspool.Client``;
- ``listener``: the same with one pool listener that does nothing: what the pool's events
  cost by themselves (every instrumented client has one listener);
- ``noop``: ``instrument(client, NoOpMeterProvider(), NoOpTracerProvider())``, what a
  program pays when it instruments but installs no SDK;
- ``sdk-metrics``: the OpenTelemetry SDK's ``MeterProvider`` with an
  ``InMemoryMetricReader`` (collected once at the end), tracing off (no-op tracer);
- ``sdk``: the same plus the SDK's ``TracerProvider`` with a ``SimpleSpanProcessor`` into an
  ``InMemorySpanExporter`` (no exporter thread): a span per request, with the pool's
  events on it.

Each process makes ``--warmup`` requests, then ``--requests`` more with ``--concurrency``
tasks on one 13-byte URL, and reports requests/s and process CPU time per request. The
figures printed are medians over ``--rounds``; "overhead" compares each mode's median
requests/s with ``none``'s. nginx is pinned to one CPU and the client to another when
there are two (``taskset``), as in ``benchmarks/run.py``.

    .venv/bin/python benchmarks/otel_overhead.py
    .venv/bin/python benchmarks/otel_overhead.py --rounds 7 --requests 40000

Nothing here talks to anything but 127.0.0.1. Never collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("none", "listener", "noop", "sdk-metrics", "sdk")
HERE = Path(__file__).resolve().parent


def _instrument(client: Any, mode: str) -> Any:
    """Instrument ``client`` for ``mode``; returns what must stay alive (providers)."""
    if mode == "none":
        return None
    if mode == "listener":
        client.pool.add_listener(lambda event: None)
        return None
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    import glasspool.otel

    if mode == "noop":
        glasspool.otel.instrument(client, NoOpMeterProvider(), NoOpTracerProvider())
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    tracers: Any = NoOpTracerProvider()
    if mode == "sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    glasspool.otel.instrument(client, meters, tracers)
    return (reader, meters, tracers)


async def _work(
    url: str, mode: str, warmup: int, requests: int, concurrency: int
) -> dict[str, Any]:
    import glasspool

    async with glasspool.Client(limit=concurrency, limit_per_host=concurrency) as client:
        keep = _instrument(client, mode)

        async def run(count: int) -> None:
            left = count

            async def task() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    r = await client.get(url)
                    if r.status != 200:
                        raise RuntimeError(f"{url}: {r.status}")

            await asyncio.gather(*(task() for _ in range(concurrency)))

        await run(warmup)
        cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await run(requests)
        elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    if keep is not None:
        reader = keep[0]
        points = reader.get_metrics_data()  # one collection, as a reader would make
        assert points is not None
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"rps": requests / elapsed, "cpu_us": cpu / requests * 1e6}


def _worker(args: argparse.Namespace) -> None:
    result = asyncio.run(_work(args.url, args.mode, args.warmup, args.requests, args.concurrency))
    print(json.dumps(result))


def _cpus() -> tuple[list[str], int | None]:
    """The client's taskset prefix and nginx's CPU (both empty/None on one CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return [], None
    return ["taskset", "-c", str(cpus[0])], cpus[1]


def _run_mode(prefix: list[str], url: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        *prefix, sys.executable, __file__, "--worker", mode, "--url", url,
        "--warmup", str(args.warmup), "--requests", str(args.requests),
        "--concurrency", str(args.concurrency),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from nginx_bench import start_nginx

    prefix, server_cpu = _cpus()
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with start_nginx(server_cpu, host_ports=1) as server:
        url = server.url("/13b")
        for n in range(args.rounds):
            order = MODES[n % len(MODES) :] + MODES[: n % len(MODES)]
            for mode in order:
                results[mode].append(_run_mode(prefix, url, mode, args))
    base = statistics.median(r["rps"] for r in results["none"])
    print(
        f"C={args.concurrency}, {args.requests} requests x {args.rounds} rounds, "
        f"13-byte body, nginx {'on CPU ' + str(server_cpu) if server_cpu is not None else ''}"
    )
    print(f"{'mode':<12} {'req/s':>8} {'overhead':>9} {'CPU us/req':>11}  (medians)")
    for mode in MODES:
        rps = statistics.median(r["rps"] for r in results[mode])
        cpu = statistics.median(r["cpu_us"] for r in results[mode])
        print(f"{mode:<12} {rps:>8,.0f} {(1 - rps / base) * 100:>8.1f}% {cpu:>11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.mode = args.worker
        _worker(args)
    else:
        _main(args)


if __name__ == "__main__":
    main()
