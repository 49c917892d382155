"""A gateway stand-in in its own OS process: ``python -m tests.platform.worker``.

Opens a Platform on the given database and Redis, authenticates, prints ``ready``,
waits for a line on stdin, then makes N reservations at once and prints how many passed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from modelhub.errors import RateLimitError
from modelhub.platform import Platform
from modelhub.settings import Settings


async def main(database_url: str, redis_url: str, data_dir: str, key: str, count: int) -> None:
    settings = Settings(database_url=database_url, redis_url=redis_url, data_dir=Path(data_dir))
    platform = await Platform.open(settings)
    try:
        who = await platform.authenticate(f"Bearer {key}", "m")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one() -> bool:
            try:
                await platform.reserve(who, "m", 1)
            except RateLimitError:
                return False
            return True

        results = await asyncio.gather(*(one() for _ in range(count)))
        print(json.dumps({"passed": sum(results), "refused": count - sum(results)}), flush=True)
    finally:
        await platform.close()


if __name__ == "__main__":
    database_url, redis_url, data_dir, key, count = sys.argv[1:]
    asyncio.run(main(database_url, redis_url, data_dir, key, int(count)))
