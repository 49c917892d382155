"""The usage ledger: one row per request, journaled on local disk, then written to the database.

A request's rows go first to the journal (``journal.Journal``, a write-ahead log with group
commit): an open row at admission (``Ledger.begin``), checkpoints while it streams
(``InFlight.checkpoint``), and the final row (``InFlight.finish`` or ``Ledger.record``),
which is on disk when the call returns. Final rows then wait in memory for a task that
writes them to the database in batches with ``INSERT .. ON CONFLICT (request_id) DO
NOTHING``, so a row written twice counts once.

When the database cannot take a batch, the rows are dropped from memory and their journal
segments are marked *dirty*: once the database answers again, those segments are read back
and written (a long outage costs disk, not memory). On start, the segments of a process
that died (kill -9, power loss) are replayed the same way, its open rows billed as
``cancelled`` at their last checkpoint. The database is the source of truth for reports;
a segment is deleted once all of its final rows are in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Literal

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.platform.auth import Principal
from modelhub.platform.db import to_db
from modelhub.platform.journal import Journal, Segment, dead_owners, read_rows
from modelhub.platform.tables import usage

__all__ = ["STATUSES", "InFlight", "Ledger", "Status", "UsageRecord"]

log = logging.getLogger(__name__)

_TIME_COLUMNS = ("received_at", "first_token_at", "finished_at")

# refused: turned away before inference (engine queue full, limiter unavailable), billed nothing.
Status = Literal["ok", "cancelled", "error", "rate_limited", "refused"]
STATUSES: tuple[Status, ...] = ("ok", "cancelled", "error", "rate_limited", "refused")


@dataclass
class UsageRecord:
    """A request as it ended (or as far as it got), built by serving."""

    request_id: str
    principal: Principal
    model: str
    received_at: datetime
    first_token_at: datetime | None
    finished_at: datetime
    prompt_tokens: int
    image_tokens: int
    completion_tokens: int
    status: Status
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


# A checkpoint: the record, or a function returning it (see ``InFlight.checkpoint``).
Progress = UsageRecord | Callable[[], UsageRecord]


class InFlight:
    """An admitted request's open row in the journal."""

    __slots__ = ("_last", "_latest", "_ledger")

    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._last = time.monotonic()  # when its row was last journaled
        self._latest: Progress | None = None  # a checkpoint not journaled yet

    def checkpoint(self, progress: Progress) -> None:
        """What was delivered so far: a record, or a function that builds it (called only
        when the checkpoint is journaled: per token, building a record would cost more
        than the journal). Journaled at once if the last one is an interval old;
        otherwise kept, and journaled by the ledger's sweep when due (so a stream that
        stalls is still journaled as far as it got)."""
        self._latest = progress
        if time.monotonic() - self._last >= self._ledger.checkpoint_interval:
            self.persist()

    def persist(self) -> None:
        progress, self._latest = self._latest, None
        if progress is not None:
            record = progress if isinstance(progress, UsageRecord) else progress()
            self._last = time.monotonic()
            self._ledger.journal.write_open(record.request_id, record.to_row())

    async def finish(self, record: UsageRecord) -> None:
        """The final row: on disk when this returns."""
        self._latest = None
        self._ledger.in_flight.discard(self)
        await self._ledger.record(record, was_open=True)


@dataclass(eq=False)
class _Replay:
    """Segments whose rows must be read back from disk into the database."""

    paths: list[Path]
    finals_only: bool  # this process's own: its open rows are requests still running
    lock: tuple[Path, int] | None = None  # a dead owner's lock, held while we replay it


