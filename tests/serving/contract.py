"""Renders one request's choice events both ways and folds the stream as a client would."""

from __future__ import annotations

import json

import httpx

from modelhub.serving.backends.base import Backend, RequestJob
from modelhub.serving.render import ChunkRenderer, CompletionBuilder
from tests.sse import sse_chunks

__all__ = ["ask", "both_renderings", "fold_chunks"]


async def _events(backend: Backend, job: RequestJob) -> list[tuple[int, object]]:
    events = []
    for index in range(job.request.n):
        async for event in backend.generate(job, index):
            events.append((index, event))
    return events


def fold_chunks(chunks: list[dict]) -> dict:
    """What a client assembles from stream chunks, in the non-streamed response's shape."""
    choices: dict[int, dict] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for c in chunk["choices"]:
            choice = choices.setdefault(
                c["index"],
                {"content": "", "calls": {}, "logprobs": [], "finish_reason": None},
            )
            delta = c["delta"]
            choice["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                entry = choice["calls"].setdefault(
                    call["index"], {"id": None, "name": "", "arguments": ""}
                )
                entry["id"] = entry["id"] or call.get("id")
                function = call.get("function") or {}
                entry["name"] += function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
            if c.get("logprobs"):
                choice["logprobs"] += c["logprobs"]["content"]
            choice["finish_reason"] = c.get("finish_reason") or choice["finish_reason"]
    return {
        "choices": [
            {
                "index": i,
                "content": c["content"] or (None if c["calls"] else ""),
                "tool_calls": [
                    {
                        "id": e["id"],
                        "type": "function",
                        "function": {"name": e["name"], "arguments": e["arguments"]},
                    }
                    for _, e in sorted(c["calls"].items())
                ],
                "logprobs": c["logprobs"],
                "finish_reason": c["finish_reason"],
            }
            for i, c in sorted(choices.items())
        ],
        "usage": usage,
    }


def _whole(completion: dict) -> dict:
    return {
        "choices": [
            {
                "index": c["index"],
                "content": c["message"]["content"],
                "tool_calls": c["message"].get("tool_calls") or [],
                "logprobs": (c["logprobs"] or {}).get("content") or [],
                "finish_reason": c["finish_reason"],
            }
            for c in completion["choices"]
        ],
        "usage": completion["usage"],
    }


async def both_renderings(backend: Backend, job: RequestJob) -> tuple[dict, dict]:
    """(non-streamed, streamed-and-folded), both in one comparable shape."""
    from modelhub.serving.accounting import Tally

    events = await _events(backend, job)
    tally = Tally(prompt_tokens=job.prompt.prompt_tokens)
    request = job.request
    builder = CompletionBuilder(job.id, request.model, request.n, request.logprobs)
    renderer = ChunkRenderer(job.id, request.model, 0, request.n)
    chunks = [c.model_dump(mode="json") for c in renderer.opening()]
    for index, event in events:
        tally.see(index, event)
        builder.add(index, event)
        chunks += [c.model_dump(mode="json") for c in renderer.render(index, event)]
    usage = tally.usage()
    chunks.append(renderer.usage(usage).model_dump(mode="json"))
    whole = json.loads(builder.build(usage).model_dump_json())
    return _whole(whole), fold_chunks(chunks)


def ask(base_url: str, body: dict, stream: bool) -> dict:
    """One chat request to a real server, as ``_whole``'s comparable shape: the response, or
    the stream folded as a client folds it. Usage is the prompt and completion counts."""
    with httpx.Client(base_url=base_url, timeout=120) as http:
        if not stream:
            r = http.post("/v1/chat/completions", json={**body, "stream": False})
            assert r.status_code == 200, r.text
            result = _whole(r.json())
        else:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            with http.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200, r.read()
                chunks = list(sse_chunks(r.iter_lines()))
            assert not any("error" in c for c in chunks), chunks
            result = fold_chunks(chunks)
    usage = result["usage"]
    result["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens")}
    return result
