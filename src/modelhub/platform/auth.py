"""Who is calling: ``Authorization: Bearer <key>`` -> a ``Principal`` (or 401 / 403)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from modelhub.errors import AuthenticationError, DatabaseUnavailableError, PermissionDeniedError
from modelhub.platform import keys
from modelhub.platform.contracts import ApiKey, Contract, ContractStore, Limits, Price
from modelhub.platform.db import DB_UNREACHABLE
from modelhub.platform.key_use import KeyUse

__all__ = ["ANONYMOUS", "Authenticator", "Principal", "bearer_token", "check_model"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds a client waits before retrying: about what a database restart or failover takes.
_RETRY_AFTER = "5"

# last_used_at is for people reading key lists: to the minute is enough, and it bounds the
# writes (key_use.py) to one per key per minute.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """The caller: a contract and one of its keys, with what the contract allows."""

    contract_id: int | None  # None when auth is off
    contract_name: str
    key_id: int | None
    limits: Limits = field(default_factory=Limits)
    model_limits: Mapping[str, Limits] = field(default_factory=dict)
    models: tuple[str, ...] | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)

    @classmethod
    def of(cls, contract: Contract, key_id: int | None) -> Principal:
        return cls(
            contract_id=contract.id,
            contract_name=contract.name,
            key_id=key_id,
            limits=contract.limits,
            model_limits=contract.model_limits,
            models=contract.models,
            prices=contract.prices,
        )

    def cost_nanos(self, model: str, prompt_tokens: int, completion_tokens: int) -> int:
        price = self.prices.get(model)
        return price.cost_nanos(prompt_tokens, completion_tokens) if price else 0


ANONYMOUS = Principal(contract_id=None, contract_name="anonymous", key_id=None)


class _KeyCache:
    """Keys looked up before, kept while the database's auth revision is unchanged: a
    database round trip per request was a fifth of the gateway's CPU with 1,000 keys in
    use (bench/README.md). The revision is read at most once per ``ttl`` seconds and is
    bumped by every revocation and contract change, so those take effect within ``ttl``
    seconds on every gateway. Entries are keyed by the key's hash, never the key, and
    unknown keys are not cached (a flood of random keys cannot grow it).

    While the database is unreachable, entries confirmed up to ``stale_ttl`` seconds ago
    still answer; any other key gets a 503 with Retry-After. A failed lookup is retried
    once first: a pooled connection that died with a database restart fails on first use."""

    _MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, stale_ttl: float, clock: Callable[[], float]):
        self._ttl = ttl
        self._stale_ttl = stale_ttl
        self._clock = clock
        self._entries: dict[str, tuple[ApiKey, Contract]] = {}
        self._revision: int | None = None
        self._confirmed_at = -math.inf  # when the revision was last read
        self._reading = asyncio.Lock()  # one revision read at a time, shared by all waiting
        self._reads = 0
        self._failure: Exception | None = None  # of the last read, if it failed
        self._down = False  # to warn once per outage

    async def find(self, store: ContractStore, secret: str) -> tuple[ApiKey, Contract] | None:
        digest = keys.hash_key(secret)
        try:
            await self._confirm(store)
            hit = self._entries.get(digest)
            if hit is not None:
                return hit
            found = await _retry_once(lambda: store.find_key(secret))
        except DB_UNREACHABLE as error:
            return self._stale(digest, error)
        if self._down:
            log.warning("auth: the database answers again")
            self._down = False
        if found is not None:
            if len(self._entries) >= self._MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = found
        return found

    def touched(self, secret: str, when: datetime) -> None:
        """The key's last use as noted, so that a cached entry does not note it again."""
        digest = keys.hash_key(secret)
        hit = self._entries.get(digest)
        if hit is not None:
            self._entries[digest] = (replace(hit[0], last_used_at=when), hit[1])

    async def _confirm(self, store: ContractStore) -> None:
        """Drop every entry if the revision moved; read it at most once per ``ttl``. The
        requests that waited for a read share its failure too, so that a database that
        hangs costs each of them one wait, not one per request queued ahead of it."""
        if self._clock() - self._confirmed_at < self._ttl:
            return
        tried = self._reads
        async with self._reading:
            if self._clock() - self._confirmed_at < self._ttl:
                return  # read by the request this one waited for
            if self._reads != tried and self._failure is not None:
                raise self._failure
            self._reads += 1
            try:
                revision = await _retry_once(store.auth_revision)
            except DB_UNREACHABLE as error:
                self._failure = error
                raise
            self._failure = None
            if revision != self._revision:
                self._entries.clear()
                self._revision = revision
            self._confirmed_at = self._clock()

    def _stale(self, digest: str, error: Exception) -> tuple[ApiKey, Contract]:
        if not self._down:
            log.warning(
                "auth: database unreachable (%s); cached keys work for %gs", error, self._stale_ttl
            )
            self._down = True
        hit = self._entries.get(digest)
        if hit is not None and self._clock() - self._confirmed_at < self._stale_ttl:
            return hit
        raise DatabaseUnavailableError(
            "API keys cannot be checked right now; please retry shortly.",
            headers={"Retry-After": _RETRY_AFTER},
        ) from error


async def _retry_once(lookup: Callable[[], Awaitable[T]]) -> T:
    try:
        return await lookup()
    except DB_UNREACHABLE:
        return await lookup()


class Authenticator:
    def __init__(
        self,
        store: ContractStore,
        uses: KeyUse,
        *,
        enabled: bool,
        clock: Callable[[], float],
        cache_ttl_s: float = 0.0,
        stale_ttl_s: float = 0.0,
    ):
        self._store = store
        self._uses = uses
        self._enabled = enabled
        self._clock = clock
        self._cache = _KeyCache(cache_ttl_s, stale_ttl_s, clock)

    async def authenticate(self, authorization: str | None, model: str | None) -> Principal:
        """``model`` (None: no model involved) is checked against the allow-list."""
        if not self._enabled:
            return ANONYMOUS
        secret = bearer_token(authorization)
        found = await self._cache.find(self._store, secret)
        if found is None:
            # The key itself stays out of the message: it may be a real key mistyped.
            raise AuthenticationError("Incorrect API key provided.")
        key, contract = found
        now = datetime.fromtimestamp(self._clock(), UTC)
        if key.revoked_at is not None:
            raise AuthenticationError("This API key has been revoked.")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationError("This API key has expired.")
        if contract.status != "active":
            raise PermissionDeniedError(
                f"The contract {contract.name!r} is {contract.status}.", code="contract_suspended"
            )
        principal = Principal.of(contract, key.id)
        if model is not None:
            check_model(principal, model)
        if key.last_used_at is None or now - key.last_used_at >= _TOUCH_EVERY:
            self._uses.note(key.id, now)
            self._cache.touched(secret, now)
        return principal


def check_model(principal: Principal, model: str) -> None:
    """403 unless the caller's contract includes ``model``."""
    if principal.models is not None and model not in principal.models:
        raise PermissionDeniedError(
            f"The contract {principal.contract_name!r} does not include the model {model!r}.",
            param="model",
            code="model_not_allowed",
        )


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Provide it in the Authorization header "
            "(Authorization: Bearer YOUR_KEY)."
        )
    return token.strip()