class Ledger:
    def __init__(
        self,
        engine: AsyncEngine,
        directory: Path,
        *,
        batch_size: int,
        interval: float,
        checkpoint_interval: float,
        segment_bytes: int,
        fsync: bool = True,
    ):
        self._engine = engine
        self._batch_size = batch_size
        self._interval = interval
        self.checkpoint_interval = checkpoint_interval
        self.journal = Journal(
            directory, segment_bytes=segment_bytes, fsync=fsync, on_rotate=self._rotated
        )
        # Final rows on disk, waiting for the database; None: the disk refused it.
        self._pending: list[tuple[Segment | None, dict]] = []
        self._backlog: list[_Replay] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._lock = asyncio.Lock()  # one writer at a time
        self.in_flight: set[InFlight] = set()
        self._tasks: list[asyncio.Task] = []
        self._down = False  # to warn once per outage, not once per flush

    async def start(self) -> None:
        """Open the journal, replay what dead processes left, and start the flush task."""
        self.journal.open()
        for owner, (fd, paths) in dead_owners(self.journal.directory, self.journal.owner).items():
            lock = self.journal.directory / f"{owner}.lock"
            self._backlog.append(_Replay(paths, finals_only=False, lock=(lock, fd)))
        await self.flush()
        self._tasks = [
            asyncio.create_task(self._run(), name="ledger-flush"),
            asyncio.create_task(self._sweep(), name="ledger-checkpoints"),
        ]

    def begin(self, record: UsageRecord) -> InFlight:
        self.journal.write_open(record.request_id, record.to_row())
        flight = InFlight(self)
        self.in_flight.add(flight)
        return flight

    async def record(self, record: UsageRecord, *, was_open: bool = False) -> None:
        """Journal a final row; returns once it is on disk (a failing disk is logged, and
        the row still goes to the database)."""
        row = record.to_row()
        segment, written = self.journal.append_final(row, record.request_id if was_open else None)
        segment.unflushed += 1  # from now on the segment is kept until the row is stored
        written.add_done_callback(partial(self._written, segment, row))
        try:
            # Shielded: a client that leaves does not cancel what bills it.
            await asyncio.shield(written)
        except OSError:
            pass  # logged by _written

    def _written(self, segment: Segment, row: dict, written: asyncio.Future) -> None:
        if written.exception() is not None:
            log.error("ledger journal: write failed: %s", written.exception())
            segment.unflushed -= 1
            segment = None
        self._pending.append((segment, row))
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write the backlog, then the rows pending when the flush began; what fails is
        read back from the journal later."""
        async with self._lock:
            if not await self._replay_backlog():
                return self._spill()
            if self.journal.current is not None and self.journal.current.dirty:
                self.journal.rotate()  # so the dirty segment is closed, and can be replayed
                if not await self._replay_backlog():
                    return self._spill()
            # Only the rows pending now: rows that finish while a batch is being written
            # wait for the next flush. Chasing them kept a flush going for as long as
            # traffic lasted, one transaction per one to three rows (0.4 ms of CPU a request).
            owed = len(self._pending)
            while owed:
                batch = self._pending[: min(owed, self._batch_size)]
                try:
                    await self._insert([row for _, row in batch])
                except Exception as error:  # noqa: BLE001 - the journal has them
                    self._outage(error)
                    return self._spill()
                del self._pending[: len(batch)]
                owed -= len(batch)
                for segment, _ in batch:
                    if segment is not None:
                        segment.unflushed -= 1
                        self._delete_if_done(segment)
        return None

    async def close(self) -> None:
        """Flush; the journal keeps what the database could not take, for the next start."""
        if self.journal.current is None:
            return  # never started
        self._closing = True
        self._wake.set()
        if self._tasks:
            flusher, sweeper = self._tasks
            sweeper.cancel()
            await asyncio.gather(flusher, sweeper, return_exceptions=True)
        await self.journal.sync()  # rows still on their way to disk join the last flush
        await self.flush()
        await self.journal.close()
        done = not self._pending and not self._backlog and not self.journal.current.dirty
        self.journal.release(delete=done)
        for replay in self._backlog:
            if replay.lock is not None:
                os.close(replay.lock[1])

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def _sweep(self) -> None:
        """Journal the checkpoints that ``InFlight.checkpoint`` kept back, once due: a crash
        then bills a stream what it had delivered at most 1.25 intervals before."""
        while True:
            await asyncio.sleep(self.checkpoint_interval / 4)
            now = time.monotonic()
            for flight in self.in_flight:
                if now - flight._last >= self.checkpoint_interval:
                    flight.persist()

    def _rotated(self, segment: Segment) -> None:
        if segment.dirty:
            self._backlog.append(_Replay([segment.path], finals_only=True))
        else:
            self._delete_if_done(segment)

    @staticmethod
    def _delete_if_done(segment: Segment) -> None:
        if segment.closed and not segment.dirty and segment.unflushed == 0:
            segment.path.unlink(missing_ok=True)

    def _spill(self) -> None:
        """The database is out of reach: pending rows leave memory; their segments will be
        read back (rows the disk refused stay in memory: there is nowhere else)."""
        kept = []
        for segment, row in self._pending:
            if segment is None:
                kept.append((segment, row))
                continue
            segment.unflushed -= 1
            if not segment.dirty:
                segment.dirty = True
                if segment.closed:
                    self._backlog.append(_Replay([segment.path], finals_only=True))
        self._pending = kept

    async def _replay_backlog(self) -> bool:
        """Move the backlog's rows into the database; False if it is still out of reach."""
        if self._backlog:
            await self.journal.sync()  # a segment just closed may still have writes queued
        while self._backlog:
            replay = self._backlog[0]
            rows = [
                _from_json(row) for row in read_rows(replay.paths, finals_only=replay.finals_only)
            ]
            try:
                for start in range(0, len(rows), self._batch_size):
                    await self._insert(rows[start : start + self._batch_size])
            except Exception as error:  # noqa: BLE001 - the files stay for the next try
                self._outage(error)
                return False
            for path in replay.paths:
                path.unlink(missing_ok=True)
            if replay.lock is not None:
                replay.lock[0].unlink(missing_ok=True)
                os.close(replay.lock[1])
            self._backlog.pop(0)
            log.info("ledger: replayed %d rows from the journal", len(rows))
        return True

    def _outage(self, error: Exception) -> None:
        # Any failure, not only a lost connection (drivers raise their own kinds while a
        # server starts or stops): the rows are kept either way, and the traceback says why.
        if not self._down:
            log.warning("ledger: database write failed; rows wait in the journal", exc_info=error)
        self._down = True

    async def _insert(self, rows: list[dict]) -> None:
        if not rows:
            return
        async with self._engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
            await conn.execute(statement, rows)
        if self._down:
            log.warning("ledger: database writes work again")
            self._down = False


def _from_json(row: dict) -> dict:
    return {
        k: (datetime.fromisoformat(v) if k in _TIME_COLUMNS and v is not None else v)
        for k, v in row.items()
    }
