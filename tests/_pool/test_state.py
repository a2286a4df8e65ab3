"""Unit tests of the pool's policy, one rule at a time, with no I/O and a fake clock."""

from __future__ import annotations

import pytest

from glasspool import PoolEvent, PoolKey, PoolMisuse
from glasspool._pool.state import Close, PoolState, Waiter, WaiterState, Wake

A = PoolKey("http", "a.test", 80)
B = PoolKey("http", "b.test", 80)
C = PoolKey("https", "c.test", 443)


def make(**kw: object) -> tuple[PoolState, list[PoolEvent]]:
    events: list[PoolEvent] = []
    pool = PoolState(emit=events.append, **kw)  # type: ignore[arg-type]
    return pool, events


def open_conn(pool: PoolState, key: PoolKey, now: float = 0.0) -> Waiter:
    waiter, _ = pool.request(key, now)
    assert waiter.state is WaiterState.CONNECTING
    pool.connected(waiter, now)
    return waiter


def kinds(events: list[PoolEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.reason) for e in events]


def test_new_connection_then_reuse_most_recently_used() -> None:
    pool, events = make(limit=10)
    w1, w2 = open_conn(pool, A), open_conn(pool, A)
    pool.release(w1, 1.0)
    pool.release(w2, 2.0)  # released last: most recently used
    w3, _ = pool.request(A, 3.0)
    assert w3.state is WaiterState.ACTIVE and w3.reused
    assert w3.conn is w2.conn
    assert kinds(events)[-1] == ("acquired", "reused")
    pool._check_invariants()


def test_limit_counts_idle_connections() -> None:
    pool, events = make(limit=2, limit_per_host=2)
    open_conn(pool, A)
    w = open_conn(pool, A)
    pool.release(w, 1.0)  # idle, still counts
    w3, _ = pool.request(A, 2.0)
    assert w3.state is WaiterState.ACTIVE  # reuses the idle one, no third socket
    w4, _ = pool.request(A, 2.0)
    assert w4.state is WaiterState.QUEUED
    assert events[-1].kind == "queued" and events[-1].reason == "limit_per_host"
    assert pool.open == 2


def test_global_limit_evicts_oldest_idle_of_another_key() -> None:
    pool, events = make(limit=2)
    wa, wb = open_conn(pool, A), open_conn(pool, B)
    pool.release(wa, 1.0)  # oldest idle
    pool.release(wb, 2.0)
    wc, actions = pool.request(C, 3.0)
    assert wc.state is WaiterState.CONNECTING
    assert [type(a) for a in actions] == [Close]
    assert isinstance(actions[0], Close) and actions[0].conn is wa.conn
    assert ("closed", "evicted") in kinds(events)
    pool._check_invariants()


def test_queue_reason_limit_when_no_idle_to_evict() -> None:
    pool, events = make(limit=1)
    open_conn(pool, A)
    w, _ = pool.request(B, 1.0)
    assert w.state is WaiterState.QUEUED
    assert (events[-1].kind, events[-1].reason, events[-1].waiting) == ("queued", "limit", 1)


def test_released_connection_goes_to_oldest_waiter_of_its_key() -> None:
    pool, _ = make(limit=5, limit_per_host=1)
    holder = open_conn(pool, A)
    first, _ = pool.request(A, 1.0)
    second, _ = pool.request(A, 2.0)
    actions = pool.release(holder, 3.0)
    assert actions == [Wake(first)]
    assert first.state is WaiterState.ACTIVE and first.conn is holder.conn
    assert second.state is WaiterState.QUEUED


def test_no_head_of_line_blocking_across_hosts() -> None:
    pool, _ = make(limit=2, limit_per_host=1)
    a1 = open_conn(pool, A)
    b1 = open_conn(pool, B)
    a_wait, _ = pool.request(A, 1.0)  # blocked by A's per-host limit
    c_wait, _ = pool.request(C, 2.0)  # blocked by the global limit
    actions = pool.release(b1, 3.0, close_reason="not_reusable")  # frees a global slot
    assert Wake(c_wait) in actions and c_wait.state is WaiterState.CONNECTING
    assert a_wait.state is WaiterState.QUEUED  # still held by its own limit
    pool.release(a1, 4.0)
    assert a_wait.state is WaiterState.ACTIVE


