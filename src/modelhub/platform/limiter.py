"""Contract-wide rate limits: which buckets a request takes from, and its reservation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from modelhub.errors import RateLimitError
from modelhub.platform.auth import Principal
from modelhub.platform.ratelimit import (
    Bucket,
    LimiterBackend,
    buckets_for,
    oversized,
    rate_limit_headers,
)

__all__ = ["RateLimiter", "Reservation"]

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
        """Reconcile the reserved tokens to ``used_tokens`` (prompt + completion)."""
        if self._settled:
            return
        self._settled = True
        refund = self._tokens - used_tokens
        if self._backend is not None and self._token_buckets and refund:
            await self._backend.adjust(self._token_buckets, refund, self._clock())

    async def release(self) -> None:
        """Nothing was processed: give every token back; the request itself still counts."""
        await self.commit(0)


class RateLimiter:
    def __init__(self, backend: LimiterBackend, clock: Callable[[], float]):
        self.backend = backend
        self._clock = clock

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
        decision = await self.backend.acquire(buckets, tokens, now)
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
        return Reservation(self.backend, token_buckets, tokens, headers, self._clock)

    @staticmethod
    def _buckets(principal: Principal, model: str) -> list[Bucket]:
        if principal.contract_id is None:
            return []
        scope = f"c{principal.contract_id}"
        buckets = buckets_for(scope, principal.limits)
        if model in principal.model_limits:
            buckets += buckets_for(f"{scope}:m:{model}", principal.model_limits[model])
        return buckets
