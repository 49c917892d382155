"""Contract-wide rate limits: which buckets a request takes from, and its reservation.

When the backend's store (Redis) is unreachable, ``fallback`` decides: ``refuse`` answers
limited contracts 503 with Retry-After; ``local`` limits them in this process at the
contract's limits divided by the number of gateways. Reconciling a reservation is
best-effort: it never fails the request, and never keeps its row out of the ledger.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

from modelhub.errors import RateLimitError, RateLimiterUnavailableError
from modelhub.platform.auth import Principal
from modelhub.platform.ratelimit import (
    Bucket,
    LimiterBackend,
    LimiterUnavailable,
    buckets_for,
    oversized,
    rate_limit_headers,
)
from modelhub.platform.ratelimit_memory import MemoryLimiter

__all__ = ["Fallback", "RateLimiter", "Reservation"]

log = logging.getLogger(__name__)

Fallback = Literal["refuse", "local"]
# Seconds a refused client waits: about how long a Redis restart or failover takes.
_RETRY_AFTER = "5"

_NAMES = {"rps": "requests per second", "rpm": "requests per minute", "tpm": "tokens per minute"}


class Reservation:
    """A request's hold on its contract's limits, until it is committed or released."""

    def __init__(
        self,
        backend: LimiterBackend | None,
        token_buckets: Sequence[Bucket],
        tokens: int,
        headers: dict[str, str],
        clock: Callable[[], float],
    ):
        self.headers = headers
        self._backend = backend
        self._token_buckets = tuple(token_buckets)
        self._tokens = tokens
        self._clock = clock
        self._settled = False

    async def commit(self, used_tokens: int) -> None:
        """Reconcile the reserved tokens to ``used_tokens`` (prompt + completion). Never
        raises: an unreachable store only leaves the bucket as reserved (logged)."""
        if self._settled:
            return
        self._settled = True
        refund = self._tokens - used_tokens
        if self._backend is None or not self._token_buckets or not refund:
            return
        try:
            await self._backend.adjust(self._token_buckets, refund, self._clock())
        except Exception as error:  # noqa: BLE001 - billing goes on whatever the limiter does
            log.warning("rate limiter: could not reconcile %d tokens: %s", refund, error)

    async def release(self) -> None:
        """Nothing was processed: give every token back; the request itself still counts."""
        await self.commit(0)


class RateLimiter:
    def __init__(
        self,
        backend: LimiterBackend,
        clock: Callable[[], float],
        *,
        fallback: Fallback = "refuse",
        gateway_count: int = 1,
    ):
        self.backend = backend
        self._clock = clock
        self._fallback = fallback
        self._gateways = gateway_count
        self._local = MemoryLimiter()
        self._down = False  # to warn once per outage

    async def reserve(self, principal: Principal, model: str, tokens: int) -> Reservation:
        """Take one request and ``tokens`` from every bucket of the contract (and of the
        model, if it has its own limits), or raise ``RateLimitError``."""
        buckets = self._buckets(principal, model)
        if not buckets:
            return Reservation(None, (), tokens, {}, self._clock)
        now = self._clock()
        too_big = oversized(buckets, tokens)
        if too_big is not None:
            # Waiting cannot help, so no Retry-After.
            raise RateLimitError(
                f"Request too large for {model} on contract {principal.contract_name!r}: "
                f"{tokens} tokens (prompt + max_tokens) exceed the limit of {too_big.capacity} "
                f"{_NAMES['tpm']}. Reduce the prompt or max_tokens.",
                headers=rate_limit_headers(buckets, [now] * len(buckets), now),
            )
        backend = self.backend
        try:
            decision = await backend.acquire(buckets, tokens, now)
        except LimiterUnavailable as error:
            backend, buckets = self._local, self._buckets(principal, model, self._gateways)
            self._outage(error)
            decision = await backend.acquire(buckets, tokens, now)
        else:
            if self._down:
                log.warning("rate limiter: its store answers again")
                self._down = False
        headers = rate_limit_headers(buckets, decision.tats, now)
        if not decision.allowed:
            blocking = decision.blocking
            name = _NAMES[blocking.key.rsplit(":", 1)[1]]
            raise RateLimitError(
                f"Rate limit reached for {name} on contract {principal.contract_name!r}"
                f"{' for ' + model if ':m:' in blocking.key else ''}: limit {blocking.capacity}. "
                f"Please try again in {decision.retry_after:.3g}s.",
                headers={
                    **headers,
                    "Retry-After": str(max(1, math.ceil(decision.retry_after))),
                    # The OpenAI SDKs prefer this finer one when it is there.
                    "retry-after-ms": str(math.ceil(decision.retry_after * 1000)),
                },
            )
        token_buckets = [b for b in buckets if b.kind == "tokens"]
        return Reservation(backend, token_buckets, tokens, headers, self._clock)

    def _outage(self, error: LimiterUnavailable) -> None:
        """Log the outage once; with the ``refuse`` policy, turn the request away."""
        if not self._down:
            log.warning(
                "rate limiter: store unreachable (%s); %s",
                error,
                "refusing limited contracts"
                if self._fallback == "refuse"
                else f"limiting per process at 1/{self._gateways} of each limit",
            )
            self._down = True
        if self._fallback == "refuse":
            raise RateLimiterUnavailableError(
                "Rate limits cannot be checked right now; please retry shortly.",
                headers={"Retry-After": _RETRY_AFTER},
            ) from error

    @staticmethod
    def _buckets(principal: Principal, model: str, gateways: int = 1) -> list[Bucket]:
        """The request's buckets; with ``gateways`` > 1, this process's share of them."""
        if principal.contract_id is None:
            return []
        scope = f"c{principal.contract_id}"
        buckets = buckets_for(scope, principal.limits.divided(gateways))
        if model in principal.model_limits:
            limits = principal.model_limits[model].divided(gateways)
            buckets += buckets_for(f"{scope}:m:{model}", limits)
        return buckets
