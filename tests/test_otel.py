"""glasspool.otel.instrument() with the OpenTelemetry SDK's in-memory reader and exporter,
against loopback servers: names, units and attributes per the HTTP semantic conventions,
open connections by state equal to ``pool.stats()`` after every step (and every event but
``released``), spans with the pool's story, ``traceparent``, and ``uninstrument()``."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.metrics import http_metrics
from opentelemetry.semconv.metrics import http_metrics as stable_http_metrics
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

import glasspool
from glasspool import otel
from tests.demoserver import DemoServer
from tests.faults import FaultServer
from tests.nginx import NginxServer, TLSCerts
from tests.rawserver import RawServer

Server = tuple[str, int, str]  # server.address, server.port, url.scheme


# -- reading what the SDK got -----------------------------------------------------------------


@dataclass
class Telemetry:
    """An SDK meter provider and tracer provider that keep everything in memory."""

    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    def __post_init__(self) -> None:
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)

    def values(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        """Sum or last value by attribute set (histograms: the count)."""
        out: dict[frozenset[tuple[str, Any]], float] = {}
        for p in self.points(name):
            attrs = frozenset((p.attributes or {}).items())
            out[attrs] = p.count if isinstance(p, HistogramDataPoint) else p.value
        return out

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.meters.shutdown()
    t.tracers.shutdown()


def server_of(attrs: frozenset[tuple[str, Any]]) -> Server:
    d = dict(attrs)
    return (d["server.address"], d["server.port"], d["url.scheme"])


def pool_counts(client: glasspool.Client) -> dict[tuple[Server, str], int]:
    """``stats()`` as (server, what) -> count; keys that share a server add up."""
    out: dict[tuple[Server, str], int] = {}
    for key, h in client.pool.stats().hosts.items():
        server = (key.host, key.port, key.scheme)
        for what, n in (
            ("active", h.in_use),
            ("idle", h.idle),
            ("connecting", h.connecting),
            ("waiting", h.waiting),
        ):
            out[(server, what)] = out.get((server, what), 0) + n
    return {k: v for k, v in out.items() if v}


def metric_counts(t: Telemetry) -> dict[tuple[Server, str], int]:
    """The same counts as the metrics report them."""
    out: dict[tuple[Server, str], int] = {}
    for attrs, value in t.values(otel.OPEN_CONNECTIONS).items():
        out[(server_of(attrs), dict(attrs)["http.connection.state"])] = int(value)
    for name, what in ((otel.POOL_CONNECTING, "connecting"), (otel.POOL_WAITING, "waiting")):
        for attrs, value in t.values(name).items():
            out[(server_of(attrs), what)] = int(value)
    return {k: v for k, v in out.items() if v}


class EventLog:
    """A listener that keeps every event and lets a test wait for one (no sleeps)."""

    def __init__(self, client: glasspool.Client) -> None:
        self.events: list[glasspool.PoolEvent] = []
        self._waiters: list[tuple[Callable[[glasspool.PoolEvent], bool], asyncio.Future[None]]]
        self._waiters = []
        client.pool.add_listener(self)

    def __call__(self, event: glasspool.PoolEvent) -> None:
        self.events.append(event)
        for predicate, fut in self._waiters:
            if not fut.done() and predicate(event):
                fut.set_result(None)

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int) -> list[tuple[str, str | None]]:
        return [(e.kind, e.reason) for e in self.events[mark:]]

    async def wait(self, predicate: Callable[[glasspool.PoolEvent], bool], mark: int = 0) -> None:
        if any(predicate(e) for e in self.events[mark:]):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(5):
                await fut
        finally:
            self._waiters.remove(entry)


class EveryEventCheck:
    """After each event (our listener ran first), the metrics must equal ``stats()``; at
    ``released`` they differ by exactly that connection (the pool emits it before it moves
    the connection, the metrics move it at once)."""

    def __init__(self, client: glasspool.Client, t: Telemetry) -> None:
        self.client, self.t = client, t
        self.problems: list[str] = []
        self.checked = 0
        client.pool.add_listener(self)

    def __call__(self, event: glasspool.PoolEvent) -> None:
        expected = pool_counts(self.client)
        if event.kind == "released":
            server = (event.key.host, event.key.port, event.key.scheme)
            for what, delta in (("active", -1), ("idle", 1)):
                n = expected.get((server, what), 0) + delta
                expected[(server, what)] = n
            expected = {k: v for k, v in expected.items() if v}
        got = metric_counts(self.t)
        self.checked += 1
        if got != expected:
            self.problems.append(f"after {event}: metrics {got} != stats {expected}")


async def gather_quietly(*tasks: asyncio.Task[Any]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the scripted scenario --------------------------------------------------------------------


async def test_open_connections_by_state_equal_stats_after_every_step(
    telemetry: Telemetry, fault_server: FaultServer
) -> None:
    async with DemoServer() as a, DemoServer() as b:
        client = glasspool.Client(limit=2, limit_per_host=2, keepalive_expiry=1.0)
        handle = otel.instrument(client, telemetry.meters, telemetry.tracers)
        every = EveryEventCheck(client, telemetry)
        log = EventLog(client)

        def step(expected: set[tuple[str, str | None]], mark: int) -> None:
            assert expected <= set(log.since(mark)), log.since(mark)
            assert metric_counts(telemetry) == pool_counts(client)

        try:
            mark = log.mark()  # 1. a new connection, then idle
            await client.get(a.url("/hello"))
            step({("connecting", None), ("acquired", "new"), ("released", "eof")}, mark)
            assert pool_counts(client) == {(("127.0.0.1", a.port, "http"), "idle"): 1}

            mark = log.mark()  # 2. reuse
            await client.get(a.url("/hello"))
            step({("acquired", "reused")}, mark)

            mark = log.mark()  # 3. both slots held by the server: active 2
            held = [asyncio.create_task(client.get(a.url("/hold"))) for _ in range(2)]
            await a.wait_held(2)
            step({("acquired", "reused"), ("acquired", "new")}, mark)

            mark = log.mark()  # 4. a queued request, then cancelled
            doomed = asyncio.create_task(client.get(a.url("/hello")))
            await log.wait(lambda e: e.kind == "queued", mark)
            step({("queued", "limit_per_host")}, mark)
            doomed.cancel()
            await gather_quietly(doomed)
            step({("dequeued", "cancelled")}, mark)

            mark = log.mark()  # 5. a queued request served by a hand-over
            waiter = asyncio.create_task(client.get(a.url("/hello")))
            await log.wait(lambda e: e.kind == "queued", mark)
            step({("queued", "limit_per_host")}, mark)
            a.release_held()
            await asyncio.gather(*held, waiter)
            step({("acquired", "reused")}, mark)
            assert pool_counts(client) == {(("127.0.0.1", a.port, "http"), "idle"): 2}

            mark = log.mark()  # 6. eviction: the global limit is full, b has nothing
            await client.get(b.url("/hello"))
            step({("closed", "evicted"), ("acquired", "new")}, mark)

            mark = log.mark()  # 7. a streamed response closed early: closed, not pooled
            async with client.stream("GET", b.url("/stream")):
                step({("acquired", "reused")}, mark)
            step({("released", "closed"), ("closed", "not_reusable")}, mark)

            mark = log.mark()  # 8. expiry of the idle connection of a
            await log.wait(lambda e: e.kind == "closed" and e.reason == "expired", mark)
            step({("closed", "expired")}, mark)
            assert pool_counts(client) == {}

            mark = log.mark()  # 9. the server closes a connection (evicting nothing)
            await client.get(fault_server.url("/fault/close-after"))
            await log.wait(lambda e: e.kind == "closed", mark)
            step({("connecting", None), ("closed", "server_closed")}, mark)

            await client.get(a.url("/hello"))
            mark = log.mark()  # 10. the client closes
        finally:
            await client.aclose()
        step({("closed", "client_closed")}, mark)
        assert metric_counts(telemetry) == {}
        assert every.checked > 25 and every.problems == []
        waits = telemetry.values(otel.TIME_IN_QUEUE)
        assert sum(waits.values()) == 1  # the served waiter; the cancelled one is not a wait
        dequeued = telemetry.values(otel.POOL_DEQUEUED)
        assert {dict(k)["glasspool.pool.reason"]: v for k, v in dequeued.items()} == {
            "cancelled": 1
        }
        assert sum(telemetry.values(otel.POOL_EVICTIONS).values()) == 1
        closed = {dict(k)["glasspool.pool.reason"] for k in telemetry.values(otel.POOL_CLOSED)}
        assert closed == {"evicted", "not_reusable", "expired", "server_closed", "client_closed"}
        handle.uninstrument()


async def test_instrumenting_a_busy_pool_counts_what_is_open(telemetry: Telemetry) -> None:
    """Connections open (idle, in use) and waiters queued before instrument() are counted
    from stats(), and each is accounted for when it changes or closes unseen."""
    async with DemoServer() as a, glasspool.Client(limit_per_host=3) as client:
        await asyncio.gather(*(client.get(a.url("/hello")) for _ in range(3)))  # 3 idle
        held = [asyncio.create_task(client.get(a.url("/hold"))) for _ in range(3)]
        await a.wait_held(3)
        queued = asyncio.create_task(client.get(a.url("/hello")))
        log = EventLog(client)
        await log.wait(lambda e: e.kind == "queued")
        handle = otel.instrument(client, telemetry.meters, telemetry.tracers)
        every = EveryEventCheck(client, telemetry)
        assert metric_counts(telemetry) == pool_counts(client)
        a.release_held()
        await asyncio.gather(*held, queued)
        assert metric_counts(telemetry) == pool_counts(client)
        await client.aclose()
        assert metric_counts(telemetry) == {}
        assert every.problems == []
        handle.uninstrument()


async def test_a_pool_with_connections_in_all_states_closed_unseen(telemetry: Telemetry) -> None:
    """Open before instrument(): one in use and one idle; both closed by aclose() without
    another event first. The pool's own counts say which state each one was in."""
    async with DemoServer() as a:
        client = glasspool.Client()
        await client.get(a.url("/hello"))
        held = asyncio.create_task(client.get(a.url("/hold")))
        await a.wait_held(1)
        await client.get(a.url("/hello"))  # a second connection, idle
        handle = otel.instrument(client, telemetry.meters, telemetry.tracers)
        every = EveryEventCheck(client, telemetry)
        server = ("127.0.0.1", a.port, "http")
        assert metric_counts(telemetry) == {(server, "active"): 1, (server, "idle"): 1}
        await client.aclose()
        await gather_quietly(held)
        assert metric_counts(telemetry) == {}
        assert every.problems == []
        handle.uninstrument()


