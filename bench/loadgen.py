"""A bounded HTTP load generator for streamed (chat) completions, open or closed loop.

Work is a list of *items*; an item is one request or a conversation (requests sent one after
another, each when the previous one has finished). Two ways to drive it:

- closed loop (``--concurrency C``): C workers each take the next item as soon as their
  last one is done (items are cycled when more requests than items are asked for);
- open loop (``--rate R``): items start at Poisson arrival times of rate R per second
  (seeded), whatever is still in flight, optionally capped by ``--max-concurrency`` (an
  arrival waits for a free place, as in vLLM's ``benchmark_serving``); ``inf`` starts
  them all at once.

Every request's timings are recorded: start, time to first token (first event with
text), the gaps between text events (inter-token latency), end-to-end latency, and the
token counts the server reported (``usage``) or, without ``usage``, the text events. It
speaks raw HTTP/1.1 over asyncio streams with a pool of keep-alive connections (no client
library, so it costs far less CPU than any server under test, and every target is measured
by exactly the same client). Bounded by count and time; loopback only.

Run as its own process (``python -m bench.loadgen --work FILE ...``): prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from bench.aio import run_fast

__all__ = ["Record", "run_load"]


@dataclass
class Record:
    item: int
    turn: int
    start: float = 0.0  # seconds since the run started
    e2e: float | None = None
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    text_events: int = 0
    completion_tokens: int | None = None  # the server's usage, when it sends one
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.text_events


class _Events:
    """Incremental SSE parsing of chat or text completion chunks."""

    def __init__(self, record: Record) -> None:
        self._buf = b""
        self._record = record
        self._last: float | None = None
        self._start = time.perf_counter()

    def restart(self) -> None:
        self._start = time.perf_counter()

    def feed(self, data: bytes) -> None:
        self._buf += data
        now = time.perf_counter()
        while (end := self._buf.find(b"\n\n")) >= 0:
            event, self._buf = self._buf[:end], self._buf[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    self._payload(json.loads(line[5:]), now)

    def _payload(self, payload: dict, now: float) -> None:
        if "error" in payload:
            raise RuntimeError(f"error event: {json.dumps(payload)[:300]}")
        usage = payload.get("usage")
        if usage:
            self._record.completion_tokens = usage.get("completion_tokens")
            self._record.prompt_tokens = usage.get("prompt_tokens")
        for choice in payload.get("choices") or []:
            self._record.finish_reason = choice.get("finish_reason") or self._record.finish_reason
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            if not text:
                continue
            self._record.text_events += 1
            if self._last is None:
                self._record.ttft = now - self._start
            else:
                self._record.itl.append(now - self._last)
            self._last = now


class _Pool:
    """Idle keep-alive connections to one host."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        if self._idle:
            return (*self._idle.pop(), True)
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    def put(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._idle.append(conn)

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_body(reader: asyncio.StreamReader, headers: dict, events: _Events | None) -> bytes:
    kept = []
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            data = (await reader.readexactly(size + 2))[:-2]
            if events is not None:
                events.feed(data)
            kept.append(data[-64:])
    else:
        n = headers.get("content-length")
        data = await (reader.readexactly(int(n)) if n is not None else reader.read())
        if events is not None:
            events.feed(data)
        kept.append(data)
    return b"".join(kept)


async def _send(pool: _Pool, raw: bytes, record: Record, parse: bool, t0: float) -> None:
    reader, writer, reused = await pool.get()
    events = _Events(record) if parse else None
    record.start = time.perf_counter() - t0
    started = time.perf_counter()
    try:
        writer.write(raw)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError):
            if not reused:
                raise
            # The server closed an idle keep-alive connection (llama-server does): like any
            # HTTP client, reconnect and send again; the clock restarts.
            writer.close()
            reader, writer = await asyncio.open_connection(pool.host, pool.port)
            started = time.perf_counter()
            if events is not None:
                events.restart()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, headers, events)
        record.e2e = time.perf_counter() - started
        if status != 200 or b"[DONE]" not in body:
            raise RuntimeError(f"HTTP {status}: {body[-300:]!r}")
    except BaseException:
        writer.close()
        raise
    if headers.get("connection", "").lower() == "close":
        writer.close()
    else:
        pool.put((reader, writer))


