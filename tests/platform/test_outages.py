"""Redis and PostgreSQL going away and coming back, at the platform's level (real servers).

The policy (README, "Outages"): with Redis down, limited contracts get 503 + Retry-After (or,
with the ``local`` fallback, a per-process share of their limits); with PostgreSQL down,
keys in the cache keep working for ``auth_stale_ttl_s`` and unknown keys get 503 +
Retry-After. The first request after either comes back must not fail on a stale pooled
connection. The end-to-end versions, through the HTTP server, are in ``test_outages_http``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from modelhub.errors import DatabaseUnavailableError, RateLimitError, RateLimiterUnavailableError
from modelhub.platform import Limits, Platform
from tests.platform.conftest import FakeClock, platform_settings
from tests.platform.test_ledger import principal, row, rows_in


async def test_redis_down_refuses_limited_contracts_with_503_and_recovers_at_once(
    tmp_path, own_redis, caplog
):
    settings = platform_settings(tmp_path, redis_url=own_redis.url)
    platform = await Platform.open(settings)
    try:
        limited = await principal(platform, "limited", limits=Limits(rpm=100, tpm=10_000))
        free = await principal(platform, "free")
        held = await platform.reserve(limited, "m", 500)
        own_redis.kill()
        with caplog.at_level(logging.WARNING):
            await held.commit(20)  # never raises: billing must not depend on the limiter
        assert "could not reconcile" in caplog.text
        with pytest.raises(RateLimiterUnavailableError) as refused:
            await platform.reserve(limited, "m", 10)
        assert refused.value.status_code == 503 and refused.value.headers["Retry-After"] == "5"
        await platform.reserve(free, "m", 10)  # no limits: Redis is not needed
        own_redis.start()
        # The pooled connection died with the old server: retried once, not a failure.
        reservation = await platform.reserve(limited, "m", 10)
        await reservation.commit(5)
    finally:
        await platform.close()


async def test_local_fallback_limits_each_gateway_to_its_share(tmp_path, own_redis):
    settings = platform_settings(
        tmp_path, redis_url=own_redis.url, ratelimit_redis_fallback="local", gateway_count=2
    )
    platform = await Platform.open(settings)
    try:
        who = await principal(platform, limits=Limits(rpm=10))
        own_redis.kill()
        outcomes = []
        for _ in range(8):
            try:
                await platform.reserve(who, "m", 1)
                outcomes.append("ok")
            except RateLimitError:
                outcomes.append("429")
        assert outcomes == ["ok"] * 5 + ["429"] * 3  # 10 per minute over 2 gateways
    finally:
        await platform.close()


async def test_postgres_down_cached_keys_work_for_the_stale_ttl_unknown_keys_503(
    tmp_path, postgres
):
    clock = FakeClock()
    settings = platform_settings(
        tmp_path,
        database_url=postgres.create_database("auth_outage"),
        auth_cache_ttl_s=1,
        auth_stale_ttl_s=300,
    )
    platform = await Platform.open(settings, clock=clock)
    try:
        await platform.store.create_contract("acme")
        known, _ = await platform.store.create_key("acme")
        unknown, _ = await platform.store.create_key("acme")
        who = await platform.authenticate(f"Bearer {known}", None)
        postgres.stop()
        try:
            clock.advance(60)  # past the cache's 1 s: a lookup is due, and fails
            assert await platform.authenticate(f"Bearer {known}", None) == who
            with pytest.raises(DatabaseUnavailableError) as refused:
                await platform.authenticate(f"Bearer {unknown}", None)
            assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]
            with pytest.raises(DatabaseUnavailableError):
                await platform.usage(who)
            # Rows of requests served meanwhile wait in the journal.
            await asyncio.gather(*(platform.record(row(f"r{i}", who)) for i in range(10)))
            await platform.flush()
            clock.advance(300)  # past the stale limit: the cached key is refused too
            with pytest.raises(DatabaseUnavailableError):
                await platform.authenticate(f"Bearer {known}", None)
        finally:
            postgres.start()
        # The known key's use during the outage waited, and is written once it is back.
        for _ in range(3):  # a flush that meets a dead pooled connection keeps them
            await platform.flush()
        used = datetime.fromtimestamp(clock() - 300, UTC)
        assert (await platform.store.list_keys("acme"))[0].last_used_at == used
        # The first lookups after the restart succeed (a dead pooled connection is retried).
        await platform.authenticate(f"Bearer {unknown}", None)
        await platform.authenticate(f"Bearer {known}", None)
        await platform.flush()
        assert await rows_in(platform) == (10, 100, 50)
    finally:
        await platform.close()
