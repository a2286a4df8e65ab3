"""Timeline: what the pool did, per connection, as one self-contained HTML page.

A :class:`Timeline` listens to a pool (``client.pool.add_listener``) and keeps every
:class:`~glasspool.PoolEvent`. :meth:`Timeline.write_html` draws them: a lane per
connection, a bar per request on the lane of the connection that carried it, and a chart
of open connections and waiting requests over time. The page is one file (inline CSS, SVG
and a few lines of JavaScript) and fetches nothing. :meth:`Timeline.write_trace` (or
:func:`chrome_trace`) writes the same story as Chrome trace JSON for the Perfetto UI: a
process per pool key, a thread per connection.

Everything is derived from the public event stream, so the phases are the ones the events
delimit:

- **pool wait**: ``queued`` until the request got a slot (``connecting``) or was handed an
  open connection (``acquired reused``). Events carry no request id; within a key waiters
  are served first in, first out, so the oldest recorded wait is matched with the next
  served request (and with the next ``dequeued``, which is exact for pool timeouts and a
  best guess for cancellations);
- **connect**: ``connecting`` until ``acquired new``; the bar's hover text splits it where
  the events do: ``tls`` (TCP, or the tunnel, is up and the TLS handshake begins, until
  the next step or ``acquired new``) and, through a proxy, ``tunnel`` (the proxy accepted
  ``CONNECT``, or the SOCKS handshake ended);
- **in use**: ``acquired`` until ``released`` (sending, waiting for the head and reading
  the body together: no public event separates them).

``retry`` and ``limit_changed`` events are marks in time on their key's row (a strip above
the lanes; instant events in the trace, and the effective limit as a counter there).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from ._events import PoolEvent, PoolListener
from ._pool.key import PoolKey
from ._stats import PoolStats

__all__ = ["Timeline", "chrome_trace"]

Event = dict[str, object]  # one Chrome trace event

WIDTH: Final = 1160
GUTTER: Final = 210
RIGHT: Final = 18
PLOT: Final = WIDTH - GUTTER - RIGHT
LANE_H: Final = 24
BAR_H: Final = 13
WAIT_STRIP: Final = 5
AXIS_H: Final = 26
CHART_H: Final = 170


class EventSource(Protocol):
    """What :class:`Timeline` attaches to: ``client.pool`` (a ``glasspool.Pool``)."""

    def add_listener(self, fn: PoolListener) -> None: ...

    def remove_listener(self, fn: PoolListener) -> None: ...

    def stats(self) -> PoolStats: ...


# -- the model: lanes, bars and a series, rebuilt from the events -----------------------------


@dataclass(slots=True)
class _Bar:
    """One request on one connection; ``None`` times are phases it did not have."""

    index: int
    conn: int
    key: PoolKey
    queued: float | None
    connect: float | None
    start: float | None
    how: str  # "new", "reused", or "failed" (the connect failed)
    end: float | None = None
    end_reason: str | None = None
    steps: tuple[tuple[float, str, str | None], ...] = ()  # connect steps: time, kind, reason


@dataclass(slots=True)
class _Lane:
    """One connection, from ``connecting`` to ``closed``."""

    conn: int
    key: PoolKey
    start: float
    opened: float | None = None
    end: float | None = None
    close_reason: str | None = None
    bars: list[_Bar] = field(default_factory=list)


@dataclass(slots=True)
class _Model:
    lanes: dict[int, _Lane] = field(default_factory=dict)
    points: list[tuple[float, int, int]] = field(default_factory=list)  # time, open, waiting
    dequeued: int = 0
    bars: int = 0
    # waits that ended without a connection: (key, since or None, when, reason)
    gave_up: list[tuple[PoolKey, float | None, float, str | None]] = field(default_factory=list)
    # retries and limit changes, oldest first
    marks: list[PoolEvent] = field(default_factory=list)


class _Builder:
    """Replays events into a :class:`_Model` (see the module docstring for the matching)."""

    def __init__(self, open_: int, waiting: dict[PoolKey, int]) -> None:
        self.model = _Model()
        self.open = open_
        self.waiting = dict(waiting)
        self.total_waiting = sum(waiting.values())
        self.queues: dict[PoolKey, deque[float]] = {}
        self.connecting: dict[int, tuple[float, float | None]] = {}
        self.active: dict[int, _Bar] = {}
        self.steps: dict[int, list[tuple[float, str, str | None]]] = {}

    def feed(self, event: PoolEvent) -> None:
        """Apply one event and add a point to the series."""
        before = self.waiting.get(event.key, 0)
        served = event.waiting < before
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event, served)
        self.waiting[event.key] = event.waiting
        self.total_waiting += event.waiting - before
        self.model.points.append((event.time, self.open, self.total_waiting))

    def _lane(self, event: PoolEvent) -> _Lane:
        assert event.connection_id is not None
        lane = self.model.lanes.get(event.connection_id)
        if lane is None:  # attached after this connection opened
            lane = _Lane(event.connection_id, event.key, event.time, opened=event.time)
            self.model.lanes[event.connection_id] = lane
        return lane

    def _pop_wait(self, key: PoolKey, served: bool) -> float | None:
        queue = self.queues.get(key)
        return queue.popleft() if served and queue else None

    def _add_bar(self, lane: _Lane, bar: _Bar) -> None:
        lane.bars.append(bar)
        self.model.bars += 1

    def on_queued(self, event: PoolEvent, served: bool) -> None:
        """A request starts waiting: remember when."""
        self.queues.setdefault(event.key, deque()).append(event.time)

    def on_dequeued(self, event: PoolEvent, served: bool) -> None:
        """A request gave up waiting: forget the oldest wait of its key."""
        since = self._pop_wait(event.key, True)
        self.model.dequeued += 1
        self.model.gave_up.append((event.key, since, event.time, event.reason))

    def on_connecting(self, event: PoolEvent, served: bool) -> None:
        """A new lane; its first request may have waited for the slot."""
        assert event.connection_id is not None
        cid = event.connection_id
        self.connecting[cid] = (event.time, self._pop_wait(event.key, served))
        self.model.lanes[cid] = _Lane(cid, event.key, event.time)
        self.open += 1

    def on_acquired(self, event: PoolEvent, served: bool) -> None:
        """A new bar on the connection's lane (after its connect, or a wait for reuse)."""
        lane = self._lane(event)
        if event.reason == "new":
            connect, queued = self.connecting.pop(lane.conn, (event.time, None))
            lane.opened = event.time
        else:
            connect, queued = None, self._pop_wait(event.key, served)
        how = "new" if event.reason == "new" else "reused"
        bar = _Bar(self.model.bars, lane.conn, event.key, queued, connect, event.time, how)
        if event.reason == "new":
            bar.steps = tuple(self.steps.pop(lane.conn, ()))
        self._add_bar(lane, bar)
        self.active[lane.conn] = bar

    def on_step(self, event: PoolEvent, served: bool) -> None:
        """A step of a connection being opened (``tunnel``, ``tls``): on its first bar."""
        if event.connection_id is not None:
            steps = self.steps.setdefault(event.connection_id, [])
            steps.append((event.time, event.kind, event.reason))

    def on_released(self, event: PoolEvent, served: bool) -> None:
        """The connection's current bar ends."""
        bar = None if event.connection_id is None else self.active.pop(event.connection_id, None)
        if bar is not None:
            bar.end, bar.end_reason = event.time, event.reason

    def on_closed(self, event: PoolEvent, served: bool) -> None:
        """The lane ends; a connect that failed or a request still on it ends with it."""
        lane = self._lane(event)
        lane.end, lane.close_reason = event.time, event.reason
        self.open = max(0, self.open - 1)
        steps = tuple(self.steps.pop(lane.conn, ()))
        pending = self.connecting.pop(lane.conn, None)
        if pending is not None:
            connect, queued = pending
            bar = _Bar(self.model.bars, lane.conn, event.key, queued, connect, None, "failed")
            bar.steps = steps  # e.g. a TLS handshake that failed
            bar.end, bar.end_reason = event.time, f"connect {event.reason}"
            self._add_bar(lane, bar)
        bar_in_use = self.active.pop(lane.conn, None)
        if bar_in_use is not None:
            bar_in_use.end = event.time
            bar_in_use.end_reason = f"connection closed ({event.reason})"

    def on_mark(self, event: PoolEvent, served: bool) -> None:
        """A retry or a limit change: a mark in time on its key's row."""
        self.model.marks.append(event)


