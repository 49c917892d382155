"""The whole Mistral path on a tiny random Mistral 3 GGUF + projector, served as
mistralai/Mistral-Small-24B-Instruct: mistral-common token ids -> llama.cpp decode, image ->
projector -> decode, output -> tool-call parser. Its words are nonsense; the plumbing is real."""

from __future__ import annotations

import base64
import io
import json

import jsonschema
import openai
import pytest
from PIL import Image
from tests.conftest import MISTRAL, make_settings
from tests.formats.test_mistral import WEATHER, seed_request
from tests.servers import start_server

# A random model fills an unbounded string forever; bounded, the grammar must close the call.
BOUNDED_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, tiny_mistral):
    gguf, mmproj, tekken = tiny_mistral
    backends = {MISTRAL: {"gguf": str(gguf), "mmproj": str(mmproj), "tokenizer": str(tekken)}}
    settings = make_settings(
        tmp_path_factory.mktemp("tiny"),
        auth=False,
        backends=backends,
        engine_slots=4,
        engine_context=8192,
    )
    server = start_server(settings)
    yield server
    server.stop()


@pytest.fixture
def sdk(tiny_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server.api_url, api_key="unused", max_retries=0, timeout=120)


def test_the_seed_vision_request_is_served_and_billed_29_prompt_tokens(sdk):
    body = seed_request()
    completion = sdk.chat.completions.create(**{**body, "max_tokens": 8})
    assert completion.usage.prompt_tokens == 29
    assert 1 <= completion.usage.completion_tokens <= 8
    assert completion.model == MISTRAL


def test_different_images_change_the_output(sdk):
    def answer(color) -> str:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), color).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        content = [
            {"type": "text", "text": "Describe."},
            {"type": "image_url", "image_url": {"url": uri}},
        ]
        completion = sdk.chat.completions.create(
            model=MISTRAL,
            messages=[{"role": "user", "content": content}],
            max_tokens=12,
            temperature=0,
        )
        return completion.choices[0].message.content

    assert answer((255, 0, 0)) != answer((0, 0, 255))


def test_forced_tool_call_end_to_end(sdk):
    completion = sdk.chat.completions.create(
        model=MISTRAL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[BOUNDED_WEATHER, WEATHER | {"function": {**WEATHER["function"], "name": "other"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and len(call.id) == 9
    jsonschema.validate(
        json.loads(call.function.arguments), BOUNDED_WEATHER["function"]["parameters"]
    )


def test_forced_tool_call_streams_openai_deltas(sdk):
    stream = sdk.chat.completions.create(
        model=MISTRAL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[BOUNDED_WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
        stream=True,
    )
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    head = calls[0]
    assert (
        head.index == 0
        and head.id
        and head.type == "function"
        and head.function.name == "get_weather"
    )
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    jsonschema.validate(json.loads(arguments), BOUNDED_WEATHER["function"]["parameters"])
    assert deltas[-1].finish_reason == "tool_calls"


def test_json_schema_output_validates(sdk):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    completion = sdk.chat.completions.create(
        model=MISTRAL,
        messages=[{"role": "user", "content": "Plan a trip."}],
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}},
        max_tokens=80,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_tool_result_round_trip_is_accepted(sdk):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_client_made_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_client_made_1", "content": '{"temp_c": 21}'},
    ]
    completion = sdk.chat.completions.create(
        model=MISTRAL, messages=messages, tools=[WEATHER], max_tokens=4
    )
    assert completion.usage.prompt_tokens > 20
