"""Cost of fleet-wide limits: the Redis round trip per new connection, and contended throughput.

Run: .venv/bin/python benchmarks/fleet.py [--quick] [--redis-url redis://127.0.0.1:6379/0]

Without ``--redis-url`` it starts a private ``redis-server`` on a free 127.0.0.1 port (no
persistence, in a temporary directory) and stops it afterwards. Two measurements:

1. *Lease round trip*: one process, one host, a limit never reached; each sample is one
   ``acquire()`` + ``release()`` pair, which is what a pool pays per NEW connection
   (reused connections never touch Redis). A bare ``PING`` is timed the same way as the
   floor. Printed as median and p99 in microseconds.
2. *Contended acquisitions*: ``--workers`` processes (default 8), each running
   ``--loops`` concurrent acquire -> hold ``--hold-ms`` -> release loops for
   ``--duration`` seconds against ONE host with shared limit ``--limit``. Printed as
   acquisitions per second over the fleet, and the per-worker min/max (fairness).

Nothing here is collected by pytest, and nothing talks to anything but 127.0.0.1 (or the
Redis URL given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis

from glasspool._fleet import RedisLimits
from glasspool._pool.key import PoolKey

KEY = PoolKey("http", "bench.test", 80)


@contextmanager
def private_redis() -> Iterator[str]:
    """Start redis-server on a free loopback port; yield its URL; stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found on PATH (Debian package redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        proc = subprocess.Popen(
            [*args, "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait (at most 10 s) until the server accepts connections."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {port}") from None
            time.sleep(0.02)  # readiness probe of a child process


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    """Median and p99 of ``samples_s``, in microseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


async def round_trips(url: str, pairs: int) -> dict[str, tuple[float, float]]:
    """Time ``pairs`` acquire+release pairs and as many PINGs (after a short warm-up)."""
    client = aioredis.Redis.from_url(url)
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    lease_s: list[float] = []
    ping_s: list[float] = []
    async with RedisLimits(url, namespace=namespace, limit_per_host=1_000_000) as limits:
        for i in range(pairs + 100):
            t0 = time.perf_counter()
            lease = await limits.acquire(KEY, timeout=5)
            await lease.release()
            t1 = time.perf_counter()
            await client.ping()
            t2 = time.perf_counter()
            if i >= 100:  # warm-up: connections opened, scripts loaded
                lease_s.append(t1 - t0)
                ping_s.append(t2 - t1)
    await client.aclose()
    return {"acquire+release": percentiles(lease_s), "PING": percentiles(ping_s)}


async def worker_main(args: argparse.Namespace) -> None:
    """One contending worker process: loops of acquire -> hold -> release; prints JSON."""
    limits = RedisLimits(args.redis_url, namespace=args.namespace, limit_per_host=args.limit)
    counts = [0] * args.loops
    async with limits:
        await limits.ping()
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.readline()  # GO
        stop_at = loop.time() + args.duration

        async def one(i: int) -> None:
            while loop.time() < stop_at:
                lease = await limits.acquire(KEY, timeout=30)
                if args.hold_ms:
                    await asyncio.sleep(args.hold_ms / 1000)  # the connection's lifetime
                await lease.release()
                counts[i] += 1

        await asyncio.gather(*(one(i) for i in range(args.loops)))
    print(json.dumps({"acquisitions": sum(counts)}), flush=True)


def contended(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Run ``args.workers`` worker processes together; return throughput and fairness."""
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    command = [sys.executable, __file__, "--worker", "--redis-url", url]
    command += ["--namespace", namespace, "--limit", str(args.limit), "--loops", str(args.loops)]
    command += ["--duration", str(args.duration), "--hold-ms", str(args.hold_ms)]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(args.workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise SystemExit("a worker failed to start")
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=args.duration + 60)[0] for proc in procs]
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    counts = [json.loads(out.strip().splitlines()[-1])["acquisitions"] for out in outputs]
    return {"per_s": sum(counts) / elapsed, "min": min(counts), "max": max(counts)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter run")
    parser.add_argument("--pairs", type=int, default=5000, help="acquire+release samples")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--loops", type=int, default=2, help="concurrent loops per worker")
    parser.add_argument("--limit", type=int, default=4, help="the shared per-host limit")
    parser.add_argument("--hold-ms", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.duration = min(args.pairs, 1000), min(args.duration, 2.0)
    return args


def report(args: argparse.Namespace, url: str) -> None:
    """Run both measurements against ``url`` and print them."""
    trips = asyncio.run(round_trips(url, args.pairs))
    fleet = contended(args, url)
    if args.json:
        print(json.dumps({"round_trip_us": trips, "contended": fleet, "args": vars(args)}))
        return
    print(f"lease round trip, {args.pairs} samples (one process, limit never reached):")
    for name, (median, p99) in trips.items():
        print(f"  {name:<16} median {median:7.0f} us   p99 {p99:7.0f} us")
    print(
        f"contended: {args.workers} workers x {args.loops} loops, one host, shared limit "
        f"{args.limit}, hold {args.hold_ms:g} ms, {args.duration:g} s:"
    )
    print(
        f"  {fleet['per_s']:,.0f} acquisitions/s fleet-wide; per worker "
        f"min {fleet['min']} / max {fleet['max']}"
    )


def main() -> None:
    args = parse_args()
    if args.worker:
        asyncio.run(worker_main(args))
    elif args.redis_url:
        report(args, args.redis_url)
    else:
        with private_redis() as url:
            report(args, url)


if __name__ == "__main__":
    main()
