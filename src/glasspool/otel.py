"""OpenTelemetry metrics and traces for a :class:`glasspool.Client`: ``instrument(client)``.

``glasspool.otel.instrument(client)`` reports what the client and its pool do through the
OpenTelemetry API (``pip install 'glasspool[otel]'``); ``handle.uninstrument()`` puts the
client back as it was. Nothing here runs for a client that is not instrumented: no
listener, no wrapper, no cost.

How it sees the client, using its public surface only:

- **the pool's events** (``client.pool.add_listener``): one listener keeps, per connection,
  the state each event moves it to (``connecting`` -> *connecting*; ``acquired`` ->
  *active*; ``released`` -> *idle*, until the same step closes it or hands it on;
  ``closed`` -> gone), so ``http.client.open_connections`` by ``http.connection.state``
  equals ``pool.stats()``'s ``in_use`` and ``idle`` after every event but ``released``
  (which the pool emits just before it moves the connection), and
  ``glasspool.pool.connecting`` equals its ``connecting``;
- **the request methods**: ``client.request`` and ``client.stream`` are wrapped on the
  instance (``get()`` and the other shortcuts call ``request``), which gives the request's
  duration, outcome and one CLIENT span per call (per attempt, when a ``retry`` event
  says an attempt is sent again).

Matching pool events to requests. Events carry no request id. An event that happens in the
requesting task (``queued``, ``connecting``, ``acquired`` of an idle connection, a cancel)
is matched through a context variable that the wrapper sets for the call. A waiter is
served from another task (the one that released or closed a connection), but the pool
serves the waiters of a key first in, first out, and each event carries the key's queue
length: an event that shortens the queue belongs to the oldest waiter recorded for that
key. A connection adopted by a request waiting for a fleet-wide lease (``RedisLimits``) is
recognised by the ``closed`` ``cancelled`` of the slot it gives back, which follows at
once.

Counts (open connections, active requests, the ``glasspool.pool.*`` counters) are kept as
plain integers and reported through observable instruments when the reader collects:
an event costs a few integer updates, not an SDK call. Histograms are recorded as
things happen. Instruments live per meter provider and are shared by every client
instrumented with it, so two clients' counts add up, and instrumenting again after
``uninstrument()`` reports again (an SDK keeps the first callback of an observable
instrument for good).
"""

from __future__ import annotations

import contextvars
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import yarl

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import propagate as otel_propagate
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation
    from opentelemetry.trace import (
        NoOpTracer,
        Span,
        SpanKind,
        Status,
        StatusCode,
        TracerProvider,
    )
except ImportError as exc:  # pragma: no cover - exercised without opentelemetry installed
    raise ImportError(
        "glasspool.otel needs opentelemetry-api: pip install 'glasspool[otel]'"
    ) from exc

from . import GlasspoolError, Headers, PoolEvent, PoolKey, Response, __version__
from ._redact import telemetry_url

if TYPE_CHECKING:  # pragma: no cover
    from . import Client

__all__ = [
    "ACTIVE_REQUESTS",
    "CONNECTION_DURATION",
    "FLEET_WAIT",
    "OPEN_CONNECTIONS",
    "POOL_ACQUIRED",
    "POOL_CLOSED",
    "POOL_CONNECTING",
    "POOL_DEQUEUED",
    "POOL_EVICTIONS",
    "POOL_QUEUED",
    "POOL_WAITING",
    "REQUEST_DURATION",
    "TIME_IN_QUEUE",
    "Instrumentation",
    "instrument",
]

#: The semantic-convention metrics (names as the conventions spell them).
REQUEST_DURATION: Final = "http.client.request.duration"
OPEN_CONNECTIONS: Final = "http.client.open_connections"
CONNECTION_DURATION: Final = "http.client.connection.duration"
ACTIVE_REQUESTS: Final = "http.client.active_requests"
TIME_IN_QUEUE: Final = "http.client.request.time_in_queue"
#: glasspool's own.
POOL_CONNECTING: Final = "glasspool.pool.connecting"
POOL_WAITING: Final = "glasspool.pool.waiting"
POOL_QUEUED: Final = "glasspool.pool.queued"
POOL_DEQUEUED: Final = "glasspool.pool.dequeued"
POOL_ACQUIRED: Final = "glasspool.pool.acquired"
POOL_CLOSED: Final = "glasspool.pool.connections.closed"
POOL_EVICTIONS: Final = "glasspool.pool.evictions"
FLEET_WAIT: Final = "glasspool.pool.fleet.wait"

