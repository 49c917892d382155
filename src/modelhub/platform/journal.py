"""The ledger's journal: a write-ahead log of usage rows on local disk, ahead of the database.

Every admitted request is appended as an *open* line (``begin``), rewritten as it streams
(``checkpoint``, at most once per interval) and closed by its *final* line (``finish``,
``record``). Lines are JSON, one per line, appended to the process's current *segment*
``<owner>-<seq>.jsonl`` by a writer thread, which wakes for every append and writes all
lines appended since it last did in one ``write`` (a kill -9 cannot lose a line once
written); an open line that finds the writer idle is written at once instead (a small
``write`` into the page cache, cheaper than waking a thread). When final lines are among them it also calls ``fdatasync`` once for all of
them (group commit), and only then wakes their waiters, so a row is on disk before the
response it bills ends. Open lines need no sync of their own: they become durable with the
next one. With ``fsync`` off, rows survive a process crash but not a power loss.

Each process (the *owner*) holds an ``flock`` on ``<owner>.lock`` for as long as it runs:
segments whose owner lock can be taken belong to a process that died, and are replayed
(``read_rows``): per request the last line wins; a final line is the row, an open line
is billed what it last said, as ``cancelled``. When a segment fills up the journal moves
to a new one, first copying there the last line of every request still open, so a closed
segment holds nothing that is still changing and can be deleted once its final rows are
in the database (``ledger.Ledger`` decides when).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Journal", "Segment", "dead_owners", "read_rows"]

log = logging.getLogger(__name__)

_OPEN = "open"  # the key an open line carries; final lines are plain rows


@dataclass(eq=False)
class Segment:
    """One journal file of this process, and what the ledger still owes for it."""

    path: Path
    closed: bool = False
    unflushed: int = 0  # final rows appended here and not yet in the database
    dirty: bool = False  # some rows must be read back from the file (a database outage)


@dataclass
class _Batch:
    """Lines for one segment's file, and who waits for them to be on disk."""

    fd: int
    data: list[bytes] = field(default_factory=list)
    waiters: list[asyncio.Future] = field(default_factory=list)
    finals: bool = False  # final lines among data: sync before waking the waiters
    last: bool = False  # the journal moved on: sync and close the file after this batch


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        fsync: bool = True,
        on_rotate: Callable[[Segment], None] = lambda segment: None,
    ):
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._on_rotate = on_rotate
        self.owner = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._lock_fd: int | None = None
        self._seq = 0
        self.current: Segment | None = None
        self._size = 0
        self._open: dict[str, bytes] = {}  # request id -> its last open line
        self._cond = threading.Condition()
        # Shared with the writer thread, under _cond: batches in order, the last one filling.
        self._batches: list[_Batch] = []
        self._closing = False
        self._busy = False  # the writer thread is writing (under _cond)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # Life cycle ------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / f"{self.owner}.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._loop = asyncio.get_running_loop()
        self.current, fd = self._new_segment()
        self._batches = [_Batch(fd)]
        self._thread = threading.Thread(target=self._write_loop, name="ledger-journal", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Write what is pending, close the file and stop the writer thread."""
        with self._cond:
            self._batches[-1].last = True
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def release(self, *, delete: bool) -> None:
        """After close: let go of the owner lock. With ``delete`` (every row is in the
        database) the files go too, so the next start has nothing to replay; without, the
        next start replays them."""
        if delete:
            for path in self.directory.glob(f"{self.owner}-*.jsonl"):
                path.unlink()
            (self.directory / f"{self.owner}.lock").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # Appending ---------------------------------------------------------------------------
    def write_open(self, request_id: str, row: dict) -> None:
        """An open row, written soon; nobody waits for it."""
        line = _line({**row, _OPEN: True, "finished_at": _utcnow()})
        self._open[request_id] = line
        self._append(line)

    def append_final(
        self, row: dict, request_id: str | None = None
    ) -> tuple[Segment, asyncio.Future]:
        """Queue a final row: its segment, and a future done once it is on disk (or that
        failed with the ``OSError`` the disk gave)."""
        if request_id is not None:
            self._open.pop(request_id, None)
        waiter = self._loop.create_future()
        self._append(_line(row), waiter)
        return self.current, waiter

    async def sync(self) -> None:
        """Return once every final row appended so far is written."""
        waiter = self._loop.create_future()
        with self._cond:
            self._batches[-1].waiters.append(waiter)
            self._cond.notify()
        await waiter

    def rotate(self) -> Segment:
        """Move to a new segment, carrying over the requests still open; returns the one
        just closed."""
        closed = self.current
        self.current, fd = self._new_segment()
        with self._cond:
            self._batches[-1].last = True
            self._batches.append(_Batch(fd))
            self._cond.notify()
        self._size = 0
        for line in self._open.values():
            self._append(line)
        closed.closed = True
        self._on_rotate(closed)
        return closed

    def _append(self, line: bytes, waiter: asyncio.Future | None = None) -> None:
        """Queue a line for the writer thread; with a waiter, it is a final line."""
        if self._size and self._size + len(line) > self._segment_bytes:
            self.rotate()
        self._size += len(line)
        with self._cond:
            batch = self._batches[-1]
            if waiter is None and not self._busy and not batch.data and not batch.last:
                # Nothing queued ahead of it, and no sync holds the file: write it here.
                try:
                    _write_all(batch.fd, line)
                    return
                except OSError as error:
                    log.warning("ledger journal: write failed, handed to the writer: %s", error)
            batch.data.append(line)
            if waiter is not None:
                batch.waiters.append(waiter)
                batch.finals = True
            self._cond.notify()

    def _new_segment(self) -> tuple[Segment, int]:
        self._seq += 1
        path = self.directory / f"{self.owner}-{self._seq:06d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return Segment(path), fd

    # The writer thread ---------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending() and not self._closing:
                    self._cond.wait()
                if not self._pending():
                    return  # closing, and everything is written
                batches = self._batches
                self._batches = [] if batches[-1].last else [_Batch(batches[-1].fd)]
                self._busy = True
            for batch in batches:
                self._write(batch)
            with self._cond:
                self._busy = False

    def _pending(self) -> bool:
        return bool(self._batches) and (
            len(self._batches) > 1
            or self._batches[0].last
            or bool(self._batches[0].data or self._batches[0].waiters)
        )

    def _write(self, batch: _Batch) -> None:
        error: OSError | None = None
        try:
            if batch.data:
                _write_all(batch.fd, b"".join(batch.data))
            if self._fsync and (batch.finals or batch.last):
                os.fdatasync(batch.fd)
        except OSError as exc:
            error = exc
        if batch.last:
            try:
                os.close(batch.fd)
            except OSError as exc:
                error = error or exc
        if batch.waiters:
            self._loop.call_soon_threadsafe(_wake, batch.waiters, error)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _wake(waiters: list[asyncio.Future], error: OSError | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def _utcnow() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _line(row: dict) -> bytes:
    return (json.dumps(row, separators=(",", ":"), default=datetime.isoformat) + "\n").encode()


# Replay -----------------------------------------------------------------------------------
def dead_owners(directory: Path, alive: str | None = None) -> dict[str, tuple[int, list[Path]]]:
    """Owners whose process is gone, each with its (now held) lock and its segments in order."""
    owners: dict[str, list[Path]] = {}
    for path in sorted(directory.glob("*.jsonl")):
        owners.setdefault(path.stem.rsplit("-", 1)[0], []).append(path)
    for path in directory.glob("*.lock"):
        owners.setdefault(path.stem, [])
    dead = {}
    for owner, paths in owners.items():
        if owner == alive:
            continue
        fd = os.open(directory / f"{owner}.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # alive: another gateway sharing this directory
            continue
        dead[owner] = (fd, paths)
    return dead


def read_rows(paths: Iterable[Path], *, finals_only: bool) -> list[dict]:
    """The rows the segments say, one per request (its last line). Open lines are billed as
    ``cancelled`` at their last checkpoint, unless ``finals_only`` (the process is alive and
    those requests still running)."""
    rows: dict[str, dict] = {}
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            continue  # replayed and removed by another process
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except ValueError:
                # Only a crash in the middle of a write leaves a torn line, and only the last.
                log.error("ledger journal %s: line %d is not JSON, skipped", path.name, number)
                continue
            if row.pop(_OPEN, False):
                if finals_only:
                    continue
                row.update(status="cancelled", finish_reason=None)
            rows[row["request_id"]] = row
    return list(rows.values())
