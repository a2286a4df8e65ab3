"""Fleet-wide per-host connection limits, shared by many workers through Redis.

A per-host limit in one process becomes ``limit x workers`` once a crawler runs many
processes. :class:`RedisLimits` keeps one budget per host name in Redis instead: before a
pool opens a connection it takes a *lease* on a shared slot, and it gives the lease back
when the connection closes. Reusing an idle connection never touches Redis.

Design (``docs/fleet.md`` has the long version):

* Per host, Redis holds a sorted set of leases scored by expiry time, a FIFO queue of
  tickets (a sorted set scored by arrival) and the tickets' expiry times. All keys of one
  host share a ``{host}`` hash tag. Time is always Redis' own ``TIME``, so worker clocks
  never matter.
* Acquire is one Lua script: purge expired leases and tickets, join the queue if not in it
  yet, and take a slot only if this ticket's rank in the queue is below the free capacity.
  So a waiter never jumps the queue, and a released slot goes to the oldest ticket.
* Release is one Lua script: remove the lease (and any ticket), then ``PUBLISH`` the
  ticket(s) the free capacity now admits, each on its owner's own channel, so exactly the
  waiter(s) next in line retry. Waiters also re-check every ``lease_ttl / 4`` seconds, so
  a lost message delays a waiter, never hangs it.
* One background task per :class:`RedisLimits` renews all live leases every
  ``lease_ttl / 3`` seconds in one script call. A worker that dies (even by SIGKILL)
  stops renewing, and its slots free themselves within ``lease_ttl``.

Invariants (checked by tests/test_fleet.py against a real redis-server):

* F1: for every host, the leases that have not expired number at most the limit that
  the granting worker passed, at the moment of every grant.
* F2: a ticket is granted only while fewer tickets are ahead of it than slots are free.
* F3: a waiter that times out or is cancelled leaves neither a ticket nor a lease.

The modules of this package:

* ``scripts.py``: the Lua scripts, the Redis keys of a host (``HostKeys``) and the values
  the scripts return; nothing in it talks to Redis.
* ``connection.py``: building the redis-py client (an optional extra, imported only when a
  ``RedisLimits`` is built) and ``Waker``, the pub/sub connection that wakes waiters.
* ``limits.py``: ``RedisLimits`` (acquire, release, renewal, close) and ``RedisLease``.

The pool drives it through the ``SharedLimits`` and ``Lease`` protocols of
``_pool/asyncio.py``; a request waiting for a lease is in the pool state machine's
``WaiterState.FLEET`` (``_pool/state.py``).
"""

from __future__ import annotations

from .._exceptions import SharedLimitsUnavailable
from .._pool.asyncio import Lease, SharedLimits  # Seam 4 protocols, defined by the pool
from .limits import RedisLease, RedisLimits

__all__ = [
    "Lease",
    "RedisLease",
    "RedisLimits",
    "SharedLimits",
    "SharedLimitsUnavailable",
]
