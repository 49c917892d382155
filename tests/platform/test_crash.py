"""kill -9 a gateway under mixed load, again and again; the ledger must match what clients saw.

Each cycle starts the gateway (a separate OS process on the demo model), runs short requests
and streams against it, kills it with SIGKILL at a random moment, and records what every
client received. After the restart (which replays the journal) the ledger must hold:
every response received in full exactly once with the tokens its ``usage`` said; every
stream cut by the kill with at least the tokens it had received one checkpoint before
the kill; and no row but those, except one per request that was in flight without its
client having seen an id yet.

``CRASH_CYCLES`` in the environment sets the number of cycles (default 20) and
``CRASH_BUDGET_S`` the time after which no new cycle starts (default 150 s; at least 3
cycles run whatever the time: on a machine too busy for 20, fewer, and the test says so).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import DEMO_MODEL, LONG_ANSWER
from tests.processes import free_port, spawn_modelhub
from tests.sse import DONE, sse_data

pytestmark = pytest.mark.crash

CYCLES = int(os.environ.get("CRASH_CYCLES", "20"))
BUDGET_S = float(os.environ.get("CRASH_BUDGET_S", "150"))
MIN_CYCLES = min(3, CYCLES)
CHECKPOINT_S = 1.0  # the product's default journal_checkpoint_interval_s
# The ledger sweeps kept-back checkpoints every interval / 4, so the journal is at most
# 1.25 intervals behind a stream; plus scheduling slack on a busy machine.
BEHIND_S = 1.25 * CHECKPOINT_S + 0.25
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Seen:
    """One request as its client saw it."""

    id: str | None = None
    complete: bool = False  # the whole response arrived (body, or [DONE] after the usage)
    usage: dict | None = None
    chunk_times: list[float] = field(default_factory=list)  # content chunks, when received


@dataclass
class Load:
    base_url: str
    stop: threading.Event = field(default_factory=threading.Event)
    # Set once a response has arrived in full and a stream is delivering tokens.
    flowing: threading.Event = field(default_factory=threading.Event)
    _complete: bool = False
    _streaming: bool = False
    seen: list[Seen] = field(default_factory=list)

    def short(self) -> None:
        while not self.stop.is_set():
            seen = Seen()
            self.seen.append(seen)
            try:
                r = httpx.post(
                    f"{self.base_url}/v1/chat/completions",
                    json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 8},
                    timeout=60,
                )
            except httpx.HTTPError:
                return  # the gateway died mid-request
            assert r.status_code == 200, r.text
            body = r.json()
            seen.id, seen.usage, seen.complete = body["id"], body["usage"], True
            self._complete = True
            self._flowing()

    def _flowing(self) -> None:
        if self._complete and self._streaming:
            self.flowing.set()

    def stream(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            seen = Seen()
            self.seen.append(seen)
            try:
                self._stream(seen, rng.randint(10, 300))
            except httpx.HTTPError:
                return

    def _stream(self, seen: Seen, max_tokens: int) -> None:
        with httpx.stream(
            "POST",
            f"{self.base_url}/v1/chat/completions",
            json={
                "model": DEMO_MODEL,
                "messages": QUESTION,
                "max_tokens": max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
                "response_format": LONG_ANSWER,
            },
            timeout=60,
        ) as r:
            assert r.status_code == 200
            for data in sse_data(r.iter_lines()):
                if data == DONE:
                    seen.complete = seen.usage is not None
                else:
                    chunk = json.loads(data)
                    seen.id = chunk["id"]
                    seen.usage = chunk.get("usage") or seen.usage
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        seen.chunk_times.append(time.monotonic())
                        self._streaming = len(seen.chunk_times) >= 3 or self._streaming
                        self._flowing()


def _ledger(database: str) -> dict[str, tuple[str, int, int]]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT request_id, status, prompt_tokens, completion_tokens FROM usage"
        ).fetchall()
    ledger = {r[0]: r[1:] for r in rows}
    assert len(ledger) == len(rows), "duplicate request ids"
    return ledger


def test_kill_9_under_mixed_load_bills_every_response_exactly_once(tmp_path):
    rng = random.Random(12)
    data_dir = tmp_path / "data"
    gateway = spawn_modelhub(
        tmp_path,
        port=free_port(),
        env={
            "MODELHUB_AUTH": "false",
            "MODELHUB_DATA_DIR": str(data_dir),
            "MODELHUB_JOURNAL_CHECKPOINT_INTERVAL_S": str(CHECKPOINT_S),
        },
    )
    database = str(data_dir / "modelhub.db")
    history: list[tuple[float, list[Seen]]] = []  # (kill time, what clients saw), per cycle
    checked = {"complete": 0, "cut": 0, "unseen": 0}
    started = time.monotonic()
    try:
        while True:
            gateway.start()  # replays the journal of the process killed before
            if history:
                _check(_ledger(database), history, checked)
            cycles = len(history)
            if cycles == CYCLES or (cycles >= MIN_CYCLES and time.monotonic() - started > BUDGET_S):
                break
            load = Load(gateway.base_url)
            clients = [threading.Thread(target=load.short) for _ in range(3)] + [
                threading.Thread(target=load.stream, args=(random.Random(rng.random()),))
                for _ in range(3)
            ]
            for client in clients:
                client.start()
            # Kill at a random moment once responses flow (however busy the machine is).
            load.flowing.wait(timeout=120)
            time.sleep(rng.uniform(0.0, 2.0))
            killed_at = time.monotonic()
            gateway.kill()
            load.stop.set()
            for client in clients:
                client.join(timeout=60)
            history.append((killed_at, load.seen))
    finally:
        gateway.stop()
    print(f"crash loop: {cycles} of {CYCLES} cycles, {checked}, {len(_ledger(database))} rows")
    assert checked["complete"] >= cycles and checked["cut"] > 0


def _check(
    ledger: dict[str, tuple[str, int, int]],
    history: list[tuple[float, list[Seen]]],
    checked: dict[str, int],
) -> None:
    """Every cycle so far against the whole ledger (replays must not add or change rows)."""
    known = set()
    unseen = 0
    for killed_at, seen in history:
        for s in seen:
            if s.id is None:
                unseen += 1  # in flight before its client saw an id: at most one row
                continue
            known.add(s.id)
            assert s.id in ledger, f"no row for {s.id}"
            status, prompt, completion = ledger[s.id]
            if s.complete:
                assert (status, prompt, completion) == (
                    "ok",
                    s.usage["prompt_tokens"],
                    s.usage["completion_tokens"],
                ), s.id
                continue
            assert status in ("cancelled", "ok"), (s.id, status)
            delivered = sum(1 for t in s.chunk_times if t <= killed_at - BEHIND_S)
            assert completion >= delivered, (s.id, completion, delivered, len(s.chunk_times))
    others = [r for request_id, r in ledger.items() if request_id not in known]
    assert len(others) <= unseen, (len(others), unseen)
    assert all(status in ("cancelled", "ok") for status, _, _ in others)
    checked.update(
        complete=sum(s.complete for _, seen in history for s in seen),
        cut=sum(bool(s.id) and not s.complete for _, seen in history for s in seen),
        unseen=unseen,
    )
