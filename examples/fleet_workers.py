"""Fleet limits: three workers share "at most 2 connections per host" through Redis.

    python examples/fleet_workers.py REDIS_URL URL

In production each worker is its own process or machine; here three clients in one
process show the same thing. Needs glasspool[redis].
"""

import asyncio
import sys

import glasspool


async def worker(name: str, redis_url: str, url: str) -> int:
    limits = glasspool.RedisLimits(redis_url, namespace="example", limit_per_host=2)
    async with glasspool.Client(shared_limits=limits) as client:
        for _ in range(5):
            await client.get(url)
        return sum(h.opened for h in client.pool.stats().hosts.values())


async def main(redis_url: str, url: str) -> None:
    opened = await asyncio.gather(*(worker(f"w{n}", redis_url, url) for n in range(3)))
    print(f"3 workers made 15 requests; connections opened per worker: {opened}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
