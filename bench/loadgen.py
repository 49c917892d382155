"""A bounded, closed-loop HTTP load generator for streaming chat completions.

``concurrency`` workers each own one keep-alive connection and send requests back to back
until ``requests`` are done or ``duration`` seconds pass. Each response is read to its end
(``data: [DONE]``); latency is measured to the last byte, time to first token to the first
event with non-empty content. It speaks raw HTTP/1.1 over asyncio streams (no client
library) so that it costs far less CPU than any server under test, and every target is
measured with exactly the same client. Loopback only.

Run as its own process (``python -m bench.loadgen ...``): it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.aio import run_fast

__all__ = ["Sample", "percentile", "run_load"]


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    first_error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class _Events:
    """Incremental SSE parsing; only used when tokens and TTFT are wanted (engine bench)."""

    def __init__(self) -> None:
        self._buf = b""
        self.content_events = 0
        self.usage_tokens: int | None = None
        self.first_content: float | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data
        while (end := self._buf.find(b"\n\n")) >= 0:
            event, self._buf = self._buf[:end], self._buf[end + 2 :]
            for line in event.split(b"\n"):
                if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                    continue
                payload = json.loads(line[5:])
                usage = payload.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    self.usage_tokens = usage["completion_tokens"]
                for choice in payload.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        self.content_events += 1
                        if self.first_content is None:
                            self.first_content = time.perf_counter()


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], events: _Events | None
) -> bytes:
    """Reads a whole response body; with ``events`` it is parsed as it arrives."""
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
    elif "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
        if events is not None:
            events.feed(data)
        kept.append(data)
    else:  # read to close
        data = await reader.read()
        if events is not None:
            events.feed(data)
        kept.append(data)
    return b"".join(kept)


async def _worker(
    host: str, port: int, requests: list[bytes], parse: bool, state: dict, sample: Sample
) -> None:
    reader = writer = None
    i = state["next_body"]
    state["next_body"] += 1
    while state["left"] > 0 and time.perf_counter() < state["deadline"]:
        state["left"] -= 1
        request = requests[i % len(requests)]
        i += 1
        try:
            reused = writer is not None
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            start = time.perf_counter()
            writer.write(request)
            try:
                status_and_headers = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError):
                if not reused:
                    raise
                # The server closed the idle keep-alive connection (llama-server does): like any
                # HTTP client, reconnect and send again; the clock restarts.
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                start = time.perf_counter()
                writer.write(request)
                status_and_headers = await reader.readuntil(b"\r\n\r\n")
            lines = status_and_headers.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            events = _Events() if parse else None
            body = await _read_body(reader, headers, events)
            end = time.perf_counter()
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
            if status != 200 or b"[DONE]" not in body:
                raise RuntimeError(f"HTTP {status}: {body[-300:]!r}")
            sample.latencies.append(end - start)
            if events is not None:
                if events.first_content is not None:
                    sample.ttfts.append(events.first_content - start)
                sample.tokens += (
                    events.usage_tokens
                    if events.usage_tokens is not None
                    else events.content_events
                )
        except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
            sample.errors += 1
            sample.first_error = sample.first_error or f"{type(exc).__name__}: {exc}"[:400]
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)  # a refusing server must not turn this into a busy loop
    if writer is not None:
        writer.close()


def _raw_requests(url: str, bodies: list[dict], headers: list[str]) -> tuple[str, int, list[bytes]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{h}\r\n" for h in headers)
    raw = []
    for body in bodies:
        data = json.dumps(body).encode()
        head = (
            f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"accept: text/event-stream\r\ncontent-length: {len(data)}\r\n{extra}\r\n"
        )
        raw.append(head.encode() + data)
    return host, port, raw


async def run_load(
    url: str,
    bodies: list[dict],
    concurrency: int,
    requests: int,
    duration: float,
    headers: list[str] = (),
    parse: bool = False,
) -> dict:
    host, port, raw = _raw_requests(url, bodies, list(headers))
    sample = Sample()
    started = time.perf_counter()
    state = {"left": requests, "deadline": started + duration, "next_body": 0}
    await asyncio.gather(
        *(_worker(host, port, raw, parse, state, sample) for _ in range(concurrency))
    )
    wall = time.perf_counter() - started
    ms = lambda v: None if v is None else round(v * 1000, 2)
    done = len(sample.latencies)
    return {
        "concurrency": concurrency,
        "completed": done,
        "errors": sample.errors,
        "first_error": sample.first_error,
        "wall_s": round(wall, 3),
        "rps": done / wall if wall else 0.0,
        "latency_p50_ms": ms(percentile(sample.latencies, 50)),
        "latency_p99_ms": ms(percentile(sample.latencies, 99)),
        "ttft_p50_ms": ms(percentile(sample.ttfts, 50)),
        "ttft_p99_ms": ms(percentile(sample.ttfts, 99)),
        "tokens": sample.tokens,
        "tokens_per_s": sample.tokens / wall if wall else 0.0,
        "tokens_per_request": sample.tokens / done if done else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--bodies", required=True, help="JSON file: a list of request bodies, sent in turn"
    )
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument(
        "--parse-events", action="store_true", help="count tokens and time to first token"
    )
    args = parser.parse_args()
    with open(args.bodies) as f:
        bodies = json.load(f)
    result = run_fast(
        run_load(
            args.url,
            bodies,
            args.concurrency,
            args.requests,
            args.duration,
            args.header,
            args.parse_events,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