_HANDLERS: Final[dict[str, Callable[[_Builder, PoolEvent, bool], None]]] = {
    "queued": _Builder.on_queued,
    "dequeued": _Builder.on_dequeued,
    "connecting": _Builder.on_connecting,
    "tunnel": _Builder.on_step,
    "tls": _Builder.on_step,
    "acquired": _Builder.on_acquired,
    "released": _Builder.on_released,
    "closed": _Builder.on_closed,
    "retry": _Builder.on_mark,
    "limit_changed": _Builder.on_mark,
}


# -- drawing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scale:
    """Maps monotonic seconds to x pixels."""

    t0: float
    span: float

    def x(self, t: float) -> float:
        return GUTTER + (t - self.t0) / self.span * PLOT

    def ms(self, t: float) -> str:
        return f"{(t - self.t0) * 1000:.1f} ms"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _dur(a: float, b: float) -> str:
    ms = (b - a) * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def _nice_step(span: float, target: int) -> float:
    """A 1/2/5 x 10^k step that cuts ``span`` into about ``target`` parts."""
    raw = max(span / target, 1e-9)
    base = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if base * mult >= raw:
            return float(base * mult)
    return float(base * 10)


def _axis(scale: _Scale, top: float, bottom: float) -> list[str]:
    """Vertical grid lines with time labels (ms below 2 s, else s)."""
    step = _nice_step(scale.span, 8)
    unit, factor = ("ms", 1000.0) if scale.span < 2 else ("s", 1.0)
    out = []
    for i in range(int(scale.span / step) + 1):
        t = i * step
        x = scale.x(scale.t0 + t)
        label = f"{t * factor:g} {unit}"
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>'
            f'<text class="tick" x="{x:.1f}" y="{top - 8}">{label}</text>'
        )
    return out


