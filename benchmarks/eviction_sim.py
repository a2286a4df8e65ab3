"""Compare eviction policies of the pool's state machine in simulated time (no sockets).

Drives ``glasspool._pool.state.PoolState`` with workers that each pick a host at random,
take a connection (opening one costs ``--connect-ms``), hold it for ``--service-ms`` and
give it back, for ``--requests`` requests. Prints, per policy: connections opened per
1,000 requests, evictions, requests per simulated second, and the longest wait. A model of
aiohttp's connector (idle connections not counted against the limits) is printed beside it.

Policies are values of ``evict_grace``: ``0`` evicts another key's idle connection
whenever the global limit is full (glasspool 0.1), ``none`` only for a key that has no
connection, a number of seconds evicts an idle connection once it has idled that long.

    python benchmarks/eviction_sim.py
    python benchmarks/eviction_sim.py --limit 10 --per-host 3 --hosts 4 --workers 10
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from glasspool import PoolKey
from glasspool._pool.state import Close, PoolState, Waiter, WaiterState, Wake


@dataclass
class Result:
    opens: int
    evictions: int
    elapsed: float
    max_wait: float
    requests: int

    def row(self, name: str) -> str:
        per_k = 1000 * self.opens / self.requests
        rate = self.requests / self.elapsed if self.elapsed else float("inf")
        return (
            f"{name:>14} {per_k:>9.1f} {self.evictions:>9} {rate:>11.0f} "
            f"{self.max_wait * 1000:>11.1f}"
        )


class Sim:
    """A tiny discrete-event loop in simulated seconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), fn))

    def run(self) -> None:
        while self._events:
            self.now, _, fn = heapq.heappop(self._events)
            fn()


def weights_for(hosts: int, skew: bool) -> list[float]:
    return [1.0 / (i + 1) for i in range(hosts)] if skew else [1.0] * hosts


def simulate_glasspool(args: argparse.Namespace, grace: float | None, seed: int) -> Result:
    rng = random.Random(seed)
    sim = Sim()
    keys = [PoolKey("http", f"h{i}.test", 80) for i in range(args.hosts)]
    weights = weights_for(args.hosts, args.skew)
    state = PoolState(args.limit, args.per_host, None, 15.0, evict_grace=grace)

    conn_s, service_s = args.connect_ms / 1000, args.service_ms / 1000
    issued = done = opens = evictions = 0
    max_wait = last = 0.0
    timer_at: list[float] = []

    def run(actions: list[Wake | Close]) -> None:
        nonlocal evictions
        for action in actions:
            if isinstance(action, Close):
                evictions += action.reason == "evicted"
            else:
                start(action.waiter)
        arm()

    def arm() -> None:
        nxt = state.next_expiry()
        if nxt is not None and (not timer_at or nxt < timer_at[-1]):
            timer_at.append(nxt)
            sim.at(nxt, on_timer)

    def on_timer() -> None:
        run(state.expire(sim.now))

    def start(waiter: Waiter) -> None:
        nonlocal max_wait, opens
        max_wait = max(max_wait, sim.now - waiter.enqueued_at)
        if waiter.state is WaiterState.CONNECTING:
            opens += 1

            def connected() -> None:
                run(state.connected(waiter, sim.now))
                sim.at(sim.now + service_s, lambda: finish(waiter))

            sim.at(sim.now + conn_s, connected)
        else:
            sim.at(sim.now + service_s, lambda: finish(waiter))

    def finish(waiter: Waiter) -> None:
        nonlocal done, last
        done += 1
        last = sim.now
        run(state.release(waiter, sim.now))
        worker()

    def worker() -> None:
        nonlocal issued
        if issued >= args.requests:
            return
        issued += 1
        key = rng.choices(keys, weights)[0]
        waiter, actions = state.request(key, sim.now)
        run(actions)
        if waiter.state is not WaiterState.QUEUED:
            start(waiter)

    for _ in range(args.workers):
        sim.at(0.0, worker)
    sim.run()  # (runs on to the last keep-alive expiry; the run ended with its last request)
    return Result(opens, evictions, last, max_wait, done)


def simulate_aiohttp(args: argparse.Namespace, seed: int) -> Result:
    """aiohttp's TCPConnector: limits count connections in use; idle ones are extra."""
    rng = random.Random(seed)
    sim = Sim()
    weights = weights_for(args.hosts, args.skew)
    conn_s, service_s = args.connect_ms / 1000, args.service_ms / 1000
    acquired: defaultdict[int, int] = defaultdict(int)
    idle: defaultdict[int, int] = defaultdict(int)
    waiters: deque[tuple[int, float]] = deque()
    issued = done = opens = 0
    max_wait = 0.0
    total = 0

    def can(host: int) -> bool:
        return total < args.limit and (args.per_host is None or acquired[host] < args.per_host)

    def take(host: int, since: float) -> None:
        nonlocal total, opens, max_wait
        max_wait = max(max_wait, sim.now - since)
        total += 1
        acquired[host] += 1
        if idle[host]:
            idle[host] -= 1
            sim.at(sim.now + service_s, lambda: finish(host))
        else:
            opens += 1
            sim.at(sim.now + conn_s + service_s, lambda: finish(host))

    def finish(host: int) -> None:
        nonlocal total, done
        done += 1
        total -= 1
        acquired[host] -= 1
        idle[host] += 1
        for i, (h, since) in enumerate(waiters):
            if can(h):
                del waiters[i]
                take(h, since)
                break
        worker()

    def worker() -> None:
        nonlocal issued
        if issued >= args.requests:
            return
        issued += 1
        host = rng.choices(range(args.hosts), weights)[0]
        if can(host) and not waiters:
            take(host, sim.now)
        else:
            waiters.append((host, sim.now))

    for _ in range(args.workers):
        sim.at(0.0, worker)
    sim.run()
    return Result(opens, 0, sim.now, max_wait, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--per-host", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connect-ms", type=float, default=0.3)
    parser.add_argument("--service-ms", type=float, default=0.2)
    parser.add_argument("--skew", action="store_true", help="host i has weight 1/(i+1)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--policies", default="0,none,0.05,0.25,1", help="evict_grace values to compare"
    )
    args = parser.parse_args()
    print(
        f"limit={args.limit} per_host={args.per_host} hosts={args.hosts} "
        f"workers={args.workers} requests={args.requests} connect={args.connect_ms}ms "
        f"service={args.service_ms}ms {'skewed' if args.skew else 'uniform'}; "
        f"mean of {args.seeds} seeds"
    )
    head = ("policy", "opens/1k", "evictions", "req/s (sim)", "max wait ms")
    print(f"{head[0]:>14} {head[1]:>9} {head[2]:>9} {head[3]:>11} {head[4]:>11}")

    def mean(results: list[Result]) -> Result:
        n = len(results)
        return Result(
            round(sum(r.opens for r in results) / n),
            round(sum(r.evictions for r in results) / n),
            sum(r.elapsed for r in results) / n,
            max(r.max_wait for r in results),
            round(sum(r.requests for r in results) / n),
        )

    for policy in args.policies.split(","):
        grace = None if policy == "none" else float(policy)
        res = mean([simulate_glasspool(args, grace, s) for s in range(args.seeds)])
        print(res.row(f"grace={policy}"))
    print(mean([simulate_aiohttp(args, s) for s in range(args.seeds)]).row("aiohttp model"))


if __name__ == "__main__":
    main()