def test_fifo_across_keys_when_global_limit_binds() -> None:
    pool, _ = make(limit=1)
    holder = open_conn(pool, A)
    wb, _ = pool.request(B, 1.0)
    wc, _ = pool.request(C, 2.0)
    pool.release(holder, 3.0, close_reason="error")
    assert wb.state is WaiterState.CONNECTING and wc.state is WaiterState.QUEUED


def test_new_request_never_jumps_the_queue() -> None:
    pool, _ = make(limit=1)
    holder = open_conn(pool, A)
    wa, _ = pool.request(A, 1.0)
    pool.release(holder, 2.0)  # handed to wa directly
    late, _ = pool.request(A, 2.5)
    assert wa.state is WaiterState.ACTIVE and late.state is WaiterState.QUEUED


def test_older_same_key_waiters_are_not_passovers() -> None:
    pool, _ = make(limit=1, max_passovers=0)
    holder = open_conn(pool, A)
    older = pool.request(A, 0.1)[0]
    b_waiter, _ = pool.request(B, 0.2)
    pool.release(holder, 1.0)  # A's waiter is older than B's: plain FIFO, no pass-over
    assert older.state is WaiterState.ACTIVE and b_waiter.state is WaiterState.QUEUED


def test_passover_counts_only_younger_same_key_waiters() -> None:
    pool, _ = make(limit=1, max_passovers=1)
    holder = open_conn(pool, A)
    b_waiter, _ = pool.request(B, 0.1)
    younger = [pool.request(A, 0.2 + i)[0] for i in range(3)]
    pool.release(holder, 5.0)  # pass-over 1: younger[0] gets it
    assert younger[0].state is WaiterState.ACTIVE
    pool.release(younger[0], 6.0)  # bound reached: the slot goes to B
    assert b_waiter.state is WaiterState.CONNECTING
    assert younger[1].state is WaiterState.QUEUED


def test_cancelled_waiter_leaves_queue_and_handed_slot_passes_on() -> None:
    pool, events = make(limit=1)
    holder = open_conn(pool, A)
    w1, _ = pool.request(A, 1.0)
    w2, _ = pool.request(A, 2.0)
    pool.cancel(w2, 3.0, "timeout")
    assert ("dequeued", "timeout") in kinds(events) and pool.waiting == 1
    pool.release(holder, 4.0)  # handed to w1, which is cancelled before using it
    w3, _ = pool.request(A, 4.5)
    pool.cancel(w1, 5.0)
    assert w3.state is WaiterState.ACTIVE and w3.conn is holder.conn
    pool._check_invariants()


def test_cancel_while_connecting_frees_the_slot() -> None:
    pool, events = make(limit=1)
    w1, _ = pool.request(A, 0.0)
    w2, _ = pool.request(B, 0.5)
    actions = pool.cancel(w1, 1.0)
    assert ("closed", "cancelled") in kinds(events)
    assert Wake(w2) in actions and w2.state is WaiterState.CONNECTING


def test_keepalive_expiry_and_server_hint_smaller_wins() -> None:
    pool, events = make(limit=5, keepalive_expiry=10.0)
    w1, w2 = open_conn(pool, A), open_conn(pool, A)
    pool.release(w1, 0.0, keepalive_hint_s=2.0)
    pool.release(w2, 0.0)
    assert pool.next_expiry() == 2.0
    pool.expire(2.0)
    assert pool.idle == 1 and kinds(events)[-1] == ("closed", "expired")
    assert pool.next_expiry() == 10.0
    pool.expire(10.0)
    assert pool.idle == 0 and pool.open == 0


def test_expired_idle_connection_is_not_reused() -> None:
    pool, events = make(limit=5, keepalive_expiry=1.0)
    w = open_conn(pool, A)
    pool.release(w, 0.0)
    w2, _ = pool.request(A, 5.0)  # timer has not fired yet, but it has expired
    assert w2.state is WaiterState.CONNECTING
    assert ("closed", "expired") in kinds(events)


