"""A gateway stand-in that journals requests, then waits to be killed:
``python -m tests.platform.journal_worker DATABASE_URL DATA_DIR KEY``.

Nothing reaches the database before the kill (the flush interval is an hour), so every row
the test later finds came from replaying the journal. It records ``finals`` final rows,
keeps ``open`` requests in flight (checkpointed past the interval, so each checkpoint is
persisted), with enough rows between them to move the journal through several segments,
prints what the ledger must hold, and sleeps.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from modelhub.platform import Platform, UsageRecord
from modelhub.settings import Settings

CHECKPOINT_S = 0.2


def record(request_id: str, who, completion: int, status: str = "ok") -> UsageRecord:
    now = datetime.now(UTC)
    return UsageRecord(
        request_id=request_id,
        principal=who,
        model="m",
        received_at=now,
        first_token_at=now if completion else None,
        finished_at=now,
        prompt_tokens=10,
        image_tokens=0,
        completion_tokens=completion,
        status=status,
        finish_reason="stop" if status == "ok" else None,
    )


async def main(database_url: str, data_dir: str, key: str) -> None:
    settings = Settings(
        database_url=database_url,
        data_dir=Path(data_dir),
        ledger_flush_interval_s=3600,
        ledger_batch_size=100_000,
        journal_checkpoint_interval_s=CHECKPOINT_S,
        journal_segment_bytes=4096,
    )
    platform = await Platform.open(settings)
    who = await platform.authenticate(f"Bearer {key}", None)
    in_flight = {
        f"open-{i}": platform.begin(record(f"open-{i}", who, 0, "cancelled")) for i in range(5)
    }
    delivered = {}
    for step in range(1, 4):
        # Rows between checkpoints: each round fills a segment or two.
        finals = (platform.record(record(f"final-{step}-{i}", who, i)) for i in range(20))
        await asyncio.gather(*finals)
        await asyncio.sleep(CHECKPOINT_S * 2)
        for n, (request_id, flight) in enumerate(in_flight.items()):
            delivered[request_id] = step * 10 + n
            flight.checkpoint(record(request_id, who, delivered[request_id], "cancelled"))
    # A checkpoint inside the interval is not persisted: the ledger may bill the last one.
    in_flight["open-0"].checkpoint(record("open-0", who, 999, "cancelled"))
    # One request finishes after its checkpoints: its final row must win over them. (Lines
    # reach the disk in order, so once it is written the checkpoints are too.)
    delivered.pop("open-4")
    await in_flight["open-4"].finish(record("open-4", who, 77))
    finals = {f"final-{s}-{i}": i for s in range(1, 4) for i in range(20)} | {"open-4": 77}
    print(json.dumps({"finals": finals, "open": delivered}), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
