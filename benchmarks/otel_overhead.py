"""What ``glasspool.otel.instrument()`` costs: requests/s and CPU at C=64 on loopback.

Five modes, each run in a fresh Python process, rounds alternating the order:

- ``none``: a plain ``glasspool.Client``;
- ``listener``: the same with one pool listener that does nothing: what the pool's events
  cost by themselves (every instrumented client has one listener);
- ``noop``: ``instrument(client, NoOpMeterProvider(), NoOpTracerProvider())``, what a
  program pays when it instruments but installs no SDK;
- ``sdk-metrics``: the OpenTelemetry SDK's ``MeterProvider`` with an
  ``InMemoryMetricReader`` (collected once at the end), tracing off (no-op tracer);
- ``sdk-sampled``: the same plus the SDK's ``TracerProvider`` sampling one trace in ten
  (``ParentBased(TraceIdRatioBased(0.1))``, a common production set-up), spans into an
  ``InMemorySpanExporter`` through a ``SimpleSpanProcessor``;
- ``sdk``: the same, every request sampled: a span per request, with the pool's events on
  it. The exporter keeps every span in memory, so the garbage collector's passes grow
  with the run; a real exporter sends them away.

Each process makes ``--warmup`` requests, then ``--requests`` more with ``--concurrency``
tasks on one 13-byte URL, and reports requests/s and process CPU time per request. The
figures printed are medians over ``--rounds``; "overhead" compares each mode's median
requests/s with ``none``'s. The server is pinned to one CPU and the client to another
when there are two (``taskset``), as in ``benchmarks/run.py``.

Two servers (``--delays``, in ms): ``0`` is nginx answering at once, where the client's
CPU is the limit and every microsecond of instrumentation shows in requests/s; any other
value is ``slow_server.py`` answering after that delay, like a remote API, where C=64
allows at most 64 / delay requests/s and the instrumentation shows as client CPU until
it uses the whole core. Last, the script times the SDK alone (one histogram measurement,
one span) in its own process: the floor under the ``sdk`` modes.

    .venv/bin/python benchmarks/otel_overhead.py
    .venv/bin/python benchmarks/otel_overhead.py --rounds 7 --requests 40000 --delays 0,5,10

Nothing here talks to anything but 127.0.0.1. Never collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODES = ("none", "listener", "noop", "sdk-metrics", "sdk-sampled", "sdk")
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
    if mode in ("sdk", "sdk-sampled"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        ratio = TraceIdRatioBased(0.1) if mode == "sdk-sampled" else ALWAYS_ON
        tracers = TracerProvider(sampler=ParentBased(ratio))
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


@contextlib.contextmanager
def _server(delay_ms: float, cpu: int | None) -> Iterator[str]:
    """The URL of a 13-byte resource: nginx for no delay, else ``slow_server.py``."""
    if delay_ms <= 0:
        from nginx_bench import start_nginx

        with start_nginx(cpu, host_ports=1) as server:
            yield server.url("/13b")
        return
    argv = [sys.executable, str(HERE / "slow_server.py"), "--delay", str(delay_ms / 1000)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready PORT", once it listens
        if not line.startswith("ready "):
            raise RuntimeError(f"slow_server.py did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/13b"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _sdk_floor() -> tuple[float, float]:
    """The SDK's own cost, in µs: one ``http.client.request.duration`` measurement with
    the attributes glasspool gives it, and one span with the attributes and the
    ``acquired`` event of a reused connection (started and ended)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    histogram = meters.get_meter("floor").create_histogram("h", unit="s")
    attrs: dict[str, str | int] = {
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": 8080,
        "url.scheme": "http", "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }  # fmt: skip
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracers.get_tracer("floor")
    start = {k: attrs[k] for k in list(attrs)[:4]}
    end: dict[str, str | int | bool] = {
        "http.response.status_code": 200, "network.protocol.version": "1.1",
        "url.full": "http://127.0.0.1:8080/13b", "glasspool.connection.reused": True,
    }  # fmt: skip
    event = {"glasspool.pool.reason": "reused", "glasspool.connection.id": 1}
    n = 20000

    def span() -> None:
        s = tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=start)
        s.add_event("glasspool.pool.acquired", event)
        s.set_attributes(end)
        s.end()

    t0 = time.perf_counter()
    for _ in range(n):
        histogram.record(0.001, attrs)
    t1 = time.perf_counter()
    for _ in range(n):
        span()
    t2 = time.perf_counter()
    exporter.clear()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def _main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    prefix, server_cpu = _cpus()
    delays = [float(d) for d in args.delays.split(",")]
    for delay in delays:
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        with _server(delay, server_cpu) as url:
            for n in range(args.rounds):
                order = MODES[n % len(MODES) :] + MODES[: n % len(MODES)]
                for mode in order:
                    results[mode].append(_run_mode(prefix, url, mode, args))
        base = statistics.median(r["rps"] for r in results["none"])
        server = "nginx" if delay <= 0 else f"a server answering in {delay:g} ms"
        where = f" on CPU {server_cpu}" if server_cpu is not None else ""
        print(
            f"\nC={args.concurrency}, {args.requests} requests x {args.rounds} rounds, "
            f"13-byte body, {server}{where}"
        )
        print(f"{'mode':<12} {'req/s':>8} {'overhead':>9} {'CPU us/req':>11}  (medians)")
        for mode in MODES:
            rps = statistics.median(r["rps"] for r in results[mode])
            cpu = statistics.median(r["cpu_us"] for r in results[mode])
            print(f"{mode:<12} {rps:>8,.0f} {(1 - rps / base) * 100:>8.1f}% {cpu:>11.1f}")
    record, span = _sdk_floor()
    print(
        f"\nthe SDK alone, in this process: {record:.1f} us per duration measurement "
        f"(6 attributes), {span:.1f} us per span (start, 1 event, attributes, end)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--delays",
        default="0,10",
        help="server answer delays in ms, comma-separated (0: nginx, else slow_server.py)",
    )
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