def test_max_requests_and_max_lifetime() -> None:
    pool, events = make(limit=5, max_requests_per_connection=2, max_lifetime=100.0)
    w = open_conn(pool, A)
    pool.release(w, 1.0)
    w2, _ = pool.request(A, 2.0)
    pool.release(w2, 3.0)
    assert kinds(events)[-1] == ("closed", "max_requests")
    w3 = open_conn(pool, B, now=10.0)
    pool.release(w3, 111.0)
    assert kinds(events)[-1] == ("closed", "max_lifetime")
    w4 = open_conn(pool, B, now=200.0)
    pool.release(w4, 250.0)
    assert pool.next_expiry() == 265.0  # keep-alive (15s) ends before the lifetime (300)
    pool.expire(265.0)
    assert kinds(events)[-1] == ("closed", "expired")
    w5 = open_conn(pool, B, now=400.0)
    pool.release(w5, 490.0)
    assert pool.next_expiry() == 500.0  # the lifetime ends before the keep-alive (505)
    pool.expire(500.0)
    assert kinds(events)[-1] == ("closed", "max_lifetime")


def test_server_closed_idle_connection() -> None:
    pool, events = make(limit=5)
    w = open_conn(pool, A)
    pool.release(w, 0.0)
    assert w.conn is not None
    pool.server_closed(w.conn, 1.0)
    assert kinds(events)[-1] == ("closed", "server_closed") and pool.open == 0


