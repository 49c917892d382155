"""A minimal vLLM-like upstream: fixed replies, as cheaply as it can.

It is the thing *not* under test in the gateway benchmark, so it is a bare asyncio
protocol (no framework): HTTP/1.1 keep-alive, and

- ``POST .../chat/completions`` with ``max_tokens`` <= 16: a fixed 12-chunk reply streamed
  as SSE in one write (a burst), or one JSON body;
- with a larger ``max_tokens``: that many content chunks, one write each, one every
  ``--pace-ms`` milliseconds (a steady decode, as a busy vLLM streams);
- ``POST /tokenize``: vLLM's answer (``count``, ``max_model_len``, ``tokens``), counting a
  token per 4 bytes of the messages, so a gateway pays the round trip production pays;
- ``GET .../models`` for health checks.

Run: ``python -m bench.fake_upstream --port P [--pace-ms 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bench.aio import run_fast

__all__ = ["REPLY_WORDS", "main"]

# The fixed reply: a dozen content chunks, like a short chat answer.
REPLY_WORDS = [
    "The",
    " image",
    " shows",
    " a",
    " thin",
    " white",
    " line",
    " on",
    " a",
    " dark",
    " blue",
    " background.",
]
_MODEL = "fake"
_BURST_MAX = 16
MAX_MODEL_LEN = 131072


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(model: str, include_usage: bool) -> bytes:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
    events = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for word in REPLY_WORDS:
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        )
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        events.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 20,
                    "completion_tokens": len(REPLY_WORDS),
                    "total_tokens": 20 + len(REPLY_WORDS),
                },
            }
        )
    body = (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )
    return _chunk(body) + b"0\r\n\r\n"


def _json(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(REPLY_WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": len(REPLY_WORDS),
                "total_tokens": 20 + len(REPLY_WORDS),
            },
        }
    ).encode()


class _Cache:
    """Responses depend only on (model, stream, include_usage): build each once."""

    def __init__(self) -> None:
        self._memo: dict[tuple, bytes] = {}

    def response(self, model: str, stream: bool, usage: bool) -> bytes:
        key = (model, stream, usage)
        if key not in self._memo:
            if stream:
                head = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                self._memo[key] = head + _sse(model, usage)
            else:
                body = _json(model)
                self._memo[key] = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
        return self._memo[key]


_CACHE = _Cache()
_MODELS = json.dumps({"object": "list", "data": [{"id": _MODEL, "object": "model"}]}).encode()


def _tokenize(body: bytes) -> bytes:
    request = json.loads(body or b"{}")
    text = json.dumps(request.get("messages") or request.get("prompt") or "")
    count = len(text) // 4 + 1
    answer = json.dumps(
        {"count": count, "max_model_len": MAX_MODEL_LEN, "tokens": list(range(count))}
    ).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(answer),
        answer,
    )


_PACED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _paced_events(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    """The SSE events of a ``chunks``-token reply, each framed as one HTTP chunk."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [
        {**base, "choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}]}
        for i in range(chunks)
    ]
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    if include_usage:
        last["usage"] = {
            "prompt_tokens": 20,
            "completion_tokens": chunks,
            "total_tokens": 20 + chunks,
        }
    events.append(last)
    frames = [_chunk(b"data: " + json.dumps(e).encode() + b"\n\n") for e in events]
    frames[-1] += _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return frames


# Paced replies by (model, chunks, include_usage), built once.
_PACED: dict[tuple, list[bytes]] = {}


class _Protocol(asyncio.Protocol):
    pace_s = 0.002

    def __init__(self) -> None:
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                return
            body = self._buf[end + 4 : end + 4 + length]
            self._buf = self._buf[end + 4 + length :]
            answer = self._answer(lines[0], body)
            if answer is not None:
                self._transport.write(answer)

    def _pace(self, frames: list[bytes], i: int = 0) -> None:
        if self._transport.is_closing():
            return
        self._transport.write(frames[i])
        if i + 1 < len(frames):
            asyncio.get_running_loop().call_later(self.pace_s, self._pace, frames, i + 1)

    def _answer(self, request_line: str, body: bytes) -> bytes | None:
        method, path, _ = request_line.split(" ", 2)
        if method == "POST" and path.rstrip("/").endswith("/tokenize"):
            return _tokenize(body)
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(_MODELS), _MODELS)
            )
        if method == "POST" and path.endswith("/chat/completions"):
            request = json.loads(body or b"{}")
            usage = bool((request.get("stream_options") or {}).get("include_usage"))
            chunks = int(request.get("max_tokens") or 0)
            if request.get("stream") and chunks > _BURST_MAX:
                key = (str(request.get("model", _MODEL)), chunks, usage)
                if key not in _PACED:
                    _PACED[key] = _paced_events(*key)
                self._transport.write(_PACED_HEAD)
                self._pace(_PACED[key])
                return None
            return _CACHE.response(
                str(request.get("model", _MODEL)), bool(request.get("stream")), usage
            )
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


async def _serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Protocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pace-ms", type=float, default=2.0, help="gap between paced chunks")
    args = parser.parse_args()
    _Protocol.pace_s = args.pace_ms / 1000
    run_fast(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
