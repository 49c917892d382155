"""The vLLM double against what the openai SDK and vLLM's documented wire shapes expect."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.formats.test_mistral import seed_request
from tests.sse import TRANSCRIPTS, load_transcript, sse_chunks, sse_data
from tests.upstream_transcripts import TRANSCRIPT_REQUESTS, record_transcript
from tests.vllm_double import SERVED_MODEL, Reply, VllmDouble

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ARGS = '{"city": "Paris", "unit": "celsius"}'


@pytest.fixture
def sdk(vllm_double) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_double.api_url, api_key="unused", max_retries=0, timeout=30)


def _stream(sdk: openai.OpenAI, **body) -> list:
    body = {"model": SERVED_MODEL, "messages": ASK, "stream": True, **body}
    return list(sdk.chat.completions.create(**body))


def _assemble_calls(chunks) -> dict[int, dict]:
    """Tool-call deltas joined the way OpenAI clients join them: by index."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or delta.id
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return calls


def _finish(chunks) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


def _tokenize(double: VllmDouble, **body) -> dict:
    r = httpx.post(f"{double.base_url}/tokenize", json={"model": SERVED_MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_text_stream_parses_and_bills_the_exact_prompt(vllm_double, sdk):
    vllm_double.script(Reply(content="Sunny, 21 °C, light wind."))
    chunks = _stream(sdk, max_tokens=64, stream_options={"include_usage": True})
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in [*middle, finish])
    assert text == "Sunny, 21 °C, light wind."
    assert len(middle) >= 5  # one chunk per token, not one per reply
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content == ""
    assert usage.choices == []
    assert usage.usage.prompt_tokens == _tokenize(vllm_double, messages=ASK)["count"]
    # Every token and the end-of-sequence token are billed.
    assert usage.usage.completion_tokens == len(middle) + 1
    assert len({c.id for c in chunks}) == 1


def test_the_raw_stream_has_vllms_field_shapes(vllm_double):
    vllm_double.script(Reply(content="Hi"))
    body = {
        "model": SERVED_MODEL,
        "messages": ASK,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{vllm_double.api_url}/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(sse_data(r.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hi"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert chunks[-2]["choices"][0]["stop_reason"] is None
    assert "usage" not in chunks[1]
    assert chunks[-1]["usage"].keys() == {"prompt_tokens", "total_tokens", "completion_tokens"}


def test_a_streamed_tool_call_arrives_as_the_mistral_parser_sends_it(vllm_double, sdk):
    vllm_double.script(Reply(content="Let me check.", tool_calls=[("get_weather", ARGS)]))
    chunks = _stream(sdk, tools=[WEATHER], max_tokens=128)
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    head, *rest = deltas
    assert re.fullmatch(r"[A-Za-z0-9]{9}", head.id)
    assert head.type == "function" and head.function.name == "get_weather"
    assert head.function.arguments.startswith("{")
    assert rest and all(d.id is None and d.function.name is None for d in rest)
    assert _assemble_calls(chunks) == {0: {"id": head.id, "name": "get_weather", "arguments": ARGS}}
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == "Let me check."
    assert _finish(chunks) == ["tool_calls"]


def test_two_tool_calls_take_indexes_0_and_1(vllm_double, sdk):
    vllm_double.script(
        Reply(
            tool_calls=[("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]
        )
    )
    calls = _assemble_calls(_stream(sdk, tools=[WEATHER], max_tokens=128))
    assert [calls[i]["arguments"] for i in (0, 1)] == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert calls[0]["id"] != calls[1]["id"]


def test_a_non_streamed_tool_call_parses(vllm_double, sdk):
    vllm_double.script(Reply(tool_calls=[("get_weather", ARGS)]))
    completion = sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call.id)
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        json.loads(ARGS),
    )
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_a_non_streamed_text_answer_equals_the_streamed_one(vllm_double, sdk):
    vllm_double.script(Reply(content="Cloudy."), Reply(content="Cloudy."))
    completion = sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, max_tokens=32)
    chunks = _stream(sdk, max_tokens=32, stream_options={"include_usage": True})
    assert completion.choices[0].message.content == "Cloudy."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage == chunks[-1].usage


def test_a_tool_call_cut_by_max_tokens_still_finishes_as_tool_calls(vllm_double, sdk):
    """vLLM reports "tool_calls" once a call was streamed, even when max_tokens cut it."""
    vllm_double.script(
        Reply(tool_calls=[("get_weather", ARGS)]), Reply(tool_calls=[("get_weather", ARGS)])
    )
    chunks = _stream(
        sdk,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=8,
        stream_options={"include_usage": True},
    )
    arguments = _assemble_calls(chunks)[0]["arguments"]
    assert ARGS.startswith(arguments) and arguments != ARGS
    assert _finish(chunks) == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == 8
    completion = sdk.chat.completions.create(
        model=SERVED_MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=8
    )
    assert completion.choices[0].message.tool_calls[0].function.arguments == arguments


def test_a_named_tool_choice_finishes_with_stop(vllm_double, sdk):
    vllm_double.script(Reply(tool_calls=[("get_weather", ARGS)]))
    named = {"type": "function", "function": {"name": "get_weather"}}
    chunks = _stream(sdk, tools=[WEATHER], tool_choice=named)
    assert _assemble_calls(chunks)[0]["arguments"] == ARGS
    assert _finish(chunks) == ["stop"]


def test_text_cut_by_max_tokens_finishes_with_length(vllm_double, sdk):
    vllm_double.script(Reply(content="one two three four five six seven eight nine ten"))
    completion = sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    assert "one two three four five six".startswith(completion.choices[0].message.content)


def test_a_stop_string_ends_the_text_before_it(vllm_double, sdk):
    vllm_double.script(Reply(content="alpha beta END gamma"))
    completion = sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, stop=["END"])
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("alpha beta ", "stop")
    assert choice.model_extra["stop_reason"] == "END"


def test_n_2_streams_two_choices_with_their_own_replies(vllm_double, sdk):
    vllm_double.script(Reply(content="first"), Reply(content="second answer"))
    chunks = _stream(sdk, n=2, stream_options={"include_usage": True})
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == {0: "first", 1: "second answer"}
    assert sorted(_finish(chunks)) == ["stop", "stop"]


def test_logprobs_come_one_token_per_chunk_and_all_at_once(vllm_double, sdk):
    vllm_double.script(Reply(content="Fine weather.", logprob=-0.5), Reply(content="Fine weather."))
    chunks = _stream(sdk, logprobs=True, top_logprobs=2)
    streamed = [e for c in chunks[1:] for e in (c.choices[0].logprobs.content or [])]
    assert "".join(e.token for e in streamed) == "Fine weather."
    assert all(e.logprob == -0.5 and len(e.top_logprobs) == 2 for e in streamed)
    assert streamed[0].top_logprobs[0].token == streamed[0].token
    completion = sdk.chat.completions.create(
        model=SERVED_MODEL, messages=ASK, logprobs=True, top_logprobs=2
    )
    whole = completion.choices[0].logprobs.content
    assert [e.token for e in whole] == [e.token for e in streamed]


def test_tokenize_and_models_report_the_count_and_context(vllm_double, sdk):
    found = _tokenize(vllm_double, messages=seed_request()["messages"])
    # The golden seed request: 29 prompt tokens with modelhub's Mistral format.
    assert found["count"] == len(found["tokens"]) == 29
    assert found["max_model_len"] == vllm_double.max_model_len
    (card,) = sdk.models.list().data
    assert (
        card.id == SERVED_MODEL and card.model_extra["max_model_len"] == vllm_double.max_model_len
    )


def _error(exc: openai.APIStatusError, status: int) -> dict:
    assert exc.status_code == status
    body = exc.response.json()
    assert body.keys() == {"error"}
    assert body["error"]["code"] == status and body["error"]["param"] in (None, "model")
    return body["error"]


def test_context_overflow_answers_vllms_400_bodies(vllm_double, sdk):
    vllm_double.max_model_len = 40
    long = [{"role": "user", "content": "word " * 60}]
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model=SERVED_MODEL, messages=long)
    err = _error(exc.value, 400)
    assert err["type"] == "BadRequestError"
    assert re.fullmatch(
        r"This model's maximum context length is 40 tokens\. However, your request has "
        r"\d+ input tokens\. Please reduce the length of the input messages\.",
        err["message"],
    )
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, max_tokens=39)
    message = _error(exc.value, 400)["message"]
    assert message.startswith("'max_tokens' or 'max_completion_tokens' is too large: 39.")