# -- names, units, attributes -----------------------------------------------------------------

SEMCONV = {  # name -> (instrument data type, unit), per the HTTP semantic conventions
    stable_http_metrics.HTTP_CLIENT_REQUEST_DURATION: ("histogram", "s"),
    http_metrics.HTTP_CLIENT_OPEN_CONNECTIONS: ("sum", "{connection}"),
    http_metrics.HTTP_CLIENT_CONNECTION_DURATION: ("histogram", "s"),
    http_metrics.HTTP_CLIENT_ACTIVE_REQUESTS: ("sum", "{request}"),
    "http.client.request.time_in_queue": ("histogram", "s"),  # .NET's, same unit
}
SERVER_KEYS = {"server.address", "server.port", "url.scheme"}


async def test_metric_names_units_and_attributes_follow_the_conventions(
    telemetry: Telemetry, refused_port: int
) -> None:
    async with DemoServer() as a, glasspool.Client(limit_per_host=1) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        await asyncio.gather(client.get(a.url("/hello")), client.get(a.url("/secret/404")))
        r = await client.get(a.url("/status/503"))
        assert r.status == 503
        with pytest.raises(glasspool.ConnectError):
            await client.get(f"http://127.0.0.1:{refused_port}/")
    metrics = telemetry.metrics()  # after the client closed its connection
    for name, (kind, unit) in SEMCONV.items():
        metric = metrics[name]
        assert metric.unit == unit, name
        data = metric.data
        assert type(data).__name__.lower() == kind, name
        if kind == "sum":
            assert data.is_monotonic is False, name
    hist = metrics[otel.REQUEST_DURATION].data.data_points
    bounds = {tuple(p.explicit_bounds) for p in hist}
    assert bounds == {otel.DURATION_BUCKETS}
    by_status = {dict(p.attributes).get("http.response.status_code"): p for p in hist}
    ok = dict(by_status[200].attributes)
    assert ok == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": a.port,
        "url.scheme": "http",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert dict(by_status[404].attributes)["error.type"] == "404"
    assert dict(by_status[503].attributes)["error.type"] == "503"
    failed = dict(by_status[None].attributes)
    assert failed["error.type"] == "ConnectError" and failed["server.port"] == refused_port
    for p in metrics[otel.OPEN_CONNECTIONS].data.data_points:
        assert set(p.attributes) == SERVER_KEYS | {"http.connection.state"}
        assert p.attributes["http.connection.state"] in {"active", "idle"}
    for p in metrics[otel.ACTIVE_REQUESTS].data.data_points:
        assert set(p.attributes) == SERVER_KEYS | {"http.request.method"}
        assert p.value == 0
    for p in metrics[otel.OPEN_CONNECTIONS].data.data_points:
        assert p.value == 0
    (queue,) = metrics[otel.TIME_IN_QUEUE].data.data_points
    assert set(queue.attributes) == SERVER_KEYS | {"http.request.method"} and queue.count == 1
    durations = metrics[otel.CONNECTION_DURATION].data.data_points
    assert {p.attributes["glasspool.pool.reason"] for p in durations} == {"client_closed"}
    for metric in metrics.values():  # bounded values: never a path or a URL
        for p in metric.data.data_points:
            for value in (p.attributes or {}).values():
                assert "/" not in str(value) and "secret" not in str(value), metric.name


