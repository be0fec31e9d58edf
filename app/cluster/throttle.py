"""Log-in throttling shared by every replica: the throttle store in Redis.

The same three atomic steps as :class:`app.auth.throttle_store.MemoryThrottleStore`, each
one Lua script (Redis runs a script alone, so a step is atomic across replicas), on one
sorted set per key: members ``p:<attempt>`` (still being checked) and ``f:<attempt>``
(failed), scored with Redis's own clock. A pending attempt whose replica died before
settling it stops counting after :data:`PENDING_MAX` seconds.

While Redis cannot be reached, attempts are counted in this replica's memory instead
(each replica then throttles on its own): log-ins keep working, a little less guarded.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.auth.throttle_store import Acquired, Limit, MemoryThrottleStore, Refused

log = logging.getLogger("kvmvdi.cluster.throttle")

PREFIX = "kvmvdi:throttle:"
LOCAL = "local:"
# A log-in is checked within this many seconds, or its replica is gone.
PENDING_MAX = 60

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local attempt = ARGV[2]
local wait = 0
local full_of_pending = false
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - window + 0.000001))
  local max = tonumber(ARGV[1 + 2 * i])
  local count_pending = ARGV[2 + 2 * i] == '1'
  local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local failures, counted, oldest = 0, 0, nil
  for j = 1, #members, 2 do
    local kind, when = string.sub(members[j], 1, 2), tonumber(members[j + 1])
    if kind == 'f:' then
      failures = failures + 1
      counted = counted + 1
      if oldest == nil then oldest = when end
    elseif now - when < tonumber(ARGV[#ARGV]) then
      counted = counted + 1
    else
      redis.call('ZREM', key, members[j])
    end
  end
  if failures >= max then
    wait = math.max(wait, window - (now - oldest))
  elseif count_pending and counted >= max then
    full_of_pending = true
  end
end
if wait > 0 then return {'refused', tostring(wait), '0'} end
if full_of_pending then return {'refused', '0', '1'} end
local ttl = math.ceil(window * 1000) + 1000
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, 'p:' .. attempt)
  redis.call('PEXPIRE', key, ttl)
end
return {'acquired'}
"""

_SETTLE = """
for _, key in ipairs(KEYS) do
  local when = redis.call('ZSCORE', key, 'p:' .. ARGV[1])
  if when then
    redis.call('ZREM', key, 'p:' .. ARGV[1])
    if ARGV[2] == '1' then redis.call('ZADD', key, when, 'f:' .. ARGV[1]) end
  end
end
return 1
"""

_CLEAR = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, member in ipairs(members) do
  if string.sub(member, 1, 2) == 'f:' then redis.call('ZREM', KEYS[1], member) end
end
return 1
"""


class RedisThrottleStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._settle = redis.register_script(_SETTLE)
        self._clear = redis.register_script(_CLEAR)
        # Counting here while Redis is away.
        self._fallback = MemoryThrottleStore()

    async def acquire(self, limits: Sequence[Limit], *, window: float) -> Acquired | Refused:
        attempt = secrets.token_hex(8)
        keys = [PREFIX + limit.key for limit in limits]
        args: list[Any] = [window, attempt]
        for limit in limits:
            args += [limit.max_attempts, "1" if limit.count_pending else "0"]
        args.append(PENDING_MAX)
        try:
            answer = await self._acquire(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            log.warning("log-in throttle: Redis unreachable (%s); counting on this replica only", exc)
            local = await self._fallback.acquire(limits, window=window)
            if isinstance(local, Acquired):
                return Acquired(attempt=LOCAL + local.attempt, keys=local.keys)
            return local
        kind = _text(answer[0])
        if kind == "refused":
            return Refused(retry_after=float(_text(answer[1])), pending=_text(answer[2]) == "1")
        return Acquired(attempt=attempt, keys=tuple(dict.fromkeys(limit.key for limit in limits)))

    async def settle(self, acquired: Acquired, *, failed: bool) -> None:
        if acquired.attempt.startswith(LOCAL):
            local = Acquired(attempt=acquired.attempt.removeprefix(LOCAL), keys=acquired.keys)
            await self._fallback.settle(local, failed=failed)
            return
        try:
            await self._settle(
                keys=[PREFIX + key for key in acquired.keys], args=[acquired.attempt, "1" if failed else "0"]
            )
        except (RedisError, OSError) as exc:
            # Unsettled, it stops counting after PENDING_MAX seconds.
            log.warning("log-in throttle: attempt not settled in Redis: %s", exc)

    async def clear(self, key: str) -> None:
        await self._fallback.clear(key)
        try:
            await self._clear(keys=[PREFIX + key], args=[])
        except (RedisError, OSError) as exc:
            log.warning("log-in throttle: failures of a key not cleared in Redis: %s", exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
