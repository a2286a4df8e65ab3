"""Cancellation and timeouts at every phase of a request, through the public Client API.

Each phase (DNS, connect, TLS handshake, pool wait, write, response head, body) is reached
against a loopback server that holds the request there; the request is then cancelled
(``task.cancel()``) or times out. Afterwards the test checks that the slot was freed, the
connection was closed and never pooled, ``stats()`` is at rest, the server saw the socket
close, and the next request on the same client (``limit=1``) succeeds.

The helpers ``EventLog`` and ``assert_at_rest`` are shared with the other reliability
tests (test_stale, test_storm, test_shutdown, test_leaks).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import glasspool
from glasspool import Client, PoolEvent, Timeout
from tests.faults import FaultServer
from tests.nginx import TLSCerts

PHASES = ("dns", "connect", "tls", "pool", "write", "headers", "body")
MODES = ("cancel", "timeout")
SHORT = 0.2  # the timeout used to fail a phase, seconds
UPLOAD_BYTES = 24 * 1024 * 1024  # more than loopback socket buffers hold


# -- helpers shared with the other reliability tests ----------------------------------------


class EventLog:
    """Records every pool event of a client and lets a test await a particular one.

    Args:
        client: the client whose pool to listen to (``client.pool.add_listener``).
    """

    def __init__(self, client: Client) -> None:
        self.events: list[PoolEvent] = []
        self._waiters: list[tuple[Callable[[PoolEvent], bool], asyncio.Future[PoolEvent]]] = []
        client.pool.add_listener(self)

    def __call__(self, event: PoolEvent) -> None:
        """The listener: record ``event`` and wake whoever waits for it."""
        self.events.append(event)
        for match, fut in list(self._waiters):
            if not fut.done() and match(event):
                fut.set_result(event)

    def find(self, kind: str, reason: str | None = None) -> list[PoolEvent]:
        """Every recorded event of ``kind`` (and ``reason``, when given)."""
        return [e for e in self.events if e.kind == kind and reason in (None, e.reason)]

    def mark(self) -> int:
        """A position in the log, for ``wait_for(..., since=mark)``."""
        return len(self.events)

    async def wait_for(
        self,
        kind: str,
        reason: str | None = None,
        *,
        since: int | None = None,
        timeout: float = 5.0,
    ) -> PoolEvent:
        """Return the first event of ``kind`` (and ``reason``) after ``since`` (default: now).

        Raises:
            AssertionError: none within ``timeout`` seconds (names what was awaited and the
                events seen).
        """

        def match(e: PoolEvent) -> bool:
            return e.kind == kind and reason in (None, e.reason)

        if since is not None:
            for event in self.events[since:]:
                if match(event):
                    return event
        fut: asyncio.Future[PoolEvent] = asyncio.get_running_loop().create_future()
        entry = (match, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise AssertionError(
                f"no {kind} ({reason}) event within {timeout}s; saw {self.summary()}"
            ) from None
        finally:
            self._waiters.remove(entry)

    def history(self, connection_id: int) -> list[str]:
        """``["connecting", "acquired new", "released error", "closed cancelled"]``, say."""
        return [
            f"{e.kind} {e.reason}" if e.reason else e.kind
            for e in self.events
            if e.connection_id == connection_id
        ]

    def closed_reason(self, connection_id: int) -> str | None:
        """Why the connection was closed, or None while it is open."""
        found = [e.reason for e in self.find("closed") if e.connection_id == connection_id]
        assert len(found) <= 1, f"connection {connection_id} closed twice: {found}"
        return found[0] if found else None

    def summary(self) -> list[str]:
        """Every event as ``"kind reason #id"``, for failure messages."""
        return [f"{e.kind} {e.reason} #{e.connection_id}" for e in self.events]


def assert_at_rest(client: Client) -> None:
    """Assert nothing is connecting, in use or waiting, globally and for every key.

    Idle connections may remain; they must account for every open connection.
    """
    s = client.pool.stats()
    busy = {"connecting": s.connecting, "in_use": s.in_use, "waiting": s.waiting}
    assert busy == {"connecting": 0, "in_use": 0, "waiting": 0}, f"not at rest: {s}"
    assert s.open == s.idle, f"open {s.open} != idle {s.idle}: {s}"
    for key, h in s.hosts.items():
        host_busy = (h.connecting, h.in_use, h.waiting)
        assert host_busy == (0, 0, 0), f"{key} not at rest: {h}"


def assert_never_pooled(log: EventLog, connection_id: int, reason: str) -> None:
    """Assert the connection was closed with ``reason`` and never released clean."""
    history = log.history(connection_id)
    assert log.closed_reason(connection_id) == reason, f"connection {connection_id}: {history}"
    assert "released eof" not in history, f"connection {connection_id} was pooled: {history}"


# -- the phases ---------------------------------------------------------------------------


@dataclass
class Phase:
    """How to hold a request in one phase.

    Attributes:
        run: the request (a coroutine function of the client and the timeout to use).
        reached: returns once the request is in the phase.
        timeout: the client timeout that makes the phase fail in ``timeout`` mode.
        error: the exception that failure raises, and a fragment of its message.
        release: called before the follow-up request (frees what the setup holds).
        server: the server whose connection must be seen closed, if it notices (a server
            that stalls on accept never reads, so only the leak check sees that socket).
    """

    run: Callable[[Client, Timeout], Coroutine[Any, Any, object]]
    reached: Callable[[], Awaitable[object]]
    timeout: Timeout
    error: tuple[type[Exception], str]
    release: Callable[[], Awaitable[None]] | None = None
    server: FaultServer | None = None


@contextmanager
def full_backlog() -> Iterator[int]:
    """Yield a loopback port whose accept queue is full: a new connect never completes.

    The listening socket has backlog 0 and one connection already queued, so the kernel
    drops further SYNs (the client keeps retransmitting until it gives up).
    """
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]


async def phase_dns(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """A resolver that answers ``slow.test`` never (the loop's getaddrinfo, replaced)."""
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()
    original = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        if host != "slow.test":
            return await original(host, port, **kwargs)
        asked.set()
        await asyncio.Event().wait()  # a resolver that never answers

    env.monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    url = f"http://slow.test:{server.port}/"
    return Phase(
        run=lambda c, t: c.get(url, timeout=t),
        reached=asked.wait,
        timeout=Timeout(connect=SHORT),
        error=(glasspool.ConnectTimeout, f"slow.test:{server.port}"),
    )


async def phase_connect(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """A port whose accept queue is full: the TCP handshake never completes."""
    port = stack.enter_context(full_backlog())
    mark = log.mark()
    return Phase(
        run=lambda c, t: c.get(f"http://127.0.0.1:{port}/", timeout=t),
        reached=lambda: log.wait_for("connecting", since=mark),
        timeout=Timeout(connect=SHORT),
        error=(glasspool.ConnectTimeout, f"connecting to 127.0.0.1:{port}"),
    )


async def phase_tls(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """A TLS server that accepts TCP and never answers the ClientHello."""
    tls = await stack.enter_async_context(FaultServer(ssl=env.tls_certs.server_context()))
    tls.plan(on_accept="stall")
    return Phase(
        run=lambda c, t: c.get(tls.url("/"), timeout=t),
        reached=lambda: tls.wait_connections(1),
        timeout=Timeout(connect=SHORT),
        error=(glasspool.ConnectTimeout, "TLS handshake"),
    )


async def phase_pool(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """The only slot (``limit=1``) is held by an unread streamed response."""
    holder = await stack.enter_async_context(client.stream("GET", server.url("/held")))
    mark = log.mark()
    return Phase(
        run=lambda c, t: c.get(server.url("/waits"), timeout=t),
        reached=lambda: log.wait_for("queued", since=mark),
        timeout=Timeout(pool=SHORT),
        error=(glasspool.PoolTimeout, "limit 1 reached"),
        release=holder.aclose,
        server=server,
    )


async def phase_write(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """A server that accepts and never reads: a large upload backs up."""
    server.plan(on_accept="stall")
    body = bytes(UPLOAD_BYTES)
    mark = log.mark()
    # The listener runs inside the request task, which then writes and parks in its drain
    # before this test task resumes: once ``acquired`` fired, the request is writing.
    return Phase(
        run=lambda c, t: c.post(server.url("/upload"), content=body, timeout=t),
        reached=lambda: log.wait_for("acquired", since=mark),
        timeout=Timeout(write=SHORT),
        error=(glasspool.WriteTimeout, "write timeout"),
    )


async def phase_headers(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """A server that reads the request and never answers."""
    return Phase(
        run=lambda c, t: c.get(server.url("/fault/stall"), timeout=t),
        reached=lambda: server.wait_requests(1),
        timeout=Timeout(read=SHORT),
        error=(glasspool.ReadTimeout, "the response head"),
        server=server,
    )


async def phase_body(
    stack: AsyncExitStack, client: Client, log: EventLog, server: FaultServer, env: Env
) -> Phase:
    """A server that sends the head, then one body byte every 0.5 s."""
    head_seen = asyncio.Event()

    async def run(c: Client, t: Timeout) -> bytes:
        url = server.url("/fault/trickle?size=64&delay=0.5")
        async with c.stream("GET", url, timeout=t) as r:
            head_seen.set()
            return await r.read()

    return Phase(
        run=run,
        reached=head_seen.wait,
        timeout=Timeout(read=SHORT),
        error=(glasspool.ReadTimeout, "the response body"),
        server=server,
    )


@dataclass
class Env:
    """Fixtures a phase may need."""

    tls_certs: TLSCerts
    monkeypatch: pytest.MonkeyPatch


BUILDERS = {
    "dns": phase_dns,
    "connect": phase_connect,
    "tls": phase_tls,
    "pool": phase_pool,
    "write": phase_write,
    "headers": phase_headers,
    "body": phase_body,
}


@pytest.fixture
async def tight_client(tls_certs: TLSCerts) -> AsyncIterator[Client]:
    """A client with one slot in all (``limit=1``) that trusts the test CA."""
    async with Client(limit=1, limit_per_host=1, verify=str(tls_certs.ca_file)) as client:
        yield client


async def fail_in_phase(phase: Phase, client: Client, mode: str) -> BaseException:
    """Run the request into ``phase`` and cancel it there, or let it time out there."""
    timeout = phase.timeout if mode == "timeout" else Timeout(10)
    task: asyncio.Task[object] = asyncio.create_task(phase.run(client, timeout))
    if mode == "cancel":
        reached = asyncio.ensure_future(phase.reached())
        await asyncio.wait({task, reached}, return_when=asyncio.FIRST_COMPLETED, timeout=10)
        assert reached.done() and not task.done(), f"phase not reached: {task!r}"
        reached.result()
        task.cancel()
    try:
        async with asyncio.timeout(10):
            result = await task
    except BaseException as exc:
        return exc
    raise AssertionError(f"the request succeeded: {result!r}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PHASES)
async def test_failure_in_each_phase_frees_the_slot_and_closes_the_connection(
    name: str,
    mode: str,
    tight_client: Client,
    fault_server: FaultServer,
    tls_certs: TLSCerts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = tight_client
    log = EventLog(client)
    async with AsyncExitStack() as stack:
        phase = await BUILDERS[name](stack, client, log, fault_server, Env(tls_certs, monkeypatch))
        started = len(log.events)
        exc = await fail_in_phase(phase, client, mode)
        if mode == "cancel":
            assert isinstance(exc, asyncio.CancelledError), repr(exc)
        else:
            error, fragment = phase.error
            assert isinstance(exc, error), repr(exc)
            assert fragment in str(exc), str(exc)
        check_failed_request(log, started, name, mode)
        if phase.release is not None:
            await phase.release()
        assert_at_rest(client)
        if phase.server is not None:
            await phase.server.wait_open(0)
    r = await client.get(fault_server.url("/next"))
    assert r.status == 200 and r.content == f"id={r.headers['x-request-id']}".encode()
    assert log.find("acquired")[-1].reason == "new", log.summary()
    assert_at_rest(client)


def check_failed_request(log: EventLog, started: int, name: str, mode: str) -> None:
    """The failed request left no slot, waiter or pooled connection behind."""
    mine = log.events[started:]
    if name == "pool":
        dequeued = [e for e in mine if e.kind == "dequeued"]
        assert [e.reason for e in dequeued] == ["cancelled" if mode == "cancel" else "timeout"]
        assert not [e for e in mine if e.kind in ("connecting", "acquired")], log.summary()
        return
    ids = {e.connection_id for e in mine if e.kind == "connecting"}
    assert len(ids) == 1, log.summary()
    (cid,) = ids
    assert isinstance(cid, int)
    assert_never_pooled(log, cid, "cancelled" if mode == "cancel" else "error")
    released = [e.reason for e in mine if e.kind == "released"]
    assert released in ([], ["error"]), log.summary()


# -- a slot handed over just as its waiter is cancelled -------------------------------------


@pytest.mark.parametrize("handover", ["reused", "new"])
async def test_a_slot_handed_to_a_cancelled_waiter_passes_on(
    handover: str, tight_client: Client, fault_server: FaultServer
) -> None:
    client = tight_client
    log = EventLog(client)
    async with client.stream("GET", fault_server.url("/held")) as holder:
        waiter = asyncio.create_task(client.get(fault_server.url("/waits")))
        await log.wait_for("queued")
        if handover == "reused":
            await holder.read()  # EOF: the clean connection goes straight to the waiter
        else:
            await holder.aclose()  # closed unread: the free slot goes to the waiter
        waiter.cancel()  # the waiter has been woken but has not run yet
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert_at_rest(client)
    if handover == "reused":
        assert log.events[-1].kind == "released" and log.events[-1].reason == "closed"
        assert client.pool.stats().idle == 1  # the handed connection went back, unused
    else:
        assert log.find("closed", "cancelled"), log.summary()
        assert client.pool.stats().open == 0
    r = await client.get(fault_server.url("/next"))
    assert r.status == 200
    expected = "reused" if handover == "reused" else "new"
    assert log.find("acquired")[-1].reason == expected, log.summary()
    assert len(fault_server.requests) == 2  # /held and /next: the waiter's was never sent


# -- the total deadline ---------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_total_deadline_fires_while_bytes_trickle_inside_the_read_timeout(
    streamed: bool, fault_server: FaultServer
) -> None:
    # one byte every 0.1 s keeps a 1 s read timeout happy for 10 s; total is 0.6 s
    url = fault_server.url("/fault/trickle?size=100&delay=0.1")
    timeout = Timeout(read=1.0, total=0.6)
    async with Client(limit=1, limit_per_host=1) as client:
        log = EventLog(client)
        start = time.monotonic()
        with pytest.raises(glasspool.TotalTimeout, match=r"total timeout of 0\.6s") as info:
            if streamed:
                async with client.stream("GET", url, timeout=timeout) as r:
                    async for _ in r.aiter_raw():
                        pass
            else:
                await client.get(url, timeout=timeout)
        elapsed = time.monotonic() - start
        assert 0.6 <= elapsed < 1.5, elapsed
        assert str(fault_server.port) in str(info.value)
        # get() is cut off by a cancellation inside the deadline, a stream between reads
        assert log.closed_reason(1) == ("error" if streamed else "cancelled"), log.summary()
        assert "released eof" not in log.history(1)
        assert_at_rest(client)
        await fault_server.wait_open(0)
        r = await client.get(fault_server.url("/next"), timeout=timeout)
        assert r.status == 200


async def test_total_deadline_covers_the_pool_wait(fault_server: FaultServer) -> None:
    async with Client(limit=1, limit_per_host=1) as client:
        log = EventLog(client)
        async with client.stream("GET", fault_server.url("/held")):
            with pytest.raises(glasspool.TotalTimeout):
                await client.get(fault_server.url("/waits"), timeout=Timeout(total=SHORT))
            assert [e.reason for e in log.find("dequeued")] == ["cancelled"]
        assert_at_rest(client)


async def test_an_outer_asyncio_timeout_is_a_cancellation_too(fault_server: FaultServer) -> None:
    async with Client(limit=1, limit_per_host=1) as client:
        log = EventLog(client)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(SHORT):
                await client.get(fault_server.url("/fault/stall"))
        assert_never_pooled(log, 1, "cancelled")
        assert_at_rest(client)
        assert (await client.get(fault_server.url("/next"))).status == 200
