"""Shutdown: ``aclose()`` with requests in every phase, twice, and an unclosed client at exit.

In-flight requests fail with ``ClientClosed`` naming what they were doing; ``aclose()`` is
idempotent (also when two run at once); at interpreter exit an unclosed client and a
dropped streamed response produce glasspool's ``UnclosedResponseWarning`` naming the call
site, and nothing else: no "Event loop is closed", no unretrieved task exceptions, no
unclosed-transport or unclosed-socket warnings.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

import glasspool
from glasspool import Client
from tests import loops
from tests.faults import FaultServer
from tests.nginx import TLSCerts
from tests.test_cancellation import EventLog, full_backlog

UPLOAD_BYTES = 24 * 1024 * 1024
NOISE = (
    "Event loop is closed",
    "Task exception was never retrieved",
    "Task was destroyed but it is pending",
    "unclosed transport",
    "unclosed <socket",
    "unclosed event loop",
    "Exception ignored",
    "Traceback",
)


async def _stream_and_read(client: Client, url: str, started: asyncio.Event) -> bytes:
    async with client.stream("GET", url) as r:
        started.set()
        return await r.read()


async def _hold_then_read(
    client: Client, url: str, held: asyncio.Event, go: asyncio.Event
) -> bytes:
    async with client.stream("GET", url) as r:
        held.set()
        await go.wait()
        return await r.read()


class InFlight:
    """One request held in each phase against loopback servers, for ``aclose()`` to meet.

    Phases: ``connect`` (a full accept queue), ``tls`` (a handshake never answered),
    ``queued`` (the per-host limit is full), ``write`` (an upload nobody reads), ``head``
    (no answer), ``body`` (a trickling body being read) and ``held`` (a streamed response
    held unread; it is read after ``aclose()``).
    """

    def __init__(self, client: Client, log: EventLog, stack: AsyncExitStack) -> None:
        self.client, self.log, self.stack = client, log, stack
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.go = asyncio.Event()

    async def start(self, tls_certs: TLSCerts) -> None:
        """Start every request and return once each is in its phase."""
        enter = self.stack.enter_async_context
        self.plain = plain = await enter(FaultServer())
        stalled = await enter(FaultServer())
        stalled.plan(on_accept="stall")
        tls = await enter(FaultServer(ssl=tls_certs.server_context()))
        tls.plan(on_accept="stall")
        backlog = self.stack.enter_context(full_backlog())
        body_started, held = asyncio.Event(), asyncio.Event()
        c = self.client
        await self._start("connect", c.get(f"http://127.0.0.1:{backlog}/"), "connecting")
        await self._start("tls", c.get(tls.url("/")), tls.wait_connections(1))
        await self._start(
            "write", c.post(stalled.url("/"), content=bytes(UPLOAD_BYTES)), "acquired"
        )
        await self._start("head", c.get(plain.url("/fault/stall")), plain.wait_requests(1))
        slow = plain.url("/fault/trickle?size=99&delay=0.2")
        await self._start("body", _stream_and_read(c, slow, body_started), body_started.wait())
        await self._start("held", _hold_then_read(c, plain.url("/"), held, self.go), held.wait())
        await self._start("queued", c.get(plain.url("/queued")), "queued")

    async def _start(
        self, name: str, request: Awaitable[Any], reached: str | Awaitable[Any]
    ) -> None:
        mark = self.log.mark()
        self.tasks[name] = asyncio.ensure_future(request)
        if isinstance(reached, str):
            reached = self.log.wait_for(reached, since=mark)
        await asyncio.wait_for(reached, 5)
        assert not self.tasks[name].done(), f"{name}: {self.tasks[name]!r}"

    async def outcomes(self) -> dict[str, BaseException | object]:
        """Let the holder read, then return how each request ended."""
        self.go.set()
        results = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        return dict(zip(self.tasks, results, strict=True))


@pytest.fixture
async def client(tls_certs: TLSCerts) -> AsyncIterator[Client]:
    """A client with room for every phase but the queued one (3 per host)."""
    c = Client(limit=10, limit_per_host=3, verify=str(tls_certs.ca_file))
    yield c
    await c.aclose()  # idempotent: the tests close it themselves


async def test_aclose_fails_every_in_flight_request_with_client_closed(
    client: Client, tls_certs: TLSCerts
) -> None:
    log = EventLog(client)
    async with AsyncExitStack() as stack:
        flight = InFlight(client, log, stack)
        await flight.start(tls_certs)
        assert (client.pool.stats().waiting, client.pool.stats().open) == (1, 6)
        await client.aclose()
        outcomes = await flight.outcomes()
        wrong = {n: o for n, o in outcomes.items() if not isinstance(o, glasspool.ClientClosed)}
        assert not wrong, f"not ClientClosed: {wrong}; all: {outcomes}"
        for name, outcome in outcomes.items():  # each names the client and the host
            assert "client was closed while" in str(outcome), (name, outcome)
            assert "http://127.0.0.1:" in str(outcome) or "https://" in str(outcome), outcome
        s = client.pool.stats()
        assert (s.open, s.waiting) == (0, 0), s
        assert [e.reason for e in log.find("closed")] == ["client_closed"] * 6
        await flight.plain.wait_open(0)


async def test_aclose_is_idempotent_also_when_two_run_at_once(fault_server: FaultServer) -> None:
    client = Client(limit=2, limit_per_host=2)
    log = EventLog(client)
    await client.get(fault_server.url("/a"))
    stalled = asyncio.create_task(client.get(fault_server.url("/fault/stall")))
    await fault_server.wait_requests(2)
    await asyncio.gather(client.aclose(), client.aclose())
    await client.aclose()
    with pytest.raises(glasspool.ClientClosed, match="/fault/stall was in flight"):
        await stalled
    assert client.is_closed and client.pool.stats().open == 0
    assert [e.reason for e in log.find("closed")] == ["client_closed"]  # /a, reused by the stall
    await fault_server.wait_open(0)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_after_aclose_is_client_closed_naming_it(
    fault_server: FaultServer, method: str
) -> None:
    client = Client()
    await client.aclose()
    url = fault_server.url("/after")
    with pytest.raises(glasspool.ClientClosed, match=f"cannot send {method} {url}"):
        await client.request(method, url)
    with pytest.raises(glasspool.ClientClosed):
        async with client.stream(method, url):
            pass
    assert fault_server.connections_accepted == 0


# -- an unclosed client at interpreter exit ---------------------------------------------

EXIT_SCRIPT = """\
import asyncio, gc, sys
import glasspool