async def _run_item(
    pool: _Pool, item: list[bytes], index: int, parse: bool, t0: float, records: list[Record]
) -> None:
    for turn, raw in enumerate(item):
        record = Record(index, turn)
        records.append(record)
        try:
            await _send(pool, raw, record, parse, t0)
        except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
            record.e2e = None
            record.error = f"{type(exc).__name__}: {exc}"[:400]
            return  # a conversation stops at its first failed turn


def _raw(url: str, work: list[list[dict]]) -> tuple[str, int, list[list[bytes]]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    items = []
    for item in work:
        raws = []
        for req in item:
            data = json.dumps(req["body"]).encode()
            extra = "".join(f"{h}\r\n" for h in req.get("headers", ()))
            head = (
                f"POST {req.get('path', parts.path)} HTTP/1.1\r\nhost: {host}:{port}\r\n"
                f"content-type: application/json\r\naccept: text/event-stream\r\n"
                f"content-length: {len(data)}\r\n{extra}\r\n"
            )
            raws.append(head.encode() + data)
        items.append(raws)
    return host, port, items


async def run_load(
    url: str,
    work: list[list[dict]],
    *,
    items: int,
    duration: float,
    concurrency: int | None = None,
    rate: float | None = None,
    max_concurrency: int | None = None,
    seed: int = 0,
    parse: bool = False,
) -> dict:
    """Runs ``items`` items (cycling through ``work``) closed-loop at ``concurrency`` or
    open-loop at ``rate``; no new item starts after ``duration`` seconds, and what is still
    in flight a further ``duration`` (at least 30 s) later is cancelled and counted as failed."""
    host, port, raws = _raw(url, work)
    pool = _Pool(host, port)
    records: list[Record] = []
    t0 = time.perf_counter()
    deadline = t0 + duration
    tasks: list[asyncio.Task] = []
    if rate is None:
        counter = iter(range(items))

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() >= deadline:
                    return
                await _run_item(pool, raws[i % len(raws)], i, parse, t0, records)

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency or 1)]
    else:
        gate = asyncio.Semaphore(max_concurrency or items)
        rng = random.Random(seed)

        async def gated(i: int) -> None:
            async with gate:
                await _run_item(pool, raws[i % len(raws)], i, parse, t0, records)

        for i in range(items):
            if time.perf_counter() >= deadline:
                break
            tasks.append(asyncio.ensure_future(gated(i)))
            if not math.isinf(rate):
                await asyncio.sleep(rng.expovariate(rate))
    drain = max(duration, 30.0)
    _, late = await asyncio.wait(tasks, timeout=max(deadline + drain - time.perf_counter(), 1))
    for task in late:
        task.cancel()
    for record in records:
        if record.e2e is None and record.error is None:
            record.error = "unfinished at the time limit"
    wall = time.perf_counter() - t0
    pool.close()
    return {"wall_s": wall, "records": [asdict(r) for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--work", required=True, help="JSON file: items, each a list of {body, headers?, path?}"
    )
    parser.add_argument("--items", type=int, required=True, help="items to start (cycled)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, help="closed loop with this many workers")
    parser.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parse-events", action="store_true", help="record TTFT, ITL, tokens")
    args = parser.parse_args()
    with open(args.work) as f:
        work = json.load(f)
    result = run_fast(
        run_load(
            args.url,
            work,
            items=args.items,
            duration=args.duration,
            concurrency=args.concurrency,
            rate=args.rate,
            max_concurrency=args.max_concurrency,
            seed=args.seed,
            parse=args.parse_events,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
