"""Chat completions on the demo model, through the openai SDK and raw HTTP."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
from tests.conftest import DATA, DEMO_MODEL, LONG_ANSWER
from tests.polling import poll_until
from tests.sse import DONE, sse_data

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(value[0])] if value else []
    return type(value).__name__


def test_response_has_every_key_of_the_seed_example(http):
    seed = json.loads((DATA / "seed_response.json").read_text())
    r = http.post(
        "/v1/chat/completions", json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 8}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == list(seed)
    assert list(body["choices"][0]) == list(seed["choices"][0])
    assert list(body["choices"][0]["message"]) == list(seed["choices"][0]["message"])
    assert list(body["usage"]) == list(seed["usage"])
    # Same types where the seed has a value (its tool_calls list is empty in both).
    for key in ("id", "object", "created", "model"):
        assert type(body[key]) is type(seed[key])
    assert re.fullmatch(
        r"chatcmpl-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", body["id"]
    )
    assert body["choices"][0]["message"]["tool_calls"] == []
    for null_key in (
        "refusal",
        "annotations",
        "audio",
        "function_call",
        "reasoning",
        "reasoning_content",
    ):
        assert body["choices"][0]["message"][null_key] is None
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 8


def test_sdk_answers_a_question(client):
    completion = client.chat.completions.create(
        model=DEMO_MODEL, messages=QUESTION, max_tokens=16, temperature=0
    )
    choice = completion.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 5


def test_stream_with_usage_follows_openai_chunk_order(http):
    body = {
        "model": DEMO_MODEL,
        "messages": QUESTION,
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    assert all(line.startswith("data: ") for line in lines if line)
    events = list(sse_data(lines))
    assert events[-1] == DONE
    chunks = [json.loads(event) for event in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] in ("stop", "length")
    content_chunks = chunks[1:-2]
    assert content_chunks and all(c["choices"][0]["finish_reason"] is None for c in content_chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content_chunks)
    assert usage_chunk["usage"]["completion_tokens"] >= 1
    assert (
        usage_chunk["usage"]["total_tokens"]
        == usage_chunk["usage"]["prompt_tokens"] + usage_chunk["usage"]["completion_tokens"]
    )
    # The streamed text is the same text a non-streamed greedy request returns.
    plain = http.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert plain["choices"][0]["message"]["content"] == text


def test_sdk_streaming(client):
    stream = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_eight_concurrent_requests_run_in_one_batch(client, http):
    def ask(i: int) -> int:
        c = client.chat.completions.create(
            model=DEMO_MODEL,
            messages=[{"role": "user", "content": f"Count from {i} to {i + 20}."}],
            max_tokens=24,
            temperature=0.5,
            seed=i,
        )
        return c.usage.completion_tokens

    before = _batch_histogram(http)
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(ask, range(8)))
    assert all(n >= 1 for n in counts)
    after = _batch_histogram(http)
    # Decode steps that sampled 5 or more sequences at once happened during these requests.
    grew = after["+Inf"] - before["+Inf"] - (after["4.0"] - before["4.0"])
    assert grew > 0, (before, after)


def _batch_histogram(http) -> dict[str, float]:
    text = http.get("/metrics").text
    buckets = {}
    for m in re.finditer(
        r'modelhub_engine_batch_sequences_bucket\{le="([^"]+)",model="google/gemma-3-270m"\} (\S+)',
        text,
    ):
        buckets[m.group(1)] = float(m.group(2))
    return buckets or {"+Inf": 0.0, "4.0": 0.0}


def test_same_seed_gives_same_text(client):
    def sample(seed: int) -> str:
        return (
            client.chat.completions.create(
                model=DEMO_MODEL,
                messages=[{"role": "user", "content": "Write a sentence about the sea."}],
                max_tokens=20,
                temperature=1.0,
                seed=seed,
            )
            .choices[0]
            .message.content
        )

    first, again, other = sample(1234), sample(1234), sample(99)
    assert first == again
    assert first != other


def test_stop_string_is_never_emitted(client):
    messages = [{"role": "user", "content": "List the planets of the solar system."}]
    full = client.chat.completions.create(
        model=DEMO_MODEL, messages=messages, max_tokens=40, temperature=0
    )
    text = full.choices[0].message.content
    words = text.split()
    assert len(words) > 4, text
    stop = words[3]
    cut = client.chat.completions.create(
        model=DEMO_MODEL, messages=messages, max_tokens=40, temperature=0, stop=[stop, "zzzz"]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    streamed = client.chat.completions.create(
        model=DEMO_MODEL, messages=messages, max_tokens=40, temperature=0, stop=stop, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == text[: text.index(stop)]
    )


def test_n_choices(client):
    # Greedy: the second request reuses the first one's cached prompt, and llama.cpp's CPU
    # kernels give slightly different logits for a different batch shape, which a sampled
    # (temperature 1) choice can turn into a different token.
    completion = client.chat.completions.create(
        model=DEMO_MODEL, messages=QUESTION, max_tokens=8, n=2, temperature=0.0, seed=7
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.usage.completion_tokens >= 2
    streamed = client.chat.completions.create(
        model=DEMO_MODEL, messages=QUESTION, max_tokens=8, n=2, temperature=0.0, seed=7, stream=True
    )
    texts = {0: "", 1: ""}
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {c.index: c.message.content for c in completion.choices}


def test_logprobs(client):
    completion = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        max_tokens=5,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
    )
    entries = completion.choices[0].logprobs.content
    assert len(entries) == completion.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # Greedy decoding picks the most likely token.
        assert entry.top_logprobs[0].logprob == max(t.logprob for t in entry.top_logprobs)
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-4


def test_penalties_and_user_and_unknown_fields_are_accepted(http):
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": DEMO_MODEL,
            "messages": [{"role": "system", "content": "Be brief."}, *QUESTION],
            "max_completion_tokens": 6,
            "presence_penalty": 1.0,
            "frequency_penalty": 0.5,
            "top_p": 0.9,
            "user": "someone",
            "some_vendor_extra": {"x": 1},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 6


def test_response_format_json_object_gives_json(client):
    completion = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "capital",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 20}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        },
    )
    assert completion.choices[0].finish_reason == "stop", completion
    data = json.loads(completion.choices[0].message.content)
    assert set(data) == {"city"}


def test_health_ready_metrics(http):
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = http.get("/metrics").text
    for name in (
        "modelhub_requests_total",
        "modelhub_prompt_tokens_total",
        "modelhub_completion_tokens_total",
        "modelhub_time_to_first_token_seconds",
        "modelhub_time_per_output_token_seconds",
        "modelhub_engine_queue_depth",
        "modelhub_engine_running_sequences",
    ):
        assert name in metrics, name
    assert re.search(
        r'modelhub_requests_total\{model="google/gemma-3-270m",status="200"\} [1-9]', metrics
    )


def test_disconnect_mid_stream_frees_the_slot(tight_server):
    body = {
        "model": DEMO_MODEL,
        "messages": QUESTION,
        "max_tokens": 2000,
        "stream": True,
        "response_format": LONG_ANSWER,
    }
    with httpx.Client(base_url=tight_server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for received, _ in enumerate(sse_data(r.iter_lines()), 1):
                if received >= 3:
                    break
        # The server notices the closed connection within moments and frees the only slot.
        poll_until(
            lambda: re.search(
                r'modelhub_engine_running_sequences\{model="google/gemma-3-270m"\} (\S+)',
                http.get("/metrics").text,
            ),
            lambda running: float(running.group(1)) == 0,
            timeout=5,
        )
        # A new request is served rather than refused with 503 (one slot, no queue).
        r = http.post(
            "/v1/chat/completions",
            json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