def test_bad_parameters_and_unknown_models_answer_vllms_errors(sdk):
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, temperature=-1)
    assert _error(exc.value, 400)["message"] == "temperature must be non-negative, got -1."
    with pytest.raises(openai.NotFoundError) as exc:
        sdk.chat.completions.create(model="nope", messages=ASK)
    err = _error(exc.value, 404)
    assert err["type"] == "NotFoundError" and err["message"] == "The model `nope` does not exist."


def test_a_scripted_error_and_an_in_stream_error(vllm_double, sdk):
    vllm_double.script(
        Reply(error=(500, "engine dead")), Reply(content="never finished", error_after=2)
    )
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK)
    assert _error(exc.value, 500)["type"] == "InternalServerError"
    with pytest.raises(openai.APIError, match="scripted engine failure"):
        _stream(sdk)


def test_a_cut_stream_breaks_the_connection_after_its_chunks(vllm_double):
    vllm_double.script(Reply(content="a long answer that never ends", cut_after=3))
    body = {"model": SERVED_MODEL, "messages": ASK, "stream": True}
    url = f"{vllm_double.api_url}/chat/completions"
    received = []
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", url, json=body) as r:
        for chunk in sse_chunks(r.iter_lines()):
            received.append(chunk)  # noqa: PERF402 - what arrived before the break is the point
    assert len(received) == 3


