"""``glasspool demo``: the "hung at 4" question replayed on loopback servers, step by step.

The question: a user of aiohttp set ``TCPConnector(limit=25, limit_per_host=5)``, made
requests without closing the responses, and could not tell from private counters why
``_available_connections`` hung at 4, nor why ``_acquired_per_host`` had one key. The demo
answers in aiohttp's terms first, then replays the requests through glasspool: every step
prints the public events it caused, one sentence each, and ``client.pool.stats()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .._events import PoolEvent
from .._pool.key import PoolKey
from .._response import Response
from .._stats import HostStats, PoolStats
from ..client import Client
from ..timeline import Timeline
from ._narrate import Narrator
from ._server import HELLO, DemoServer, loopback_hosts
from ._text import Printer

__all__ = [
    "LIMIT",
    "LIMIT_PER_HOST",
    "STEPS",
    "DemoError",
    "DemoOutcome",
    "DemoRun",
    "Snapshot",
    "run_demo",
]

LIMIT: Final = 25
LIMIT_PER_HOST: Final = 5
EXTRA_WAITERS: Final = 2
STEP_TIMEOUT_S: Final = 5.0
SMALL: Final = f"{len(HELLO)}-byte body"


class DemoError(Exception):
    """Something the demo waits for did not happen (names what and how long)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """``stats()`` after one step."""

    label: str
    title: str
    stats: PoolStats


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    """What ``--compare-aiohttp`` needs from the glasspool run."""

    snapshots: list[Snapshot]
    names: dict[tuple[str, int], str]  # (host, port) -> "A" / "B"
    concurrent: int  # how many requests step 5 started


