"""The Lua scripts that keep the fleet's leases and queues in Redis, and the values they use.

Each operation on a host's budget is one script, so it is atomic: no two workers ever see
the same free slot. :class:`Scripts` holds them registered with a client (``EVALSHA``,
loaded again after ``NOSCRIPT``); :class:`HostKeys` names the Redis keys of one host, and
:class:`Attempt` is what one run of the acquire script saw. Nothing here talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from redis.commands.core import AsyncScript

__all__ = [
    "ACQUIRE_LUA",
    "KEY_GRACE_MS",
    "RELEASE_ALL_LUA",
    "RELEASE_LUA",
    "RENEW_LUA",
    "Attempt",
    "HostKeys",
    "Scripts",
]

KEY_GRACE_MS = 1000  # a Redis key outlives its latest member's expiry by this much


# Every script reads the clock from Redis (TIME), in milliseconds, so worker clocks never
# matter. Scores of the lease and ticket sets are expiry times; scores of the queue are
# arrival numbers. `keep_until` lets a key expire once its newest member has. `notify`
# tells the owner of each ticket that the free capacity now admits (the tickets at the
# head of the queue) to retry: it publishes "<ticket> <in use>" on the owner's own channel
# "<namespace>:wake:<worker id>" (a ticket is "<worker id>:<n>"). Nobody else wakes.

_PRELUDE = f"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function keep_until(key, source)
  local top = redis.call('ZRANGE', source, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', key, math.floor(tonumber(top[2])) + {KEY_GRACE_MS})
  end
end
local function notify(queue, wake_prefix, in_use, limit)
  if in_use >= limit then return end
  local heads = redis.call('ZRANGE', queue, 0, limit - in_use - 1)
  for i = 1, #heads do
    local owner = string.match(heads[i], '^(.+):%d+$')
    if owner then redis.call('PUBLISH', wake_prefix .. owner, heads[i] .. ' ' .. in_use) end
  end
end
"""

# KEYS: leases, queue, tickets. ARGV: id, limit, ttl_ms, wake_prefix.
# Returns {granted, in_use, rank, waiting}.
ACQUIRE_LUA = (
    _PRELUDE
    + """
local leases, queue, tickets = KEYS[1], KEYS[2], KEYS[3]
local id, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local purged = redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local stale = redis.call('ZRANGEBYSCORE', tickets, '-inf', now)
for i = 1, #stale do
  redis.call('ZREM', queue, stale[i])
  redis.call('ZREM', tickets, stale[i])
end
local rank = redis.call('ZRANK', queue, id)
if not rank then
  local last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')
  local seq = 1
  if last[2] then seq = tonumber(last[2]) + 1 end
  redis.call('ZADD', queue, seq, id)
  rank = redis.call('ZRANK', queue, id)
end
local in_use = redis.call('ZCARD', leases)
local granted = 0
if rank < limit - in_use then
  redis.call('ZREM', queue, id)
  redis.call('ZREM', tickets, id)
  redis.call('ZADD', leases, now + ttl, id)
  in_use = in_use + 1
  granted = 1
else
  redis.call('ZADD', tickets, now + ttl, id)
end
if purged + #stale > 0 then notify(queue, ARGV[4], in_use, limit) end
keep_until(leases, leases)
keep_until(queue, tickets)
keep_until(tickets, tickets)
return {granted, in_use, rank, redis.call('ZCARD', queue)}
"""
)

# KEYS: leases, queue, tickets. ARGV: id, wake_prefix, limit. Returns {freed, in_use}.
# Removes a lease, or a waiter's ticket (and a lease granted to it at the same instant).
RELEASE_LUA = (
    _PRELUDE
    + """
local freed = redis.call('ZREM', KEYS[1], ARGV[1])
local unqueued = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local in_use = redis.call('ZCARD', KEYS[1])
if freed + unqueued > 0 then notify(KEYS[2], ARGV[2], in_use, tonumber(ARGV[3])) end
return {freed, in_use}
"""
)

# KEYS: leases_1, queue_1, leases_2, queue_2, ... ARGV: ttl_ms, wake_prefix, then per host:
# n, limit, n lease ids. Upserts every lease (a lease that had expired and was purged comes
# back, since its connection is still open). Returns per host: n re-added flags, in_use,
# queue length.
RENEW_LUA = (
    _PRELUDE
    + """
local now = now_ms()
local ttl, wake_prefix = tonumber(ARGV[1]), ARGV[2]
local out = {}
local pos = 3
for k = 1, #KEYS, 2 do
  local n, limit = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  local purged = redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  for i = 1, n do
    out[#out + 1] = redis.call('ZADD', KEYS[k], now + ttl, ARGV[pos])
    pos = pos + 1
  end
  local in_use = redis.call('ZCARD', KEYS[k])
  out[#out + 1] = in_use
  out[#out + 1] = redis.call('ZCARD', KEYS[k + 1])
  if purged > 0 then notify(KEYS[k + 1], wake_prefix, in_use, limit) end
  keep_until(KEYS[k], KEYS[k])
end
return out
"""
)

# KEYS: leases_1, queue_1, ... ARGV: wake_prefix, then per host: n, limit, n lease ids.
# Returns 1.
RELEASE_ALL_LUA = (
    _PRELUDE
    + """
local wake_prefix = ARGV[1]
local pos = 2
for k = 1, #KEYS, 2 do
  local n, limit = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  local freed = 0
  for i = 1, n do
    freed = freed + redis.call('ZREM', KEYS[k], ARGV[pos])
    pos = pos + 1
  end
  if freed > 0 then notify(KEYS[k + 1], wake_prefix, redis.call('ZCARD', KEYS[k]), limit) end
end
return 1
"""
)


# -- small values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostKeys:
    """The Redis keys of one host; ``{host}`` is the Redis Cluster hash tag."""

    host: str
    leases: str
    queue: str
    tickets: str

    @classmethod
    def build(cls, namespace: str, host: str) -> HostKeys:
        """Name the keys of ``host`` under ``namespace``."""
        prefix = f"{namespace}:{{{host}}}"
        return cls(host, f"{prefix}:leases", f"{prefix}:queue", f"{prefix}:tickets")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one run of the acquire script saw."""

    granted: bool
    in_use: int
    rank: int
    waiting: int


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered Lua scripts (EVALSHA, falling back to loading them on NOSCRIPT)."""

    acquire: AsyncScript
    release: AsyncScript
    renew: AsyncScript
    release_all: AsyncScript