def test_a_stalled_stream_times_the_client_out(vllm_double):
    vllm_double.script(Reply(content="stalls after the role chunk", stall_after=1))
    sdk = openai.OpenAI(base_url=vllm_double.api_url, api_key="unused", max_retries=0, timeout=1.0)
    received = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK, stream=True):
            received.append(chunk)  # noqa: PERF402 - what arrived before the timeout is the point
    assert len(received) == 1 and received[0].choices[0].delta.role == "assistant"


def test_a_slow_stream_still_delivers_every_chunk(vllm_double, sdk):
    vllm_double.script(Reply(content="slow but sure", delay_s=0.05))
    assert "".join(c.choices[0].delta.content or "" for c in _stream(sdk)) == "slow but sure"
    assert vllm_double.requests[-1]["messages"] == ASK


def _normalised(chunks: list[dict]) -> str:
    text = json.dumps(chunks)
    text = re.sub(r'"id": "chatcmpl-[0-9a-f]+"', '"id": "chatcmpl-X"', text)
    text = re.sub(r'"id": "[A-Za-z0-9]{9}"', '"id": "CALL"', text)
    return re.sub(r'"created": \d+', '"created": 0', text)


@pytest.mark.parametrize("name", sorted(TRANSCRIPT_REQUESTS))
def test_recorded_transcripts_are_what_the_double_sends(vllm_double, name):
    """The stored transcripts stay honest: re-recording gives the same chunks (ids aside).
    Regenerate with ``python -m tests.upstream_transcripts``."""
    assert (TRANSCRIPTS / f"{name}.sse").exists()
    fresh = list(sse_chunks(record_transcript(vllm_double, name).splitlines()))
    assert _normalised(load_transcript(name)) == _normalised(fresh)


def test_a_responder_answers_from_the_request_once_the_queue_is_empty(vllm_double, sdk):
    vllm_double.script(Reply(content="queued"))
    vllm_double.responder = lambda body: Reply(content=body["messages"][-1]["content"].upper())
    answers = [
        sdk.chat.completions.create(model=SERVED_MODEL, messages=ASK).choices[0].message.content
        for _ in range(2)
    ]
    assert answers == ["queued", ASK[0]["content"].upper()]
