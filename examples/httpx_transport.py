"""httpx on glasspool's pool: one argument changes, the pool becomes visible.

    python examples/httpx_transport.py URL

Needs glasspool[httpx].
"""

import asyncio
import sys

import httpx

import glasspool.httpx


async def main(url: str) -> None:
    transport = glasspool.httpx.AsyncTransport(limit=25, limit_per_host=5)
    async with httpx.AsyncClient(transport=transport) as client:
        responses = await asyncio.gather(*(client.get(url) for _ in range(10)))
        print(f"{len(responses)} responses, statuses {sorted({r.status_code for r in responses})}")
        print(transport.pool.stats().table())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