def _rect(cls: str, x0: float, x1: float, y: float, h: float, tip: str = "") -> str:
    width = max(x1 - x0, 1.5)
    title = f"<title>{_esc(tip)}</title>" if tip else ""
    return (
        f'<rect class="{cls}" x="{x0:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h}">'
        f"{title}</rect>"
    )


def _bar_tip(bar: _Bar, scale: _Scale) -> str:
    """The hover text of a bar: every phase with its duration."""
    lines = [f"request {bar.index + 1} on connection {bar.conn} ({bar.key})"]
    t_end = scale.t0 + scale.span
    lines.append(
        f"asked for a connection at +{scale.ms(_first(bar.queued, bar.connect, bar.start, t_end))}"
    )
    if bar.queued is not None:
        lines.append(
            f"pool wait {_dur(bar.queued, _first(bar.connect, bar.start, bar.end, t_end))}"
        )
    if bar.connect is not None:
        lines.append(f"connect {_dur(bar.connect, _first(bar.start, bar.end, t_end))}")
        lines.extend(_step_lines(bar, t_end))
    if bar.start is not None:
        end = _first(bar.end, t_end)
        how = "new connection" if bar.how == "new" else "reused connection"
        lines.append(f"in use {_dur(bar.start, end)} on a {how}")
    lines.append(f"released: {bar.end_reason or 'still in use at the end'}")
    return "\n".join(lines)


def _step_lines(bar: _Bar, t_end: float) -> list[str]:
    """The hover lines of a connect's steps: when a proxy tunnel was ready, and each TLS
    handshake with the time it took (until the next step, or the connection's first use)."""
    assert bar.connect is not None
    lines = []
    for n, (t, kind, reason) in enumerate(bar.steps):
        if kind == "tunnel":
            what = "CONNECT accepted" if reason == "connect" else "SOCKS handshake done"
            lines.append(f"proxy tunnel ready after {_dur(bar.connect, t)} ({what})")
        elif kind == "tls":
            nxt = bar.steps[n + 1][0] if n + 1 < len(bar.steps) else None
            stop = _first(nxt, bar.start, bar.end, t_end)
            whom = "the proxy" if reason == "proxy" else "the server"
            began = _dur(bar.connect, t)
            lines.append(f"TLS handshake with {whom} {_dur(t, stop)} (began {began} in)")
    return lines


def _first(*times: float | None) -> float:
    """The first time that is not ``None`` (the last argument never is)."""
    return next(t for t in times if t is not None)


def _wait_tracks(bars: list[_Bar], t_end: float) -> dict[int, int]:
    """Give each waiting bar a strip (0, 1, ...) so that waits on one lane never overlap."""
    ends: list[float] = []  # per strip: when its last wait ended
    tracks: dict[int, int] = {}
    waited = [b for b in bars if b.queued is not None]
    for bar in sorted(waited, key=lambda b: _first(b.queued, 0.0)):
        begin, stop = _first(bar.queued, 0.0), _first(bar.connect, bar.start, bar.end, t_end)
        free = next((i for i, end in enumerate(ends) if end <= begin), len(ends))
        if free == len(ends):
            ends.append(stop)
        ends[free] = stop
        tracks[bar.index] = free
    return tracks


