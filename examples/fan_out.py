"""API fan-out: 100 calls to one API at once, with a bounded pool and retries.

    python examples/fan_out.py URL

Each call is GET URL?item=<n>; 429/503 answers are retried with backoff.
"""

import asyncio
import sys

import glasspool


async def main(url: str) -> None:
    retry = glasspool.Retry(total=3, backoff=0.1)
    async with glasspool.Client(limit_per_host=10, retry=retry) as client:
        calls = (client.get(url, params={"item": n}) for n in range(100))
        responses = await asyncio.gather(*calls)
        ok = sum(r.is_success for r in responses)
        opened = sum(h.opened for h in client.pool.stats().hosts.values())
        print(f"{ok} of {len(responses)} calls succeeded over {opened} connections")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
