"""Rate-limit counters in Redis, shared by every gateway process.

Each step is one Lua script, so Redis runs it atomically: no other gateway sees a
half-reserved request. The scripts do ``ratelimit.decide`` / ``ratelimit.settle``'s
arithmetic on the same doubles; TATs cross as ``%.17g`` strings so nothing is rounded.
Keys of one contract share a ``{hash tag}`` so a Redis Cluster keeps them on one node.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelhub.platform.ratelimit import EPSILON, Bucket, Decision, LimiterUnavailable, decide

__all__ = ["RedisLimiter"]

# KEYS: bucket keys. ARGV: now, tokens, epsilon, then per bucket: units, interval, period.
# Returns {allowed, tat...} with the TATs before the request (decide() is re-run on them).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local epsilon = tonumber(ARGV[3])
local old, new = {}, {}
local wait = 0
for i, key in ipairs(KEYS) do
  local base = 3 + (i - 1) * 3
  local units = tonumber(ARGV[base + 1])
  local interval = tonumber(ARGV[base + 2])
  local period = tonumber(ARGV[base + 3])
  local tat = tonumber(redis.call('GET', key)) or now
  old[i] = string.format('%.17g', tat)
  new[i] = math.max(tat, now) + units * interval
  wait = math.max(wait, new[i] - now - period)
end
if wait > epsilon then
  table.insert(old, 1, 0)
  return old
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.17g', new[i]), 'PX', math.ceil((new[i] - now) * 1000) + 1000)
end
table.insert(old, 1, 1)
return old
"""

# KEYS: token bucket keys. ARGV: now, then per bucket: refund * interval (seconds).
_ADJUST = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  local new = math.max(math.max(tat, now) - tonumber(ARGV[i + 1]), now)
  redis.call('SET', key, string.format('%.17g', new), 'PX', math.ceil((new - now) * 1000) + 1000)
  out[i] = string.format('%.17g', new)
end
return out
"""


_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisLimiter:
    def __init__(self, client: Redis, prefix: str = "modelhub:rl"):
        self._client = client
        self._prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)

    @classmethod
    async def connect(cls, url: str, timeout: float = 2.0) -> RedisLimiter:
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # Once, at once: a pooled connection that died with a Redis restart fails on
            # first use, and a fresh one then succeeds; a Redis that is down fails twice.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        await client.ping()  # fail at start, not on the first request
        return cls(client)

    def _key(self, bucket: Bucket) -> str:
        scope, _, name = bucket.key.partition(":")
        return f"{self._prefix}:{{{scope}}}:{name}"

    async def acquire(self, buckets: Sequence[Bucket], tokens: int, now: float) -> Decision:
        args: list = [repr(now), tokens, repr(EPSILON)]
        for bucket in buckets:
            args += [
                1 if bucket.kind == "requests" else tokens,
                repr(bucket.interval),
                repr(bucket.period),
            ]
        try:
            allowed, *tats = await self._acquire(keys=[self._key(b) for b in buckets], args=args)
        except _UNREACHABLE as error:
            raise LimiterUnavailable(str(error)) from error
        decision = decide(buckets, tokens, [float(t) for t in tats], now)
        # The script and decide() do the same arithmetic; this holds unless they drift apart.
        assert decision.allowed == bool(allowed), "Lua and Python rate-limit rules disagree"
        return decision

    async def adjust(self, buckets: Sequence[Bucket], refund: int, now: float) -> tuple[float, ...]:
        args = [repr(now), *(repr(refund * b.interval) for b in buckets)]
        try:
            tats = await self._adjust(keys=[self._key(b) for b in buckets], args=args)
        except _UNREACHABLE as error:
            raise LimiterUnavailable(str(error)) from error
        return tuple(float(t) for t in tats)

    async def close(self) -> None:
        await self._client.aclose()