async def test_active_requests_counts_calls_in_flight(telemetry: Telemetry) -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        held = [asyncio.create_task(client.get(a.url("/hold"))) for _ in range(2)]
        await a.wait_held(2)
        async with client.stream("GET", a.url("/stream")):
            (point,) = telemetry.points(otel.ACTIVE_REQUESTS)
            assert point.value == 3
        a.release_held()
        await asyncio.gather(*held)
        (point,) = telemetry.points(otel.ACTIVE_REQUESTS)
        assert point.value == 0


# -- spans ------------------------------------------------------------------------------------


def span_events(span: ReadableSpan) -> list[tuple[str, Any]]:
    return [
        (e.name.removeprefix("glasspool.pool."), (e.attributes or {}).get(otel.REASON))
        for e in span.events
    ]


async def test_one_client_span_per_call_with_the_pool_story(telemetry: Telemetry) -> None:
    async with DemoServer() as a, glasspool.Client(limit_per_host=1) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        first = asyncio.create_task(client.get(a.url("/hold")))
        await a.wait_held(1)
        log = EventLog(client)
        second = asyncio.create_task(client.get(a.url("/hello")))
        await log.wait(lambda e: e.kind == "queued")
        a.release_held()
        await asyncio.gather(first, second)
        async with client.stream("GET", a.url("/hello")) as r:
            await r.read()
    spans = telemetry.spans()
    assert len(spans) == 3
    one, two, three = sorted(spans, key=lambda s: s.start_time or 0)
    for span in spans:
        assert span.kind is SpanKind.CLIENT and span.name == "GET"
        assert span.attributes is not None
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["server.port"] == a.port
    assert one.attributes is not None and two.attributes is not None
    assert one.attributes["url.full"] == a.url("/hold")
    # A body read to its end is the span's end: no ``released`` event for it.
    assert span_events(one) == [("connecting", None), ("acquired", "new")]
    # The waiter's connection was handed over from the first request's task:
    assert span_events(two) == [("queued", "limit_per_host"), ("acquired", "reused")]
    assert two.attributes["glasspool.connection.reused"] is True
    assert one.attributes["glasspool.connection.reused"] is False
    assert span_events(three) == [("acquired", "reused")]
    assert {s.context.trace_id for s in spans} != {0}


