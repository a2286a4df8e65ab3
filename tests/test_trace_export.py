"""The timeline as Chrome trace / Perfetto JSON: Timeline.write_trace, chrome_trace, and the
CLI's ``--trace FILE`` (``glasspool get`` and ``glasspool demo``)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import glasspool
from glasspool import PoolEvent, PoolKey
from glasspool.cli import main
from glasspool.timeline import Timeline, chrome_trace
from tests.demoserver import DemoServer, ThreadedServer

A = PoolKey("http", "a.test", 80)
B = PoolKey("http", "b.test", 80)
PHASES = {"X", "M", "C", "b", "e", "i"}


def ev(
    kind: str, reason: str | None, conn: int | None, t: float, waiting: int, key: PoolKey = A
) -> PoolEvent:
    return PoolEvent(kind, key, conn, reason, t, waiting)


def slices(trace: dict[str, Any], cat: str) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == cat]


def names(trace: dict[str, Any], what: str) -> dict[tuple[int, int | None], str]:
    return {
        (e["pid"], e.get("tid")): e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == what
    }


def check_well_formed(trace: dict[str, Any]) -> None:
    """What a Chrome trace viewer needs: known phases, numeric times, slices nested in
    their connection's slice, and every async begin matched by an end."""
    events = trace["traceEvents"]
    assert {e["ph"] for e in events} <= PHASES
    for e in events:
        if e["ph"] != "M":
            assert isinstance(e["ts"], int | float) and isinstance(e["pid"], int)
    lives = {(e["pid"], e["tid"]): e for e in slices(trace, "connection")}
    for e in events:
        if e["ph"] == "X" and e["cat"] != "connection":
            life = lives[(e["pid"], e["tid"])]
            assert life["ts"] <= e["ts"] and e["ts"] + e["dur"] <= life["ts"] + life["dur"] + 0.01
    begins = Counter((e["pid"], e["id"]) for e in events if e["ph"] == "b")
    ends = Counter((e["pid"], e["id"]) for e in events if e["ph"] == "e")
    assert begins == ends and all(n == 1 for n in begins.values())


def test_chrome_trace_of_recorded_events() -> None:
    trace = chrome_trace(
        [
            ev("connecting", None, 1, 1.0, 0),
            ev("acquired", "new", 1, 1.5, 0),
            ev("queued", "limit_per_host", None, 2.0, 1),
            ev("queued", "limit_per_host", None, 2.5, 2),
            ev("dequeued", "timeout", None, 3.0, 1),  # the oldest gives up (FIFO match)
            ev("released", "eof", 1, 4.0, 1),
            ev("acquired", "reused", 1, 4.0, 0),  # the second waiter, queued at 2.5
            ev("released", "closed", 1, 5.0, 0),
            ev("closed", "not_reusable", 1, 5.0, 0),
            ev("connecting", None, 2, 6.0, 0, key=B),
            ev("closed", "error", 2, 6.5, 0, key=B),
        ],
        title="t",
    )
    json.loads(json.dumps(trace))  # serialisable
    check_well_formed(trace)
    assert names(trace, "process_name") == {
        (0, None): "t: pool (limits unknown)",
        (1, None): "t: http://a.test:80",
        (2, None): "t: http://b.test:80",
    }
    assert names(trace, "thread_name") == {(1, 1): "connection #1", (2, 2): "connection #2"}
    lives = {e["tid"]: e for e in slices(trace, "connection")}
    assert (lives[1]["ts"], lives[1]["dur"], lives[1]["args"]["closed"]) == (
        1e6,
        4e6,
        "not_reusable",
    )
    assert lives[2]["args"] == {"key": "http://b.test:80", "opened": False, "closed": "error"}
    connects = [
        (e["pid"], e["ts"], e["dur"], e["args"]["outcome"]) for e in slices(trace, "connect")
    ]
    assert connects == [(1, 1e6, 0.5e6, "opened"), (2, 6e6, 0.5e6, "failed")]
    requests = [
        (e["name"], e["ts"], e["dur"], e["args"]["released"]) for e in slices(trace, "request")
    ]
    assert requests == [
        ("request 1 (new)", 1.5e6, 2.5e6, "eof"),
        ("request 2 (reused)", 4e6, 1e6, "closed"),
    ]
    waits = [e for e in trace["traceEvents"] if e["ph"] in "be"]
    spans = {(e["id"], e["ph"]): (e["name"], e["ts"]) for e in waits}
    assert spans == {
        (1, "b"): ("pool wait (timeout)", 2e6),
        (1, "e"): ("pool wait (timeout)", 3e6),
        (2, "b"): ("pool wait", 2.5e6),
        (2, "e"): ("pool wait", 4e6),
    }
    counters = [(e["ts"], e["args"]) for e in trace["traceEvents"] if e["ph"] == "C"]
    assert counters[:3] == [
        (1e6, {"open": 1, "waiting": 0}),
        (2e6, {"open": 1, "waiting": 1}),
        (2.5e6, {"open": 1, "waiting": 2}),
    ]
    assert counters[-1] == (6.5e6, {"open": 0, "waiting": 0})


