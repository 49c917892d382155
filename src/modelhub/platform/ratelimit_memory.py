"""Rate-limit counters in this process's memory: for a single gateway process."""

from __future__ import annotations

from collections.abc import Sequence

from modelhub.platform.ratelimit import Bucket, Decision, decide, settle

__all__ = ["MemoryLimiter"]


class MemoryLimiter:
    """TATs in a dict. Each method runs without awaiting, so on one event loop it is atomic."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}

    async def acquire(self, buckets: Sequence[Bucket], tokens: int, now: float) -> Decision:
        tats = [self._tats.get(b.key, now) for b in buckets]
        decision = decide(buckets, tokens, tats, now)
        if decision.allowed:
            self._tats.update((b.key, t) for b, t in zip(buckets, decision.tats, strict=True))
        return decision

    async def adjust(self, buckets: Sequence[Bucket], refund: int, now: float) -> tuple[float, ...]:
        tats = tuple(settle(b, self._tats.get(b.key, now), now, refund) for b in buckets)
        self._tats.update((b.key, t) for b, t in zip(buckets, tats, strict=True))
        return tats

    async def close(self) -> None:
        self._tats.clear()
