"""One truth, two renderings: the same choice events give the same content, tool calls,
logprobs, finish reason and usage, streamed or not, from the local backend (a real format
around a scripted token engine) and from the upstream backend (recorded upstream SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelhub.engines.base import EngineStats, FinishEvent, GenerationJob, TokenEvent
from modelhub.formats.mistral import MistralFormat
from modelhub.formats.plain import PlainFormat
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.backends.base import RequestJob
from modelhub.serving.backends.local import LocalBackend
from modelhub.serving.conversation import to_conversation
from tests.serving.contract import both_renderings

MODEL = "mistralai/Mistral-Small-24B-Instruct"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def tok(text: str, *, special: bool = False, logprob: float | None = None) -> TokenEvent:
    top = ((text, logprob), ("x", logprob - 1.0)) if logprob is not None else ()
    return TokenEvent(0, text, logprob, top, special)


class ScriptedEngine:
    """A token engine that replays one script per choice (the job id ends in /<index>)."""

    name = "scripted"
    max_context = 4096
    ready = True

    def __init__(self, scripts: list[tuple[list[TokenEvent], str]]):
        self._scripts = scripts
        self.jobs: list[GenerationJob] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> EngineStats:
        return EngineStats()

    async def generate(self, job: GenerationJob) -> AsyncIterator:
        self.jobs.append(job)
        tokens, reason = self._scripts[int(job.request_id.rsplit("/", 1)[1])]
        emitted = 0
        for token in tokens[: job.params.max_tokens]:
            emitted += 1
            yield token
            await asyncio.sleep(0)
        if emitted == job.params.max_tokens and emitted < len(tokens):
            reason = "length"
        yield FinishEvent(reason, len(job.prompt.token_ids), emitted)


class WordTokenizer:
    def encode(self, text: str, *, add_bos: bool) -> list[int]:
        return [1] * (len(text.split()) + int(add_bos))


@pytest.fixture(scope="module")
def mistral_format(tmp_path_factory):
    return MistralFormat(None, tmp_path_factory.mktemp("cache"))


def _job(chat_format, body: dict) -> RequestJob:
    request = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], **body}
    )
    conversation = to_conversation(request)
    prompt = chat_format.encode(conversation, {})
    return RequestJob(
        "chatcmpl-test", request, conversation, prompt, {}, request.requested_max_tokens or 64
    )


CALL = [
    tok("[TOOL_CALLS]", special=True),
    tok("get_weather"),
    tok("[ARGS]", special=True),
    tok('{"city": '),
    tok('"Paris"}'),
]

LOCAL_CASES = {
    "text": ({}, [([tok("Hello"), tok(","), tok(" world")], "stop")]),
    "tool call, auto": ({"tools": [WEATHER]}, [(CALL, "stop")]),
    "tool call, required": ({"tools": [WEATHER], "tool_choice": "required"}, [(CALL, "stop")]),
    "tool call, named": (
        {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        [(CALL, "stop")],
    ),
    "truncated tool call": ({"tools": [WEATHER], "max_tokens": 4}, [(CALL, "stop")]),
    "truncated in the name": ({"tools": [WEATHER], "max_tokens": 2}, [(CALL, "stop")]),
    "control tokens never leak": (
        {},
        [
            (
                [
                    tok("Hi"),
                    tok("[IMG]", special=True),
                    tok("[TOOL_CALLS]", special=True),
                    tok("!"),
                ],
                "stop",
            )
        ],
    ),
    "tool markers without tools": ({}, [(CALL, "stop")]),
    "logprobs": (
        {"logprobs": True, "top_logprobs": 2},
        [
            (
                [
                    tok("A", logprob=-0.1),
                    tok("[IMG]", special=True, logprob=-2.0),
                    tok("B", logprob=-0.3),
                ],
                "stop",
            )
        ],
    ),
    "stop string across tokens": (
        {"stop": ["END"]},
        [([tok("abc"), tok("EN"), tok("Dxyz"), tok("more")], "stop")],
    ),
    "n=2": (
        {"n": 2, "tools": [WEATHER]},
        [([tok("Sunny")], "stop"), (CALL, "stop")],
    ),
}


@pytest.mark.parametrize("case", list(LOCAL_CASES))
async def test_local_backend_renders_the_same_both_ways(case, mistral_format):
    body, scripts = LOCAL_CASES[case]
    job = _job(mistral_format, body)
    backend = LocalBackend(mistral_format, ScriptedEngine(scripts), "scripted")
    whole, streamed = await both_renderings(backend, job)
    assert whole == streamed
    for choice in whole["choices"]:
        assert "[" not in (choice["content"] or ""), "control markup leaked into content"
        assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    assert whole["usage"]["prompt_tokens"] == len(job.prompt.token_ids)


async def test_tool_calls_and_truncation_are_reported_as_such(mistral_format):
    backend = LocalBackend(mistral_format, ScriptedEngine([(CALL, "stop")]), "scripted")
    whole, _ = await both_renderings(backend, _job(mistral_format, {"tools": [WEATHER]}))
    (choice,) = whole["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["content"] is None
    (call,) = choice["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert len(call["id"]) == 9 and call["id"].isalnum()

    cut = LocalBackend(mistral_format, ScriptedEngine([(CALL, "stop")]), "scripted")
    whole, _ = await both_renderings(
        cut, _job(mistral_format, {"tools": [WEATHER], "max_tokens": 4})
    )
    (choice,) = whole["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["content"] is None
    assert choice["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": '}
    assert whole["usage"]["completion_tokens"] == 4


async def test_stop_strings_are_applied_once_and_bill_every_token(mistral_format):
    scripts = [([tok("abc"), tok("EN"), tok("Dxyz"), tok("more")], "stop")]
    engine = ScriptedEngine(scripts)
    whole, _ = await both_renderings(
        LocalBackend(mistral_format, engine, "scripted"), _job(mistral_format, {"stop": ["END"]})
    )
    assert whole["choices"][0]["content"] == "abc"
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["completion_tokens"] == 3  # the tokens generated up to the stop


async def test_logprobs_cover_every_token_in_both_renderings(mistral_format):
    body, scripts = LOCAL_CASES["logprobs"]
    whole, _ = await both_renderings(
        LocalBackend(mistral_format, ScriptedEngine(scripts), "scripted"),
        _job(mistral_format, body),
    )
    (choice,) = whole["choices"]
    assert [e["token"] for e in choice["logprobs"]] == ["A", "[IMG]", "B"]
    assert all(len(e["top_logprobs"]) == 2 for e in choice["logprobs"])
    assert choice["content"] == "AB"


async def test_plain_format_passes_text_through():
    chat_format = PlainFormat(WordTokenizer())
    scripts = [([tok(" Paris"), tok("."), tok("<eos>", special=True)], "stop")]
    whole, streamed = await both_renderings(
        LocalBackend(chat_format, ScriptedEngine(scripts), "scripted"), _job(chat_format, {})
    )
    assert whole == streamed
    assert whole["choices"][0]["content"] == "Paris."


# Upstream: SSE shaped as vLLM streams it -------------------------------------------------
def _sse(chunks: list[dict]) -> bytes:
    import json

    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + b"data: [DONE]\n\n"


def _vllm_stream(deltas: list[dict], finish: str, completion_tokens: int, logprobs=None) -> bytes:
    head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    for i, delta in enumerate(deltas):
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        if logprobs:
            choice["logprobs"] = {"content": [logprobs[i]]}
        chunks.append({**head, "choices": [choice]})
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": completion_tokens,
        "total_tokens": 11 + completion_tokens,
    }
    chunks.append({**head, "choices": [], "usage": usage})
    return _sse(chunks)


def _vllm_call(arguments: list[str]) -> list[dict]:
    first = {"index": 0, "id": "Ab3dE6gH9", "type": "function", "function": {"name": "get_weather"}}
    return [{"tool_calls": [first]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in arguments
    ]


UPSTREAM_CASES = {
    "text": ({}, [_vllm_stream([{"content": "Hello"}, {"content": " world"}], "stop", 2)]),
    "tool call": (
        {"tools": [WEATHER]},
        [_vllm_stream(_vllm_call(['{"city": ', '"Paris"}']), "tool_calls", 9)],
    ),
    "named tool call (vLLM says stop)": (
        {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        [_vllm_stream(_vllm_call(['{"city": "Paris"}']), "stop", 7)],
    ),
    "truncated tool call": (
        {"tools": [WEATHER], "max_tokens": 3},
        [_vllm_stream(_vllm_call(['{"ci']), "length", 3)],
    ),
    "logprobs": (
        {"logprobs": True, "top_logprobs": 1},
        [
            _vllm_stream(
                [{"content": "A"}, {"content": "B"}],
                "stop",
                2,
                logprobs=[
                    {
                        "token": t,
                        "logprob": -0.5,
                        "bytes": [ord(t)],
                        "top_logprobs": [{"token": t, "logprob": -0.5, "bytes": [ord(t)]}],
                    }
                    for t in "AB"
                ],
            )
        ],
    ),
    "n=2": (
        {"n": 2},
        [
            _vllm_stream([{"content": "one"}], "stop", 1),
            _vllm_stream([{"content": "two"}], "length", 1),
        ],
    ),
}


@pytest.mark.parametrize("case", list(UPSTREAM_CASES))
async def test_upstream_backend_renders_the_same_both_ways(case, mistral_format):
    from modelhub.serving.backends.upstream import UpstreamBackend
    from tests.serving.replay import replay_upstream

    body, transcripts = UPSTREAM_CASES[case]
    job = _job(mistral_format, body)
    with replay_upstream(transcripts) as (url, received):
        backend = UpstreamBackend(
            [url],
            MODEL,
            chat_format=mistral_format,
            connect_timeout_s=3,
            read_timeout_s=10,
            health_interval_s=60,
        )
        try:
            whole, streamed = await both_renderings(backend, job)
        finally:
            await backend.close()
    assert whole == streamed
    assert whole["usage"]["prompt_tokens"] == 11  # the upstream's own count is billed
    assert len(received) == job.request.n
    for sent in received:
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert "n" not in sent
    if job.request.tools:
        (choice,) = whole["choices"]
        assert choice["tool_calls"][0]["function"]["name"] == "get_weather"
        assert choice["finish_reason"] == ("length" if "truncated" in case else "tool_calls")
        assert choice["content"] is None
