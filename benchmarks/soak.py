"""Soak: a mixed workload with faults for a set time; do memory, descriptors and limits hold?

Run by hand for ten minutes (the default) or shorter::

    .venv/bin/python benchmarks/soak.py                 # 600 s
    .venv/bin/python benchmarks/soak.py --seconds 30 --json

It starts its own loopback servers in this process (``tests/faults.py``: two plain on
127.0.0.1, one on ::1, one over TLS with a throwaway trustme CA) and one
``glasspool.Client`` with tight limits and a short keep-alive. ``--concurrency`` workers
send requests drawn from a seeded random: mostly plain GETs of varied sizes, streamed and
dropped bodies, uploads, and a share of server faults (resets, half-closes, truncated
bodies, early 413s, stalls, idle closes) and client-side cancellations and timeouts.

A pool listener checks the limits at every event (``stats()`` and a recount from the
events). The report gives requests, outcomes by class, bodies that did not match their
request (must be 0), limit violations (must be 0), and RSS and open file descriptors at
the start of the load, at its end and after ``aclose()``. RSS includes the servers, which
run in this process. The exit status is 1 if anything that must be 0 was not.

Nothing here is collected by pytest; ``tests/test_soak.py`` runs a 30-second version.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.faults

from tests.faults import FaultServer
from tests.nginx import TLSCerts

import glasspool
from glasspool import Client, PoolEvent, PoolKey, Timeout

LIMIT, LIMIT_PER_HOST = 8, 4
KEEPALIVE_S = 2.0
TIMEOUT = Timeout(connect=2, read=1, write=2, pool=2)
REQUEST_CAP_S = 15.0  # a request taking longer than this counts as hung
UPLOAD = bytes(20_000)

# (weight, fault path); {size} is filled in per request. The last group is not for TLS.
MIX: list[tuple[int, str]] = [
    (60, "ok?size={size}"),
    (10, "ok?size={size}&chunked=1"),
    (4, "delay?s=0.05"),
    (3, "close-idle?s=0.2"),
    (3, "close-after"),
    (3, "connection-close"),
    (2, "http10"),
    (2, "truncate?length=100&send=10"),
    (2, "trickle?size=8&delay=0.01"),
    (1, "stall"),
    (2, "reset"),
    (2, "half-close"),
]
NOT_OVER_TLS = ("reset", "half-close", "early-413")
SIZES = [0, 100, 4096, 65536, 300_000]


@dataclass
class Report:
    """What the soak measured; ``failures()`` lists what must not happen."""

    seconds: float = 0.0
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    wrong_bodies: int = 0
    limit_violations: list[str] = field(default_factory=list)
    peak_open: int = 0
    limit: int = LIMIT
    events: int = 0
    connections_opened: int = 0
    rss_kib: dict[str, int] = field(default_factory=dict)
    py_blocks: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)

    def sample(self, when: str) -> None:
        """Record RSS, Python heap blocks and open descriptors under ``when``."""
        gc.collect()
        self.rss_kib[when] = rss_kib()
        self.py_blocks[when] = sys.getallocatedblocks()
        self.fds[when] = open_fds()

    def failures(self) -> list[str]:
        """Everything that must be zero and was not."""
        found = [
            f"{n} {k}" for k, n in self.outcomes.items() if k.startswith(("unexpected", "hung"))
        ]
        if self.wrong_bodies:
            found.append(f"{self.wrong_bodies} responses carried another request's body")
        if self.limit_violations:
            found.append(f"limits broken: {self.limit_violations[:3]}")
        if self.peak_open > self.limit:
            found.append(f"peak open {self.peak_open} > limit {self.limit}")
        return found


def rss_kib() -> int:
    """This process's resident set size in KiB (``VmRSS``), or -1 where /proc lacks it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def open_fds() -> int:
    """How many file descriptors this process has open (-1 without /proc)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return -1


class LimitWatch:
    """Checks the limits at every pool event: ``stats()`` and a recount from the events."""

    def __init__(self, client: Client, report: Report) -> None:
        self.client = client
        self.report = report
        self.open: Counter[PoolKey] = Counter()
        client.pool.add_listener(self)

    def __call__(self, event: PoolEvent) -> None:
        """Count the event, update the recount, check every limit."""
        r = self.report
        r.events += 1
        if event.kind == "connecting":
            self.open[event.key] += 1
            r.connections_opened += 1
        elif event.kind == "closed" and event.connection_id is not None:
            self.open[event.key] -= 1
        total = sum(self.open.values())
        r.peak_open = max(r.peak_open, total)
        s = self.client.pool.stats()
        if not (s.open == total <= s.limit):
            r.limit_violations.append(f"{event}: open {s.open}, recount {total}")
        for key, h in s.hosts.items():
            if not (h.open == self.open[key] <= LIMIT_PER_HOST):
                r.limit_violations.append(f"{event}: {key} open {h.open}")
        del r.limit_violations[20:]  # the first few tell the story


@dataclass(frozen=True, slots=True)
class Job:
    """One request: which server, which path, how it is sent and whether it is cancelled."""

    server: int
    path: str
    method: str
    mode: str  # "get", "stream" (read all), "drop" (close after the first chunk)
    cancel_after: float | None


def draw(rng: random.Random, number: int, servers: int) -> Job:
    """Draw one request from the mix (the last server speaks TLS)."""
    server = rng.randrange(servers)
    tls = server == servers - 1
    mix = [(w, f) for w, f in MIX if not (tls and f.startswith(NOT_OVER_TLS))]
    (fault,) = rng.choices([f for _, f in mix], [w for w, _ in mix])
    fault = fault.format(size=rng.choice(SIZES))
    method = "GET"
    if rng.random() < 0.1:
        method = "POST"
        fault = "ok" if tls or rng.random() < 0.7 else "early-413?linger=1"
    mode = rng.choices(["get", "stream", "drop"], [75, 15, 10])[0]
    cancel_after = rng.uniform(0, 0.02) if rng.random() < 0.05 else None
    sep = "&" if "?" in fault else "?"
    return Job(server, f"/fault/{fault}{sep}rq={number}", method, mode, cancel_after)


class Soak:
    """The workers: send jobs until the deadline, record each outcome in the report."""

    def __init__(self, client: Client, servers: list[FaultServer], report: Report) -> None:
        self.client = client
        self.servers = servers
        self.urls = [s.url("") for s in servers]
        self.report = report

    async def run(self, seconds: float, concurrency: int, seed: int) -> None:
        """Run ``concurrency`` workers for ``seconds``."""
        deadline = time.monotonic() + seconds
        rngs = [random.Random(seed * 1000 + i) for i in range(concurrency)]
        async with asyncio.TaskGroup() as tg:
            for rng in rngs:
                tg.create_task(self._worker(rng, deadline))

    async def _worker(self, rng: random.Random, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.report.requests += 1
            job = draw(rng, self.report.requests, len(self.servers))
            self.report.outcomes[await self._one(job)] += 1

    async def _one(self, job: Job) -> str:
        task = asyncio.create_task(self._send(job))
        if job.cancel_after is not None:
            asyncio.get_running_loop().call_later(job.cancel_after, task.cancel)
        try:
            async with asyncio.timeout(REQUEST_CAP_S):
                return await asyncio.shield(task)
        except asyncio.CancelledError:
            return "cancelled" if job.cancel_after is not None else "unexpected CancelledError"
        except glasspool.GlasspoolError as exc:
            return type(exc).__name__
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return "hung"
        except Exception as exc:  # anything else is a bug: counted, reported, exit 1
            return f"unexpected {type(exc).__name__}: {exc}"[:200]

    async def _send(self, job: Job) -> str:
        url = self.urls[job.server] + job.path
        content = UPLOAD if job.method == "POST" else None
        if job.mode == "get":
            r = await self.client.request(job.method, url, content=content)
            return self._check(job, r, r.content)
        async with self.client.stream(job.method, url, content=content) as r:
            if job.mode == "drop":
                async for _ in r.aiter_raw():
                    break
                return "dropped"
            return self._check(job, r, await r.read())

    def _check(self, job: Job, r: glasspool.Response, body: bytes) -> str:
        rid = int(r.headers["x-request-id"])
        records = self.servers[job.server].requests
        recorded = next((q for q in reversed(records) if q.request_id == rid), None)
        if len(records) > 1000:  # the server keeps every request (uploads too): trim
            del records[:-200]
        counts = self.servers[job.server].requests_per_connection
        if len(counts) > 1000:  # and a count for every connection it ever accepted
            for old in list(counts)[:-200]:
                del counts[old]
        expect = f"id={rid}".encode()
        mine = recorded is not None and recorded.target == job.path
        if not (mine and body.rstrip(b".") == expect):
            self.report.wrong_bodies += 1
        return f"status {r.status}"


@asynccontextmanager
async def servers(directory: Path) -> AsyncIterator[tuple[list[FaultServer], Path]]:
    """Two plain servers on 127.0.0.1, one on ::1 and one over TLS (the last); the CA file."""
    certs = TLSCerts.create(directory)
    async with AsyncExitStack() as stack:
        found = [
            await stack.enter_async_context(FaultServer(host=h))
            for h in ("127.0.0.1", "127.0.0.1", "::1")
        ]
        found.append(await stack.enter_async_context(FaultServer(ssl=certs.server_context())))
        yield found, certs.ca_file


async def sample_every(report: Report, period: float, started: float) -> None:
    """Sample RSS, heap and descriptors every ``period`` seconds while the load runs.

    The first sample is kept as ``after_first_slice``, the latest as ``last_slice``.
    """
    n = 0
    while True:
        await asyncio.sleep(period)  # a sampling clock, not a synchronisation
        n += 1
        report.sample("after_first_slice" if n == 1 else "last_slice")
        rss = report.rss_kib["after_first_slice" if n == 1 else "last_slice"]
        report.rss_kib["max"] = max(report.rss_kib.get("max", 0), rss)
        print(
            f"soak: {time.monotonic() - started:.0f}s {report.requests} requests, "
            f"rss {rss} KiB, python blocks {sys.getallocatedblocks()}, fds {open_fds()}",
            file=sys.stderr,
            flush=True,
        )


async def run_sampled(runner: Soak, seconds: float, concurrency: int, seed: int) -> None:
    """Run the load for ``seconds`` with a sampler every 10 s (or a third of a short run)."""
    period = min(10.0, seconds / 3)
    sampler = asyncio.create_task(sample_every(runner.report, period, time.monotonic()))
    try:
        await runner.run(seconds, concurrency, seed)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)


async def soak(seconds: float, concurrency: int, seed: int) -> Report:
    """Run the soak and return its report."""
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        async with servers(Path(tmp)) as (found, ca_file):
            client = Client(
                limit=LIMIT,
                limit_per_host=LIMIT_PER_HOST,
                keepalive_expiry=KEEPALIVE_S,
                timeout=TIMEOUT,
                verify=str(ca_file),
            )
            LimitWatch(client, report)
            report.sample("start")
            started = time.monotonic()
            async with client:
                await run_sampled(Soak(client, found, report), seconds, concurrency, seed)
                report.sample("end")
            report.seconds = round(time.monotonic() - started, 1)
            for server in found:
                await server.wait_open(0, timeout=REQUEST_CAP_S)
            report.sample("after_close")
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the soak, print the report; 1 if anything must-be-zero was not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long (default 600)")
    parser.add_argument("--concurrency", type=int, default=32, help="workers (default 32)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args.seconds, args.concurrency, args.seed))
    data: dict[str, Any] = asdict(report)
    data["outcomes"] = dict(report.outcomes.most_common())
    data["failures"] = report.failures()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print_report(data)
    return 1 if data["failures"] else 0


def print_report(data: dict[str, Any]) -> None:
    """Print the report as a few readable lines."""
    print(
        f"soak: {data['seconds']} s, {data['requests']} requests, "
        f"{data['connections_opened']} connections opened, {data['events']} pool events"
    )
    for name, count in data["outcomes"].items():
        print(f"  {count:8d}  {name}")
    print(
        f"  wrong bodies {data['wrong_bodies']}, limit violations "
        f"{len(data['limit_violations'])}, peak open {data['peak_open']}/{data['limit']}"
    )
    print(f"  RSS KiB {data['rss_kib']}")
    print(f"  Python heap blocks {data['py_blocks']}")
    print(f"  open fds {data['fds']}")
    print("  FAILURES: " + "; ".join(data["failures"]) if data["failures"] else "  ok")


if __name__ == "__main__":
    sys.exit(main())
