"""The production shape: Mistral Small 3.2 behind an upstream. A gateway whose Mistral
upstream is another modelhub (a separate process serving the tiny Mistral GGUF) answers
exactly as that engine does, streamed and not: content, tool calls, finish reason,
logprobs and billed tokens; and its /tokenize count equals the engine's."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from tests.api.test_mistral_e2e import BOUNDED_WEATHER
from tests.conftest import MISTRAL, make_settings
from tests.formats.test_mistral import WEATHER
from tests.processes import spawn_modelhub
from tests.servers import start_server
from tests.serving.contract import ask


def _image(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


ASK = [{"role": "user", "content": "Weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
TRIP = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"],
    "additionalProperties": False,
}
CASES = {
    "text": {"messages": ASK, "max_tokens": 12},
    "image": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe."},
                    {"type": "image_url", "image_url": {"url": _image((200, 30, 30))}},
                ],
            }
        ],
        "max_tokens": 10,
    },
    "tool_choice required": {
        "messages": ASK,
        "tools": [BOUNDED_WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
    },
    "tool_choice named": {
        "messages": ASK,
        "tools": [
            BOUNDED_WEATHER,
            WEATHER | {"function": {**WEATHER["function"], "name": "other"}},
        ],
        "tool_choice": NAMED,
        "parallel_tool_calls": False,
        "max_tokens": 60,
    },
    "tool_choice auto": {"messages": ASK, "tools": [WEATHER], "max_tokens": 16},
    "truncated forced call": {
        "messages": ASK,
        "tools": [BOUNDED_WEATHER],
        "tool_choice": "required",
        "max_tokens": 5,
    },
    "json_schema": {
        "messages": [{"role": "user", "content": "Plan a trip."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "trip", "schema": TRIP}},
        "max_tokens": 40,
    },
    "logprobs": {"messages": ASK, "logprobs": True, "top_logprobs": 2, "max_tokens": 6},
    "n=2": {"messages": ASK, "n": 2, "max_tokens": 6},
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_mistral):
    gguf, mmproj, tekken = tiny_mistral
    backends = {MISTRAL: {"gguf": str(gguf), "mmproj": str(mmproj), "tokenizer": str(tekken)}}
    server = spawn_modelhub(
        tmp_path_factory.mktemp("engine"),
        extra_args=["--no-auth"],
        # One slot: requests run alone, so greedy output does not depend on batch shapes.
        env={
            "MODELHUB_BACKENDS": json.dumps(backends),
            "MODELHUB_ENGINE_SLOTS": "1",
            "MODELHUB_ENGINE_CONTEXT": "4096",
        },
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(engine, tmp_path_factory):
    backends = {MISTRAL: {"upstreams": [f"{engine.base_url}/v1"]}}
    settings = make_settings(tmp_path_factory.mktemp("gateway"), auth=False, backends=backends)
    server = start_server(settings)
    yield server
    server.stop()


def _ask(base_url: str, body: dict, stream: bool) -> dict:
    return ask(base_url, {"model": MISTRAL, "temperature": 0, "seed": 7, **body}, stream)


def _approx_logprobs(result: dict) -> dict:
    """Logprobs match to 1e-3: a prompt served from the prefix cache is evaluated in a
    different batch shape, for which llama.cpp's CPU kernels give slightly different logits."""
    for choice in result["choices"]:
        for entry in choice["logprobs"]:
            entry["logprob"] = pytest.approx(entry["logprob"], abs=1e-3)
            for top in entry["top_logprobs"]:
                top["logprob"] = pytest.approx(top["logprob"], abs=1e-3)
    return result


def _comparable(result: dict) -> dict:
    """Call ids are minted per response; everything else must match."""
    for choice in result["choices"]:
        for call in choice["tool_calls"]:
            assert len(call["id"]) == 9 and call["id"].isalnum()
            call.pop("id")
        assert "[TOOL_CALLS]" not in (choice["content"] or "")
        assert "[ARGS]" not in (choice["content"] or "")
    return result


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", list(CASES))
def test_gateway_answers_as_the_engine_does(engine, gateway, case, stream):
    direct = _approx_logprobs(_comparable(_ask(engine.base_url, CASES[case], stream)))
    relayed = _comparable(_ask(gateway.base_url, CASES[case], stream))
    assert relayed == direct
    if case in ("tool_choice required", "tool_choice named"):
        assert relayed["choices"][0]["tool_calls"], relayed
    if case == "truncated forced call":
        assert relayed["choices"][0]["finish_reason"] == "length"
        assert relayed["choices"][0]["content"] is None


@pytest.mark.parametrize("case", ["text", "image", "tool_choice named"])
def test_streamed_and_whole_agree_through_the_gateway(gateway, case):
    whole = _approx_logprobs(_comparable(_ask(gateway.base_url, CASES[case], False)))
    assert _comparable(_ask(gateway.base_url, CASES[case], True)) == whole


@pytest.mark.parametrize("case", ["text", "image", "tool_choice named"])
def test_tokenize_through_the_gateway_equals_the_engine(engine, gateway, case):
    body = {
        "model": MISTRAL,
        **{k: v for k, v in CASES[case].items() if k in ("messages", "tools")},
    }
    counts = [
        httpx.post(f"{server.base_url}/tokenize", json=body, timeout=60).json()
        for server in (engine, gateway)
    ]
    assert counts[0]["count"] == counts[1]["count"] > 0
    assert counts[0]["tokens"] == counts[1]["tokens"]