def _bar_svg(bar: _Bar, scale: _Scale, y: float, track: int | None, t_end: float) -> str:
    """A ``g.bar``: a thin pool-wait strip (on strip ``track``), then connect and in use.

    ``y`` is the top of the bar's connect / in-use blocks; wait strips sit above it.
    """
    tip = _bar_tip(bar, scale)
    parts = []
    if bar.queued is not None and track is not None:
        stop = _first(bar.connect, bar.start, bar.end, t_end)
        top = y - 2 - (track + 1) * WAIT_STRIP
        x1 = scale.x(stop)
        parts.append(_rect("ph-wait", scale.x(bar.queued), x1, top, 3))
        parts.append(f'<line class="wait-link" x1="{x1:.1f}" y1="{top}" x2="{x1:.1f}" y2="{y}"/>')
    if bar.connect is not None:
        stop = _first(bar.start, bar.end, t_end)
        parts.append(_rect("ph-connect", scale.x(bar.connect), scale.x(stop), y, BAR_H))
    if bar.start is not None:
        stop = _first(bar.end, t_end)
        cls = "ph-use" if bar.end_reason in ("eof", None) else "ph-use cut"
        parts.append(_rect(cls, scale.x(bar.start), scale.x(stop), y, BAR_H))
    return (
        f'<g class="bar" data-conn="{bar.conn}" data-how="{bar.how}" '
        f'data-release="{_esc(bar.end_reason or "")}" data-tip="{_esc(tip)}">'
        f"<title>{_esc(tip)}</title>{''.join(parts)}</g>"
    )


def _lane_svg(lane: _Lane, scale: _Scale, y: float, t_end: float) -> tuple[str, float]:
    """A ``g.lane`` starting at ``y``: label, the connection's life, close mark and bars.

    Returns:
        The SVG and the lane's height (taller when waits on it overlap).
    """
    tracks = _wait_tracks(lane.bars, t_end)
    strips = max([0, *tracks.values()]) + 1
    top = y + 3 + strips * WAIT_STRIP  # where the blocks start
    height = top - y + BAR_H + 5
    end = _first(lane.end, t_end)
    life = "life" if lane.opened is not None else "life failed"
    closed = f"closed ({lane.close_reason})" if lane.end is not None else "still open at the end"
    tip = f"connection {lane.conn} to {lane.key}\nopened at +{scale.ms(lane.start)}\n{closed}"
    body = [
        f'<text class="label" x="{GUTTER - 8}" y="{top + 10}">#{lane.conn} {_esc(lane.key)}</text>',
        _rect(life, scale.x(lane.start), scale.x(end), top - 2, BAR_H + 4, tip),
    ]
    if lane.end is not None:
        x = scale.x(lane.end)
        body.append(
            f'<line class="close-mark" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" '
            f'y2="{top + BAR_H + 4}"><title>{_esc(closed)}</title></line>'
        )
    body.extend(_bar_svg(b, scale, top, tracks.get(b.index), t_end) for b in lane.bars)
    svg = (
        f'<g class="lane" data-conn="{lane.conn}" data-key="{_esc(lane.key)}" '
        f'data-opened="{str(lane.opened is not None).lower()}">{"".join(body)}</g>'
    )
    return svg, height


def _mark_text(event: PoolEvent) -> str:
    """A mark's label: ``retry: attempt 2 (status_503) after 1.500 s`` or
    ``limit 4 (status_503)``."""
    if event.kind == "retry":
        delay = 0.0 if event.delay is None else event.delay
        return f"retry: attempt {event.attempt} ({event.reason}) after {delay:.3f} s"
    return f"limit {event.limit} ({event.reason})"


def _marks_svg(model: _Model, scale: _Scale) -> str:
    """One row per key with retries or limit changes: a mark at each, with its label."""
    rows: dict[PoolKey, list[PoolEvent]] = {}
    for event in model.marks:
        rows.setdefault(event.key, []).append(event)
    parts = []
    y = float(AXIS_H)
    for key, events in rows.items():
        parts.append(f'<text class="label" x="{GUTTER - 8}" y="{y + 12}">{_esc(key)}</text>')
        for event in events:
            x = scale.x(event.time)
            tip = f"{_mark_text(event)}\n{key} at +{scale.ms(event.time)}"
            cls = "mark-retry" if event.kind == "retry" else "mark-limit"
            shape = (
                f'<circle cx="{x:.1f}" cy="{y + 8}" r="5"/>'
                if event.kind == "retry"
                else f'<path d="M{x:.1f},{y + 1}l6,7l-6,7l-6,-7z"/>'
            )
            parts.append(
                f'<g class="{cls}" data-kind="{event.kind}" data-reason="{_esc(event.reason)}" '
                f'data-tip="{_esc(tip)}"><title>{_esc(tip)}</title>{shape}</g>'
            )
        y += LANE_H
    height = int(y) + 4
    return (
        f'<svg id="marks" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(_axis(scale, AXIS_H, height - 2))}'
        f"{''.join(parts)}</svg>"
    )


