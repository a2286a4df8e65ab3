"""Watch the pool: every event as it happens, and the stats table at the end.

    python examples/watch_pool.py URL

Sends 6 requests at once with limit_per_host=2: 4 of them wait for a connection.
"""

import asyncio
import sys
from collections import Counter

import glasspool


async def main(url: str) -> None:
    kinds: Counter[str] = Counter()

    def on_event(event: glasspool.PoolEvent) -> None:  # called synchronously, keep it quick
        kinds[f"{event.kind} ({event.reason})"] += 1

    async with glasspool.Client(limit_per_host=2) as client:
        client.pool.add_listener(on_event)
        await asyncio.gather(*(client.get(url) for _ in range(6)))
        for kind, count in sorted(kinds.items()):
            print(f"{count} x {kind}")
        print(client.pool.stats().table())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
