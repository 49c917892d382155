"""When each API key was last used: a field for people reading key lists, written in one
transaction per batch, off the request path.

Written inside the request (at most once a minute per key), it cost a database write
transaction on every request of a key used less often than that, which in the bench's
gateway load (1,000 keys over 10 contracts) was most requests (bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from modelhub.platform.contracts import ContractStore
from modelhub.platform.db import DB_UNREACHABLE

__all__ = ["KeyUse"]

log = logging.getLogger(__name__)

# A key list read through the admin API writes first (``Platform.flush``); this bounds how
# stale the field is for a reader of the database itself.
WRITE_EVERY_S = 5.0


class KeyUse:
    def __init__(self, store: ContractStore, interval: float = WRITE_EVERY_S):
        self._store = store
        self._interval = interval
        self._noted: dict[int, datetime] = {}
        self._task: asyncio.Task | None = None

    def note(self, key_id: int, when: datetime) -> None:
        self._noted[key_id] = when

    async def write(self) -> None:
        """Write the uses noted so far; while the database is unreachable they wait for the
        next write, and a later use of the same key replaces them."""
        noted, self._noted = self._noted, {}
        if not noted:
            return
        written = False
        try:
            await self._store.touch_keys(noted)
            written = True
        except DB_UNREACHABLE as error:
            log.debug("key use: database unreachable (%s); kept for the next write", error)
        finally:
            if not written:  # unreachable, or cancelled by a shutdown: close writes them
                self._noted = noted | self._noted

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-use")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.write()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.write()
            except Exception:
                log.exception("key use: writing last uses failed")