# Attribute names.
METHOD: Final = "http.request.method"
METHOD_ORIGINAL: Final = "http.request.method_original"
STATUS: Final = "http.response.status_code"
ADDRESS: Final = "server.address"
PORT: Final = "server.port"
SCHEME: Final = "url.scheme"
URL_FULL: Final = "url.full"
ERROR_TYPE: Final = "error.type"
PROTOCOL_VERSION: Final = "network.protocol.version"
RESEND_COUNT: Final = "http.request.resend_count"
CONNECTION_STATE: Final = "http.connection.state"
REASON: Final = "glasspool.pool.reason"
CONNECTION_ID: Final = "glasspool.connection.id"
WAITING: Final = "glasspool.pool.waiting"
REUSED: Final = "glasspool.connection.reused"
RETRY_ATTEMPT: Final = "glasspool.retry.attempt"
RETRY_DELAY: Final = "glasspool.retry.delay"
EFFECTIVE_LIMIT: Final = "glasspool.pool.effective_limit"

KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
# Bucket boundaries the conventions advise (seconds).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5,
                           7.5, 10)  # fmt: skip
CONNECTION_BUCKETS: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

Attrs: TypeAlias = tuple[tuple[str, str | int], ...]
AttrDict: TypeAlias = dict[str, str | int]

CONNECTING, ACTIVE, IDLE = 0, 1, 2  # a connection's state, as the pool counts it
_TARGET_CACHE_SIZE: Final = 1024

# The call being made in this task (set by the wrappers around request() and stream()).
_CURRENT: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "glasspool_otel_call", default=None
)


# -- instruments, shared per meter provider -----------------------------------------------------


class _Cell:
    """One value an observable instrument reports, with its attributes; shared by every
    client instrumented with the same meter provider, which add their deltas to it."""

    __slots__ = ("attributes", "value")

    def __init__(self, attributes: AttrDict) -> None:
        self.attributes = attributes
        self.value = 0


class _Store:
    """The cells of one observable instrument, by attributes."""

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: dict[Attrs, _Cell] = {}

    def cell(self, attrs: Attrs) -> _Cell:
        found = self.cells.get(attrs)
        if found is None:
            found = self.cells[attrs] = _Cell(dict(attrs))
        return found

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The callback: runs on the reader's thread, so it only copies."""
        return [Observation(c.value, c.attributes) for c in list(self.cells.values())]


class _Series:
    """The instruments of one meter provider: histograms, and the stores behind the
    observable counters (reported when the reader collects)."""

    def __init__(self, meter: Meter) -> None:
        self.open_connections = _Store()
        self.active_requests = _Store()
        self.connecting = _Store()
        self.waiting = _Store()
        self.queued = _Store()
        self.dequeued = _Store()
        self.acquired = _Store()
        self.closed = _Store()
        self.evictions = _Store()
        self.request_duration = self._histogram(
            meter, REQUEST_DURATION, "Duration of HTTP client requests.", DURATION_BUCKETS
        )
        self.time_in_queue = self._histogram(
            meter,
            TIME_IN_QUEUE,
            "Time requests spent waiting in the pool's queue for a connection.",
            DURATION_BUCKETS,
        )
        self.connection_duration = self._histogram(
            meter,
            CONNECTION_DURATION,
            "The duration of the successfully established outbound HTTP connections.",
            CONNECTION_BUCKETS,
        )
        self.fleet_wait = self._histogram(
            meter,
            FLEET_WAIT,
            "Time requests waited for a fleet-wide lease while the fleet was full.",
            DURATION_BUCKETS,
        )
        self._observables(meter)

    @staticmethod
    def _histogram(
        meter: Meter, name: str, description: str, buckets: tuple[float, ...]
    ) -> Histogram:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )

    def _observables(self, meter: Meter) -> None:
        up_down: tuple[tuple[str, _Store, str, str], ...] = (
            (OPEN_CONNECTIONS, self.open_connections, "{connection}",
             "Number of outbound HTTP connections that are currently active or idle on the "
             "client."),
            (ACTIVE_REQUESTS, self.active_requests, "{request}", "Number of active HTTP requests."),
            (POOL_CONNECTING, self.connecting, "{connection}",
             "Connections being opened (TCP connect and TLS handshake); they count against "
             "the limits."),
            (POOL_WAITING, self.waiting, "{request}", "Requests waiting in the pool's queue."),
        )  # fmt: skip
        counters: tuple[tuple[str, _Store, str, str], ...] = (
            (POOL_QUEUED, self.queued, "{request}", "Requests that had to wait, by limit."),
            (POOL_DEQUEUED, self.dequeued, "{request}",
             "Requests that left the queue without a connection (cancelled, timeout)."),
            (POOL_ACQUIRED, self.acquired, "{request}",
             "Connections handed to requests: new or reused."),
            (POOL_CLOSED, self.closed, "{connection}", "Connections closed, by reason."),
            (POOL_EVICTIONS, self.evictions, "{connection}",
             "Idle connections closed to make room for another host under the global limit."),
        )  # fmt: skip
        for name, store, unit, description in up_down:
            meter.create_observable_up_down_counter(
                name, [store.observe], unit=unit, description=description
            )
        for name, store, unit, description in counters:
            meter.create_observable_counter(
                name, [store.observe], unit=unit, description=description
            )


