"""A fleet worker process for tests/test_fleet.py: one RedisLimits, driven from the test.

Run as ``python tests/fleet_worker.py MODE [options]``. Every mode talks only to 127.0.0.1
(the test's redis-server and the test's loopback server) and ends by itself after
``--max-seconds``, so an orphaned worker never lingers.

Modes:
    hammer  print ``READY``, wait for ``GO`` on stdin, then run ``--tasks`` loops per host:
            acquire a lease, open a TCP connection to the loopback server, say
            ``HELLO <host> <worker>``, hold it ``--hold-ms``, say ``BYE``, wait for the
            server's ``BYE``, close, release. Stops after ``--iterations`` per loop or
            ``--duration`` seconds; prints one JSON line ``{"counts": {host: n}}``.
    hold    acquire ``--count`` leases for the first host, print ``HELD <n>``, then hold
            them until stdin closes (or the process is killed).
    wait    print ``WAITING``, block in acquire() for the first host, print ``GRANTED``
            once a slot comes, then hold it until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from glasspool._fleet import RedisLease, RedisLimits
from glasspool._pool.key import PoolKey


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["hammer", "hold", "wait"])
    parser.add_argument("--redis", required=True, help="redis://127.0.0.1:PORT")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=5.0)
    parser.add_argument("--hosts", default="fleet.test", help="comma-separated host names")
    parser.add_argument("--port", type=int, default=0, help="the loopback server's port")
    parser.add_argument("--tasks", type=int, default=1, help="concurrent loops per host")
    parser.add_argument("--iterations", type=int, default=0, help="0: run for --duration")
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--hold-ms", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=1, help="leases taken by 'hold'")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    return parser.parse_args(argv)


async def open_stdin() -> asyncio.StreamReader:
    """Return an asyncio reader for stdin (a pipe from the test), without threads."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_line(stdin: asyncio.StreamReader, what: str) -> str:
    """Read one line from stdin."""
    line = await stdin.readline()
    if not line:
        raise SystemExit(f"stdin closed while waiting for {what}")
    return line.decode().strip()


async def wait_for_stdin_eof(stdin: asyncio.StreamReader) -> None:
    """Block until the test closes stdin."""
    await stdin.read()


async def visit(port: int, host: str, worker: str, hold_s: float) -> None:
    """Hold one loopback connection, announced as ``host``, for ``hold_s`` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"HELLO {host} {worker}\n".encode())
        await writer.drain()
        if await reader.readline() != b"OK\n":
            raise RuntimeError("loopback server did not acknowledge HELLO")
        await asyncio.sleep(hold_s)  # the "request": time spent holding the connection
        writer.write(b"BYE\n")
        await writer.drain()
        if await reader.readline() != b"BYE\n":
            raise RuntimeError("loopback server did not acknowledge BYE")
    finally:
        writer.close()
        await writer.wait_closed()


async def hammer_loop(
    limits: RedisLimits, args: argparse.Namespace, host: str, counts: dict[str, int]
) -> None:
    """Acquire, visit, release; until the iteration count or the duration is reached."""
    loop = asyncio.get_running_loop()
    key = PoolKey("http", host, 80)
    stop_at = loop.time() + args.duration
    worker = str(os.getpid())
    done = 0
    while (args.iterations and done < args.iterations) or (
        not args.iterations and loop.time() < stop_at
    ):
        lease = await limits.acquire(key, timeout=args.max_seconds)
        try:
            await visit(args.port, host, worker, args.hold_ms / 1000)
        finally:
            await lease.release()
        done += 1
        counts[host] += 1


async def hammer(limits: RedisLimits, args: argparse.Namespace) -> None:
    """Mode ``hammer`` (see the module docstring)."""
    stdin = await open_stdin()
    await limits.ping()
    print("READY", flush=True)
    if await read_line(stdin, "GO") != "GO":
        raise SystemExit("expected GO")
    hosts = args.hosts.split(",")
    counts = dict.fromkeys(hosts, 0)
    async with asyncio.TaskGroup() as group:
        for host in hosts:
            for _ in range(args.tasks):
                group.create_task(hammer_loop(limits, args, host, counts))
    print(json.dumps({"counts": counts}), flush=True)


async def hold(limits: RedisLimits, args: argparse.Namespace) -> None:
    """Mode ``hold`` (see the module docstring)."""
    key = PoolKey("http", args.hosts.split(",")[0], 80)
    stdin = await open_stdin()
    leases: list[RedisLease] = []
    for _ in range(args.count):
        leases.append(await limits.acquire(key, timeout=args.max_seconds))
    print(f"HELD {len(leases)}", flush=True)
    await wait_for_stdin_eof(stdin)


async def wait(limits: RedisLimits, args: argparse.Namespace) -> None:
    """Mode ``wait`` (see the module docstring)."""
    key = PoolKey("http", args.hosts.split(",")[0], 80)
    stdin = await open_stdin()
    await limits.ping()
    print("WAITING", flush=True)
    await limits.acquire(key, timeout=args.max_seconds)
    print("GRANTED", flush=True)
    await wait_for_stdin_eof(stdin)


async def main(argv: list[str]) -> None:
    """Run one mode against the Redis and loopback server named on the command line."""
    args = parse_args(argv)
    modes = {"hammer": hammer, "hold": hold, "wait": wait}
    limits = RedisLimits(
        args.redis, namespace=args.namespace, limit_per_host=args.limit, lease_ttl=args.ttl
    )
    async with limits:
        async with asyncio.timeout(args.max_seconds):
            await modes[args.mode](limits, args)


if __name__ == "__main__":
    from loops import run  # tests/loops.py: tests/ is sys.path[0] for a script

    try:
        run(main(sys.argv[1:]))  # on the tests' loop (GLASSPOOL_TEST_LOOP)
    except TimeoutError:
        print("worker ran out of --max-seconds", file=sys.stderr, flush=True)
        sys.exit(3)
