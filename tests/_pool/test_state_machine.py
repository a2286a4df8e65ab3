"""Hypothesis stateful test of the sans-IO pool: random operations, invariants after each.

With adaptive limits on, responses lower and raise the effective per-key limits; nothing is
granted to a key at or over its effective limit (I9).

Some requests wait for a fleet-wide lease (``fleet_wait``) before they connect, as with
``RedisLimits``; a fake lease source grants, refuses or cancels those leases, and the
machine keeps its own line of them per key to check who adopts a connection that comes back.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from glasspool import AdaptiveLimits, PoolEvent, PoolKey
from glasspool._pool.state import Close, Conn, ConnState, PoolState, Waiter, WaiterState, Wake

KEYS = [PoolKey("http", f"h{i}.test", 80) for i in range(4)]
EXAMPLES = int(os.environ.get("GLASSPOOL_STATE_EXAMPLES", "500"))


def conn_holder(waiters: list[Waiter], conn: Conn) -> Waiter | None:
    return next((w for w in waiters if w.conn is conn and w.state is WaiterState.ACTIVE), None)


class PoolMachine(RuleBasedStateMachine):
    """Drives PoolState like the I/O layer would, and recounts everything from scratch."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.waiters: list[Waiter] = []
        self.events: list[PoolEvent] = []
        self.event_open: Counter[PoolKey] = Counter()
        self.event_total_open = 0
        self.closed_ids: set[int] = set()
        # the fake lease source: per key, the requests waiting for a lease, oldest first
        self.fleet_line: dict[PoolKey, list[Waiter]] = {key: [] for key in KEYS}

    @initialize(
        limit=st.integers(1, 6),
        per_host=st.one_of(st.none(), st.integers(1, 6)),
        expiry=st.one_of(st.none(), st.floats(0.5, 5)),
        lifetime=st.one_of(st.none(), st.floats(1, 10)),
        max_requests=st.one_of(st.none(), st.integers(1, 4)),
        passovers=st.integers(0, 3),
        grace=st.one_of(st.none(), st.just(0.0), st.floats(0.1, 3)),
        warm=st.lists(st.sampled_from(["active", "connecting", "fleet", "idle"]), max_size=4),
        adaptive=st.one_of(st.none(), st.integers(1, 3)),
    )
    def setup(
        self,
        limit: int,
        per_host: int | None,
        expiry: float | None,
        lifetime: float | None,
        max_requests: int | None,
        passovers: int,
        grace: float | None,
        warm: list[str],
        adaptive: int | None,
    ) -> None:
        if per_host is not None:
            per_host = min(per_host, limit)
        self.pool = PoolState(
            limit,
            per_host,
            None,
            expiry,
            lifetime,
            max_requests,
            passovers,
            emit=self.on_event,
            evict_grace=grace,
            adaptive=None if adaptive is None else AdaptiveLimits(increase_after=adaptive),
        )
        # Start with requests of one key that hold connections in use, reserved slots,
        # slots waiting for a lease, or connections back idle (in that order), so that
        # same-key hand-overs and adoptions are a step or two away.
        first = [self._request(KEYS[0]) for _ in warm]
        for state, waiter in zip(warm, first, strict=True):
            if waiter.state is not WaiterState.CONNECTING:
                continue
            if state in ("active", "idle"):
                self.apply(self.pool.connected(waiter, self.now))
            if state == "fleet":
                self._fleet_wait(waiter, full=True)
            elif state == "idle":
                self.apply(self.pool.release(waiter, self.now))

    def on_event(self, event: PoolEvent) -> None:
        self.events.append(event)
        if event.kind == "connecting":
            self.event_open[event.key] += 1
            self.event_total_open += 1
        elif event.kind == "closed":
            self.event_open[event.key] -= 1
            self.event_total_open -= 1
            assert event.connection_id not in self.closed_ids, f"closed twice: {event}"
            self.closed_ids.add(event.connection_id or -1)
        assert self.event_total_open <= self.pool.limit, f"over limit at {event}"
        host = self.pool.hosts().get(event.key)
        if event.kind == "connecting" or (event.kind == "acquired" and event.reason == "reused"):
            assert host is not None and host.open <= host.limit, f"granted over I9 at {event}"
        if event.kind == "limit_changed":
            assert host is not None and event.limit == host.limit, event
            assert 1 <= host.limit <= host.configured, event
        assert self.event_open[event.key] <= self.pool.limit_for(event.key), f"over at {event}"

    def apply(self, actions: list[Wake | Close]) -> None:
        for action in actions:
            if isinstance(action, Wake):
                waiter = action.waiter
                assert waiter.state in (WaiterState.CONNECTING, WaiterState.ACTIVE)
                line = self.fleet_line[waiter.key]
                if waiter in line:  # it adopted a connection of its key: the oldest first
                    assert line[0] is waiter, f"{waiter} adopted ahead of {line[0]}"
                    assert waiter.state is WaiterState.ACTIVE and waiter.reused
                    line.remove(waiter)
            else:
                assert action.conn.state is ConnState.CLOSED

    def in_state(self, state: WaiterState) -> list[Waiter]:
        return [w for w in self.waiters if w.state is state]

    # ------------------------------------------------------------------ rules

    @rule(key=st.sampled_from(KEYS))
    def request(self, key: PoolKey) -> None:
        self._request(key)

    @precondition(lambda self: any(h.open for h in self.pool.hosts().values()))
    @rule(data=st.data())
    def request_busy_key(self, data: st.DataObject) -> None:
        """A request for a key that has connections: same-key hand-overs and adoptions."""
        busy = [key for key, host in self.pool.hosts().items() if host.open]
        self._request(data.draw(st.sampled_from(busy)))

    def _request(self, key: PoolKey) -> Waiter:
        waiter, actions = self.pool.request(key, self.now)
        self.apply(actions)
        self.waiters.append(waiter)
        return waiter

    @precondition(lambda self: self.in_state(WaiterState.CONNECTING))
    @rule(data=st.data(), ok=st.booleans())
    def open_result(self, data: st.DataObject, ok: bool) -> None:
        waiter = data.draw(st.sampled_from(self.in_state(WaiterState.CONNECTING)))
        if ok:
            self.apply(self.pool.connected(waiter, self.now))
        else:
            self.apply(self.pool.connect_failed(waiter, self.now))

    @precondition(lambda self: self.in_state(WaiterState.ACTIVE))
    @rule(
        data=st.data(),
        close=st.sampled_from([None, None, "not_reusable", "error", "server_closed"]),
        hint=st.one_of(st.none(), st.floats(0.1, 3)),
    )
    def release(self, data: st.DataObject, close: str | None, hint: float | None) -> None:
        waiter = data.draw(st.sampled_from(self.in_state(WaiterState.ACTIVE)))
        conn = waiter.conn
        assert conn is not None
        queued = next(iter(self.pool.hosts()[waiter.key].waiters.values()), None)
        line = list(self.fleet_line[waiter.key])
        reason = "eof" if close is None else "error"
        self.apply(self.pool.release(waiter, self.now, reason, close, hint))
        if conn.state is ConnState.CLOSED:
            return  # not reusable, expired, or evicted for another key
        # Back clean: to the oldest QUEUED waiter of its key, else the oldest FLEET one.
        taker = queued or (line[0] if line else None)
        if taker is not None:
            assert taker.state is WaiterState.ACTIVE and taker.conn is conn, (
                f"{conn} came back and went to {conn_holder(self.waiters, conn)}, not {taker}"
            )

    @precondition(lambda self: self.in_state(WaiterState.ACTIVE))
    @rule(
        data=st.data(),
        answer=st.sampled_from([(200, False), (200, False), (404, False), (500, False),
                                (503, False), (429, True), (200, True)]),
    )  # fmt: skip
    def response(self, data: st.DataObject, answer: tuple[int, bool]) -> None:
        """Adaptive limits: a response head arrives on an active request's connection."""
        waiter = data.draw(st.sampled_from(self.in_state(WaiterState.ACTIVE)))
        host = self.pool.hosts()[waiter.key]
        before, seen = host.limit, len(self.events)
        status, retry_after = answer
        self.apply(self.pool.response_seen(waiter, self.now, status, retry_after))
        changes = [e for e in self.events[seen:] if e.kind == "limit_changed"]
        if self.pool.adaptive is None:
            assert host.limit == before and not changes
        elif host.limit < before:
            assert host.limit == max(1, before // 2)
            assert status in (503, 429) or retry_after
            assert [e.limit for e in changes] == [host.limit]
            lowered = [e for e in self.events[seen:] if e.reason == "limit_lowered"]
            assert all(e.kind == "closed" and e.key == waiter.key for e in lowered)
            assert not host.idle or host.open <= host.limit
        elif host.limit > before:
            assert host.limit == before + 1 and status < 500 and not retry_after
            assert [(e.reason, e.limit) for e in changes] == [("recovered", host.limit)]

    # ------------------------------------------------ the fake fleet-wide lease source

    @rule(key=st.sampled_from(KEYS), full=st.booleans())
    def request_with_shared_limits(self, key: PoolKey, full: bool) -> None:
        """A request in a pool with shared limits: a reserved slot waits for a lease."""
        waiter = self._request(key)
        if waiter.state is WaiterState.CONNECTING:
            self._fleet_wait(waiter, full)

    @precondition(lambda self: self.in_state(WaiterState.CONNECTING))
    @rule(data=st.data(), full=st.booleans(), prefer_idle=st.booleans())
    def fleet_wait(self, data: st.DataObject, full: bool, prefer_idle: bool) -> None:
        waiters = self.in_state(WaiterState.CONNECTING)
        hosts = self.pool.hosts()
        if prefer_idle and any(hosts[w.key].idle for w in waiters):
            waiters = [w for w in waiters if hosts[w.key].idle]  # reached by a race in I/O
        self._fleet_wait(data.draw(st.sampled_from(waiters)), full)

    def _fleet_wait(self, waiter: Waiter, full: bool) -> None:
        idle = bool(self.pool.hosts()[waiter.key].idle)
        seen = len(self.events)
        self.fleet_line[waiter.key].append(waiter)
        self.apply(self.pool.fleet_wait(waiter, self.now, full))
        if waiter.state is WaiterState.FLEET:
            assert not self.pool.hosts()[waiter.key].idle, "it waits while one is idle"
        else:  # it adopted an idle connection of its key at once
            assert idle and waiter.state is WaiterState.ACTIVE and waiter.reused
            assert waiter not in self.fleet_line[waiter.key]
        shared = [e for e in self.events[seen:] if e.reason == "shared_limit"]
        assert all(e.kind == "queued" and e.key == waiter.key for e in shared)
        # reported only for a request that waits, and only if the fleet is known full
        assert len(shared) == (full and waiter.state is WaiterState.FLEET), shared

    @precondition(lambda self: self.in_state(WaiterState.FLEET))
    @rule(data=st.data(), outcome=st.sampled_from(["granted", "refused", "cancelled"]))
    def fleet_lease(self, data: st.DataObject, outcome: str) -> None:
        waiter = data.draw(st.sampled_from(self.in_state(WaiterState.FLEET)))
        self.fleet_line[waiter.key].remove(waiter)
        if outcome == "granted":
            self.apply(self.pool.fleet_granted(waiter, self.now))
            assert waiter.state is WaiterState.CONNECTING
        elif outcome == "refused":
            self.apply(self.pool.fleet_failed(waiter, self.now, "error"))
            assert waiter.state is WaiterState.DONE
        else:
            self.apply(self.pool.cancel(waiter, self.now))
            assert waiter.state is WaiterState.DONE

    @precondition(
        lambda self: any(w.state is not WaiterState.DONE for w in self.waiters),
    )
    @rule(data=st.data(), timeout=st.booleans())
    def cancel(self, data: st.DataObject, timeout: bool) -> None:
        live = [w for w in self.waiters if w.state is not WaiterState.DONE]
        waiter = data.draw(st.sampled_from(live))
        if waiter.state is WaiterState.FLEET:
            self.fleet_line[waiter.key].remove(waiter)
        if timeout and waiter.state is WaiterState.QUEUED:
            self.apply(self.pool.cancel(waiter, self.now, "timeout"))
        elif waiter.state is not WaiterState.ACTIVE or (waiter.conn and waiter.conn.requests):
            # An ACTIVE waiter is cancelled only in the window before it picked up a
            # handed connection; the pool treats it as an unused give-back.
            self.apply(self.pool.cancel(waiter, self.now))

    @rule(data=st.data())
    def server_close_idle(self, data: st.DataObject) -> None:
        idle = [c for h in self.pool.hosts().values() for c in h.idle.values()]
        if idle:
            conn = data.draw(st.sampled_from(idle))
            self.apply(self.pool.server_closed(conn, self.now))

    @rule(dt=st.floats(0.01, 4))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.apply(self.pool.expire(self.now))

    # ------------------------------------------------------------- invariants

    @invariant()
    def invariants_hold(self) -> None:
        if not hasattr(self, "pool"):
            return
        pool = self.pool
        pool._check_invariants(self.now)
        assert len(self.in_state(WaiterState.QUEUED)) == pool.waiting
        fleet = len(self.in_state(WaiterState.FLEET))
        assert len(self.in_state(WaiterState.CONNECTING)) + fleet == pool.connecting
        assert fleet == pool.fleet_waiting
        assert len(self.in_state(WaiterState.ACTIVE)) == pool.in_use
        for key, line in self.fleet_line.items():
            host = pool.hosts().get(key)
            assert list(host.fleet.values() if host else ()) == line, (key, line)
            assert not (line and host and host.idle), (
                f"{key}: idle while requests wait on the fleet"
            )
        assert self.event_total_open == pool.open, (self.event_total_open, pool.open)
        for key, host in pool.hosts().items():
            assert self.event_open[key] == host.open, (key, self.event_open[key], host.open)
            assert host.open <= pool.limit_for(key)
        # No waiter waits while capacity exists for it (I5, from the outside).
        if pool.waiting and pool.open < pool.limit:
            for key, host in pool.hosts().items():
                if host.waiters:
                    assert host.open >= host.limit, f"{key} waits with capacity"

    def teardown(self) -> None:
        if not hasattr(self, "pool"):
            return
        # Every slot handed out comes back: finish everything, then the pool is at rest.
        for _ in range(1000):
            live = [w for w in self.waiters if w.state is not WaiterState.DONE]
            if not live:
                break
            for waiter in live:
                if waiter.state is WaiterState.FLEET:
                    self.fleet_line[waiter.key].remove(waiter)
                    self.apply(self.pool.fleet_granted(waiter, self.now))
                if waiter.state is WaiterState.CONNECTING:
                    self.apply(self.pool.connected(waiter, self.now))
                elif waiter.state is WaiterState.ACTIVE:
                    self.apply(self.pool.release(waiter, self.now))
                self.pool._check_invariants(self.now)
                # time passes while requests wait: expiry and eviction grace come due
                self.now += 0.25
                self.apply(self.pool.expire(self.now))
                self.pool._check_invariants(self.now)
        assert self.pool.waiting == self.pool.connecting == self.pool.in_use == 0
        assert self.pool.open == self.pool.idle
        _, actions = self.pool.close_all(self.now)
        self.apply(actions)
        assert self.pool.open == 0
        assert self.event_total_open == 0


PoolMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolMachine = PoolMachine.TestCase
