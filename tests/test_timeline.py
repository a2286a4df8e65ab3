"""Timeline: events in, one self-contained HTML page out (lanes, bars, phases, chart)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

import glasspool
from glasspool import Pool, PoolEvent, PoolKey
from glasspool.timeline import Timeline, _Builder
from tests.demoserver import DemoServer

A = PoolKey("http", "a.test", 80)
B = PoolKey("http", "b.test", 80)


class FakeConn:
    """What the pool needs of a connection; nothing is sent anywhere."""

    def __init__(self) -> None:
        self.closed = False
        self.keepalive_hint_s: float | None = None
        self.on_lost: Callable[[], None] | None = None

    def close(self) -> None:
        self.closed = True

    def is_closed(self) -> bool:
        return self.closed


async def fake_factory(key: PoolKey, connect_timeout: float | None) -> FakeConn:
    return FakeConn()


class Elements(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def with_class(self, name: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.found if name in (a.get("class") or "").split()]

    def by_id(self, ident: str) -> dict[str, str | None]:
        return next(a for _, a in self.found if a.get("id") == ident)


def event(kind: str, reason: str | None, conn: int | None, t: float, waiting: int) -> PoolEvent:
    return PoolEvent(kind, A, conn, reason, t, waiting)


async def test_lanes_bars_and_phases_of_a_pool_run() -> None:
    pool = Pool(fake_factory, limit=3, limit_per_host=2)
    timeline = Timeline(pool)
    first, second = await pool.acquire(A), await pool.acquire(A)
    queued = asyncio.Event()
    pool.add_listener(lambda e: queued.set() if e.kind == "queued" else None)
    third = asyncio.create_task(pool.acquire(A))  # queues: A is at its limit of 2
    await queued.wait()
    other = await pool.acquire(B)
    assert pool.stats().waiting == 1
    pool.release(first)  # handed straight to the waiting request
    for lease in (second, await third, other):
        pool.release(lease)
    await pool.aclose()
    page = Elements(timeline.render_html())
    lanes, bars = page.with_class("lane"), page.with_class("bar")
    assert len(lanes) == 3 == sum(h.opened for h in pool.stats().hosts.values())
    assert len(bars) == 4
    assert [b["data-how"] for b in bars].count("reused") == 1
    assert len(page.with_class("ph-wait")) == 1
    assert len(page.with_class("ph-connect")) == 3
    assert len(page.with_class("ph-use")) == 4
    assert {lane["data-key"] for lane in lanes} == {"http://a.test:80", "http://b.test:80"}
    chart = page.by_id("chart")
    assert (chart["data-max-open"], chart["data-max-waiting"]) == ("3", "1")


def test_waits_are_matched_first_in_first_out() -> None:
    builder = _Builder(0, {})
    for e in (
        event("connecting", None, 1, 0.0, 0),
        event("acquired", "new", 1, 0.5, 0),
        event("queued", "limit_per_host", None, 1.0, 1),
        event("queued", "limit_per_host", None, 2.0, 2),
        event("released", "eof", 1, 3.0, 2),
        event("acquired", "reused", 1, 3.0, 1),  # the oldest waiter (queued at 1.0)
        event("connecting", None, 2, 4.0, 0),  # the next one (queued at 2.0)
        event("acquired", "new", 2, 4.5, 0),
    ):
        builder.feed(e)
    lanes = builder.model.lanes
    reused, fresh = lanes[1].bars[1], lanes[2].bars[0]
    assert (reused.queued, reused.connect, reused.start, reused.how) == (1.0, None, 3.0, "reused")
    assert (fresh.queued, fresh.connect, fresh.start, fresh.how) == (2.0, 4.0, 4.5, "new")
    assert lanes[1].bars[0].end_reason == "eof"
    assert [p[1:] for p in builder.model.points] == [
        (1, 0), (1, 0), (1, 1), (1, 2), (1, 2), (1, 1), (2, 0), (2, 0)
    ]  # fmt: skip


def test_failed_connects_dequeues_and_connections_closed_in_use() -> None:
    timeline = Timeline()
    for e in (
        event("connecting", None, 1, 0.0, 0),
        event("closed", "error", 1, 0.1, 0),
        event("queued", "limit", None, 0.2, 1),
        event("dequeued", "timeout", None, 0.3, 0),
        event("connecting", None, 2, 0.4, 0),
        event("acquired", "new", 2, 0.5, 0),
        event("closed", "client_closed", 2, 0.6, 0),
    ):
        timeline.record(e)
    html = timeline.render_html()
    page = Elements(html)
    lanes = page.with_class("lane")
    assert [lane["data-opened"] for lane in lanes] == ["false", "true"]
    bars = page.with_class("bar")
    assert [(b["data-how"], b["data-release"]) for b in bars] == [
        ("failed", "connect error"),
        ("new", "connection closed (client_closed)"),
    ]
    assert "1 left the queue" in html
    assert len(timeline.events) == 7


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    timeline = Timeline(title="run <1> & co")
    timeline.record(event("connecting", None, 1, 0.0, 0))
    timeline.record(event("acquired", "new", 1, 0.01, 0))
    written = timeline.write_html(tmp_path / "t.html")
    page = written.read_text(encoding="utf-8")
    assert written == tmp_path / "t.html"
    assert page.startswith("<!DOCTYPE html>")
    for fetch in (r"\bsrc\s*=", r"\bhref\s*=", r"@import", r"url\(", r"<link", r"fetch\("):
        assert not re.search(fetch, page), fetch
    assert page.count("<script>") == 1
    assert "<title>run &lt;1&gt; &amp; co</title>" in page
    assert "still in use at the end" in page  # the bar with no release yet


def test_an_empty_timeline_still_renders() -> None:
    page = Timeline().render_html()
    assert "no connections" in page
    assert Elements(page).with_class("lane") == []


async def test_attach_detach_and_attach_mid_run() -> None:
    pool = Pool(fake_factory, limit=2, limit_per_host=2)
    held = await pool.acquire(A)  # open before the timeline exists
    timeline = Timeline(pool)
    with pytest.raises(RuntimeError, match="already attached"):
        timeline.attach(pool)
    pool.release(held)
    timeline.detach()
    timeline.detach()  # idempotent
    pool.release(await pool.acquire(A))  # not recorded
    assert [e.kind for e in timeline.events] == ["released"]
    timeline.attach(pool)
    await pool.aclose()
    page = Elements(timeline.render_html())
    assert len(page.with_class("lane")) == 1  # drawn from its first recorded event on
    assert page.by_id("chart")["data-max-open"] == "1"  # seeded from stats() at attach
    assert repr(timeline) == "<glasspool.Timeline attached events=2>"


async def test_a_real_client_run_has_a_lane_per_connection_and_a_bar_per_request() -> None:
    async with DemoServer() as server:
        async with glasspool.Client(limit=10, limit_per_host=2) as client:
            timeline = Timeline(client.pool)
            queued: list[PoolEvent] = []
            client.pool.add_listener(lambda e: queued.append(e) if e.kind == "queued" else None)
            held = [asyncio.create_task(client.get(server.url("/hold"))) for _ in range(5)]
            await server.wait_held(2)
            server.release_held()
            await asyncio.gather(*held)
            for _ in range(3):
                await client.get(server.url("/hello"))
            opened = sum(h.opened for h in client.pool.stats().hosts.values())
    page = Elements(timeline.render_html())
    assert len(page.with_class("lane")) == opened == 2
    assert len(page.with_class("bar")) == 8
    assert len(page.with_class("ph-wait")) == len(queued) == 3
    assert page.by_id("chart")["data-max-waiting"] == "3"
