"""Hypothesis stateful test of the sans-IO pool: random operations, invariants after each."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from glasspool import PoolEvent, PoolKey
from glasspool._pool.state import Close, ConnState, PoolState, Waiter, WaiterState, Wake

KEYS = [PoolKey("http", f"h{i}.test", 80) for i in range(4)]
EXAMPLES = int(os.environ.get("GLASSPOOL_STATE_EXAMPLES", "500"))


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

    @initialize(
        limit=st.integers(1, 6),
        per_host=st.one_of(st.none(), st.integers(1, 6)),
        expiry=st.one_of(st.none(), st.floats(0.5, 5)),
        lifetime=st.one_of(st.none(), st.floats(1, 10)),
        max_requests=st.one_of(st.none(), st.integers(1, 4)),
        passovers=st.integers(0, 3),
        grace=st.one_of(st.none(), st.just(0.0), st.floats(0.1, 3)),
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
        )

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
        assert self.event_open[event.key] <= self.pool.limit_for(event.key), f"over at {event}"

    def apply(self, actions: list[Wake | Close]) -> None:
        for action in actions:
            if isinstance(action, Wake):
                assert action.waiter.state in (WaiterState.CONNECTING, WaiterState.ACTIVE)
            else:
                assert action.conn.state is ConnState.CLOSED

    def in_state(self, state: WaiterState) -> list[Waiter]:
        return [w for w in self.waiters if w.state is state]

    # ------------------------------------------------------------------ rules

    @rule(key=st.sampled_from(KEYS))
    def request(self, key: PoolKey) -> None:
        waiter, actions = self.pool.request(key, self.now)
        self.apply(actions)
        self.waiters.append(waiter)

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
        reason = "eof" if close is None else "error"
        self.apply(self.pool.release(waiter, self.now, reason, close, hint))

    @precondition(
        lambda self: any(w.state is not WaiterState.DONE for w in self.waiters),
    )
    @rule(data=st.data(), timeout=st.booleans())
    def cancel(self, data: st.DataObject, timeout: bool) -> None:
        live = [w for w in self.waiters if w.state is not WaiterState.DONE]
        waiter = data.draw(st.sampled_from(live))
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
        assert len(self.in_state(WaiterState.CONNECTING)) == pool.connecting
        assert len(self.in_state(WaiterState.ACTIVE)) == pool.in_use
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
