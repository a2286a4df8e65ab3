"""``glasspool demo --compare-aiohttp``: the demo's steps through aiohttp, whose counters are
private, printed beside glasspool's public ``stats()`` from the demo run.

The aiohttp side reads ``TCPConnector._acquired``, ``_acquired_per_host``,
``_available_connections(key)`` and ``_waiters``: private attributes that may change in any
aiohttp release. That is the point of the comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ._demo import LIMIT, LIMIT_PER_HOST, STEP_TIMEOUT_S, STEPS, DemoError, Snapshot
from ._server import DemoServer, loopback_hosts
from ._text import Printer

__all__ = ["AioSnapshot", "aiohttp_missing", "print_comparison", "run_aiohttp"]

POLL_ITERATIONS: Final = 10_000


def aiohttp_missing() -> str | None:
    """``None`` when aiohttp imports, else a message saying how to install it."""
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        return (
            f"--compare-aiohttp needs aiohttp, which does not import here ({exc}); "
            "install it with: pip install aiohttp"
        )
    return None


@dataclass(frozen=True, slots=True)
class AioSnapshot:
    """aiohttp's private counters after one step (hosts named ``A``/``B``)."""

    label: str
    acquired: int
    per_host: dict[str, int]
    available: dict[str, int]
    waiters: int


@dataclass(slots=True)
class _AioRun:
    session: Any
    connector: Any
    a: DemoServer
    b: DemoServer
    concurrent: int
    keep: list[Any] = field(default_factory=list)  # responses, never read (as in the question)
    held: list[asyncio.Task[Any]] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)

    def name(self, key: Any) -> str:
        """``A`` / ``B`` for the two servers' aiohttp connection keys."""
        for label, server in (("A", self.a), ("B", self.b)):
            if key.host == server.host and key.port == server.port:
                return label
        return f"{key.host}:{key.port}"

    def snapshot(self, label: str) -> AioSnapshot:
        """Read the connector's private counters now (every key seen so far)."""
        c = self.connector
        for key in [*c._conns, *c._acquired_per_host]:
            self.keys.setdefault(self.name(key), key)
        return AioSnapshot(
            label=label,
            acquired=len(c._acquired),
            per_host={self.name(k): len(v) for k, v in c._acquired_per_host.items()},
            available={n: c._available_connections(k) for n, k in sorted(self.keys.items())},
            waiters=sum(len(w) for w in c._waiters.values()),
        )


async def _get(run: _AioRun, server: DemoServer, path: str) -> None:
    run.keep.append(await run.session.get(server.url(path)))


async def _until_waiters(run: _AioRun, count: int) -> None:
    """Poll aiohttp's private ``_waiters`` (it has no event to await), bounded."""
    for _ in range(POLL_ITERATIONS):
        if sum(len(w) for w in run.connector._waiters.values()) >= count:
            return
        await asyncio.sleep(0)
    raise DemoError(f"demo: aiohttp never queued {count} requests")


async def _hold_many(run: _AioRun) -> None:
    key = next(iter(k for n, k in run.keys.items() if n == "A"))
    reach = min(run.concurrent, run.connector._available_connections(key))
    url = run.a.url("/hold")
    run.held = [asyncio.create_task(run.session.get(url)) for _ in range(run.concurrent)]
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await run.a.wait_held(reach)
    await _until_waiters(run, run.concurrent - reach)


async def _release_held(run: _AioRun) -> None:
    run.a.release_held()
    run.keep.extend(await asyncio.gather(*run.held))


async def _close_stream(run: _AioRun) -> None:
    run.keep[2].close()


async def _close(run: _AioRun) -> None:
    await run.session.close()


_ACTIONS: Final[dict[str, Callable[[_AioRun], Awaitable[None]]]] = {
    "1": lambda run: _get(run, run.a, "/hello"),
    "2": lambda run: _get(run, run.a, "/hello"),
    "3": lambda run: _get(run, run.a, "/stream"),
    "4": lambda run: _get(run, run.b, "/hello"),
    "5": _hold_many,
    "6": _release_held,
    "7": _close_stream,
    "8": _close,
}


async def run_aiohttp(concurrent: int) -> list[AioSnapshot]:
    """Replay the demo's steps with ``aiohttp.TCPConnector(limit=25, limit_per_host=5)``.

    Args:
        concurrent: how many ``/hold`` requests step 5 starts (as the glasspool run did).

    Returns:
        aiohttp's private counters after each step.

    Raises:
        DemoError: a step did not complete in time.
    """
    import aiohttp

    host_a, host_b = loopback_hosts()
    async with DemoServer(host_a) as a, DemoServer(host_b) as b:
        connector = aiohttp.TCPConnector(limit=LIMIT, limit_per_host=LIMIT_PER_HOST)
        session = aiohttp.ClientSession(connector=connector)
        run = _AioRun(session, connector, a, b, concurrent)
        snapshots = []
        try:
            for step in STEPS:
                await _ACTIONS[step.label](run)
                snapshots.append(run.snapshot(step.label))
        finally:
            for task in run.held:
                task.cancel()
            await asyncio.gather(*run.held, return_exceptions=True)
            for response in run.keep:
                response.close()
            await session.close()
    return snapshots


def _glass_line(snapshot: Snapshot, names: dict[tuple[str, int], str]) -> str:
    s = snapshot.stats
    hosts = " ".join(
        f"{names.get((k.host, k.port), str(k))}(in use {h.in_use}, idle {h.idle}, "
        f"available {h.available})"
        for k, h in s.hosts.items()
    )
    return f"in_use={s.in_use} idle={s.idle} waiting={s.waiting} hosts: {hosts or 'none'}"


def _aio_line(snap: AioSnapshot) -> str:
    per_host = ", ".join(f"{k}: {v}" for k, v in snap.per_host.items())
    available = " ".join(f"{k}={v}" for k, v in snap.available.items()) or "(no key yet)"
    return (
        f"len(_acquired)={snap.acquired} _acquired_per_host={{{per_host}}} "
        f"_available_connections: {available} waiters={snap.waiters}"
    )


def print_comparison(
    printer: Printer,
    glass: list[Snapshot],
    aio: list[AioSnapshot],
    names: dict[tuple[str, int], str],
) -> None:
    """Print, step by step, aiohttp's private counters above glasspool's public ones."""
    printer.heading("The same steps through aiohttp (private counters) and glasspool (public)")
    printer.wrapped(
        "aiohttp: TCPConnector(limit=25, limit_per_host=5); responses are never read or "
        "closed, as in the question. aiohttp counts only acquired connections: an idle one does "
        "not lower _available_connections. glasspool: client.pool.stats() from the run "
        "above, where idle connections count because they are open sockets.",
        0,
    )
    for g, a in zip(glass, aio, strict=True):
        printer.line()
        printer.line(f"Step {g.label}: {g.title}")
        printer.wrapped(_aio_line(a), 13, first="  aiohttp    ")
        printer.wrapped(_glass_line(g, names), 13, first="  glasspool  ")
