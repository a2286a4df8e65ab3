"""Storms: 1,200 requests over five hosts with random faults, cancellations and tight limits.

Everything random comes from one seeded ``random.Random``, so a failure names the seed and
the request number to replay. The storm is bounded: each request gets 10 s before it
counts as hung, the whole storm 60 s (it typically takes a few seconds).

Checked:

- the limits hold at every pool event, per key and globally, both in ``stats()`` and in a
  recount made from the events alone (``connecting`` opens a slot, ``closed`` frees it);
- no request hangs, and every request ends in a response, a glasspool error, or (only if
  it was cancelled) ``CancelledError``;
- every response that arrived is the one for its own request: the body carries the id in
  ``X-Request-Id``, and the server's record of that id has the request's own marker;
- at the end the pool is at rest, and after ``aclose()`` every connection is closed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

import glasspool
from glasspool import Client, PoolEvent, PoolKey, Timeout
from tests.faults import FaultServer
from tests.nginx import TLSCerts
from tests.test_cancellation import assert_at_rest

SEED = 20240607
REQUESTS = 1200
CONCURRENCY = 48
LIMIT, LIMIT_PER_HOST, LOCALHOST_LIMIT = 6, 3, 2
REQUEST_CAP_S = 10.0
STORM_CAP_S = 60.0

# (weight, fault path template); {size} is filled in per request
FAULTS: list[tuple[int, str]] = [
    (40, "ok?size={size}"),
    (8, "ok?size={size}&chunked=1"),
    (8, "delay?s=0.02"),
    (4, "reset"),
    (3, "reset?after=40"),
    (4, "half-close"),
    (4, "truncate?length=50&send=7"),
    (5, "connection-close"),
    (4, "http10"),
    (2, "http10?nolength=1"),
    (5, "close-after"),
    (5, "close-idle?s=0.01"),
    (3, "trickle?size=6&delay=0.01"),
    (2, "stall"),
]
NOT_OVER_TLS = ("reset", "half-close", "early-413")


class LimitWatch:
    """A pool listener that checks the limits at every event, two ways.

    ``stats()`` must show ``open <= limit`` and, for every key, ``open <= its limit``; and a
    recount from the events alone (a ``connecting`` event opens a slot, a ``closed`` event
    of a connection frees it) must agree with ``stats()`` and obey the same limits.
    Violations are collected (a listener that raises is only logged), never raised here.

    Args:
        client: the client to watch.
        limit_for: the per-key limit of a key.
    """

    def __init__(self, client: Client, limit_for: Callable[[PoolKey], int]) -> None:
        self.client = client
        self.limit_for = limit_for
        self.open: Counter[PoolKey] = Counter()
        self.events = 0
        self.peak = 0
        self.violations: list[str] = []
        self.closed_ids: set[int] = set()
        self.opened_ids: set[int] = set()
        client.pool.add_listener(self)

    def __call__(self, event: PoolEvent) -> None:
        """Update the recount from ``event`` and check every limit."""
        self.events += 1
        cid = event.connection_id
        if event.kind == "connecting" and cid is not None:
            self.opened_ids.add(cid)
            self.open[event.key] += 1
        elif event.kind == "closed" and cid is not None:
            if cid in self.closed_ids:
                self.violations.append(f"connection {cid} closed twice")
            self.closed_ids.add(cid)
            self.open[event.key] -= 1
        elif event.kind == "acquired" and cid in self.closed_ids:
            self.violations.append(f"connection {cid} acquired after it closed")
        self._check(event)

    def _check(self, event: PoolEvent) -> None:
        s = self.client.pool.stats()
        total = sum(self.open.values())
        self.peak = max(self.peak, total)
        if not (s.open == total <= s.limit):
            self.violations.append(
                f"{event}: stats open {s.open}, recount {total}, limit {s.limit}"
            )
        for key, h in s.hosts.items():
            mine, limit = self.open[key], self.limit_for(key)
            if not (h.open == mine <= limit):
                self.violations.append(f"{event}: {key} open {h.open}, recount {mine} > {limit}")


@dataclass(frozen=True, slots=True)
class Planned:
    """One request of the storm, drawn from the seeded random."""

    number: int
    server: int
    path: str
    method: str
    streamed: str  # "no", "read" (read to the end) or "drop" (close after one chunk)
    cancel_after: float | None
    timeout: Timeout


def draw(rng: random.Random, number: int, servers: int) -> Planned:
    """Draw request ``number``: a server, a fault, a method, and maybe a cancellation.

    The last server speaks TLS, where the FaultServer cannot half-close or reset.
    """
    server = rng.randrange(servers)
    tls = server == servers - 1
    faults = [(w, f) for w, f in FAULTS if not (tls and f.startswith(NOT_OVER_TLS))]
    (template,) = rng.choices([f for _, f in faults], [w for w, _ in faults])
    fault = template.format(size=rng.choice([0, 10, 1000, 20000, 70000]))
    method = "GET"
    if rng.random() < 0.15:
        method, fault = "POST", rng.choice([fault, "ok" if tls else "early-413?linger=1"])
    sep = "&" if "?" in fault else "?"
    streamed = rng.choices(["no", "read", "drop"], [70, 20, 10])[0]
    cancel_after = rng.uniform(0, 0.05) if rng.random() < 0.12 else None
    timeout = Timeout(connect=2, read=0.3, write=2, pool=rng.choice([None, None, 0.05, 0.5]))
    if rng.random() < 0.05:
        timeout = Timeout(connect=2, read=0.3, write=2, total=rng.uniform(0.005, 0.05))
    path = f"/fault/{fault}{sep}rq={number}"
    return Planned(number, server, path, method, streamed, cancel_after, timeout)


@dataclass
class Outcome:
    """How one request ended: ``"ok"``, an exception class name, or ``"cancelled"``."""

    planned: Planned
    result: str
    status: int | None = None
    body_ok: bool | None = None
    detail: str = ""


class Storm:
    """Runs the planned requests against the servers with one client; records outcomes."""

    def __init__(self, client: Client, servers: list[FaultServer], urls: list[str]) -> None:
        self.client = client
        self.servers = servers
        self.urls = urls
        self.outcomes: list[Outcome] = []

    async def run(self, plan: list[Planned]) -> None:
        """Run ``plan`` with ``CONCURRENCY`` requests in flight at a time."""
        queue = iter(plan)
        async with asyncio.timeout(STORM_CAP_S), asyncio.TaskGroup() as tg:
            for _ in range(CONCURRENCY):
                tg.create_task(self._worker(queue))

    async def _worker(self, queue: Iterator[Planned]) -> None:
        for planned in queue:  # the workers share one iterator
            self.outcomes.append(await self._one(planned))

    async def _one(self, p: Planned) -> Outcome:
        task = asyncio.create_task(self._send(p))
        if p.cancel_after is not None:
            asyncio.get_running_loop().call_later(p.cancel_after, task.cancel)
        try:
            async with asyncio.timeout(REQUEST_CAP_S):
                return await asyncio.shield(task)
        except asyncio.CancelledError:
            if p.cancel_after is None:
                return Outcome(p, "unexpected CancelledError")
            return Outcome(p, "cancelled")
        except TimeoutError as exc:
            if not isinstance(exc, glasspool.GlasspoolError):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return Outcome(p, "hung", detail=repr(task))
            return Outcome(p, type(exc).__name__, detail=str(exc))
        except glasspool.GlasspoolError as exc:
            return Outcome(p, type(exc).__name__, detail=str(exc))
        except Exception as exc:  # anything else is a bug; reported by the test
            return Outcome(p, f"unexpected {type(exc).__name__}", detail=repr(exc))

    async def _send(self, p: Planned) -> Outcome:
        url = self.urls[p.server] + p.path
        content = bytes(30000) if p.method == "POST" else None
        if p.streamed == "no":
            r = await self.client.request(p.method, url, content=content, timeout=p.timeout)
            return self._check(p, r, r.content)
        async with self.client.stream(p.method, url, content=content, timeout=p.timeout) as r:
            if p.streamed == "drop":
                async for _ in r.aiter_raw():
                    break
                return Outcome(p, "dropped", r.status)
            return self._check(p, r, await r.read())

    def _check(self, p: Planned, r: glasspool.Response, body: bytes) -> Outcome:
        """The response must be this request's: its id in the body and in the server log."""
        rid = int(r.headers["x-request-id"])
        server = self.servers[p.server]
        recorded = next((q for q in server.requests if q.request_id == rid), None)
        mine = recorded is not None and recorded.target.endswith(f"rq={p.number}")
        expect = f"id={rid}".encode()
        body_ok = mine and body.startswith(expect) and body.strip(b".") == expect
        return Outcome(p, "ok", r.status, body_ok, detail=f"{body[:40]!r} for {recorded}")


