"""The usage ledger: one row per request, written in batches off the request path.

``add`` only appends to a list. A task flushes the list every ``interval`` seconds (or
at once when a batch is full) with ``INSERT .. ON CONFLICT (request_id) DO NOTHING``, so
a row written twice counts once. When the database cannot take a batch, the batch goes
to the spool (``spool.Spool``) and is replayed once a write succeeds again; ``close``
flushes what is left. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.platform.auth import Principal
from modelhub.platform.db import to_db
from modelhub.platform.spool import Spool
from modelhub.platform.tables import usage

__all__ = ["Ledger", "UsageRecord"]

log = logging.getLogger(__name__)

_TIME_COLUMNS = ("received_at", "first_token_at", "finished_at")


@dataclass
class UsageRecord:
    """A request as it ended, built by serving."""

    request_id: str
    principal: Principal
    model: str
    received_at: datetime
    first_token_at: datetime | None
    finished_at: datetime
    prompt_tokens: int
    image_tokens: int
    completion_tokens: int
    status: Literal["ok", "error", "cancelled", "rate_limited", "refused"]
    finish_reason: str | None

    def to_row(self) -> dict:
        """The ledger row; billed for the tokens actually processed, at the contract's price."""
        return {
            "request_id": self.request_id,
            "contract_id": self.principal.contract_id,
            "key_id": self.principal.key_id,
            "model": self.model,
            "received_at": to_db(self.received_at),
            "first_token_at": to_db(self.first_token_at),
            "finished_at": to_db(self.finished_at),
            "prompt_tokens": self.prompt_tokens,
            "image_tokens": self.image_tokens,
            "completion_tokens": self.completion_tokens,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "cost_nanos": self.principal.cost_nanos(
                self.model, self.prompt_tokens, self.completion_tokens
            ),
        }


class Ledger:
    def __init__(self, engine: AsyncEngine, spool: Spool, *, batch_size: int, interval: float):
        self._engine = engine
        self._spool = spool
        self._batch_size = batch_size
        self._interval = interval
        self._pending: list[dict] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._lock = asyncio.Lock()  # one flush at a time: the spool is replayed by one writer
        self._task: asyncio.Task | None = None
        self._down = False  # to warn once per outage, not once per flush

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-flush")

    def add(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write every pending row, replaying the spool first; what fails is spooled."""
        async with self._lock:
            if self._spool.has_rows() and not await self._replay():
                self._to_spool()
                return
            while self._pending:
                batch = self._pending[: self._batch_size]
                del self._pending[: self._batch_size]
                try:
                    await self._insert(batch)
                except Exception as error:  # noqa: BLE001 - kept in the spool, not dropped
                    self._pending[:0] = batch
                    self._outage(error)
                    self._to_spool()
                    return

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def _replay(self) -> bool:
        """Move spooled rows into the database; False if it is still out of reach."""
        while self._spool.has_rows():
            for path in self._spool.claim():
                rows = [_from_json(row) for row in self._spool.read(path)]
                try:
                    for start in range(0, len(rows), self._batch_size):
                        await self._insert(rows[start : start + self._batch_size])
                except Exception as error:  # noqa: BLE001 - the file stays for the next try
                    self._outage(error)
                    return False
                self._spool.remove(path)
                log.info("ledger: replayed %d spooled rows from %s", len(rows), path.name)
        return True

    def _outage(self, error: Exception) -> None:
        # Any failure, not only a lost connection (drivers raise their own kinds while a
        # server starts or stops): the rows are kept either way, and the traceback says why.
        if not self._down:
            log.warning("ledger: database write failed; rows go to the spool", exc_info=error)
        self._down = True

    def _to_spool(self) -> None:
        rows, self._pending = self._pending, []
        if rows:
            self._spool.append(_to_json(row) for row in rows)

    async def _insert(self, rows: list[dict]) -> None:
        async with self._engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
            await conn.execute(statement, rows)
        if self._down:
            log.warning("ledger: database writes work again")
            self._down = False


def _to_json(row: dict) -> dict:
    return {
        k: (v.isoformat() if k in _TIME_COLUMNS and v is not None else v) for k, v in row.items()
    }


def _from_json(row: dict) -> dict:
    return {
        k: (datetime.fromisoformat(v) if k in _TIME_COLUMNS and v is not None else v)
        for k, v in row.items()
    }
