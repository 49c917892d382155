"""The usage ledger: batched, idempotent, and lossless through a database outage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from modelhub.platform import Limits, Platform, Price, Principal, UsageRecord
from modelhub.platform.tables import usage
from tests.platform.conftest import platform_settings
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


async def eventually(check, timeout: float = 10.0):
    assert await poll_until_async(check, timeout=timeout), "condition not reached in time"


async def test_rows_land_in_batches_off_the_request_path(tmp_path, database_url):
    platform = await Platform.open(
        platform_settings(tmp_path, database_url=database_url, ledger_batch_size=64)
    )
    try:
        who = await principal(platform)
        # Concurrent requests share the journal's fsyncs (group commit).
        await asyncio.gather(*(platform.record(row(f"chatcmpl-{i}", who)) for i in range(300)))
        await eventually(lambda: _equals(rows_in(platform), (300, 3000, 1500)))
    finally:
        await platform.close()


async def test_a_flush_under_steady_traffic_ends_and_loses_nothing(tmp_path, database_url):
    platform = await Platform.open(
        platform_settings(tmp_path, database_url=database_url, ledger_flush_interval_s=3600)
    )
    recorded = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        # One request ending after another, as a busy gateway's do: each row lands in the
        # pending list while the flush is writing the ones before it.
        nonlocal recorded
        while not stop.is_set():
            await platform.record(row(f"chatcmpl-{recorded}", who))
            recorded += 1

    try:
        who = await principal(platform)
        producer = asyncio.create_task(traffic())
        await eventually(lambda: _at_least(lambda: recorded, 20))
        # A flush writes what was pending when it began (the rows recorded so far, and
        # perhaps the one on its way); one that chased the rows arriving meanwhile would
        # last as long as the traffic, a transaction for every few rows.
        pending = recorded
        await platform.flush()
        assert (await rows_in(platform))[0] <= pending + 1 < recorded
        stop.set()
        await producer
        await platform.flush()
        assert (await rows_in(platform))[0] == recorded
    finally:
        stop.set()
        await platform.close()


async def _at_least(value, minimum: int) -> bool:
    return value() >= minimum


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def test_duplicate_request_id_never_double_counts(platform: Platform):
    who = await principal(platform)
    await platform.record(row("chatcmpl-a", who))
    await platform.record(row("chatcmpl-a", who))
    await platform.flush()
    await platform.record(row("chatcmpl-a", who, prompt=999))  # a retried write, later
    await platform.record(row("chatcmpl-b", who))
    await platform.flush()
    assert await rows_in(platform) == (2, 20, 10)


async def test_cost_from_contract_prices(platform: Platform):
    who = await principal(platform, prices={"big": Price(input=2.0, output=6.0)})
    await platform.record(row("chatcmpl-1", who, model="big", prompt=1_000_000, completion=500_000))
    await platform.record(
        row(
            "chatcmpl-2",
            who,
            model="big",
            prompt=0,
            completion=0,
            status="rate_limited",
            finish=None,
        )
    )
    await platform.record(row("chatcmpl-3", who, model="free", prompt=100, completion=100))
    await platform.record(
        row("chatcmpl-4", who, model="big", prompt=7, completion=3, status="cancelled")
    )
    report = {r["model"]: r for r in await platform.usage("acme", by="model")}
    assert report["big"]["cost"] == 2.0 + 3.0 + (7 * 2.0 + 3 * 6.0) / 1e6
    assert report["big"]["requests"] == 3 and report["free"]["cost"] == 0


async def test_close_flushes(tmp_path, database_url):
    settings = platform_settings(tmp_path, database_url=database_url, ledger_flush_interval_s=3600)
    platform = await Platform.open(settings)
    who = await principal(platform)
    for i in range(10):
        await platform.record(row(f"chatcmpl-{i}", who))
    await platform.close()
    platform = await Platform.open(settings)
    try:
        assert await rows_in(platform) == (10, 100, 50)
    finally:
        await platform.close()


def segments(settings) -> list[Path]:
    return sorted((settings.data_dir / "ledger-journal").glob("*.jsonl"))


def journaled(settings) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in segments(settings))


async def test_database_outage_keeps_rows_in_the_journal_and_replays(tmp_path, postgres):
    settings = platform_settings(
        tmp_path, database_url=postgres.create_database("outage"), journal_segment_bytes=8192
    )
    platform = await Platform.open(settings)
    try:
        who = await principal(platform, limits=Limits(rpm=1000))
        for i in range(50):
            await platform.record(row(f"chatcmpl-{i}", who))
        await platform.flush()
        postgres.stop()
        try:
            # Requests keep ending while the database is gone: their rows wait on disk.
            for i in range(50, 150):
                await platform.record(row(f"chatcmpl-{i}", who))
                if i % 10 == 0:
                    await asyncio.sleep(0.06)
            await platform.flush()
            assert journaled(settings) >= 100
        finally:
            postgres.start()
        await platform.record(row("chatcmpl-150", who))
        await platform.record(row("chatcmpl-3", who))  # a duplicate of a row from before
        await eventually(lambda: _equals(rows_in(platform), (151, 1510, 755)))

        # Replayed segments are deleted: what remains is the one being written.
        async def one_segment() -> bool:
            return len(segments(settings)) == 1

        await eventually(one_segment)
    finally:
        await platform.close()
    assert segments(settings) == []  # a clean close leaves nothing to replay


async def test_journal_left_at_shutdown_replays_on_next_start(tmp_path, postgres):
    settings = platform_settings(tmp_path, database_url=postgres.create_database("shutdown"))
    platform = await Platform.open(settings)
    who = await principal(platform)
    postgres.stop()
    try:
        for i in range(20):
            await platform.record(row(f"chatcmpl-{i}", who))
        await platform.close()  # the database is down: the rows stay in the journal
    finally:
        postgres.start()
    assert journaled(settings) == 20
    platform = await Platform.open(settings)
    try:
        assert await rows_in(platform) == (20, 200, 100)  # replayed before open returns
    finally:
        await platform.close()
    assert segments(settings) == []