@pytest.fixture
async def servers(tls_certs: TLSCerts) -> AsyncIterator[list[FaultServer]]:
    """Five fault servers: three on 127.0.0.1, one on ::1, one over TLS."""
    async with AsyncExitStack() as stack:
        hosts = ["127.0.0.1", "127.0.0.1", "127.0.0.1", "::1"]
        found = [await stack.enter_async_context(FaultServer(host=h)) for h in hosts]
        tls = FaultServer(ssl=tls_certs.server_context())
        found.append(await stack.enter_async_context(tls))
        yield found


@pytest.mark.parametrize(("limit", "per_host"), [(LIMIT, LIMIT_PER_HOST), (2, 1)])
async def test_storm_holds_limits_never_hangs_and_matches_every_body(
    servers: list[FaultServer], tls_certs: TLSCerts, limit: int, per_host: int
) -> None:
    # server 2 is addressed as "localhost": a name to resolve, with its own lower limit
    urls = [s.url("") for s in servers]
    urls[2] = servers[2].url("", host="localhost")
    local = min(LOCALHOST_LIMIT, per_host)
    rng = random.Random(SEED)
    plan = [draw(rng, n, len(servers)) for n in range(REQUESTS)]
    client = Client(
        limit=limit,
        limit_per_host=per_host,
        host_limits={"localhost": local},
        verify=str(tls_certs.ca_file),
    )
    async with client:
        watch = LimitWatch(client, lambda k: local if k.host == "localhost" else per_host)
        storm = Storm(client, servers, urls)
        await storm.run(plan)
        assert_at_rest(client)
    assert client.pool.stats().open == 0
    for server in servers:
        await server.wait_open(0)
    check_outcomes(storm.outcomes, watch, limit)


def check_outcomes(outcomes: list[Outcome], watch: LimitWatch, limit: int) -> None:
    """Every request ended in an expected way, every body was right, limits held."""
    where = f"(seed {SEED})"
    assert len(outcomes) == REQUESTS
    bad = [o for o in outcomes if o.result.startswith(("unexpected", "hung"))]
    assert not bad, f"{where} {len(bad)} requests ended wrongly, e.g. {bad[:3]}"
    wrong = [o for o in outcomes if o.result == "ok" and not o.body_ok]
    assert not wrong, f"{where} responses with another request's body: {wrong[:3]}"
    assert not watch.violations, f"{where} limits broken: {watch.violations[:5]}"
    assert watch.peak <= limit
    assert watch.opened_ids == watch.closed_ids, "connections left open after aclose()"
    results = Counter(o.result for o in outcomes)
    # the storm exercised what it meant to: successes, cancellations and several errors
    assert results["ok"] > REQUESTS // 3, results
    assert results["cancelled"] > 0 and results["ReadTimeout"] > 0, results
    assert {"ServerDisconnected", "IncompleteBody"} <= set(results), results
