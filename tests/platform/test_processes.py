"""Two gateway processes sharing Redis enforce one contract-wide limit, exactly."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from modelhub.errors import RateLimitError
from modelhub.platform import Limits, Platform
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


async def test_two_processes_share_one_limit(tmp_path, redis_url):
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    platform = await Platform.open(
        make_settings(
            tmp_path,
            auth=True,
            database_url=database_url,
            redis_url=redis_url,
            auth_cache_ttl_s=0,
        )
    )
    try:
        await platform.store.create_contract("acme", limits=Limits(rpm=10))
        secret, _ = await platform.store.create_key("acme")
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.platform.worker",
                database_url,
                redis_url,
                str(tmp_path / f"data-{n}"),
                secret,
                "15",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            for n in range(2)
        ]
        for worker in workers:
            assert await asyncio.wait_for(worker.stdout.readline(), 60) == b"ready\n"
        for worker in workers:  # both go at once
            worker.stdin.write(b"go\n")
        await asyncio.gather(*(w.stdin.drain() for w in workers))
        outcomes = []
        for worker in workers:
            out, _ = await asyncio.wait_for(worker.communicate(), 60)
            assert worker.returncode == 0
            outcomes.append(json.loads(out))
        assert sum(o["passed"] for o in outcomes) == 10
        assert sum(o["refused"] for o in outcomes) == 20
        # And this process, a third gateway, finds the contract's limit used up too.
        who = await platform.authenticate(f"Bearer {secret}", "m")
        with pytest.raises(RateLimitError):
            await platform.reserve(who, "m", 1)
    finally:
        await platform.close()