# One _Series per meter provider (weakly): an SDK keeps the first callbacks of an observable
# instrument for the life of its meter, so instruments are made once and then shared.
_SERIES: weakref.WeakKeyDictionary[MeterProvider, _Series] = weakref.WeakKeyDictionary()


def _series_for(provider: MeterProvider) -> _Series:
    try:
        series = _SERIES.get(provider)
    except TypeError:  # not weakly referenceable: instruments of its own
        return _Series(provider.get_meter("glasspool", __version__))
    if series is None:
        series = _SERIES[provider] = _Series(provider.get_meter("glasspool", __version__))
    return series


# -- per-key, per-target, per-connection and per-call records ------------------------------------


class _Key:
    """What the instrumentation keeps about one pool key: its cells, counts and queue."""

    __slots__ = (
        "by_reason",
        "cells",
        "close_attrs",
        "evictions",
        "key",
        "n",
        "queue",
        "server",
        "server_attrs",
        "unknown",
        "waiting",
        "waiting_cell",
    )

    def __init__(self, key: PoolKey, series: _Series) -> None:
        self.key = key
        self.server: Attrs = ((ADDRESS, key.host), (PORT, key.port), (SCHEME, key.scheme))
        self.server_attrs: AttrDict = dict(self.server)
        self.cells = (  # by state: CONNECTING, ACTIVE, IDLE
            series.connecting.cell(self.server),
            series.open_connections.cell((*self.server, (CONNECTION_STATE, "active"))),
            series.open_connections.cell((*self.server, (CONNECTION_STATE, "idle"))),
        )
        self.waiting_cell = series.waiting.cell(self.server)
        self.evictions = series.evictions.cell(self.server)
        self.by_reason: dict[_Store, dict[str | None, _Cell]] = {}
        self.close_attrs: dict[str | None, AttrDict] = {}
        self.n = [0, 0, 0]  # this client's connections counted, by state
        self.unknown = [0, 0, 0]  # of those, open before instrument() and not seen since
        self.waiting = 0  # the queue length the last event reported
        self.queue: deque[tuple[_Call | None, float | None]] = deque()  # oldest first

    def count(self, store: _Store, reason: str | None) -> None:
        """One more in ``store``'s cell for this key and ``reason``."""
        cells = self.by_reason.get(store)
        if cells is None:
            cells = self.by_reason[store] = {}
        cell = cells.get(reason)
        if cell is None:
            attrs = (*self.server, (REASON, reason)) if reason else self.server
            cell = cells[reason] = store.cell(attrs)
        cell.value += 1

    def closed_attrs(self, reason: str | None) -> AttrDict:
        found = self.close_attrs.get(reason)
        if found is None:
            found = self.close_attrs[reason] = {**self.server_attrs, REASON: reason or ""}
        return found


class _Target:
    """A method and URL as a request gives them: their attributes, made once."""

    __slots__ = ("active", "attributes", "outcomes")

    def __init__(self, attrs: Attrs, series: _Series) -> None:
        self.attributes: AttrDict = dict(attrs)  # method and server
        self.active = series.active_requests.cell(attrs)
        self.outcomes: dict[tuple[int, str] | str, AttrDict] = {}

    def outcome(self, response: Response | None, exc: BaseException | None) -> AttrDict:
        """``http.client.request.duration``'s attributes for this outcome (cached)."""
        key: tuple[int, str] | str
        key = (response.status, response.http_version) if response else type(exc).__qualname__
        found = self.outcomes.get(key)
        if found is None:
            found = dict(self.attributes)
            if response is not None:
                found[STATUS] = response.status
                found[PROTOCOL_VERSION] = _version(response)
                if response.status >= 400:
                    found[ERROR_TYPE] = str(response.status)
            else:
                found[ERROR_TYPE] = type(exc).__qualname__
            self.outcomes[key] = found
        return found


class _Conn:
    __slots__ = ("key", "opened", "owner", "state")

    def __init__(self, state: int, key: _Key, owner: _Call | None = None) -> None:
        self.state = state
        self.key = key
        self.opened: float | None = None
        self.owner = owner


class _Call:
    """One call of ``request()`` or one ``stream()`` block."""

    __slots__ = (
        "attempts",
        "conn",
        "ended",
        "fleet_since",
        "handle",
        "last",
        "method",
        "name",
        "reused",
        "span",
        "start",
        "target",
        "url",
    )

    def __init__(
        self, handle: Instrumentation, url: object, target: _Target, span: Span | None
    ) -> None:
        self.handle = handle
        self.url = url
        self.target = target
        self.span = span  # None when not recording
        self.start = time.perf_counter()
        self.conn: int | None = None  # the connection (or reserved slot) it holds now
        self.fleet_since: float | None = None
        self.reused: bool | None = None  # whether its last connection was reused
        self.ended = False
        self.name = "HTTP"  # its spans' name (one span per attempt)
        self.method: str | None = None
        self.attempts = 0  # sends so far (redirect hops and retries each count one)
        self.last: Response | None = None  # the response of the latest send, if any


