"""Pool bookkeeping speed: acquire+release pairs per second, with and without a queue.

Run: .venv/bin/python benchmarks/pool_ops.py [--quick]

Scenarios, each through the sans-IO ``PoolState`` and through the asyncio ``Pool`` (with a
fake connection factory, so only bookkeeping is measured):

- 1 key, no queue: the fast path (an idle connection of the key exists);
- W waiters over K keys: every key is at its per-host limit of 1 and has W/K waiters, and
  each release hands the connection to the key's oldest waiter, which releases it in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from glasspool import Pool, PoolKey
from glasspool._pool.state import PoolState, Waiter, Wake


class _Conn:
    keepalive_hint_s = None
    on_lost: Callable[[], None] | None = None

    def close(self) -> None:
        pass

    def is_closed(self) -> bool:
        return False


async def _factory(key: PoolKey, connect_timeout: float | None) -> _Conn:
    return _Conn()


def keys(n: int) -> list[PoolKey]:
    return [PoolKey("http", f"h{i}.test", 80) for i in range(n)]


def state_one_key(pairs: int) -> float:
    pool = PoolState(limit=10)
    key = keys(1)[0]
    w, _ = pool.request(key, 0.0)
    pool.connected(w, 0.0)
    pool.release(w, 0.0)
    start = time.perf_counter()
    for _ in range(pairs):
        w, _ = pool.request(key, 1.0)
        pool.release(w, 1.0)
    return (time.perf_counter() - start) / pairs


def state_queued(waiters: int, nkeys: int, pairs: int) -> float:
    ks = keys(nkeys)
    pool = PoolState(limit=nkeys, limit_per_host=1)
    holders: list[Waiter] = []
    for k in ks:
        w, _ = pool.request(k, 0.0)
        pool.connected(w, 0.0)
        holders.append(w)
    for i in range(waiters):
        pool.request(ks[i % nkeys], 0.0)
    start = time.perf_counter()
    for i in range(pairs):
        j = i % nkeys
        actions = pool.release(holders[j], 1.0)
        wake = actions[0]
        assert isinstance(wake, Wake)
        holders[j] = wake.waiter
        pool.request(ks[j], 1.0)  # keep the queue at the same length
    elapsed = time.perf_counter() - start
    assert pool.waiting == waiters
    return elapsed / pairs


async def asyncio_one_key(pairs: int) -> float:
    pool = Pool(_factory, limit=10)
    key = keys(1)[0]
    pool.release(await pool.acquire(key))
    start = time.perf_counter()
    for _ in range(pairs):
        pool.release(await pool.acquire(key))
    elapsed = time.perf_counter() - start
    await pool.aclose()
    return elapsed / pairs


async def asyncio_queued(waiters: int, nkeys: int, rounds: int) -> float:
    ks = keys(nkeys)
    pool = Pool(_factory, limit=nkeys, limit_per_host=1)
    done = 0
    go = asyncio.Event()

    async def worker(key: PoolKey) -> None:
        nonlocal done
        for _ in range(rounds):
            lease = await pool.acquire(key)
            if not go.is_set():
                await go.wait()  # the first holders wait until every task has queued
            pool.release(lease)  # hands the connection to the key's next waiter
            done += 1

    tasks = [asyncio.create_task(worker(ks[i % nkeys])) for i in range(waiters + nkeys)]
    for _ in range(3):
        await asyncio.sleep(0)  # let every task queue up
    queued = pool.stats().waiting
    go.set()
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await pool.aclose()
    assert queued >= waiters * 0.9, (queued, waiters)
    return elapsed / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n = 20_000 if args.quick else 200_000
    rows: list[tuple[str, float]] = []
    rows.append(("state.py     1 key, idle reuse", state_one_key(n)))
    rows.append(("asyncio Pool 1 key, idle reuse", asyncio.run(asyncio_one_key(n))))
    for waiters, nkeys in ((10_000, 1_000), (100_000, 10_000)):
        label = f"{waiters // 1000}k waiters / {nkeys // 1000}k keys"
        rows.append((f"state.py     {label}", state_queued(waiters, nkeys, n)))
        rounds = 2 if args.quick else 4
        rows.append((f"asyncio Pool {label}", asyncio.run(asyncio_queued(waiters, nkeys, rounds))))
    print(f"{'scenario':<44} {'us/pair':>8} {'pairs/s':>12}")
    for label, per in rows:
        print(f"{label:<44} {per * 1e6:>8.2f} {1 / per:>12,.0f}")


if __name__ == "__main__":
    main()
