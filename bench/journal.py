"""Micro-benchmark: the ledger journal's CPU per request (``python -m bench.journal``).

Each simulated request does what serving does: ``Platform.begin`` at admission, a few
``InFlight.checkpoint`` calls while it streams, and ``await InFlight.finish`` (durable:
write + fdatasync, group commit) before its last byte. ``concurrency`` requests run at
once, closed-loop. CPU is the process's (``time.process_time``: the event loop and the
journal's writer thread) divided by requests, minus the same loop without the journal (it
only builds the final record), so building the checkpoint records counts as journal cost. The database flush is pushed past the run (its cost is the ledger's, not the
journal's, and unchanged by it).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from modelhub.platform import ANONYMOUS, Platform, UsageRecord
from modelhub.settings import Settings

__all__ = ["journal_table", "measure_journal"]


def _record(request_id: str, completion: int, status: str) -> UsageRecord:
    now = datetime.now(UTC)
    return UsageRecord(
        request_id=request_id,
        principal=ANONYMOUS,
        model="meta-llama/Llama-3.3-70B-Instruct",
        received_at=now,
        first_token_at=now,
        finished_at=now,
        prompt_tokens=25,
        image_tokens=0,
        completion_tokens=completion,
        status=status,
        finish_reason="stop",
    )


async def _run(platform: Platform | None, requests: int, concurrency: int, tokens: int) -> float:
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            request_id = f"chatcmpl-{n:032d}"
            if platform is None:  # what serving did before: build the final record
                _record(request_id, tokens, "ok")
                await asyncio.sleep(0)
                continue
            flight = platform.begin(_record(request_id, 0, "cancelled"))
            # As serving does: one progress function, called only when a checkpoint is due.
            progress = partial(_record, request_id, tokens // 2, "cancelled")
            for _ in range(tokens):
                flight.checkpoint(progress)
            await flight.finish(_record(request_id, tokens, "ok"))

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - start


async def measure_journal(requests: int, concurrency: int, tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            auth=False,
            ledger_flush_interval_s=3600,
            ledger_batch_size=10 * requests,
        )
        platform = await Platform.open(settings)
        try:
            await _run(platform, min(requests, 1000), concurrency, tokens)  # warm up
            with_journal = await _run(platform, requests, concurrency, tokens)
        finally:
            await platform.close()
    without = await _run(None, requests, concurrency, tokens)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "checkpoint_calls": tokens,
        "cpu_ms_per_request": (with_journal - without) / requests * 1000,
    }


def journal_table(quick: bool) -> str:
    """The journal's share of the gateway's CPU per request, for ``bench.run``'s gateway part."""
    requests = 2_000 if quick else 10_000
    rows = [
        "### Ledger journal: CPU per request (begin + 64 checkpoints + durable finish)",
        "",
        "| concurrency | CPU per request | target |",
        "|---|---|---|",
    ]
    for concurrency in (1, 16, 64):
        result = asyncio.run(measure_journal(requests, concurrency, 64))
        rows.append(f"| {concurrency} | {result['cpu_ms_per_request']:.3f} ms | < 0.2 ms |")
    rows.append("")
    rows.append(
        "At concurrency 1 every request pays its own `fdatasync` (nothing to group it with); "
        "`MODELHUB_JOURNAL_FSYNC=false` trades power-loss durability for it."
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--checkpoints", type=int, default=64, help="checkpoint calls per request")
    args = parser.parse_args()
    for concurrency in args.concurrency:
        result = asyncio.run(measure_journal(args.requests, concurrency, args.checkpoints))
        print(
            f"concurrency {concurrency:3d}: {result['cpu_ms_per_request']:.4f} ms CPU per request "
            f"(begin + {args.checkpoints} checkpoints + finish, {args.requests} requests)"
        )


if __name__ == "__main__":
    main()