async def test_a_real_run_written_and_loaded(tmp_path: Path) -> None:
    async with DemoServer() as a, DemoServer() as b:
        async with glasspool.Client(limit_per_host=2) as client:
            timeline = Timeline(client.pool, title="run")
            queued = asyncio.Event()
            client.pool.add_listener(lambda e: queued.set() if e.kind == "queued" else None)
            held = [asyncio.create_task(client.get(a.url("/hold"))) for _ in range(2)]
            await a.wait_held(2)
            waiter = asyncio.create_task(client.get(a.url("/hello")))
            await queued.wait()
            a.release_held()
            await asyncio.gather(*held, waiter)
            await client.get(b.url("/hello"))
            stats = client.pool.stats()
    path = timeline.write_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    check_well_formed(trace)
    processes = set(names(trace, "process_name").values())
    assert processes == {
        "run: pool (limit=100, limit_per_host=2)",
        f"run: {a.url('/')[:-1]}",
        f"run: {b.url('/')[:-1]}",
    }
    assert len(slices(trace, "connection")) == sum(h.opened for h in stats.hosts.values()) == 3
    requests = slices(trace, "request")
    assert len(requests) == 4
    assert [r["name"].split()[-1] for r in requests].count("(reused)") == 1
    assert all(r["args"]["released"] == "eof" for r in requests)
    assert {e["args"]["closed"] for e in slices(trace, "connection")} == {"client_closed"}
    assert sum(1 for e in trace["traceEvents"] if e["ph"] == "b") == 1
    assert trace["displayTimeUnit"] == "ms" and trace["otherData"]["title"] == "run"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as running:
        yield running


def test_cli_get_writes_a_trace(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    target = tmp_path / "get.json"
    code = main(["get", "-c", "2", "-n", "5", "--trace", str(target), server.url("/hello")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"trace: written to {target}" in out
    trace = json.loads(target.read_text())
    check_well_formed(trace)
    assert len(slices(trace, "request")) == 5
    opened = int(next(ln for ln in out.splitlines() if ln.startswith("connections:")).split()[1])
    assert len(slices(trace, "connection")) == opened


def test_cli_demo_writes_a_trace_and_a_timeline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace_path, page = tmp_path / "demo.json", tmp_path / "demo.html"
    code = main(["demo", "--trace", str(trace_path), "--timeline", str(page)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"trace: written to {trace_path}" in out and page.exists()
    trace = json.loads(trace_path.read_text())
    check_well_formed(trace)
    assert len(slices(trace, "connection")) == 6  # as the HTML timeline's lanes
    assert len(slices(trace, "request")) == 10
    waiting = max(e["args"]["waiting"] for e in trace["traceEvents"] if e["ph"] == "C")
    assert waiting == 2


def test_help_lists_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "--help"]) == 0
    assert "--trace FILE" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    assert "--trace FILE" in capsys.readouterr().out


def test_connect_steps_inside_the_connect_slice() -> None:
    s = PoolKey("https", "s.test", 443)
    trace = chrome_trace(
        [
            ev("connecting", None, 1, 1.0, 0, key=s),
            ev("tls", "origin", 1, 1.25, 0, key=s),
            ev("acquired", "new", 1, 1.5, 0, key=s),
            ev("connecting", None, 2, 2.0, 0, key=s),  # through a proxy
            ev("tunnel", "connect", 2, 2.25, 0, key=s),
            ev("tls", "origin", 2, 2.5, 0, key=s),
            ev("closed", "error", 2, 3.0, 0, key=s),  # the handshake failed
        ]
    )
    check_well_formed(trace)
    handshakes = [(e["tid"], e["name"], e["ts"], e["dur"]) for e in slices(trace, "tls")]
    assert handshakes == [
        (1, "TLS handshake (origin)", 1.25e6, 0.25e6),
        (2, "TLS handshake (origin)", 2.5e6, 0.5e6),
    ]
    instants = [(e["tid"], e["name"], e["ts"]) for e in trace["traceEvents"] if e["ph"] == "i"]
    assert instants == [(2, "tunnel ready (connect)", 2.25e6)]