async def test_url_full_is_redacted_as_the_conventions_ask(telemetry: Telemetry) -> None:
    secret = "s3cret-value"
    async with DemoServer() as a, glasspool.Client() as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        signed = a.url(f"/hello?X-Amz-Signature={secret}&sig={secret}&part=1")
        url = signed.replace("://", f"://bob:{secret}@", 1)
        assert (await client.get(url)).status == 200
    (span,) = telemetry.spans()
    assert span.attributes is not None
    full = span.attributes["url.full"]
    assert isinstance(full, str) and secret not in full and "bob" not in full
    assert full == a.url("/hello?X-Amz-Signature=REDACTED&sig=REDACTED&part=1").replace(
        "://", "://REDACTED:REDACTED@", 1
    )


async def test_the_tls_handshake_is_on_the_span(
    telemetry: Telemetry, nginx: NginxServer, tls_certs: TLSCerts
) -> None:
    url = nginx.url("/small", which="tls", host="localhost")
    async with glasspool.Client(verify=str(tls_certs.ca_file)) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        await client.get(url)
        await client.get(url)
    first, second = sorted(telemetry.spans(), key=lambda s: s.start_time or 0)
    assert span_events(first)[:3] == [("connecting", None), ("tls", "origin"), ("acquired", "new")]
    connecting, tls, acquired = (event_time(first, n) for n in ("connecting", "tls", "acquired"))
    assert connecting <= tls <= acquired  # TCP connect, then the handshake
    assert ("tls", "origin") not in span_events(second)  # reused: no handshake
    assert first.attributes is not None and first.attributes["url.scheme"] == "https"


