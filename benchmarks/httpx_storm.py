"""A cancellation storm under httpx: does any pool slot leak?

For httpx's default transport and for ``glasspool.httpx.AsyncTransport``, each with a limit
of 8 connections, ``--waves`` waves of ``--tasks`` requests go to a loopback server that
answers after a random 0-4 ms; every task is cancelled after a random 0 to
``--cancel-ms`` ms (default 30), so cancellations land while waiting for a slot,
connecting, sending and reading. After the storm, 8 requests at once must all get a
connection within 2 s: a leaked slot shows as a pool timeout. For glasspool the pool's
own counts are printed too (in use and waiting must be 0).

    .venv/bin/python benchmarks/httpx_storm.py
    .venv/bin/python benchmarks/httpx_storm.py --waves 50 --tasks 200

Nothing here talks to anything but 127.0.0.1. Never collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import httpx

from glasspool.httpx import AsyncTransport

LIMIT = 8
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    rng = random.Random()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            await asyncio.sleep(rng.uniform(0, 0.004))
            writer.write(OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _storm(
    name: str, transport: Any, url: str, waves: int, tasks: int, cancel_ms: float
) -> dict[str, Any]:
    rng = random.Random(1)
    cancelled = completed = failed = 0
    started = time.perf_counter()
    timeout = httpx.Timeout(5.0, pool=5.0)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        for _ in range(waves):
            jobs = [asyncio.create_task(client.get(url)) for _ in range(tasks)]
            loop = asyncio.get_running_loop()
            for job in jobs:
                loop.call_later(rng.uniform(0, cancel_ms / 1000), job.cancel)
            for outcome in await asyncio.gather(*jobs, return_exceptions=True):
                if isinstance(outcome, asyncio.CancelledError):
                    cancelled += 1
                elif isinstance(outcome, BaseException):
                    failed += 1
                else:
                    completed += 1
        storm_s = time.perf_counter() - started
        # Every slot must be free again: LIMIT requests at once, a short pool timeout.
        after = httpx.Timeout(5.0, pool=2.0)
        results = await asyncio.gather(
            *(client.get(url, timeout=after) for _ in range(LIMIT)), return_exceptions=True
        )
        ok_after = sum(1 for r in results if isinstance(r, httpx.Response))
        out = {
            "client": name,
            "completed": completed,
            "cancelled": cancelled,
            "failed": failed,
            "storm_s": round(storm_s, 2),
            "ok_after": f"{ok_after}/{LIMIT}",
        }
        if isinstance(transport, AsyncTransport):
            stats = transport.pool.stats()
            out.update(open=stats.open, in_use=stats.in_use, waiting=stats.waiting)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--cancel-ms", type=float, default=30.0, help="cancel within (ms)")
    args = parser.parse_args()
    if not (1 <= args.waves <= 1000 and 1 <= args.tasks <= 10_000):
        parser.error("--waves must be in [1, 1000] and --tasks in [1, 10000]")
    if not 0 < args.cancel_ms <= 1000:
        parser.error("--cancel-ms must be in (0, 1000]")
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        limits = httpx.Limits(max_connections=LIMIT, max_keepalive_connections=LIMIT)
        for name, transport in (
            ("httpx", httpx.AsyncHTTPTransport(limits=limits)),
            ("httpx-glasspool", AsyncTransport(limit=LIMIT, limit_per_host=LIMIT)),
        ):
            storm = _storm(name, transport, url, args.waves, args.tasks, args.cancel_ms)
            print(await asyncio.wait_for(storm, 120))
    finally:
        server.close()
        await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
