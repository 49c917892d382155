"""Rate limiting: the algorithm, apart from where its counters live.

Every limit is a bucket that holds ``capacity`` units (requests or tokens) and refills
evenly over ``period`` seconds: rps+burst is (burst, burst/rps), rpm is (rpm, 60 s),
tpm is (tpm, 60 s). A bucket's whole state is one number, its *TAT* (theoretical
arrival time, as in GCRA): the moment it will be full again. Taking ``n`` units moves
it to ``max(tat, now) + n * period / capacity``; that is allowed while it stays within
``period`` of now. The rule is exact (``rpm=10`` lets exactly 10 requests through
at once, then one every 6 s) and takes a single read-modify-write per bucket, which the
memory backend does between two awaits and the Redis backend in one Lua script
(``ratelimit_redis``, the same arithmetic).

A request takes one unit from every request bucket and its worst-case tokens from every
token bucket, all or none. ``settle`` moves token buckets when the real count is known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from modelhub.platform.contracts import Limits

__all__ = [
    "EPSILON",
    "Bucket",
    "Decision",
    "LimiterBackend",
    "LimiterUnavailable",
    "buckets_for",
    "decide",
    "format_reset",
    "oversized",
    "rate_limit_headers",
    "settle",
]

# Float slack when comparing times: a millionth of a second never lets a unit through early.
EPSILON = 1e-6

Kind = Literal["requests", "tokens"]


@dataclass(frozen=True)
class Bucket:
    key: str
    kind: Kind
    capacity: int
    period: float

    @property
    def interval(self) -> float:
        """Seconds one unit takes to refill."""
        return self.period / self.capacity

    def remaining(self, tat: float, now: float) -> int:
        used = max(tat - now, 0.0) / self.interval
        return max(math.floor(self.capacity - used + EPSILON), 0)


def buckets_for(scope: str, limits: Limits) -> list[Bucket]:
    """The buckets ``limits`` sets, keyed under ``scope`` (who shares them)."""
    buckets = []
    if limits.rps is not None:
        burst = limits.effective_burst
        buckets.append(Bucket(f"{scope}:rps", "requests", burst, burst / limits.rps))
    if limits.rpm is not None:
        buckets.append(Bucket(f"{scope}:rpm", "requests", limits.rpm, 60.0))
    if limits.tpm is not None:
        buckets.append(Bucket(f"{scope}:tpm", "tokens", limits.tpm, 60.0))
    return buckets


def oversized(buckets: Sequence[Bucket], tokens: int) -> Bucket | None:
    """A token bucket the request can never fit, however long it waits."""
    return next((b for b in buckets if b.kind == "tokens" and tokens > b.capacity), None)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tats: tuple[float, ...]  # after the request if allowed, else unchanged
    retry_after: float  # seconds until the request would fit; 0 when allowed
    blocking: Bucket | None  # the bucket that needs the longest wait, when refused


def decide(buckets: Sequence[Bucket], tokens: int, tats: Sequence[float], now: float) -> Decision:
    """Whether a request of ``tokens`` fits every bucket, and the state if it does."""
    new_tats, wait, blocking = [], 0.0, None
    for bucket, tat in zip(buckets, tats, strict=True):
        units = 1 if bucket.kind == "requests" else tokens
        new_tat = max(tat, now) + units * bucket.interval
        if new_tat - now - bucket.period > wait:
            wait, blocking = new_tat - now - bucket.period, bucket
        new_tats.append(new_tat)
    if wait <= EPSILON:
        return Decision(True, tuple(new_tats), 0.0, None)
    return Decision(False, tuple(tats), wait, blocking)


def settle(bucket: Bucket, tat: float, now: float, refund: int) -> float:
    """The TAT after giving back ``refund`` tokens (negative: charging more)."""
    return max(max(tat, now) - refund * bucket.interval, now)


def rate_limit_headers(
    buckets: Sequence[Bucket], tats: Sequence[float], now: float
) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers, each kind from its tightest bucket.

    A kind with no bucket (no such limit) gets no headers: there is no number to give.
    """
    headers = {}
    for kind in ("requests", "tokens"):
        pairs = [(b, t) for b, t in zip(buckets, tats, strict=True) if b.kind == kind]
        if not pairs:
            continue
        # Tightest: fewest units left; among equals, the one that takes longest to refill.
        bucket, tat = min(pairs, key=lambda p: (p[0].remaining(p[1], now), -max(p[1] - now, 0)))
        headers[f"x-ratelimit-limit-{kind}"] = str(bucket.capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining(tat, now))
        headers[f"x-ratelimit-reset-{kind}"] = format_reset(max(tat - now, 0.0))
    return headers


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes it (``20ms``, ``1.5s``, ``6m0s``), rounded up to
    the millisecond so it never promises a refill early."""
    millis = math.ceil(seconds * 1000 - EPSILON)
    if millis < 1000:
        return f"{max(millis, 0)}ms"
    minutes, rest = divmod(millis, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


class LimiterUnavailable(Exception):
    """The backend's store cannot be reached (a backend raises it instead of its driver's
    errors, so the limiter's outage policy does not depend on which store it is)."""


class LimiterBackend(Protocol):
    """Where TATs live, updated atomically. Raises ``LimiterUnavailable`` when unreachable."""

    async def acquire(self, buckets: Sequence[Bucket], tokens: int, now: float) -> Decision:
        """``decide`` on the stored TATs and store the result, as one atomic step."""

    async def adjust(self, buckets: Sequence[Bucket], refund: int, now: float) -> tuple[float, ...]:
        """``settle`` every bucket (token buckets only are passed), atomically."""

    async def close(self) -> None: ...