def test_release_twice_is_misuse_naming_the_key() -> None:
    pool, _ = make(limit=5)
    w = open_conn(pool, A)
    pool.release(w, 0.0)
    with pytest.raises(PoolMisuse, match=r"release\(\).*a\.test.*done"):
        pool.release(w, 1.0)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"limit": 0}, "limit must be >= 1, got 0"),
        ({"limit": -3}, "limit must be >= 1, got -3"),
        ({"limit": 5, "limit_per_host": 6}, "limit_per_host=6 is greater than limit=5"),
        ({"limit": 5, "host_limits": {"x.test": 9}}, r"host_limits\['x.test'\]=9"),
        ({"keepalive_expiry": -1.0}, "keepalive_expiry must be >= 0 seconds or None, got -1.0"),
        ({"max_lifetime": 0}, "max_lifetime must be > 0"),
    ],
)
def test_bad_configuration_names_the_value(kw: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        PoolState(**kw)  # type: ignore[arg-type]


def test_limit_type_error() -> None:
    with pytest.raises(TypeError, match="limit must be an int, not '5'"):
        PoolState(limit="5")  # type: ignore[arg-type]


def test_host_limits_override() -> None:
    pool, _ = make(limit=10, limit_per_host=5, host_limits={"a.test": 1})
    assert pool.limit_for(A) == 1 and pool.limit_for(B) == 5
    open_conn(pool, A)
    assert pool.request(A, 0.0)[0].state is WaiterState.QUEUED


def test_no_events_built_without_listener() -> None:
    pool = PoolState(limit=2)
    w = open_conn(pool, A)
    pool.release(w, 0.0)
    assert pool.emit is None and pool.idle == 1


def test_available_counts_evictable_idle_of_other_keys() -> None:
    pool, _ = make(limit=2, limit_per_host=2)
    wa = open_conn(pool, A)
    open_conn(pool, A)
    pool.release(wa, 0.0)
    hosts = pool.hosts()
    b = pool._host(B)
    assert pool.host_available(hosts[A]) == 0  # A is at its own limit
    assert pool.host_available(b) == 1  # A's idle connection could be evicted


def test_close_all_drops_waiters_and_closes_idle() -> None:
    pool, events = make(limit=1)
    holder = open_conn(pool, A)
    waiting, _ = pool.request(B, 0.0)
    dropped, _ = pool.close_all(1.0)
    assert dropped == [waiting]
    actions = pool.close_in_use(holder, 1.0)
    assert actions and kinds(events)[-1] == ("closed", "client_closed")
    assert pool.release(holder, 2.0) == []  # a late release after aclose is harmless
    assert pool.open == 0


# ---------------------------------------------------------------- eviction (I8)


def test_key_with_a_connection_waits_for_it_instead_of_evicting_a_fresh_idle() -> None:
    pool, events = make(limit=2, limit_per_host=2, evict_grace=1.0)
    wa, wb = open_conn(pool, A), open_conn(pool, B)
    pool.release(wb, 1.0)  # B's connection idles; B may need it again a moment later
    w, actions = pool.request(A, 1.5)  # A has a connection in use: it waits for it
    assert w.state is WaiterState.QUEUED and actions == []
    assert kinds(events)[-1] == ("queued", "limit")
    assert ("closed", "evicted") not in kinds(events)
    assert pool.release(wa, 1.6) == [Wake(w)]  # A's own connection comes back to it
    assert w.conn is wa.conn and w.reused
    pool._check_invariants(1.6)


def test_key_with_no_connection_evicts_at_once() -> None:
    pool, _ = make(limit=2, evict_grace=None)
    open_conn(pool, A)
    wb = open_conn(pool, B)
    pool.release(wb, 1.0)
    w, actions = pool.request(C, 1.0)  # C has nothing: it may not be made to wait
    assert w.state is WaiterState.CONNECTING
    assert actions == [Close(wb.conn, "evicted")]  # type: ignore[arg-type]
    pool._check_invariants(1.0)


def test_idle_connection_past_the_grace_is_evicted_for_a_waiting_key() -> None:
    pool, _ = make(limit=2, limit_per_host=2, evict_grace=1.0)
    open_conn(pool, A)
    wb = open_conn(pool, B)
    pool.release(wb, 1.0)
    w, _ = pool.request(A, 1.2)
    assert w.state is WaiterState.QUEUED
    assert pool.evict_deadline() == 2.0 and pool.next_expiry() == 2.0
    assert pool.expire(1.9) == []  # not yet
    pool._check_invariants(1.9)
    actions = pool.expire(2.0)
    assert actions == [Close(wb.conn, "evicted"), Wake(w)]  # type: ignore[arg-type]
    assert w.state is WaiterState.CONNECTING
    assert pool.evict_deadline() is None
    pool._check_invariants(2.0)


def test_request_evicts_an_idle_connection_past_the_grace_at_once() -> None:
    pool, _ = make(limit=2, limit_per_host=2, evict_grace=1.0)
    open_conn(pool, A)
    wb = open_conn(pool, B)
    pool.release(wb, 1.0)
    w, actions = pool.request(A, 2.5)
    assert w.state is WaiterState.CONNECTING
    assert actions == [Close(wb.conn, "evicted")]  # type: ignore[arg-type]


def test_zero_grace_evicts_whenever_the_global_limit_is_full() -> None:
    pool, _ = make(limit=2, limit_per_host=2, evict_grace=0)
    open_conn(pool, A)
    wb = open_conn(pool, B)
    pool.release(wb, 1.0)
    w, actions = pool.request(A, 1.0)
    assert w.state is WaiterState.CONNECTING and len(actions) == 1


def test_released_idle_goes_to_a_starving_key_before_an_older_waiter_with_connections() -> None:
    pool, _ = make(limit=2, limit_per_host=2, evict_grace=None)
    open_conn(pool, A)
    wb = open_conn(pool, B)
    older, _ = pool.request(A, 1.0)  # A has a connection: waits for its own
    starving, _ = pool.request(C, 2.0)  # C has none: global limit
    assert older.state is starving.state is WaiterState.QUEUED
    actions = pool.release(wb, 3.0)  # B's connection idles and is evicted for C at once
    assert actions == [Close(wb.conn, "evicted"), Wake(starving)]  # type: ignore[arg-type]
    assert older.state is WaiterState.QUEUED
    pool._check_invariants(3.0)


def test_available_counts_only_idle_a_key_may_evict_now() -> None:
    pool, _ = make(limit=2, limit_per_host=2, evict_grace=1.0)
    open_conn(pool, A)
    wb = open_conn(pool, B)
    pool.release(wb, 1.0)
    a = pool.hosts()[A]
    assert pool.host_available(a, 1.5) == 0  # B's idle one is still in its grace
    assert pool.host_available(a, 2.0) == 1
    pool.request(C, 1.5)
    assert pool.host_available(pool.hosts()[C], 1.5) == 0  # it evicted B's at once


def test_evict_grace_is_validated() -> None:
    with pytest.raises(ValueError, match="evict_grace"):
        PoolState(evict_grace=-1)


# ------------------------------------------------- waiting for a fleet-wide lease (FLEET)


def fleet_waiter(pool: PoolState, key: PoolKey, now: float = 0.0, full: bool = False) -> Waiter:
    waiter, _ = pool.request(key, now)
    assert waiter.state is WaiterState.CONNECTING
    assert pool.fleet_wait(waiter, now, full) == []
    assert waiter.state is WaiterState.FLEET
    return waiter


def test_fleet_wait_keeps_the_reserved_slot_and_reports_a_full_fleet() -> None:
    pool, events = make(limit=5)
    first = fleet_waiter(pool, A, 1.0, full=True)
    event = events[-1]
    assert (event.kind, event.reason) == ("queued", "shared_limit")
    assert (event.key, event.time, event.waiting) == (A, 1.0, 0)
    fleet_waiter(pool, A, 2.0)  # the fleet is not known to be full: no event
    assert kinds(events) == [("connecting", None), ("queued", "shared_limit"), ("connecting", None)]
    assert (pool.fleet_waiting, pool.connecting, pool.open, pool.waiting) == (2, 2, 2, 0)
    assert next(iter(pool.hosts()[A].fleet.values())) is first
    pool._check_invariants(2.0)


def test_fleet_granted_goes_on_to_open_the_connection() -> None:
    pool, events = make(limit=5)
    waiter = fleet_waiter(pool, A)
    assert pool.fleet_granted(waiter, 1.0) == []
    assert waiter.state is WaiterState.CONNECTING and pool.fleet_waiting == 0
    pool._check_invariants(1.0)
    pool.connected(waiter, 1.5)
    assert kinds(events)[-1] == ("acquired", "new") and pool.in_use == 1
    pool._check_invariants(1.5)


@pytest.mark.parametrize(("cancel", "reason"), [(False, "error"), (True, "cancelled")])
def test_no_fleet_lease_gives_the_slot_to_the_next_waiter(cancel: bool, reason: str) -> None:
    pool, events = make(limit=1)
    waiter = fleet_waiter(pool, A)
    queued, _ = pool.request(B, 0.5)
    assert queued.state is WaiterState.QUEUED
    actions = pool.cancel(waiter, 1.0) if cancel else pool.fleet_failed(waiter, 1.0, "error")
    assert actions == [Close(waiter.conn, reason), Wake(queued)]  # type: ignore[arg-type]
    assert ("closed", reason) in kinds(events)
    assert waiter.state is WaiterState.DONE and queued.state is WaiterState.CONNECTING
    assert pool.fleet_waiting == 0 and pool.cancel(waiter, 2.0) == []
    pool._check_invariants(1.0)


def test_a_connection_of_its_key_coming_back_is_adopted_by_the_oldest_fleet_waiter() -> None:
    pool, events = make(limit=5)
    holder = open_conn(pool, A)
    first, second = fleet_waiter(pool, A, 1.0), fleet_waiter(pool, A, 2.0)
    reserved = first.conn
    actions = pool.release(holder, 3.0)
    assert actions == [Close(reserved, "cancelled"), Wake(first)]  # type: ignore[arg-type]
    assert first.state is WaiterState.ACTIVE and first.reused and first.conn is holder.conn
    assert second.state is WaiterState.FLEET
    assert kinds(events)[-3:] == [
        ("released", "eof"),
        ("acquired", "reused"),
        ("closed", "cancelled"),
    ]
    assert (pool.fleet_waiting, pool.connecting, pool.in_use, pool.idle) == (1, 1, 1, 0)
    pool._check_invariants(3.0)


def test_a_fleet_waiter_adopts_before_a_key_with_no_connection_evicts() -> None:
    """The adopting waiter's reserved slot serves the other key: nothing open is closed."""
    pool, events = make(limit=2, limit_per_host=2)
    holder = open_conn(pool, A)
    fleet = fleet_waiter(pool, A, 1.0)  # holds A's second slot: the global limit is full
    starving, _ = pool.request(B, 2.0)  # B has no connection at all
    assert starving.state is WaiterState.QUEUED
    reserved = fleet.conn
    actions = pool.release(holder, 3.0)
    assert actions == [Close(reserved, "cancelled"), Wake(fleet), Wake(starving)]  # type: ignore[arg-type]
    assert fleet.conn is holder.conn and starving.state is WaiterState.CONNECTING
    assert ("closed", "evicted") not in kinds(events)
    pool._check_invariants(3.0)


def test_a_queued_waiter_of_the_key_takes_a_connection_before_a_fleet_waiter() -> None:
    pool, _ = make(limit=5, limit_per_host=2)
    holder = open_conn(pool, A)
    fleet = fleet_waiter(pool, A, 1.0)
    queued, _ = pool.request(A, 2.0)  # the per-host limit counts the FLEET waiter's slot
    assert queued.state is WaiterState.QUEUED
    assert pool.release(holder, 3.0) == [Wake(queued)]
    assert queued.conn is holder.conn and fleet.state is WaiterState.FLEET
    pool._check_invariants(3.0)
    pool.release(queued, 4.0)  # no QUEUED waiter left: the FLEET waiter adopts it
    assert fleet.state is WaiterState.ACTIVE and fleet.conn is holder.conn
    pool._check_invariants(4.0)


def test_fleet_wait_adopts_an_idle_connection_of_its_key_at_once() -> None:
    pool, events = make(limit=5)
    holder = open_conn(pool, A)
    waiter, _ = pool.request(A, 1.0)  # a new slot: the only connection is in use
    pool.release(holder, 2.0)  # idles: nobody waits for a fleet-wide lease yet
    reserved = waiter.conn
    actions = pool.fleet_wait(waiter, 3.0, full=True)
    assert actions == [Close(reserved, "cancelled"), Wake(waiter)]  # type: ignore[arg-type]
    assert waiter.state is WaiterState.ACTIVE and waiter.conn is holder.conn
    assert ("queued", "shared_limit") not in kinds(events)  # it never waited
    assert pool.fleet_waiting == 0
    pool._check_invariants(3.0)


def test_fleet_wait_closes_an_expired_idle_connection_and_serves_the_freed_slot() -> None:
    pool, _ = make(limit=3, keepalive_expiry=1.0, evict_grace=5.0)
    holder = open_conn(pool, A)
    waiter, _ = pool.request(A, 0.0)
    open_conn(pool, B)
    queued, _ = pool.request(B, 0.0)  # the global limit is full; A's idle one is young
    pool.release(holder, 0.0)
    assert queued.state is WaiterState.QUEUED
    actions = pool.fleet_wait(waiter, 2.0)  # the expiry timer has not run yet
    assert actions == [Close(holder.conn, "expired"), Wake(queued)]  # type: ignore[arg-type]
    assert waiter.state is WaiterState.FLEET and queued.state is WaiterState.CONNECTING
    pool._check_invariants(2.0)


def test_fleet_operations_in_the_wrong_state_are_misuse_naming_the_states() -> None:
    pool, _ = make(limit=5)
    active = open_conn(pool, A)
    with pytest.raises(PoolMisuse, match=r"fleet_granted\(\) on a request for .*a\.test.* active"):
        pool.fleet_granted(active, 1.0)
    with pytest.raises(PoolMisuse, match=r"fleet_wait.*active, not connecting"):
        pool.fleet_wait(active, 1.0)
    waiter = fleet_waiter(pool, A)
    with pytest.raises(PoolMisuse, match=r"fleet_wait.*fleet, not connecting"):
        pool.fleet_wait(waiter, 1.0)
    with pytest.raises(PoolMisuse, match=r"connected.*fleet, not connecting"):
        pool.connected(waiter, 1.0)
    pool._check_invariants(1.0)


def test_closing_the_client_closes_a_fleet_waiters_slot() -> None:
    pool, events = make(limit=5)
    waiter = fleet_waiter(pool, A)
    dropped, _ = pool.close_all(1.0)
    assert dropped == []  # its slot is closed with the requests in flight
    assert pool.close_in_use(waiter, 1.0) == [Close(waiter.conn, "client_closed")]  # type: ignore[arg-type]
    assert waiter.state is WaiterState.DONE and kinds(events)[-1] == ("closed", "client_closed")
    assert (pool.fleet_waiting, pool.open) == (0, 0)
    pool._check_invariants(1.0)
