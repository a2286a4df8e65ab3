"""A polite crawler: at most 2 connections per host and 8 overall, however many URLs.

    python examples/crawler.py URL [URL ...]

Prints one line per status code and the pool's connection counts per host.
"""

import asyncio
import sys
from collections import Counter

import glasspool


async def crawl(urls: list[str]) -> None:
    statuses: Counter[int] = Counter()
    async with glasspool.Client(limit=8, limit_per_host=2, timeout=10) as client:

        async def fetch(url: str) -> None:
            try:
                response = await client.get(url)
            except glasspool.GlasspoolError as exc:
                print(f"failed: {url}: {exc}", file=sys.stderr)
                return
            statuses[response.status] += 1

        # Start them all: the pool, not a semaphore, keeps each host at 2 connections.
        await asyncio.gather(*(fetch(url) for url in urls))
        for status, count in sorted(statuses.items()):
            print(f"{status}: {count}")
        for key, host in client.pool.stats().hosts.items():
            print(f"{key}: {host.opened} opened, {host.reused} reused")


if __name__ == "__main__":
    asyncio.run(crawl(sys.argv[1:]))
