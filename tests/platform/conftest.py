from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from redis import Redis

from modelhub.platform import Platform
from modelhub.settings import Settings
from tests.conftest import make_settings
from tests.platform.servers import RedisServer

_databases = itertools.count()


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'modelhub.db'}"
    return request.getfixturevalue("postgres").create_database(f"test_{next(_databases)}")


@pytest.fixture
def redis_url(redis_server) -> str:
    with Redis.from_url(redis_server.url) as client:
        client.flushdb()
    return redis_server.url


@pytest.fixture
def own_redis():
    """A Redis of the test's own, for tests that kill it."""
    server = RedisServer()
    yield server
    server.destroy()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def platform_settings(tmp_path: Path, **overrides) -> Settings:
    """The suite's one factory, as the platform tests need it: auth on, and key lookups
    uncached (these tests check that each change takes effect at once)."""
    return make_settings(tmp_path, auth=True, **{"auth_cache_ttl_s": 0, **overrides})


@pytest.fixture
async def platform(tmp_path, database_url):
    """A Platform on each database, memory limiter, real clock."""
    opened = await Platform.open(platform_settings(tmp_path, database_url=database_url))
    yield opened
    await opened.close()
