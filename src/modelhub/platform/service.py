"""``Platform``: what the API layer calls for auth, rate limits and the usage ledger."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.errors import DatabaseUnavailableError, InvalidRequestError
from modelhub.platform.auth import Authenticator, Principal
from modelhub.platform.contracts import ContractStore, Limits
from modelhub.platform.db import DB_UNREACHABLE, migrate, open_engine
from modelhub.platform.key_use import KeyUse
from modelhub.platform.ledger import InFlight, Ledger, UsageRecord
from modelhub.platform.limiter import RateLimiter, Reservation
from modelhub.platform.ratelimit import LimiterBackend
from modelhub.platform.ratelimit_memory import MemoryLimiter
from modelhub.platform.ratelimit_redis import RedisLimiter
from modelhub.platform.usage import GroupBy, usage_report
from modelhub.settings import Settings

__all__ = ["Platform", "open_store"]

log = logging.getLogger(__name__)


async def open_store(settings: Settings) -> tuple[AsyncEngine, ContractStore]:
    """The migrated database and its contract store (what the admin CLI needs)."""
    engine = open_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine, ContractStore(engine)


class Platform:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        store: ContractStore,
        limiter: LimiterBackend,
        clock: Callable[[], float],
    ):
        self.settings = settings
        self.store = store
        self._engine = engine
        self._key_use = KeyUse(store)
        self._auth = Authenticator(
            store,
            self._key_use,
            enabled=settings.auth,
            clock=clock,
            cache_ttl_s=settings.auth_cache_ttl_s,
            stale_ttl_s=settings.auth_stale_ttl_s,
        )
        self._limiter = RateLimiter(
            limiter,
            clock,
            fallback=settings.ratelimit_redis_fallback,
            gateway_count=settings.gateway_count,
        )
        self._ledger = Ledger(
            engine,
            settings.data_dir / "ledger-journal",
            batch_size=settings.ledger_batch_size,
            interval=settings.ledger_flush_interval_s,
            checkpoint_interval=settings.journal_checkpoint_interval_s,
            segment_bytes=settings.journal_segment_bytes,
            fsync=settings.journal_fsync,
        )

    @classmethod
    async def open(cls, settings: Settings, *, clock: Callable[[], float] = time.time) -> Platform:
        """Migrate the database, connect the limiter's store and start the ledger."""
        engine, store = await open_store(settings)
        try:
            limiter = (
                await RedisLimiter.connect(settings.redis_url, settings.redis_timeout_s)
                if settings.redis_url
                else MemoryLimiter()
            )
        except BaseException:
            await engine.dispose()
            raise
        platform = cls(settings, engine, store, limiter, clock)
        try:
            await platform._ledger.start()
        except BaseException:
            await platform.close()
            raise
        platform._key_use.start()
        return platform

    async def close(self) -> None:
        """Flush the ledger (what the database cannot take stays in the journal), then let go
        of everything."""
        try:
            await self._ledger.close()
        finally:
            try:
                await self._key_use.close()
            finally:
                await self._limiter.backend.close()
                await self._engine.dispose()

    async def authenticate(self, authorization: str | None, model: str | None) -> Principal:
        return await self._auth.authenticate(authorization, model)

    async def reserve(self, principal: Principal, model: str, tokens: int) -> Reservation:
        return await self._limiter.reserve(principal, model, tokens)

    def begin(self, record: UsageRecord) -> InFlight:
        """Journal an admitted request; should the process die, it is billed what its last
        checkpoint says, as ``cancelled``."""
        return self._ledger.begin(record)

    async def record(self, record: UsageRecord) -> None:
        """The final row of a request that never ran (rate_limited, refused); on disk when
        this returns."""
        await self._ledger.record(record)

    async def flush(self) -> None:
        """Write queued ledger rows, and the keys' last uses, now."""
        await self._ledger.flush()
        await self._key_use.write()

    async def usage(
        self,
        contract: str | Principal,
        since: datetime | None = None,
        until: datetime | None = None,
        by: GroupBy | None = None,
    ) -> list[dict]:
        """A contract's usage (by name, or the caller's own: with auth off, the anonymous
        requests), including requests that ended a moment ago."""
        await self._ledger.flush()
        try:
            if isinstance(contract, str):
                contract_id = (await self.store.get_contract(contract)).id
            else:
                contract_id = contract.contract_id
            return await usage_report(self._engine, contract_id, since, until, by)
        except DB_UNREACHABLE as error:
            raise DatabaseUnavailableError(
                "Usage cannot be read right now; please retry shortly.",
                headers={"Retry-After": "5"},
            ) from error

    async def bootstrap(self) -> str | None:
        """On an empty database (and with auth on), create contract ``default`` and a key;
        return that key, to be shown once. Otherwise None."""
        if not self.settings.auth or await self.store.count_contracts():
            return None
        try:
            await self.store.create_contract(
                "default", limits=Limits(**self.settings.default_contract_limits.model_dump())
            )
        except InvalidRequestError:
            # Another gateway sharing the database bootstrapped first.
            if await self.store.count_contracts():
                return None
            raise
        key, _ = await self.store.create_key("default", name="bootstrap")
        return key