def event_time(span: ReadableSpan, name: str) -> int:
    return next(e.timestamp for e in span.events if e.name == f"glasspool.pool.{name}")


async def test_waiters_served_from_another_task_are_matched_first_in_first_out(
    telemetry: Telemetry,
) -> None:
    """Three waiters for one connection: each hand-over runs in the task that released,
    and goes on the span of the request that was served (the oldest waiter)."""
    async with DemoServer() as a, glasspool.Client(limit_per_host=1) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        holder = asyncio.create_task(client.get(a.url("/hold")))
        await a.wait_held(1)
        log = EventLog(client)
        waiters = []
        for n in range(3):
            waiters.append(asyncio.create_task(client.get(a.url(f"/bytes/{n}"))))
            await log.wait(lambda e, n=n: e.kind == "queued" and e.waiting == n + 1)
        a.release_held()
        await asyncio.gather(holder, *waiters)
    spans = {(s.attributes or {})["url.full"]: s for s in telemetry.spans()}
    served = [spans[a.url(f"/bytes/{n}")] for n in range(3)]
    for span in served:
        assert span_events(span) == [("queued", "limit_per_host"), ("acquired", "reused")]
        assert event_time(span, "acquired") <= (span.end_time or 0)
    acquired = [event_time(span, "acquired") for span in served]
    assert acquired == sorted(acquired)  # served in the order they queued
    (waits,) = telemetry.points(otel.TIME_IN_QUEUE)
    assert waits.count == 3


async def test_a_cancelled_waiter_leaves_the_queue_in_its_place(telemetry: Telemetry) -> None:
    """The middle one of three waiters is cancelled: its own entry leaves (not the oldest),
    so the other two are still matched with the connections they got."""
    async with DemoServer() as a, glasspool.Client(limit_per_host=1) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        holder = asyncio.create_task(client.get(a.url("/hold")))
        await a.wait_held(1)
        log = EventLog(client)
        waiters = []
        for n in range(3):
            waiters.append(asyncio.create_task(client.get(a.url(f"/bytes/{n}"))))
            await log.wait(lambda e, n=n: e.kind == "queued" and e.waiting == n + 1)
        waiters[1].cancel()
        await gather_quietly(waiters[1])
        a.release_held()
        await asyncio.gather(holder, waiters[0], waiters[2])
    spans = {(s.attributes or {})["url.full"]: s for s in telemetry.spans()}
    first, middle, last = (spans[a.url(f"/bytes/{n}")] for n in range(3))
    assert span_events(middle) == [
        ("queued", "limit_per_host"),
        ("dequeued", "cancelled"),
        ("exception", None),  # record_exception: the cancellation
    ]
    assert middle.attributes is not None and middle.attributes["error.type"] == "CancelledError"
    for span in (first, last):
        assert [name for name, _ in span_events(span)] == ["queued", "acquired"]
    assert event_time(first, "acquired") < event_time(last, "acquired")


async def test_failed_requests_mark_the_span(telemetry: Telemetry, refused_port: int) -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        await client.get(a.url("/status/500"))
        with pytest.raises(glasspool.ConnectError):
            await client.request("GET", f"http://127.0.0.1:{refused_port}/")
        with pytest.raises(glasspool.PoolTimeout):
            async with glasspool.Client(limit=1) as tiny:
                otel.instrument(tiny, telemetry.meters, telemetry.tracers)
                hold = asyncio.create_task(tiny.get(a.url("/hold")))
                await a.wait_held(1)
                try:
                    await tiny.get(a.url("/hello"), timeout=glasspool.Timeout(pool=0.01))
                finally:
                    a.release_held()
                    await hold
    by_status = {(s.attributes or {}).get("error.type"): s for s in telemetry.spans()}
    assert set(by_status) == {"500", "ConnectError", "PoolTimeout", None}
    for name in ("500", "ConnectError", "PoolTimeout"):
        assert by_status[name].status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in by_status["ConnectError"].events)
    assert ("dequeued", "timeout") in span_events(by_status["PoolTimeout"])
    assert by_status[None].status.status_code is StatusCode.UNSET