# -- the handle -------------------------------------------------------------------------------


class Instrumentation:
    """What :func:`instrument` returns: the live instrumentation of one client.

    Call :meth:`uninstrument` to stop it. Dropping the handle does not stop it: the
    client keeps it alive while it is instrumented.
    """

    def __init__(
        self,
        client: Client,
        meter_provider: MeterProvider,
        tracer_provider: TracerProvider,
        propagate: bool,
    ) -> None:
        self._client_ref = weakref.ref(client)
        self._pool = client.pool
        self._series = _series_for(meter_provider)
        self._tracer = tracer_provider.get_tracer("glasspool", __version__)
        # A no-op tracer's spans are never recorded: skip them unless their (invalid)
        # context is to be propagated. A proxy tracer may become real later: kept.
        self._spans = propagate or not isinstance(self._tracer, NoOpTracer)
        self._propagate = propagate
        self._keys: dict[PoolKey, _Key] = {}
        self._conns: dict[int, _Conn] = {}
        self._calls: set[_Call] = set()  # in flight: each counts one active request
        self._targets: dict[tuple[str, object, object], _Target] = {}
        self._pending: tuple[_Call | None, PoolEvent, _Conn] | None = None
        self._clock_ns = time.time_ns() - time.monotonic_ns()  # pool clock -> wall clock
        self._handlers: dict[str, Callable[[PoolEvent, _Key, bool], None]] = {
            "queued": self._on_queued,
            "dequeued": self._on_dequeued,
            "connecting": self._on_connecting,
            "acquired": self._on_acquired,
            "released": self._on_released,
            "closed": self._on_closed,
            "retry": self._on_retry,
            "limit_changed": self._on_mark,
            "tunnel": self._on_step,  # a proxy's CONNECT or SOCKS tunnel is ready
            "tls": self._on_step,  # a TLS handshake (origin or proxy) begins
        }
        self._installed = False
        self._saved: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "instrumented" if self._installed else "uninstrumented"
        return f"<glasspool.otel.Instrumentation {state} {self._pool!r}>"

    @property
    def instrumented(self) -> bool:
        """Whether the client is still instrumented (``uninstrument()`` not yet called)."""
        return self._installed

    # ------------------------------------------------------------- install / remove

    def _install(self, client: Client) -> None:
        """Count what the pool holds now, listen to it, and wrap the request methods.

        Nothing is awaited here, so no event falls between the count and the listener.
        """
        attrs = vars(client)  # raises TypeError for a client without a __dict__
        for key, host in self._pool.stats().hosts.items():
            k = self._key(key)
            for state, count in enumerate((host.connecting, host.in_use, host.idle)):
                k.unknown[state] = count
                self._shift(k, state, count)
            if host.waiting:
                k.waiting = host.waiting
                k.waiting_cell.value += host.waiting
                k.queue.extend((None, None) for _ in range(host.waiting))
        wrappers = [("request", self._wrap_request), ("stream", self._wrap_stream)]
        if self._spans:  # a span per send (redirect hop, retry): only when there are spans
            wrappers.append(("_send", self._wrap_send))
        for name, wrapper in wrappers:
            self._saved[name] = attrs.get(name)
            attrs[name] = wrapper(getattr(client, name))
        self._pool.add_listener(self._on_event)
        self._installed = True

    def uninstrument(self) -> None:
        """Stop: remove the listener, restore ``request``/``stream``, withdraw the counts.

        The client's share of the up-down counters (open connections, connecting,
        waiting, active requests) is subtracted, so they read as if it had never been
        instrumented; counters and histograms keep what they recorded. Requests in flight
        finish normally, and their spans end, without further pool events. Idempotent.
        """
        if not self._installed:
            return
        self._installed = False
        self._pool.remove_listener(self._on_event)
        client = self._client_ref()
        if client is not None:
            attrs = vars(client)
            for name, previous in self._saved.items():
                if getattr(attrs.get(name), "__glasspool_otel__", None) is self:
                    if previous is None:
                        del attrs[name]
                    else:
                        attrs[name] = previous
        if self._pending is not None:
            self._settle(None)
        self._withdraw()

    def _withdraw(self) -> None:
        for k in self._keys.values():
            for state in (CONNECTING, ACTIVE, IDLE):
                self._shift(k, state, -k.n[state])
            k.waiting_cell.value -= k.waiting
            k.waiting = 0
            k.queue.clear()
        for call in self._calls:
            call.target.active.value -= 1
        self._calls.clear()
        self._conns.clear()

    # --------------------------------------------------------------- pool events

    def _key(self, key: PoolKey) -> _Key:
        k = self._keys.get(key)
        if k is None:
            k = self._keys[key] = _Key(key, self._series)
        return k

    @staticmethod
    def _shift(k: _Key, state: int, delta: int) -> None:
        """Count ``delta`` connections of ``k`` into (or out of) ``state``."""
        k.n[state] += delta
        k.cells[state].value += delta

    def _move(self, conn: _Conn, state: int) -> None:
        if conn.state != state:
            k = conn.key
            k.n[conn.state] -= 1
            k.cells[conn.state].value -= 1
            k.n[state] += 1
            k.cells[state].value += 1
            conn.state = state

    def _on_event(self, event: PoolEvent) -> None:
        """The pool listener: keep the counts, time the waits, tell the spans."""
        if self._pending is not None:
            self._settle(event)
        k = self._keys.get(event.key) or self._key(event.key)
        before = k.waiting
        if event.waiting != before:
            k.waiting_cell.value += event.waiting - before
            k.waiting = event.waiting
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event, k, event.waiting < before)

    def _on_mark(self, event: PoolEvent, k: _Key, served: bool) -> None:
        """An adaptive limit change, seen in the requesting task: an event on its span."""
        self._span_event(self._current(), event)

    def _on_step(self, event: PoolEvent, k: _Key, served: bool) -> None:
        """A step in opening a connection (``tunnel`` ready, ``tls`` handshake begins): an
        event on the span of the request the connection is being opened for (its owner
        since ``connecting``; the connect may run in a task started by another request)."""
        conn = None if event.connection_id is None else self._conns.get(event.connection_id)
        if conn is not None:
            self._span_event(conn.owner, event)

    def _on_retry(self, event: PoolEvent, k: _Key, served: bool) -> None:
        """A retry, in the requesting task: an event on the attempt's span (its reason,
        delay and number). The next send ends that span and starts the attempt's own (see
        ``_wrap_send``)."""
        call = self._current()
        if call is None or call.span is None or call.ended:
            return
        self._span_event(call, event)

    def _current(self) -> _Call | None:
        call = _CURRENT.get()
        return call if call is not None and call.handle is self else None

    def _served(self, k: _Key, served: bool) -> tuple[_Call | None, float | None]:
        """Who an event that hands out a slot or a connection is for, and since when it
        waited: the key's oldest waiter when the queue got shorter, else the caller."""
        if served:
            return k.queue.popleft() if k.queue else (None, None)
        return self._current(), None

    def _on_queued(self, event: PoolEvent, k: _Key, served: bool) -> None:
        k.count(self._series.queued, event.reason)
        call = self._current()
        if event.reason == "shared_limit":  # a fleet wait: it keeps its slot, not queued
            if call is not None:
                call.fleet_since = event.time
        else:
            k.queue.append((call, event.time))
        self._span_event(call, event)

    def _on_dequeued(self, event: PoolEvent, k: _Key, served: bool) -> None:
        k.count(self._series.dequeued, event.reason)
        call = self._current()  # a cancel or timeout runs in the waiter's own context
        entry = next((e for e in k.queue if e[0] is call), None) if call is not None else None
        if entry is not None:
            k.queue.remove(entry)
        else:  # the client closed: every waiter goes, oldest first
            call = k.queue.popleft()[0] if k.queue else None
        self._span_event(call, event)

    def _on_connecting(self, event: PoolEvent, k: _Key, served: bool) -> None:
        call, queued_at = self._served(k, served)
        assert event.connection_id is not None
        self._conns[event.connection_id] = _Conn(CONNECTING, k, call)
        self._shift(k, CONNECTING, 1)
        self._queue_time(call, k, event, queued_at)
        if call is not None:
            call.conn = event.connection_id
            self._span_event(call, event)

    def _on_acquired(self, event: PoolEvent, k: _Key, served: bool) -> None:
        cid = event.connection_id
        assert cid is not None
        new = event.reason == "new"
        conn = self._conns.get(cid) or self._unknown(cid, k, CONNECTING if new else IDLE)
        self._move(conn, ACTIVE)
        k.count(self._series.acquired, event.reason)
        if new:
            conn.opened = event.time
            if conn.owner is not None:
                self._attribute(conn.owner, conn, event)
        elif served:
            call, queued_at = self._served(k, served)
            self._queue_time(call, k, event, queued_at)
            if call is not None:
                self._attribute(call, conn, event)
        else:  # the caller's own, unless a fleet waiter adopts it (see _settle)
            call = self._current()
            self._pending = (call if call is not None and call.conn is None else None, event, conn)

    def _settle(self, following: PoolEvent | None) -> None:
        """Give a reused connection to its request, now that the next event is known.

        A request waiting for a fleet-wide lease that adopts a connection gives its
        reserved slot back at once (``closed`` ``cancelled``): that slot's owner is the
        request the connection went to, whatever task the hand-over ran in.
        """
        assert self._pending is not None
        call, event, conn = self._pending
        self._pending = None
        if following is not None and following.kind == "closed" and following.reason == "cancelled":
            cid = following.connection_id
            slot = None if cid is None else self._conns.get(cid)
            if slot is not None and slot.state == CONNECTING and slot.key is conn.key:
                call = slot.owner
        if call is not None and not call.ended:
            self._attribute(call, conn, event)

    def _attribute(self, call: _Call, conn: _Conn, event: PoolEvent) -> None:
        conn.owner = call
        call.conn = event.connection_id
        if call.fleet_since is not None:
            self._fleet_waited(call, conn.key, event.time)
        call.reused = event.reason == "reused"
        self._span_event(call, event)

    def _on_released(self, event: PoolEvent, k: _Key, served: bool) -> None:
        cid = event.connection_id
        assert cid is not None
        conn = self._conns.get(cid) or self._unknown(cid, k, ACTIVE)
        self._move(conn, IDLE)  # unless the same step closes it or hands it on
        call = conn.owner
        if call is not None:
            if call.conn == cid:
                call.conn = None
            if event.reason != "eof":  # a body read to its end is the span's own end
                self._span_event(call, event)

    def _on_closed(self, event: PoolEvent, k: _Key, served: bool) -> None:
        cid = event.connection_id
        assert cid is not None
        conn = self._conns.pop(cid, None)
        if conn is None:
            self._close_unknown(k)
        else:
            self._shift(k, conn.state, -1)
        k.count(self._series.closed, event.reason)
        if event.reason == "evicted":
            k.evictions.value += 1
        if conn is None:
            return
        if conn.opened is not None:
            duration = event.time - conn.opened
            self._series.connection_duration.record(duration, k.closed_attrs(event.reason))
        call = conn.owner
        if call is not None:
            if call.conn == cid:
                call.conn = None
                if call.fleet_since is not None and conn.state == CONNECTING:
                    self._fleet_waited(call, k, event.time)  # no lease and no connection
            self._span_event(call, event)

    # ------------------------------------------- connections open before instrument()

    def _unknown(self, cid: int, k: _Key, state: int) -> _Conn:
        """A connection open before ``instrument()``, first seen now in ``state``."""
        k.unknown[state] = max(0, k.unknown[state] - 1)
        conn = self._conns[cid] = _Conn(state, k)
        return conn

    def _close_unknown(self, k: _Key) -> None:
        """A connection open before ``instrument()`` closed unseen: in which state was it?

        The pool's own counts, already updated for the close, say which of ours is one
        too many. Costs one ``stats()``, once per such connection.
        """
        candidates = [s for s in (CONNECTING, ACTIVE, IDLE) if k.unknown[s] > 0]
        if not candidates:
            return
        state = candidates[0]
        if len(candidates) > 1:
            host = self._pool.stats().hosts.get(k.key)
            if host is not None:
                now = (host.connecting, host.in_use, host.idle)
                state = next((s for s in candidates if k.n[s] > now[s]), state)
        k.unknown[state] -= 1
        self._shift(k, state, -1)

    # ----------------------------------------------------------- waits and spans

    def _queue_time(
        self, call: _Call | None, k: _Key, event: PoolEvent, queued_at: float | None
    ) -> None:
        if queued_at is None:
            return
        attributes = k.server_attrs if call is None else call.target.attributes
        self._series.time_in_queue.record(event.time - queued_at, attributes)

    def _fleet_waited(self, call: _Call, k: _Key, now: float) -> None:
        assert call.fleet_since is not None
        waited, call.fleet_since = now - call.fleet_since, None
        self._series.fleet_wait.record(waited, k.server_attrs)

    def _span_event(self, call: _Call | None, event: PoolEvent) -> None:
        if call is None or call.span is None or call.ended:
            return
        attrs: dict[str, str | int | float] = {}
        if event.kind == "queued" or event.kind == "dequeued":
            attrs[WAITING] = event.waiting  # the key's queue length, this request counted
        if event.reason is not None:
            attrs[REASON] = event.reason
        if event.connection_id is not None:
            attrs[CONNECTION_ID] = event.connection_id
        if event.attempt is not None:
            attrs[RETRY_ATTEMPT] = event.attempt
        if event.delay is not None:
            attrs[RETRY_DELAY] = event.delay
        if event.limit is not None:
            attrs[EFFECTIVE_LIMIT] = event.limit
        timestamp = int(event.time * 1e9) + self._clock_ns
        call.span.add_event(f"glasspool.pool.{event.kind}", attrs, timestamp=timestamp)

    # -------------------------------------------------------------- the requests

    def _wrap_request(self, original: Callable[..., Any]) -> Callable[..., Any]:
        async def request(method: str, url: str | yarl.URL, **kwargs: Any) -> Response:
            if not self._installed:
                return await original(method, url, **kwargs)  # type: ignore[no-any-return]
            call = self._begin(method, url, kwargs)
            token = _CURRENT.set(call)
            try:
                response: Response = await original(method, url, **kwargs)
            except BaseException as exc:
                self._record(call, None, exc)
                self._end(call, None, exc)
                raise
            finally:
                _CURRENT.reset(token)
            self._record(call, response, None)
            self._end(call, response, None)
            return response

        request.__glasspool_otel__ = self  # type: ignore[attr-defined]
        return request

    def _wrap_stream(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def stream(method: str, url: str | yarl.URL, **kwargs: Any) -> Any:
            context = original(method, url, **kwargs)  # argument errors raise here, as before
            if not self._installed:
                return context
            return _TracedStream(self, original, context, method, url, kwargs)

        stream.__glasspool_otel__ = self  # type: ignore[attr-defined]
        return stream

    def _wrap_send(self, original: Callable[..., Any]) -> Callable[..., Any]:
        # Client._send sends one request (a redirect hop or a retry is another call of it):
        # every send after a call's first gets its own CLIENT span, under the caller's.
        async def _send(request: Any, *args: Any) -> Any:
            call = _CURRENT.get()
            if call is not None and call.handle is self and self._installed and not call.ended:
                call.attempts += 1
                if call.attempts > 1 and call.span is not None:
                    self._next_span(call, request)
            result = await original(request, *args)
            if call is not None:
                call.last = result[1]
            return result

        _send.__glasspool_otel__ = self  # type: ignore[attr-defined]
        return _send

    def _next_span(self, call: _Call, request: Any) -> None:
        """End the span of the call's previous send and start one for this send."""
        assert call.span is not None
        previous = call.span
        _end_span(previous, call.url, call.reused, call.last, None, own_url=True)
        method = request.method
        target = self._target(method, request.url)
        span = self._tracer.start_span(
            method if method in KNOWN_METHODS else "HTTP",
            kind=SpanKind.CLIENT,
            attributes={**target.attributes, RESEND_COUNT: call.attempts - 1},
        )
        if method not in KNOWN_METHODS:
            span.set_attribute(METHOD_ORIGINAL, method)
        if self._propagate:
            _replace_trace_headers(request.headers, previous, span)
        call.span, call.reused, call.url = span, None, request.url

    def _begin(self, method: str, url: object, kwargs: dict[str, Any]) -> _Call:
        """Start a call: its attributes, its span, one more active request."""
        target = self._target(method, url)
        span: Span | None = None
        if self._spans:
            started = self._tracer.start_span(
                method if method in KNOWN_METHODS else "HTTP",
                kind=SpanKind.CLIENT,
                attributes=target.attributes,
            )
            if self._propagate:
                kwargs["headers"] = _with_trace_headers(kwargs.get("headers"), started)
            if started.is_recording():
                span = started
                if method not in KNOWN_METHODS:
                    span.set_attribute(METHOD_ORIGINAL, method)
        call = _Call(self, url, target, span)
        call.name, call.method = (method if method in KNOWN_METHODS else "HTTP"), method
        target.active.value += 1
        self._calls.add(call)
        return call

    def _target(self, method: str, url: object) -> _Target:
        """The attributes of a call's method and URL (cached per client)."""
        client = self._client_ref()
        base = None if client is None else client.base_url
        cache_key = (method, url if isinstance(url, str | yarl.URL) else str(url), base)
        found = self._targets.get(cache_key)
        if found is None:
            name = method if method in KNOWN_METHODS else "_OTHER"
            found = _Target(((METHOD, name), *_server_attrs(url, base)), self._series)
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()
            self._targets[cache_key] = found
        return found

    def _record(self, call: _Call, response: Response | None, exc: BaseException | None) -> None:
        """Record ``http.client.request.duration`` for the call (at the response head for
        a stream, after the body for ``request()``)."""
        elapsed = time.perf_counter() - call.start
        self._series.request_duration.record(elapsed, call.target.outcome(response, exc))

    def _end(self, call: _Call, response: Response | None, exc: BaseException | None) -> None:
        """End the call: one active request fewer, and its span ends with the outcome."""
        if self._pending is not None and self._pending[0] is call:
            self._settle(None)
        if call in self._calls:  # after uninstrument() its share is withdrawn already
            self._calls.discard(call)
            call.target.active.value -= 1
        call.ended = True
        if call.span is not None:
            _end_span(call.span, call.url, call.reused, response, exc, own_url=call.attempts > 1)


class _TracedStream:
    """What the wrapped ``client.stream()`` returns: the span and the active request last
    from ``__aenter__`` to ``__aexit__``; the duration is measured to the response head."""

    __slots__ = ("_call", "_context", "_handle", "_kwargs", "_method", "_original", "_response")

    def __init__(
        self,
        handle: Instrumentation,
        original: Callable[..., Any],
        context: Any,
        method: str,
        url: object,
        kwargs: dict[str, Any],
    ) -> None:
        self._handle = handle
        self._original = original
        self._context = context
        self._method = method
        self._kwargs = (url, kwargs)
        self._call: _Call | None = None
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        handle = self._handle
        url, kwargs = self._kwargs
        call = self._call = handle._begin(self._method, url, kwargs)
        if handle._propagate:  # the headers changed: a context that sends them
            self._context = self._original(self._method, url, **kwargs)
        token = _CURRENT.set(call)
        try:
            response: Response = await self._context.__aenter__()
        except BaseException as exc:
            handle._record(call, None, exc)
            handle._end(call, None, exc)
            raise
        finally:
            _CURRENT.reset(token)
        handle._record(call, response, None)
        self._response = response
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._context.__aexit__(exc_type, exc, tb)
        finally:
            if self._call is not None:
                failure = exc if isinstance(exc, GlasspoolError) else None
                self._handle._end(self._call, self._response, failure)


def _server_attrs(url: object, base: yarl.URL | None) -> Attrs:
    """``server.address``, ``server.port`` and ``url.scheme`` of a request URL (relative
    ones take them from ``base_url``); none for a URL that does not parse."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(str(url))
        if not parsed.absolute:
            if base is None:
                return ()
            parsed = base
        host, port = parsed.host, parsed.port
    except (ValueError, TypeError):
        return ()
    if not host or port is None:
        return ()
    return ((ADDRESS, host), (PORT, port), (SCHEME, parsed.scheme))


def _version(response: Response) -> str:
    return response.http_version.removeprefix("HTTP/")


def _end_span(
    span: Span,
    url: object,
    reused: bool | None,
    response: Response | None,
    exc: BaseException | None,
    *,
    own_url: bool = False,
) -> None:
    """Set the outcome's attributes and status on ``span`` (one call), and end it.

    ``url.full`` is the first URL of the call, or with ``own_url`` the URL of the
    response's own request (a span for one send of several)."""
    attrs: dict[str, str | int | bool] = {}
    if reused is not None:
        attrs[REUSED] = reused
    if response is not None:
        attrs[STATUS] = response.status
        attrs[PROTOCOL_VERSION] = _version(response)
        if resends := len(response.history) + len(response.attempts):
            attrs[RESEND_COUNT] = resends
        if response.status >= 400:
            attrs[ERROR_TYPE] = str(response.status)
            span.set_status(Status(StatusCode.ERROR))
        first = response.request
        if response.history and not own_url:
            first = response.history[0].request
        if first is not None:  # the URL as sent: params added, base_url joined
            url = first.url
    attrs[URL_FULL] = telemetry_url(url)
    if exc is not None:
        attrs[ERROR_TYPE] = type(exc).__qualname__
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
    span.set_attributes(attrs)
    span.end()


def _with_trace_headers(headers: Any, span: Span) -> Headers:
    """``headers`` plus the propagator's fields (W3C ``traceparent`` by default) for
    ``span``; a field the caller set is kept as given."""
    carrier: dict[str, str] = {}
    otel_propagate.inject(carrier, context=otel_trace.set_span_in_context(span))
    merged = Headers(headers)
    for name, value in carrier.items():
        if name not in merged:
            merged[name] = value
    return merged


def _replace_trace_headers(headers: Headers, previous: Span, span: Span) -> None:
    """Point the propagator's fields in ``headers`` at ``span``, where they still hold
    the values injected for ``previous`` (a field the caller set is left alone)."""
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    otel_propagate.inject(old, context=otel_trace.set_span_in_context(previous))
    otel_propagate.inject(new, context=otel_trace.set_span_in_context(span))
    for name, value in new.items():
        if name in headers and headers.get(name) == old.get(name):
            headers[name] = value


def instrument(
    client: Client,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    *,
    propagate: bool = False,
) -> Instrumentation:
    """Report ``client``'s requests and pool through OpenTelemetry until ``uninstrument()``.

    Metrics (per the HTTP semantic conventions, plus ``glasspool.pool.*``; see
    docs/observability.md for each one and its attributes) and one CLIENT span per
    ``request()`` call or ``stream()`` block (one per attempt when retried), with the
    pool's events on it. Call it before
    the requests you want to see; connections already open are counted from the pool's
    stats. Not a checkpoint: nothing is awaited.

    Args:
        client: the client; its ``request`` and ``stream`` are wrapped on the instance.
        meter_provider: where metrics go; ``None`` = the global one
            (``opentelemetry.metrics.get_meter_provider()``).
        tracer_provider: where spans go; ``None`` = the global one.
        propagate: inject the propagator's fields (W3C ``traceparent``/``tracestate`` by
            default) into each request's headers; a field the caller set is left alone.

    Returns:
        The handle: ``uninstrument()`` stops it and restores the client.

    Raises:
        RuntimeError: ``client`` is instrumented already (uninstrument it first).
        TypeError: ``client`` has no instance ``__dict__`` to hold the wrappers.
    """
    current = vars(client).get("request")
    if isinstance(getattr(current, "__glasspool_otel__", None), Instrumentation):
        raise RuntimeError(f"{client!r} is instrumented already; call uninstrument() first")
    handle = Instrumentation(
        client,
        meter_provider if meter_provider is not None else otel_metrics.get_meter_provider(),
        tracer_provider if tracer_provider is not None else otel_trace.get_tracer_provider(),
        propagate,
    )
    handle._install(client)
    return handle