@dataclass(slots=True)
class DemoRun:
    """Everything the steps share."""

    client: Client
    a: DemoServer
    b: DemoServer
    printer: Printer
    narrator: Narrator = field(init=False)
    events: list[PoolEvent] = field(default_factory=list)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    stream: Response | None = None
    held: list[asyncio.Task[Response]] = field(default_factory=list)
    concurrent: int = 0
    snapshots: list[Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.narrator = Narrator(self.name, limit=LIMIT, limit_per_host=LIMIT_PER_HOST)

    def name(self, key: PoolKey) -> str | None:
        """``host A`` / ``host B`` for the two servers' keys."""
        for label, server in (("host A", self.a), ("host B", self.b)):
            if key.host == server.host and key.port == server.port:
                return label
        return None

    def host(self, server: DemoServer) -> HostStats:
        """The current ``stats()`` of ``server``'s key (zeros if unused so far)."""
        found = self.client.pool.stats().host(server.host, server.port)
        return found if found is not None else HostStats(None, 0, 0, 0, 0, 0, 0, 0, 0, 0)


async def _within(awaitable: Awaitable[object], what: str) -> None:
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await awaitable
    except TimeoutError:
        raise DemoError(f"demo: {what} did not happen within {STEP_TIMEOUT_S:g} s") from None


async def _until_waiting(run: DemoRun, server: DemoServer, count: int) -> None:
    """Return once ``count`` requests wait in the pool for ``server`` (a pool listener)."""
    reached = asyncio.Event()

    def check(_: PoolEvent) -> None:
        if run.host(server).waiting >= count:
            reached.set()

    run.client.pool.add_listener(check)
    try:
        if run.host(server).waiting < count:
            await _within(reached.wait(), f"{count} requests waiting for {server.url()}")
    finally:
        run.client.pool.remove_listener(check)


# -- the steps ----------------------------------------------------------------------------


async def _get(run: DemoRun, server: DemoServer, path: str) -> str:
    response = await run.client.get(server.url(path))
    return (
        f'client.get("{server.url(path)}") -> {response.status} {response.reason}, '
        f"{len(response.content)} bytes read"
    )


async def _get_a(run: DemoRun) -> str:
    return await _get(run, run.a, "/hello")


async def _get_b(run: DemoRun) -> str:
    return await _get(run, run.b, "/hello")


async def _stream_a(run: DemoRun) -> str:
    url = run.a.url("/stream")
    run.stream = await run.stack.enter_async_context(run.client.stream("GET", url))
    length = run.stream.headers.get("content-length")
    return f'client.stream("GET", "{url}") -> {run.stream.status}, {length} bytes announced, 0 read'


async def _hold_many(run: DemoRun) -> str:
    host = run.host(run.a)
    reach = host.available + host.idle
    run.concurrent = reach + EXTRA_WAITERS
    url = run.a.url("/hold")
    run.held = [asyncio.create_task(run.client.get(url)) for _ in range(run.concurrent)]
    await _within(run.a.wait_held(reach), f"{reach} requests reaching {run.a.url()}")
    await _until_waiting(run, run.a, EXTRA_WAITERS)
    return (
        f'{run.concurrent} x client.get("{url}") at once: {reach} reached the server, which '
        f"holds them; {EXTRA_WAITERS} wait in the pool"
    )


async def _release_held(run: DemoRun) -> str:
    run.a.release_held()
    done = await asyncio.gather(*run.held)
    statuses = sorted({r.status for r in done})
    return f"the server answers; all {len(done)} requests finish with status {statuses}"


async def _close_stream(run: DemoRun) -> str:
    assert run.stream is not None
    await run.stream.aclose()
    return "await response.aclose() on the streamed response, its body still unread"


async def _close_client(run: DemoRun) -> str:
    await run.client.aclose()
    return "await client.aclose()"


@dataclass(frozen=True, slots=True)
class Step:
    """One demo step: what it does, how its bodies are called, and the code that does it."""

    label: str
    title: str
    body: str
    action: Callable[[DemoRun], Awaitable[str]]


STEPS: Final = (
    Step("1", "GET host A /hello: a small body, read to its end (request 1)", SMALL, _get_a),
    Step("2", "GET host A /hello again (request 2)", SMALL, _get_a),
    Step("3", "stream host A /stream and leave the response open, body unread", "", _stream_a),
    Step("4", "GET host B /hello: a second host", SMALL, _get_b),
    Step(
        "5",
        "more concurrent GETs to host A /hold than its limit allows; the server holds them",
        SMALL,
        _hold_many,
    ),
    Step("6", "the server answers the held requests", SMALL, _release_held),
    Step("7", "close the streamed response of step 3 without reading it", "", _close_stream),
    Step("8", "close the client", SMALL, _close_client),
)


# -- printing -----------------------------------------------------------------------------


def _print_step(run: DemoRun, step: Step, note: str) -> None:
    p = run.printer
    p.heading(f"Step {step.label}: {step.title}")
    p.wrapped(note, 2)
    events, run.events[:] = list(run.events), []
    p.line("events:" if events else "events: none")
    for event, sentence in zip(events, run.narrator.sentences(events, step.body), strict=True):
        why = "" if event.reason is None else f" ({event.reason})"
        where = run.narrator.name(event.key)
        conn = "" if event.connection_id is None else f", connection {event.connection_id}"
        p.line(p.dim(f"  {event.kind}{why}{conn}, {where}"))
        p.wrapped(sentence, 6)
    stats = run.client.pool.stats()
    run.snapshots.append(Snapshot(step.label, step.title, stats))
    p.line("client.pool.stats():")
    for row in stats.table(run.name).splitlines():
        p.line("  " + row)


def _print_intro(run: DemoRun) -> None:
    p = run.printer
    p.heading('glasspool demo: why did aiohttp\'s count "hang at 4"?')
    p.wrapped(
        "The question: with aiohttp's TCPConnector(limit=25, limit_per_host=5), two GETs to "
        "one host and three to another, responses never closed, _available_connections(key) "
        "read 4, 4, 4, 3, 2, and _acquired_per_host only ever had one key. Why?",
        0,
    )
    p.heading("The answer in aiohttp's terms")
    p.wrapped(
        "_available_connections(key) is limit_per_host minus the connections of that key "
        "that are acquired right now, that is, held by a response. An idle connection back "
        "in the pool is not counted. A response holds its connection only until its body "
        "has arrived in full; for a page that arrives quickly this happens on its own, "
        "whether or not your code reads or closes the response, and the connection goes "
        "back to the pool. So when the count was printed after request 2, request 1's body "
        "had finished arriving and its connection was idle, uncounted: one connection "
        "acquired, available 5 - 1 = 4 again.",
        0,
    )
    p.line()
    p.wrapped(
        "_acquired_per_host maps each key to its acquired connections, and a key is deleted "
        "when its last acquired connection is released. Once the first host's connections "
        "had gone back to the pool, only the second host still had one acquired, so the "
        "dict had one key.",
        0,
    )
    p.heading("The same requests through glasspool")
    p.wrapped(
        "Two loopback servers play two hosts. One Client(limit=25, limit_per_host=5) replays "
        "the requests. After each step: the pool events it caused, one sentence each, and "
        "the public client.pool.stats() table (in use + idle + connecting = open).",
        0,
    )
    p.line(f"  host A = {run.a.url('')}")
    p.line(f"  host B = {run.b.url('')}")


def _answers(run: DemoRun) -> list[tuple[str, str]]:
    """The closing section's two questions and their answers, from the snapshots."""
    snap = {s.label: s.stats for s in run.snapshots}
    a = run.a
    one, two, six = (snap[n].host(a.host, a.port) for n in ("1", "2", "6"))
    assert one is not None and two is not None and six is not None
    q1 = (
        f'Why does "available" hang at {two.available}? After step 1 host A had {one.open} '
        f"connection open ({one.idle} idle, {one.in_use} in use), so available = "
        f"{LIMIT_PER_HOST} - {one.open} = {one.available}. The {SMALL} was read to its end "
        "inside client.get(), and at the end of the body the connection went back to the pool "
        "by itself (released, reason eof). Step 2 reused that same connection (acquired, "
        "reason reused) and gave it back the same way: still one connection open, so "
        f"available stayed at {two.available}. A response holds its connection only while its "
        "body is unread, like the streamed response of step 3 until step 7 closed it. "
        "glasspool counts idle connections toward the limits because they are open sockets: "
        f"after step 6 host A had {six.idle} idle and available {six.available}, yet its next "
        "request takes an idle connection at once, without waiting."
    )
    keys = "; ".join(
        f"{run.name(k) or k} {k}: opened {h.opened}, reused {h.reused}, closed {h.closed}, "
        f"requests {h.requests}"
        for k, h in run.snapshots[-1].stats.hosts.items()
    )
    q2 = (
        "Why does the per-host dict have one key? In aiohttp, _acquired_per_host lists only "
        "hosts with a connection acquired right now; a host's entry is deleted when its last "
        "connection is released. In the question, docs.aiohttp.org's connections had gone "
        "back at EOF, so only github.com was left. In glasspool, stats().hosts keeps every "
        f"key with a connection, a waiter or history, with its counters: {keys}."
    )
    return [
        ('Why did the count "hang at 4"? (glasspool\'s view)', q1),
        ("Why did the per-host dict have one key? (glasspool's view)", q2),
    ]


def _print_answers(run: DemoRun) -> None:
    for title, text in _answers(run):
        run.printer.heading(title)
        run.printer.wrapped(text, 0)
    run.printer.line()
    run.printer.wrapped(
        "Run 'glasspool demo --compare-aiohttp' to replay the same steps through aiohttp and "
        "see its private counters beside glasspool's public ones.",
        0,
    )


# -- running ------------------------------------------------------------------------------


async def _steps(run: DemoRun, timeline: Timeline | None) -> None:
    run.client.pool.add_listener(run.events.append)
    if timeline is not None:
        timeline.attach(run.client.pool)
    try:
        async with run.stack:
            for step in STEPS:
                _print_step(run, step, await step.action(run))
    finally:
        for task in run.held:
            task.cancel()
        await asyncio.gather(*run.held, return_exceptions=True)
        await run.client.aclose()


async def run_demo(
    printer: Printer, timeline_path: Path | None = None, trace_path: Path | None = None
) -> DemoOutcome:
    """Replay the question's requests on two loopback servers, printing every step and the
    answers.

    Args:
        printer: where the text goes.
        timeline_path: also write a :class:`~glasspool.Timeline` of the run there.
        trace_path: also write the run's events there as Chrome trace JSON.

    Returns:
        ``stats()`` after each step and the servers' names (for ``--compare-aiohttp``).

    Raises:
        DemoError: a step did not complete within 5 s.
        OSError: a loopback server could not listen.
    """
    host_a, host_b = loopback_hosts()
    async with DemoServer(host_a) as a, DemoServer(host_b) as b:
        client = Client(limit=LIMIT, limit_per_host=LIMIT_PER_HOST)
        run = DemoRun(client, a, b, printer)
        recording = timeline_path is not None or trace_path is not None
        timeline = Timeline(title="glasspool demo") if recording else None
        _print_intro(run)
        await _steps(run, timeline)
        _print_answers(run)
        if timeline is not None and timeline_path is not None:
            timeline.write_html(timeline_path)
            printer.line()
            printer.line(f"timeline: written to {timeline_path}")
        if timeline is not None and trace_path is not None:
            timeline.write_trace(trace_path)
            printer.line()
            printer.line(f"trace: written to {trace_path}")
    names = {(a.host, a.port): "A", (b.host, b.port): "B"}
    return DemoOutcome(run.snapshots, names, run.concurrent)
