"""Retry events: each retry reaches the pool's listeners, the HTML timeline and the trace.

The client's wait is a fake that records the delay (no sleeping), as in test_retry.py.
"""

from __future__ import annotations

import random

import glasspool
from glasspool import Client, PoolEvent, Retry, Timeline
from tests.rawserver import RawServer, Reply


def reply(status: int, *headers: str, body: bytes = b"x") -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def fake_sleep(client: Client) -> list[float]:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    client._retry_sleep = sleep
    client._retry_rng = random.Random(3)
    return delays


async def test_retry_events_carry_reason_delay_and_attempt() -> None:
    replies = [reply(503), reply(429, "Retry-After: 2"), reply(200, body=b"ok")]
    events: list[PoolEvent] = []
    async with RawServer(replies=replies) as srv, Client(retry=Retry(backoff=0.1)) as client:
        delays = fake_sleep(client)
        client.pool.add_listener(events.append)
        timeline = Timeline(client.pool)
        r = await client.get(f"http://127.0.0.1:{srv.port}/x")
        assert (r.status, r.content) == (200, b"ok")
    retries = [e for e in events if e.kind == "retry"]
    assert [(e.reason, e.attempt, e.delay) for e in retries] == [
        ("status_503", 2, delays[0]),
        ("status_429", 3, 2.0),
    ]
    assert all(e.key == retries[0].key and e.connection_id is None for e in retries)
    assert all(e.reason in glasspool.EVENT_REASONS["retry"] for e in retries)
    # each retry comes after the release of the attempt it retries, before the next acquire
    kinds = [e.kind for e in events if e.kind in ("released", "retry", "acquired")]
    assert kinds == ["acquired", "released", "retry"] * 2 + ["acquired", "released"]
    assert "retry (status_429)" in str(retries[1]) and "attempt=3" in str(retries[1])
    assert "delay=2.000s" in str(retries[1])

    page = timeline.render_html()
    assert page.count('class="mark-retry"') == 2
    assert 'data-reason="status_429"' in page and "attempt 3 (status_429) after 2.000 s" in page
    trace = timeline.render_trace()["traceEvents"]
    assert isinstance(trace, list)
    marks = [e for e in trace if e.get("cat") == "retry"]
    assert [(m["name"], m["args"]["attempt"], m["ph"]) for m in marks] == [
        ("retry (status_503)", 2, "i"),
        ("retry (status_429)", 3, "i"),
    ]
    assert marks[1]["args"]["delay_s"] == 2.0


async def test_a_network_error_retry_is_named_by_its_class() -> None:
    replies = [Reply(b"", close=True), reply(200)]  # closed before any response byte
    events: list[PoolEvent] = []
    async with RawServer(replies=replies) as srv, Client(retry=2) as client:
        fake_sleep(client)
        client.pool.add_listener(events.append)
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.status == 200
    retries = [e for e in events if e.kind == "retry"]
    assert [e.reason for e in retries] == ["ServerDisconnected"], events
    assert retries[0].attempt == 2


async def test_no_retry_no_event_and_no_marks() -> None:
    events: list[PoolEvent] = []
    async with RawServer(replies=[reply(503)]) as srv, Client() as client:
        client.pool.add_listener(events.append)
        timeline = Timeline(client.pool)
        assert (await client.get(f"http://127.0.0.1:{srv.port}/")).status == 503
    assert not [e for e in events if e.kind == "retry"]
    assert 'id="marks"' not in timeline.render_html()


async def test_each_attempt_is_a_span_with_its_retry_and_limit_events() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from glasspool import otel

    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider()
    replies = [reply(503, "Retry-After: 1"), reply(200)]
    try:
        async with (
            RawServer(replies=replies) as srv,
            Client(retry=2, adaptive_limits=True, limit_per_host=4) as client,
        ):
            fake_sleep(client)
            handle = otel.instrument(client, meters, tracers)
            with tracers.get_tracer("test").start_as_current_span("caller"):
                assert (await client.get(f"http://127.0.0.1:{srv.port}/")).status == 200
            handle.uninstrument()
        spans = {s.name: s for s in exporter.get_finished_spans() if s.name == "caller"}
        caller = spans["caller"]
        first, second = sorted(
            (s for s in exporter.get_finished_spans() if s.name == "GET"),
            key=lambda s: s.start_time or 0,
        )
        for span in (first, second):
            assert span.parent is not None and span.parent.span_id == caller.context.span_id
        a1, a2 = dict(first.attributes or {}), dict(second.attributes or {})
        assert (a1[otel.STATUS], a1[otel.ERROR_TYPE]) == (503, "503")
        assert otel.RESEND_COUNT not in a1 and first.status.status_code is StatusCode.ERROR
        assert (a2[otel.STATUS], a2[otel.RESEND_COUNT]) == (200, 1)
        assert otel.ERROR_TYPE not in a2
        marks = {e.name: dict(e.attributes or {}) for e in first.events}
        assert marks["glasspool.pool.retry"] == {
            otel.REASON: "status_503",
            otel.RETRY_ATTEMPT: 2,
            otel.RETRY_DELAY: 1.0,
        }
        assert marks["glasspool.pool.limit_changed"] == {
            otel.REASON: "status_503",
            otel.EFFECTIVE_LIMIT: 2,
        }
        names = [e.name for e in second.events]
        assert "glasspool.pool.acquired" in names and "glasspool.pool.retry" not in names
    finally:
        meters.shutdown()
        tracers.shutdown()
