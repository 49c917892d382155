"""The production shape against vLLM's wire behaviour: a gateway whose Mistral Small 3.2
upstream is the vLLM double (``tests/vllm_double.py``) relays exactly what vLLM answers,
streamed and not, with the hub's one rule for finish reasons (vLLM says ``stop`` after a
named tool choice, and ``tool_calls`` for a call cut by ``max_tokens``)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CACHE, MISTRAL, make_settings
from tests.formats.test_mistral import WEATHER, seed_request
from tests.servers import start_server
from tests.serving.contract import ask
from tests.vllm_double import SERVED_MODEL, Reply, VllmDouble

ASK = [{"role": "user", "content": "Weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
CALL = ("get_weather", '{"city": "Paris", "unit": "celsius"}')
CASES = {
    "text": ({"messages": ASK, "max_tokens": 64}, [Reply(content="Sunny, 21 °C.")], "stop"),
    "image": (
        {"messages": seed_request()["messages"], "max_tokens": 64},
        [Reply(content="A small icon.")],
        "stop",
    ),
    "tool_choice auto": (
        {"messages": ASK, "tools": [WEATHER], "max_tokens": 64},
        [Reply(tool_calls=[CALL])],
        "tool_calls",
    ),
    "tool_choice required": (
        {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 64},
        [Reply(tool_calls=[CALL])],
        "tool_calls",
    ),
    "tool_choice named (vLLM: stop)": (
        {"messages": ASK, "tools": [WEATHER], "tool_choice": NAMED, "max_tokens": 64},
        [Reply(tool_calls=[CALL])],
        "tool_calls",
    ),
    "truncated call (vLLM: tool_calls)": (
        {"messages": ASK, "tools": [WEATHER], "max_tokens": 6},
        [Reply(tool_calls=[CALL])],
        "length",
    ),
    "json_schema": (
        {
            "messages": ASK,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"type": "object"}},
            },
            "max_tokens": 64,
        },
        [Reply(content='{"city": "Paris"}')],
        "stop",
    ),
    # The gateway fans the choices out as concurrent upstream requests, which may reach the
    # double in either order: both choices get the same reply.
    "n=2": (
        {"messages": ASK, "n": 2, "max_tokens": 64},
        [Reply(content="Both."), Reply(content="Both.")],
        "stop",
    ),
}


@pytest.fixture(scope="module")
def double():
    upstream = VllmDouble(CACHE).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(double, tmp_path_factory):
    backends = {MISTRAL: {"upstreams": [double.api_url], "served_model_name": SERVED_MODEL}}
    settings = make_settings(tmp_path_factory.mktemp("vllm-gw"), auth=False, backends=backends)
    server = start_server(settings)
    yield server
    server.stop()


def _without_ids(result: dict) -> dict:
    for choice in result["choices"]:
        assert choice.pop("logprobs") == []
        for call in choice["tool_calls"]:
            assert len(call.pop("id")) == 9
            call.pop("type", None)
    return result


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_gateway_relays_vllm_exactly(double, gateway, case, stream):
    body, replies, finish = CASES[case]
    double.script(*replies)
    direct = _without_ids(ask(double.base_url, {**body, "model": SERVED_MODEL}, stream))
    double.script(*replies)
    relayed = _without_ids(ask(gateway.base_url, {**body, "model": MISTRAL}, stream))
    for choice in direct["choices"]:
        choice["finish_reason"] = finish  # the hub's rule, which the direct answer may not follow
    assert relayed == direct
    sent = double.requests[-1]
    assert sent["model"] == SERVED_MODEL and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True} and "n" not in sent


def test_tokenize_through_the_gateway_equals_vllm(double, gateway):
    body = {"messages": seed_request()["messages"]}
    direct = httpx.post(f"{double.base_url}/tokenize", json={**body, "model": SERVED_MODEL})
    relayed = httpx.post(f"{gateway.base_url}/tokenize", json={**body, "model": MISTRAL})
    assert direct.json()["count"] == relayed.json()["count"] == 29
    assert direct.json()["tokens"] == relayed.json()["tokens"]


def test_a_vllm_refusal_is_a_400_in_openai_shape(double, gateway):
    double.script(Reply(error=(400, "This model's maximum context length is 32768 tokens.")))
    r = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": MISTRAL, "messages": ASK, "max_tokens": 8, "stream": True},
        timeout=60,
    )
    assert r.status_code == 400
    assert "maximum context length" in r.json()["error"]["message"]


def test_without_max_tokens_the_gateway_asks_within_the_upstreams_window(double, gateway):
    """The gateway's window is the upstream's own max_model_len (read from its /v1/models),
    not the card's 128k, so an unset max_tokens never makes vLLM answer 400."""
    double.script(Reply(content="Fine."))
    r = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": MISTRAL, "messages": ASK},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    sent = double.requests[-1]
    assert sent["max_tokens"] + r.json()["usage"]["prompt_tokens"] <= double.max_model_len