async def test_traceparent_is_injected_only_when_asked(
    telemetry: Telemetry, fault_server: FaultServer
) -> None:
    async with glasspool.Client() as client:
        handle = otel.instrument(client, telemetry.meters, telemetry.tracers)
        await client.get(fault_server.url("/a"))
        handle.uninstrument()
        otel.instrument(client, telemetry.meters, telemetry.tracers, propagate=True)
        await client.get(fault_server.url("/b"), headers={"X-Keep": "1"})
        mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        await client.get(fault_server.url("/c"), headers={"traceparent": mine})
    first, second, third = fault_server.requests
    assert first.header("traceparent") is None
    spans = {s.attributes["url.full"]: s for s in telemetry.spans() if s.attributes}
    ctx = spans[fault_server.url("/b")].context
    assert second.header("traceparent") == (
        f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    )
    assert second.header("X-Keep") == "1"
    assert third.header("traceparent") == mine  # the caller's own is kept


async def test_redirects_and_retries_are_separate_spans_under_the_callers(
    telemetry: Telemetry,
) -> None:
    replies = [
        b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ]
    retry = glasspool.Retry(total=1, backoff=0, statuses=frozenset({503}))
    async with RawServer(replies=replies) as srv, glasspool.Client(retry=retry) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers, propagate=True)
        tracer = telemetry.tracers.get_tracer("test")
        with tracer.start_as_current_span("caller") as caller:
            r = await client.get(f"http://127.0.0.1:{srv.port}/first")
        assert r.status == 200
    spans = [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]
    assert len(spans) == 3
    first, hop, retried = sorted(spans, key=lambda s: s.start_time or 0)
    base = f"http://127.0.0.1:{srv.port}"
    for span, url, status, resends in (
        (first, f"{base}/first", 302, None),
        (hop, f"{base}/next", 503, 1),
        (retried, f"{base}/next", 200, 2),
    ):
        assert span.parent is not None
        assert span.parent.span_id == caller.get_span_context().span_id
        assert span.attributes is not None
        assert span.attributes["url.full"] == url
        assert span.attributes["http.response.status_code"] == status
        assert span.attributes.get("http.request.resend_count") == resends
        assert span.end_time is not None
    # Each send carries its own span's traceparent.
    for raw, span in zip(srv.requests, (first, hop, retried), strict=True):
        ctx = span.context
        assert f"traceparent: 00-{ctx.trace_id:032x}-{ctx.span_id:016x}-".encode() in raw.lower()


# -- lifecycle --------------------------------------------------------------------------------


async def test_uninstrument_restores_everything_and_is_idempotent(telemetry: Telemetry) -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        assert "request" not in vars(client) and "stream" not in vars(client)
        handle = otel.instrument(client, telemetry.meters, telemetry.tracers)
        assert handle.instrumented and "request" in vars(client)
        with pytest.raises(RuntimeError, match="instrumented already"):
            otel.instrument(client, telemetry.meters, telemetry.tracers)
        await client.get(a.url("/hello"))
        assert metric_counts(telemetry) == {(("127.0.0.1", a.port, "http"), "idle"): 1}
        handle.uninstrument()
        handle.uninstrument()
        assert not handle.instrumented
        assert "request" not in vars(client) and "stream" not in vars(client)
        with pytest.raises(ValueError, match="never added"):
            client.pool.remove_listener(handle._on_event)  # no listener left: no cost
        assert metric_counts(telemetry) == {}  # its share withdrawn
        await client.get(a.url("/hello"))
        assert len(telemetry.spans()) == 1
        assert sum(telemetry.values(otel.REQUEST_DURATION).values()) == 1
        # Instrumenting again on the same provider reports again (shared instruments).
        again = otel.instrument(client, telemetry.meters, telemetry.tracers)
        assert metric_counts(telemetry) == {(("127.0.0.1", a.port, "http"), "idle"): 1}
        await client.get(a.url("/hello"))
        assert sum(telemetry.values(otel.REQUEST_DURATION).values()) == 2
        again.uninstrument()


