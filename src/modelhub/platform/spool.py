"""The ledger's local spool: rows the database could not take, kept until it can.

Rows are appended as JSON lines to ``active.jsonl`` (fsynced: a row written here
survives a crash). To replay, a writer first *claims* the active file by renaming it,
so appends that come meanwhile start a fresh file and nothing is read while still being
written; a claimed file is deleted only after all of its rows are in the database, and
a claimed file left by a crash is replayed the next time. The database ignores rows it
already has (unique request id), so replaying twice never counts twice. Several
processes may share a spool directory: appends and claims take an ``flock``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Spool"]

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, directory: Path):
        self.directory = directory
        self._active = directory / "active.jsonl"

    def append(self, rows: Iterable[dict]) -> None:
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self._active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A replayer may have renamed the file between our open and our lock.
                if _same_file(fd, self._active):
                    os.write(fd, data)
                    os.fsync(fd)
                    return
            finally:
                os.close(fd)

    def claim(self) -> list[Path]:
        """The claimed files whose rows await replay. The active file is claimed (renamed)
        only once earlier claims are replayed, so a long outage leaves two files, not many."""
        claimed = sorted(self.directory.glob("claimed-*.jsonl"))
        if not claimed and self._active.exists():
            try:
                fd = os.open(self._active, os.O_RDONLY)
            except FileNotFoundError:
                pass  # another process claimed it just now
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if _same_file(fd, self._active):
                        os.rename(
                            self._active, self.directory / f"claimed-{uuid.uuid4().hex}.jsonl"
                        )
                finally:
                    os.close(fd)
            claimed = sorted(self.directory.glob("claimed-*.jsonl"))
        return claimed

    def has_rows(self) -> bool:
        return self._active.exists() or any(self.directory.glob("claimed-*.jsonl"))

    @staticmethod
    def read(path: Path) -> list[dict]:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []  # replayed and removed by another process
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # Only a crash in the middle of a write leaves a torn line, and only the last.
                log.error("ledger spool %s: line %d is not JSON, skipped", path, number)
        return rows

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
