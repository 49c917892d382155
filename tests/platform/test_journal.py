"""The ledger's journal: rows on disk before a response ends, replayed after kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import select

from modelhub.platform import Platform
from modelhub.platform.journal import read_rows
from modelhub.platform.tables import usage
from tests.platform.conftest import platform_settings
from tests.platform.test_ledger import principal, row, rows_in, segments

ROOT = Path(__file__).resolve().parents[2]


async def test_a_final_row_is_on_disk_when_record_returns(tmp_path, database_url):
    settings = platform_settings(tmp_path, database_url=database_url, ledger_flush_interval_s=3600)
    platform = await Platform.open(settings)
    try:
        who = await principal(platform)
        await platform.record(row("chatcmpl-1", who, completion=7))
        on_disk = read_rows(segments(settings), finals_only=True)
        assert [(r["request_id"], r["completion_tokens"]) for r in on_disk] == [("chatcmpl-1", 7)]
        assert await rows_in(platform) == (0, 0, 0)  # the database gets it later, in a batch
    finally:
        await platform.close()
    assert segments(settings) == []


async def test_segments_rotate_carry_open_requests_and_are_deleted_once_stored(
    tmp_path, database_url
):
    settings = platform_settings(tmp_path, database_url=database_url, journal_segment_bytes=4096)
    platform = await Platform.open(settings)
    try:
        who = await principal(platform)
        flight = platform.begin(row("chatcmpl-long", who, completion=0, status="cancelled"))
        for start in range(0, 200, 20):
            await asyncio.gather(
                *(platform.record(row(f"chatcmpl-{i}", who)) for i in range(start, start + 20))
            )
        await platform.flush()
        # About 20 segments were written; the stored ones are gone, the open request is
        # carried into the one being written, so a crash now would still bill it.
        left = segments(settings)
        assert len(left) <= 2
        assert "chatcmpl-long" in {r["request_id"] for r in read_rows(left, finals_only=False)}
        await flight.finish(row("chatcmpl-long", who, completion=3))
        await platform.flush()
        assert await rows_in(platform) == (201, 2010, 1003)
    finally:
        await platform.close()


async def test_kill_9_replays_final_rows_and_bills_open_ones_their_last_checkpoint(
    tmp_path, database_url
):
    settings = platform_settings(tmp_path, database_url=database_url)
    platform = await Platform.open(settings)
    try:
        await principal(platform)
        secret, _ = await platform.store.create_key("acme")
    finally:
        await platform.close()
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.platform.journal_worker",
        database_url,
        str(settings.data_dir),
        secret,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        expected = json.loads(await asyncio.wait_for(worker.stdout.readline(), 120))
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    assert segments(settings), "the killed worker left its journal"
    platform = await Platform.open(settings)  # replays before it returns
    try:
        async with platform.store.engine.connect() as conn:
            stored = (await conn.execute(select(usage))).mappings().all()
    finally:
        await platform.close()
    by_id = {r["request_id"]: r for r in stored}
    assert len(by_id) == len(stored) == len(expected["finals"]) + len(expected["open"])
    for request_id, tokens in expected["finals"].items():
        assert (by_id[request_id]["status"], by_id[request_id]["completion_tokens"]) == (
            "ok",
            tokens,
        )
    for request_id, tokens in expected["open"].items():
        assert (by_id[request_id]["status"], by_id[request_id]["completion_tokens"]) == (
            "cancelled",
            tokens,
        ), request_id
        assert by_id[request_id]["prompt_tokens"] == 10
    assert segments(settings) == []
