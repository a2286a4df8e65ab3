"""The hot-path shortcuts keep every rule: lazy read timer, header-block cache, URL cache.

Each shortcut here trades work per request for state kept between requests; these tests
prove that the state never lets a changed input through unchecked and never changes when
a timeout fires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from glasspool._connect import open_connection
from glasspool._exceptions import ReadTimeout
from glasspool._http11 import HTTP11Connection
from tests.rawserver import RawServer, read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Scripted:
    """A server whose replies the test releases one at a time through a queue."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.requests = 0

    async def handler(self, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            self.requests += 1
            w.write(await self.replies.get())
            await w.drain()


@contextlib.asynccontextmanager
async def scripted() -> AsyncIterator[tuple[Scripted, HTTP11Connection]]:
    """A :class:`Scripted` server and one open connection to it."""
    script = Scripted()
    async with RawServer(script.handler) as srv:
        conn = await open_connection(srv.key(), ssl_context=None, connect_timeout=5)
        try:
            yield script, conn
        finally:
            conn.close()


async def exchange(conn: HTTP11Connection, read_timeout: float) -> bytes:
    """Send one GET and read the whole response body."""
    await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
    await conn.receive_head(method="GET", read_timeout=read_timeout)
    body = b""
    while chunk := await conn.receive_body(read_timeout=read_timeout):
        body += chunk
    return body


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[object]:
    """Record each call of ``obj.name`` (still calling through) in the returned list."""
    calls: list[object] = []
    real: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


# -- the lazy read timer ---------------------------------------------------------------------


async def test_many_reads_with_one_timeout_arm_at_most_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted() as (script, conn):
        calls = count_calls(monkeypatch, asyncio.get_running_loop(), "call_at")
        for _ in range(30):
            await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
            waiting = asyncio.ensure_future(conn.receive_head(method="GET", read_timeout=30))
            await asyncio.sleep(0)  # the reader parks before the reply is released
            script.replies.put_nowait(OK)
            await waiting
            assert await conn.receive_body(read_timeout=30) == b"ok"
            assert await conn.receive_body(read_timeout=30) == b""
        assert script.requests == 30
        assert len(calls) == 1, f"{len(calls)} timers armed for 30 reads"


async def test_a_shorter_timeout_after_a_longer_one_still_fires_on_time() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(OK)
        assert await exchange(conn, read_timeout=60) == b"ok"  # a timer 60 s out remains
        await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match=r"response head: no data from .* for 0\.05s"):
            await conn.receive_head(method="GET", read_timeout=0.05)
        assert loop.time() - started < 5, "the 60 s timer of the earlier read was used"
        assert not conn.is_reusable()


async def test_an_early_stale_timer_re_arms_instead_of_failing_the_read() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(OK)
        assert await exchange(conn, read_timeout=0.05) == b"ok"  # its timer is still armed
        await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
        waiting = asyncio.ensure_future(conn.receive_head(method="GET", read_timeout=30))
        await asyncio.sleep(0.3)  # time under test: the stale 0.05 s timer fires meanwhile
        assert not waiting.done(), waiting
        script.replies.put_nowait(OK)
        head = await waiting
        assert head.status == 200
        assert await conn.receive_body(read_timeout=30) == b"ok"


async def test_closing_the_connection_cancels_its_read_timer() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(OK)
        assert await exchange(conn, read_timeout=60) == b"ok"
        timer = conn._read_timer
        assert timer is not None and not timer.cancelled()
        conn.close()
        assert timer.cancelled()
