"""The database engine (SQLite by default, PostgreSQL by URL) and its migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import modelhub.migrations

__all__ = ["DB_UNREACHABLE", "from_db", "migrate", "open_engine", "to_db", "utcnow"]

# What a query raises when the database is down, restarting or out of reach (drivers'
# errors arrive wrapped in DBAPIError, connection failures sometimes as plain OSError).
DB_UNREACHABLE = (DBAPIError, PoolTimeoutError, OSError, TimeoutError)

MIGRATIONS = Path(modelhub.migrations.__file__).parent
# Any fixed number: PostgreSQL's advisory lock that serialises gateways migrating at once.
_MIGRATION_LOCK = 5_640_201


def open_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; a SQLite file's directory is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: connections that died with a database restart are replaced, not used.
    return create_async_engine(
        url,
        pool_pre_ping=True,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the CLI read while a server writes; foreign keys are off unless asked for.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """``alembic upgrade head`` on ``engine``, in-process."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_db(moment: datetime | None) -> datetime | None:
    """Aware (or naive UTC) -> naive UTC, the form every time column holds."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)