def _lanes_svg(model: _Model, scale: _Scale) -> str:
    """The lanes, grouped by key in order of first appearance, then by connection id."""
    order: dict[PoolKey, int] = {}
    for lane in model.lanes.values():
        order.setdefault(lane.key, len(order))
    lanes = sorted(model.lanes.values(), key=lambda ln: (order[ln.key], ln.conn))
    t_end = scale.t0 + scale.span
    y = float(AXIS_H)
    drawn = []
    for lane in lanes:
        svg, height = _lane_svg(lane, scale, y, t_end)
        drawn.append(svg)
        y += height
    if not lanes:
        drawn.append(f'<text class="tick" x="{GUTTER}" y="{AXIS_H + 16}">no connections</text>')
        y += LANE_H
    height = int(y) + 6
    parts = [*_axis(scale, AXIS_H, height - 4), *drawn]
    return (
        f'<svg id="lanes" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _step_path(points: Iterable[tuple[float, int]], scale: _Scale, y0: float, ys: float) -> str:
    """An SVG path that holds each value until the next point (a step chart)."""
    d: list[str] = []
    last_y: float | None = None
    for t, value in points:
        x, y = scale.x(t), y0 - value * ys
        if last_y is None:
            d.append(f"M{x:.1f},{y:.1f}")
        else:
            d.append(f"H{x:.1f}V{y:.1f}")
        last_y = y
    if last_y is not None:
        d.append(f"H{scale.x(scale.t0 + scale.span):.1f}")
    return "".join(d)


def _chart_svg(model: _Model, scale: _Scale) -> str:
    """Open connections and waiting requests over time, on the lanes' time axis."""
    top, bottom = AXIS_H, CHART_H - 8
    peak = max([1] + [max(o, w) for _, o, w in model.points])
    ys = (bottom - top - 6) / peak
    parts = _axis(scale, top, bottom)
    step = max(1, int(_nice_step(peak, 4)))
    for v in range(0, peak + 1, step):
        y = bottom - v * ys
        parts.append(
            f'<line class="hgrid" x1="{GUTTER}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="label" x="{GUTTER - 8}" y="{y + 4:.1f}">{v}</text>'
        )
    series = (
        ("open", [(t, o) for t, o, _ in model.points], "open connections"),
        ("waiting", [(t, w) for t, _, w in model.points], "waiting requests"),
    )
    for name, pts, title in series:
        parts.append(
            f'<path class="series-{name}" d="{_step_path(pts, scale, bottom, ys)}">'
            f"<title>{title}</title></path>"
        )
    max_open = max([0] + [o for _, o, _ in model.points])
    max_waiting = max([0] + [w for _, _, w in model.points])
    return (
        f'<svg id="chart" viewBox="0 0 {WIDTH} {CHART_H}" width="{WIDTH}" height="{CHART_H}" '
        f'data-max-open="{max_open}" data-max-waiting="{max_waiting}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


_CSS: Final = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 20px;color:#1d2330}
h1{font-size:18px;margin:0 0 4px}
.summary{margin:0 0 8px;color:#3b4456}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:14px;height:10px;margin-right:5px;vertical-align:-1px}
#details{white-space:pre;font:12px/1.35 ui-monospace,monospace;background:#f5f6f8;
 border:1px solid #dde1e8;padding:4px 8px;margin:8px 0;min-height:1.4em}
svg{display:block;font:11px system-ui,sans-serif}
.grid{stroke:#e6e8ee}.hgrid{stroke:#eef0f4}
.tick{fill:#6b7385;text-anchor:middle}.label{fill:#39414f;text-anchor:end}
.life{fill:#e9ecf2}.life.failed{fill:#f7dcdc}
.close-mark{stroke:#8a93a6;stroke-width:2}.wait-link{stroke:#f0a020;stroke-width:1}
.ph-wait{fill:#f0a020}.ph-connect{fill:#4a7fd6;stroke:#fff}.ph-use{fill:#34a267;stroke:#fff}
.ph-use.cut{fill:#34a267;stroke:#c0392b;stroke-width:1.5}
.bar:hover rect,.bar.hi rect{filter:brightness(0.8)}
.series-open{fill:none;stroke:#4a5a78;stroke-width:2}
.series-waiting{fill:none;stroke:#f0a020;stroke-width:2}
.mark-retry{fill:#c0392b}.mark-limit{fill:#7d4cc2}
h2{font-size:14px;margin:14px 0 2px}
""".strip()

_JS: Final = """
(function(){
  var box=document.getElementById('details');
  document.documentElement.setAttribute('data-script','ran');
  document.addEventListener('mouseover',function(ev){
    var el=ev.target.closest?ev.target.closest('[data-tip]'):null;
    if(el){box.textContent=el.getAttribute('data-tip');}
  });
})();
""".strip()


def _legend() -> str:
    items = (
        ("#f0a020", "pool wait (queued, thin strip above)"),
        ("#4a7fd6", "connect (TCP + TLS)"),
        ("#34a267", "in use (send, head, body)"),
        ("#e9ecf2", "connection open"),
    )
    spans = "".join(f'<span><i class="sw" style="background:{c}"></i>{t}</span>' for c, t in items)
    return f'<p class="legend">{spans}</p>'


def _summary(model: _Model, scale: _Scale, limits: str) -> str:
    opened = sum(1 for lane in model.lanes.values() if lane.opened is not None)
    reused = sum(1 for ln in model.lanes.values() for b in ln.bars if b.how == "reused")
    keys = sorted({str(lane.key) for lane in model.lanes.values()})
    return (
        f'<p class="summary" data-connections="{len(model.lanes)}" data-bars="{model.bars}">'
        f"{len(model.lanes)} connections ({opened} opened) &middot; {model.bars} requests "
        f"({reused} on a reused connection) &middot; {model.dequeued} left the queue &middot; "
        f"{scale.span * 1000:.1f} ms &middot; {_esc(limits)} &middot; keys: "
        f"{_esc(', '.join(keys) or 'none')}</p>"
    )


def _page(model: _Model, title: str, limits: str) -> str:
    times = [p[0] for p in model.points]
    t0 = min(times) if times else 0.0
    span = max((max(times) - t0) if times else 0.0, 1e-3)
    scale = _Scale(t0, span)
    marks = ""
    if model.marks:
        marks = (
            '<h2>retries <i class="sw" style="background:#c0392b"></i> and limit changes '
            f'<i class="sw" style="background:#7d4cc2"></i></h2>{_marks_svg(model, scale)}'
        )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>{_summary(model, scale, limits)}{_legend()}"
        f'<div id="details">hover a bar or a lane for details</div>{marks}'
        f"<h2>connections (one lane each, one bar per request)</h2>{_lanes_svg(model, scale)}"
        '<h2>open connections <i class="sw" style="background:#4a5a78"></i> and waiting '
        f'requests <i class="sw" style="background:#f0a020"></i></h2>{_chart_svg(model, scale)}'
        f"<script>{_JS}</script></body></html>\n"
    )


# -- Chrome trace / Perfetto JSON ---------------------------------------------------------------

TRACE_POOL_PID: Final = 0  # the process that holds the pool-wide counters


def _us(t: float) -> float:
    """Monotonic seconds as the trace's microseconds."""
    return round(t * 1e6, 3)


def _slice(name: str, cat: str, pid: int, tid: int, t0: float, t1: float, **args: object) -> Event:
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "pid": pid,
        "tid": tid,
        "ts": _us(t0),
        "dur": round(max(t1 - t0, 0.0) * 1e6, 3),
        "args": args,
    }


def _meta(what: str, pid: int, tid: int | None, **args: object) -> Event:
    event: Event = {"name": what, "ph": "M", "pid": pid, "args": args}
    if tid is not None:
        event["tid"] = tid
    return event


def _lane_events(lane: _Lane, pid: int, t_end: float) -> list[Event]:
    """A connection's thread: its life, with its connect and its requests nested inside."""
    closed = lane.close_reason if lane.end is not None else "still open at the end"
    life = _slice(
        f"connection #{lane.conn}",
        "connection",
        pid,
        lane.conn,
        lane.start,
        _first(lane.end, t_end),
        key=str(lane.key),
        opened=lane.opened is not None,
        closed=closed,
    )
    out = [_meta("thread_name", pid, lane.conn, name=f"connection #{lane.conn}"), life]
    for bar in lane.bars:
        if bar.connect is not None:
            stop = _first(bar.start, bar.end, t_end)
            outcome = "failed" if bar.how == "failed" else "opened"
            out.append(
                _slice("connect", "connect", pid, lane.conn, bar.connect, stop, outcome=outcome)
            )
            out.extend(_step_events(bar, pid, lane.conn, stop))
        if bar.start is not None:
            out.append(
                _slice(
                    f"request {bar.index + 1} ({bar.how})",
                    "request",
                    pid,
                    lane.conn,
                    bar.start,
                    _first(bar.end, t_end),
                    connection=f"{bar.how} connection",
                    released=bar.end_reason or "still in use at the end",
                )
            )
    return out


def _step_events(bar: _Bar, pid: int, tid: int, stop: float) -> list[Event]:
    """Inside a connect slice: a slice per TLS handshake, an instant when a tunnel was ready."""
    out: list[Event] = []
    for n, (t, kind, reason) in enumerate(bar.steps):
        if kind == "tls":
            end = bar.steps[n + 1][0] if n + 1 < len(bar.steps) else stop
            out.append(_slice(f"TLS handshake ({reason})", "tls", pid, tid, t, end))
        else:
            out.append(
                {"name": f"{kind} ready ({reason})", "ph": "i", "s": "t", "pid": pid,
                 "tid": tid, "ts": _us(t)}
            )  # fmt: skip
    return out


def _wait_events(model: _Model, pids: dict[PoolKey, int], t_end: float) -> list[Event]:
    """Pool waits as async slices on their key's process (they overlap freely)."""
    waits: list[tuple[PoolKey, float, float, str, str]] = []
    for lane in model.lanes.values():
        for bar in lane.bars:
            if bar.queued is not None:
                stop = _first(bar.connect, bar.start, bar.end, t_end)
                how = "a new connection" if bar.connect is not None else "an open connection"
                waits.append((bar.key, bar.queued, stop, "pool wait", f"served with {how}"))
    for key, since, when, reason in model.gave_up:
        if since is not None:
            waits.append((key, since, when, f"pool wait ({reason})", f"left the queue: {reason}"))
    out: list[Event] = []
    for n, (key, begin, end, name, outcome) in enumerate(sorted(waits, key=lambda w: w[1])):
        common = {"name": name, "cat": "pool wait", "id": n + 1, "pid": pids[key]}
        out.append({**common, "ph": "b", "ts": _us(begin), "args": {"outcome": outcome}})
        out.append({**common, "ph": "e", "ts": _us(end)})
    return out


def _mark_events(model: _Model, pids: dict[PoolKey, int]) -> list[Event]:
    """Retries and limit changes as instant events on their key's process; the effective
    limit also as a counter there."""
    out: list[Event] = []
    named: set[int] = set()
    for mark in model.marks:
        pid = pids[mark.key]
        if pid not in named:
            named.add(pid)
            out.append(_meta("thread_name", pid, 0, name="retries and limit changes"))
        args: dict[str, object] = {"reason": mark.reason}
        if mark.kind == "retry":
            args.update(attempt=mark.attempt, delay_s=mark.delay)
        else:
            args["limit"] = mark.limit
            out.append(
                {"name": "effective limit", "ph": "C", "pid": pid, "ts": _us(mark.time),
                 "args": {"limit": mark.limit}}
            )  # fmt: skip
        out.append(
            {"name": f"{mark.kind} ({mark.reason})", "cat": mark.kind, "ph": "i", "s": "p",
             "pid": pid, "tid": 0, "ts": _us(mark.time), "args": args}
        )  # fmt: skip
    return out


def _trace(model: _Model, title: str, limits: str) -> dict[str, object]:
    times = [p[0] for p in model.points]
    t_end = max(times) if times else 0.0
    pids: dict[PoolKey, int] = {}
    for lane in model.lanes.values():
        pids.setdefault(lane.key, len(pids) + 1)
    for key, *_ in model.gave_up:
        pids.setdefault(key, len(pids) + 1)
    for mark in model.marks:
        pids.setdefault(mark.key, len(pids) + 1)
    events: list[Event] = [
        _meta("process_name", TRACE_POOL_PID, None, name=f"{title}: pool ({limits})"),
        _meta("process_sort_index", TRACE_POOL_PID, None, sort_index=0),
    ]
    for key, pid in pids.items():
        events.append(_meta("process_name", pid, None, name=f"{title}: {key}"))
        events.append(_meta("process_sort_index", pid, None, sort_index=pid))
    last: tuple[int, int] | None = None
    for t, open_, waiting in model.points:
        if (open_, waiting) == last:
            continue  # a counter holds its value until the next sample
        last = (open_, waiting)
        events.append(
            {"name": "pool", "ph": "C", "pid": TRACE_POOL_PID, "ts": _us(t),
             "args": {"open": open_, "waiting": waiting}}
        )  # fmt: skip
    for lane in sorted(model.lanes.values(), key=lambda ln: ln.conn):
        events.extend(_lane_events(lane, pids[lane.key], t_end))
    events.extend(_wait_events(model, pids, t_end))
    events.extend(_mark_events(model, pids))
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"title": title, "limits": limits, "clock": "time.monotonic() in us"},
    }


def chrome_trace(events: Iterable[PoolEvent], *, title: str = "glasspool") -> dict[str, object]:
    """Pool events as a Chrome trace (the JSON object format that Perfetto opens).

    One process per pool key with a thread per connection: the connection's life as a
    slice, and inside it the connect and one slice per request it carried (named
    ``request N (new|reused)``, the release reason in its args). Pool waits are async
    slices on their key's process, and a ``pool`` process has the open connections and
    waiting requests as counters. Times are ``time.monotonic()`` in microseconds, as the
    events recorded them. The matching of waits to requests is the HTML timeline's (see
    the module docstring).

    Args:
        events: pool events, oldest first, all from one pool.
        title: the prefix of the process names.

    Returns:
        A JSON-serialisable dict (``json.dump`` it, or use :meth:`Timeline.write_trace`).
    """
    builder = _Builder(0, {})
    for event in events:
        builder.feed(event)
    return _trace(builder.model, title, "limits unknown")


# -- the public helper ------------------------------------------------------------------------


class Timeline:
    """A recorder that turns a pool's events into a per-connection HTML timeline.

    Think of it as a flight recorder strapped to ``client.pool``: it writes down every
    event as it happens, and :meth:`write_html` draws the whole trip afterwards.

    Use it like this::

        async with glasspool.Client() as client:
            timeline = glasspool.Timeline(client.pool)
            ...  # make requests
        timeline.write_html("timeline.html")

    Args:
        pool: start listening to this pool now (``client.pool``); or call :meth:`attach`.
        title: the page heading.
    """

    def __init__(
        self, pool: EventSource | None = None, *, title: str = "glasspool timeline"
    ) -> None:
        self.title = title
        self._events: list[PoolEvent] = []
        self._pool: EventSource | None = None
        self._open_at_start = 0
        self._waiting_at_start: dict[PoolKey, int] = {}
        self._limits = "limits unknown"
        if pool is not None:
            self.attach(pool)

    def attach(self, pool: EventSource) -> None:
        """Start recording ``pool``'s events (through ``pool.add_listener``).

        Connections already open are drawn from their next event on.

        Raises:
            RuntimeError: already attached to a pool.
        """
        if self._pool is not None:
            raise RuntimeError(f"this Timeline is already attached to {self._pool!r}")
        stats = pool.stats()
        if not self._events:
            self._open_at_start = stats.open
            self._waiting_at_start = {k: h.waiting for k, h in stats.hosts.items()}
        self._limits = f"limit={stats.limit}, limit_per_host={stats.limit_per_host}"
        pool.add_listener(self.record)
        self._pool = pool

    def detach(self) -> None:
        """Stop recording (idempotent); the events recorded so far are kept."""
        if self._pool is not None:
            self._pool.remove_listener(self.record)
            self._pool = None

    def record(self, event: PoolEvent) -> None:
        """Keep one event; the listener :meth:`attach` installs, usable with any source."""
        self._events.append(event)

    @property
    def events(self) -> tuple[PoolEvent, ...]:
        """Every event recorded so far, oldest first."""
        return tuple(self._events)

    def render_html(self) -> str:
        """Return the page as a string (see :meth:`write_html`)."""
        builder = _Builder(self._open_at_start, self._waiting_at_start)
        for event in self._events:
            builder.feed(event)
        return _page(builder.model, self.title, self._limits)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """Write the timeline as one self-contained HTML file (no network fetches).

        Args:
            path: the file to write (its directory must exist); overwritten.

        Returns:
            The path written.

        Raises:
            OSError: the file could not be written.
        """
        target = Path(path)
        target.write_text(self.render_html(), encoding="utf-8")
        return target

    def render_trace(self) -> dict[str, object]:
        """Return the events as a Chrome trace / Perfetto JSON object (see
        :func:`chrome_trace`); the pool's limits are in the ``pool`` process's name."""
        builder = _Builder(self._open_at_start, self._waiting_at_start)
        for event in self._events:
            builder.feed(event)
        return _trace(builder.model, self.title, self._limits)

    def write_trace(self, path: str | os.PathLike[str]) -> Path:
        """Write the events as Chrome trace JSON: open it at https://ui.perfetto.dev or in
        ``chrome://tracing``.

        Args:
            path: the file to write (its directory must exist); overwritten.

        Returns:
            The path written.

        Raises:
            OSError: the file could not be written.
        """
        target = Path(path)
        target.write_text(json.dumps(self.render_trace(), separators=(",", ":")), encoding="utf-8")
        return target

    def __repr__(self) -> str:
        state = "attached" if self._pool is not None else "detached"
        return f"<glasspool.Timeline {state} events={len(self._events)}>"