async def test_a_call_in_flight_at_uninstrument_ends_cleanly(telemetry: Telemetry) -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        handle = otel.instrument(client, telemetry.meters, telemetry.tracers)
        held = asyncio.create_task(client.get(a.url("/hold")))
        await a.wait_held(1)
        handle.uninstrument()
        a.release_held()
        await held
        (point,) = telemetry.points(otel.ACTIVE_REQUESTS)
        assert point.value == 0
        assert len(telemetry.spans()) == 1


async def test_two_clients_on_one_provider_add_up(telemetry: Telemetry) -> None:
    async with (
        DemoServer() as a,
        glasspool.Client() as one,
        glasspool.Client() as two,
    ):
        otel.instrument(one, telemetry.meters, telemetry.tracers)
        handle = otel.instrument(two, telemetry.meters, telemetry.tracers)
        await one.get(a.url("/hello"))
        await two.get(a.url("/hello"))
        server = ("127.0.0.1", a.port, "http")
        assert metric_counts(telemetry) == {(server, "idle"): 2}
        handle.uninstrument()
        assert metric_counts(telemetry) == {(server, "idle"): 1}


async def test_no_op_providers_and_the_global_ones() -> None:
    async with DemoServer() as a, glasspool.Client() as client:
        handle = otel.instrument(client, NoOpMeterProvider(), NoOpTracerProvider(), propagate=True)
        r = await client.get(a.url("/hello"))
        async with client.stream("GET", a.url("/hello")) as s:
            await s.read()
        assert r.status == 200 and s.status == 200
        handle.uninstrument()
        handle = otel.instrument(client)  # the global providers (no-op unless set)
        assert (await client.get(a.url("/hello"))).status == 200
        handle.uninstrument()


class FakeLease:
    def __init__(self, limits: FakeFleet) -> None:
        self.limits = limits

    async def release(self) -> None:
        self.limits.used -= 1


class FakeFleet:
    """Fleet-wide limits of 1 per host, granted by hand (``grant``)."""

    def __init__(self) -> None:
        self.used = 0
        self.gate = asyncio.Event()

    def limit_for(self, key: glasspool.PoolKey) -> int | None:
        return 1

    async def acquire(self, key: glasspool.PoolKey, timeout: float | None) -> FakeLease:
        if self.used >= 1:
            await self.gate.wait()
        self.used += 1
        return FakeLease(self)

    def snapshot(self, key: glasspool.PoolKey) -> tuple[int | None, int]:
        return (self.used, self.used)

    async def aclose(self) -> None:
        return None


async def test_fleet_waits_and_an_adopted_connection(telemetry: Telemetry) -> None:
    """A request waiting for a fleet-wide lease (the fleet full) adopts the connection that
    the first request gives back: the wait is timed, and the reuse is on its span."""
    fleet = FakeFleet()
    async with DemoServer() as a, glasspool.Client(shared_limits=fleet) as client:
        otel.instrument(client, telemetry.meters, telemetry.tracers)
        every = EveryEventCheck(client, telemetry)
        log = EventLog(client)
        first = asyncio.create_task(client.get(a.url("/hold")))
        await a.wait_held(1)
        second = asyncio.create_task(client.get(a.url("/hello")))
        await log.wait(lambda e: e.kind == "queued" and e.reason == "shared_limit")
        a.release_held()
        await asyncio.gather(first, second)
        assert ("closed", "cancelled") in log.since(0)  # the reserved slot given back
        assert metric_counts(telemetry) == pool_counts(client)
    assert every.problems == []
    (wait,) = telemetry.points(otel.FLEET_WAIT)
    assert wait.count == 1
    queued = telemetry.values(otel.POOL_QUEUED)
    assert {dict(k)["glasspool.pool.reason"] for k in queued} == {"shared_limit"}
    spans = sorted(telemetry.spans(), key=lambda s: s.start_time or 0)
    assert span_events(spans[1])[:3] == [
        ("connecting", None),
        ("queued", "shared_limit"),
        ("acquired", "reused"),
    ]
    assert ("acquired", "reused") not in span_events(spans[0])


def test_import_without_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "glasspool.otel")
    with pytest.raises(ImportError, match=r"pip install 'glasspool\[otel\]'"):
        importlib.import_module("glasspool.otel")


def test_a_client_without_instance_dict_is_refused(telemetry: Telemetry) -> None:
    class Slotted:
        __slots__ = ("pool",)

    thing = Slotted()
    thing.pool = glasspool.Client().pool
    with pytest.raises(TypeError):
        otel.instrument(thing, telemetry.meters, telemetry.tracers)  # type: ignore[arg-type]