URL, STALL, VARIANT, CA, LOOP = sys.argv[1:6]


async def drop_a_stream(client):
    async with client.stream("GET", URL) as kept:
        await kept.read()
    cm = client.stream("GET", URL)
    r = await cm.__aenter__()  # MARK-STREAM
    del cm, r
    gc.collect()


async def start_in_flight(client):
    acquired = asyncio.Event()
    client.pool.add_listener(lambda e: e.kind == "acquired" and acquired.set())
    task = asyncio.get_running_loop().create_task(client.get(STALL))
    await acquired.wait()
    return task


async def main():
    global client
    client = glasspool.Client(verify=CA)  # MARK-CLIENT
    await drop_a_stream(client)
    task = await start_in_flight(client) if VARIANT != "collected" else None
    await client.get(URL)  # leaves an idle connection in the pool
    if VARIANT == "collected":
        del client
        gc.collect()
        return
    if VARIANT == "closed":
        await client.aclose()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        print(type(outcome).__name__)


def new_loop():
    if LOOP == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


with asyncio.Runner(loop_factory=new_loop) as runner:  # asyncio.run() on the tests' loop
    runner.run(main())
print("done")
"""
EXPECTED_OUT = {"at-exit": "done\n", "collected": "done\n", "closed": "ClientClosed\ndone\n"}


def _line_of(marker: str) -> int:
    return next(i for i, line in enumerate(EXIT_SCRIPT.splitlines(), 1) if marker in line)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("variant", ["at-exit", "collected", "closed"])
async def test_an_unclosed_client_warns_once_naming_its_call_site_and_nothing_else(
    tmp_path: Path, tls_certs: TLSCerts, variant: str, tls: bool
) -> None:
    """Run a script that leaves things unclosed; its stderr holds glasspool's warnings only.

    ``at-exit``: the client is still referenced when the runner closes the loop and is
    collected at interpreter exit; ``collected``: dropped while the loop runs; ``closed``:
    closed with a request in flight. Every variant also drops one streamed response.
    """
    script = tmp_path / "unclosed.py"
    script.write_text(EXIT_SCRIPT)
    async with FaultServer(ssl=tls_certs.server_context() if tls else None) as server:
        args = [server.url("/"), server.url("/fault/stall"), variant, str(tls_certs.ca_file)]
        args.append(loops.name())
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "always",
            str(script),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
        await server.wait_open(0)
    stderr = err.decode()
    assert proc.returncode == 0 and out.decode() == EXPECTED_OUT[variant], stderr
    for noise in NOISE:
        assert noise not in stderr, stderr
    warnings = [line for line in stderr.splitlines() if "Warning:" in line]
    expected = [f"the request was made at {script}:{_line_of('MARK-STREAM')}."]
    if variant != "closed":
        expected.append(f"glasspool.Client created at {script}:{_line_of('MARK-CLIENT')} was")
    assert len(warnings) == len(expected), stderr
    for line, fragment in zip(warnings, expected, strict=True):
        assert "UnclosedResponseWarning" in line and fragment in line, stderr
