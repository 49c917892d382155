"""The usage ledger: batched, idempotent, and lossless through a database outage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from modelhub.platform import Limits, Platform, Price, Principal, UsageRecord
from modelhub.platform.tables import usage
from tests.conftest import make_settings
from tests.polling import poll_until_async

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def row(
    request_id: str,
    who: Principal,
    *,
    model: str = "small",
    prompt: int = 10,
    completion: int = 5,
    status: str = "ok",
    at: datetime = T0,
    finish: str | None = "stop",
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        principal=who,
        model=model,
        received_at=at,
        first_token_at=at + timedelta(milliseconds=50) if completion else None,
        finished_at=at + timedelta(seconds=1),
        prompt_tokens=prompt,
        image_tokens=0,
        completion_tokens=completion,
        status=status,
        finish_reason=finish,
    )


async def rows_in(platform: Platform) -> tuple[int, int, int]:
    async with platform.store.engine.connect() as conn:
        result = await conn.execute(
            select(
                func.count(), func.sum(usage.c.prompt_tokens), func.sum(usage.c.completion_tokens)
            )
        )
        count, prompt, completion = result.one()
    return count, prompt or 0, completion or 0


async def principal(platform: Platform, name: str = "acme", **kwargs) -> Principal:
    await platform.store.create_contract(name, **kwargs)
    secret, _ = await platform.store.create_key(name)
    return await platform.authenticate(f"Bearer {secret}", None)


async def test_rows_land_in_batches_off_the_request_path(tmp_path, database_url):
    platform = await Platform.open(
        make_settings(
            tmp_path,
            auth=True,
            database_url=database_url,
            ledger_batch_size=64,
            auth_cache_ttl_s=0,
        )
    )
    try:
        who = await principal(platform)
        for i in range(300):
            platform.record(row(f"chatcmpl-{i}", who))  # returns at once
        assert await poll_until_async(lambda: _equals(rows_in(platform), (300, 3000, 1500))), (
            "condition not reached in time"
        )
    finally:
        await platform.close()


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def test_duplicate_request_id_never_double_counts(platform: Platform):
    who = await principal(platform)
    platform.record(row("chatcmpl-a", who))
    platform.record(row("chatcmpl-a", who))
    await platform.flush()
    platform.record(row("chatcmpl-a", who, prompt=999))  # a retried write, later
    platform.record(row("chatcmpl-b", who))
    await platform.flush()
    assert await rows_in(platform) == (2, 20, 10)


async def test_cost_from_contract_prices(platform: Platform):
    who = await principal(platform, prices={"big": Price(input=2.0, output=6.0)})
    platform.record(row("chatcmpl-1", who, model="big", prompt=1_000_000, completion=500_000))
    platform.record(
        row("chatcmpl-2", who, model="big", prompt=0, completion=0, status="rejected", finish=None)
    )
    platform.record(row("chatcmpl-3", who, model="free", prompt=100, completion=100))
    platform.record(row("chatcmpl-4", who, model="big", prompt=7, completion=3, status="cancelled"))
    report = {r["model"]: r for r in await platform.usage("acme", by="model")}
    assert report["big"]["cost"] == 2.0 + 3.0 + (7 * 2.0 + 3 * 6.0) / 1e6
    assert report["big"]["requests"] == 3 and report["free"]["cost"] == 0


async def test_close_flushes(tmp_path, database_url):
    settings = make_settings(
        tmp_path,
        auth=True,
        database_url=database_url,
        ledger_flush_interval_s=3600,
        auth_cache_ttl_s=0,
    )
    platform = await Platform.open(settings)
    who = await principal(platform)
    for i in range(10):
        platform.record(row(f"chatcmpl-{i}", who))
    await platform.close()
    platform = await Platform.open(settings)
    try:
        assert await rows_in(platform) == (10, 100, 50)
    finally:
        await platform.close()


async def test_database_outage_spools_and_replays(tmp_path, postgres):
    settings = make_settings(
        tmp_path,
        auth=True,
        database_url=postgres.create_database("outage"),
        auth_cache_ttl_s=0,
    )
    spool = settings.data_dir / "ledger-spool"
    platform = await Platform.open(settings)
    try:
        who = await principal(platform, limits=Limits(rpm=1000))
        for i in range(50):
            platform.record(row(f"chatcmpl-{i}", who))
        await platform.flush()
        postgres.stop()
        try:
            # Requests keep ending while the database is gone: the flush task spools them.
            for i in range(50, 150):
                platform.record(row(f"chatcmpl-{i}", who))
                if i % 10 == 0:
                    await asyncio.sleep(0.06)
            await platform.flush()
            assert list(spool.glob("*.jsonl")), "rows should be in the spool"
            assert sum(len(p.read_text().splitlines()) for p in spool.glob("*.jsonl")) == 100
        finally:
            postgres.start()
        platform.record(row("chatcmpl-150", who))
        platform.record(row("chatcmpl-3", who))  # a duplicate of a row written before the outage
        assert await poll_until_async(lambda: _equals(rows_in(platform), (151, 1510, 755))), (
            "condition not reached in time"
        )
        assert not list(spool.glob("*.jsonl"))
    finally:
        await platform.close()


async def test_spool_left_at_shutdown_replays_on_next_start(tmp_path, postgres):
    settings = make_settings(
        tmp_path,
        auth=True,
        database_url=postgres.create_database("shutdown"),
        auth_cache_ttl_s=0,
    )
    platform = await Platform.open(settings)
    who = await principal(platform)
    postgres.stop()
    try:
        for i in range(20):
            platform.record(row(f"chatcmpl-{i}", who))
        await platform.close()  # the database is down: close() spools, losing nothing
    finally:
        postgres.start()
    assert (
        sum(
            len(p.read_text().splitlines())
            for p in (settings.data_dir / "ledger-spool").glob("*.jsonl")
        )
        == 20
    )
    platform = await Platform.open(settings)
    try:
        assert await poll_until_async(lambda: _equals(rows_in(platform), (20, 200, 100))), (
            "condition not reached in time"
        )
    finally:
        await platform.close()
