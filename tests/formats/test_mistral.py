"""Mistral Small 3.2's format: exact counts (the seed's 29), tools, and the tool-call parser."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import llama_cpp
import pytest
from mistral_common.protocol.instruct.messages import UserMessage as MUser
from mistral_common.protocol.instruct.request import ChatCompletionRequest as MRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from PIL import Image

from modelhub.formats.base import ContentDelta, ToolCallDelta
from modelhub.formats.mistral import MistralFormat, mistral_tool_id
from modelhub.formats.mistral_tools import MistralToolParser
from modelhub.formats.tekken import v11_tokenizer_file
from modelhub.media import load_images
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.conversation import to_conversation
from modelhub.settings import Settings
from tests.conftest import MISTRAL
from tests.formats.parsed import parse

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def seed_ico() -> bytes:
    """An ICO like the seed's favicon: frames of 16, 24, 32, 48, 64, 72 and 96 px."""
    buf = io.BytesIO()
    sizes = [(s, s) for s in (16, 24, 32, 48, 64, 72, 96)]
    Image.new("RGBA", (96, 96), (10, 20, 120, 255)).save(buf, format="ICO", sizes=sizes)
    return buf.getvalue()


def seed_request() -> dict:
    uri = "data:image/vnd.microsoft.icon;base64," + base64.b64encode(seed_ico()).decode()
    return {
        "model": MISTRAL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {"type": "image_url", "image_url": {"url": uri}},
                ],
            }
        ],
        "temperature": 0.7,
        "max_tokens": 1000,
    }


@pytest.fixture(scope="module")
def fmt(tmp_path_factory) -> MistralFormat:
    return MistralFormat(None, tmp_path_factory.mktemp("cache"))


async def _encode(fmt: MistralFormat, body: dict):
    conversation = to_conversation(ChatCompletionRequest.model_validate(body))
    slots = [(s.location, s.url) for s in conversation.image_slots()]
    return fmt.encode(conversation, await load_images(slots, Settings()))


async def test_golden_seed_request_is_29_prompt_tokens(fmt):
    prompt = await _encode(fmt, seed_request())
    assert prompt.prompt_tokens == 29
    # 96 px / 14 px patches / merge 2 -> 4 x 4 image tokens, 3 row breaks, one end.
    assert prompt.image_tokens == 20
    assert [(i.location, i.offset, i.n_tokens) for i in prompt.images] == [
        ("messages[0].content[1]", 2, 20)
    ]


def test_the_generated_tokenizer_is_v11_with_the_image_settings(tmp_path):
    path = v11_tokenizer_file(tmp_path)
    data = json.loads(path.read_text())
    assert data["config"]["version"] == "v11"
    assert data["image"] == {
        "image_patch_size": 14,
        "max_image_size": 1540,
        "spatial_merge_size": 2,
    }
    tokens = {t["token_str"] for t in data["special_tokens"]}
    assert {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"} <= tokens
    assert v11_tokenizer_file(tmp_path) == path  # made once, then reused


async def test_text_count_matches_mistral_common(fmt, tmp_path):
    body = {
        "model": MISTRAL,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Bonjour, ça va ?"},
        ],
    }
    prompt = await _encode(fmt, body)
    reference = MistralTokenizer.from_file(str(v11_tokenizer_file(tmp_path)))
    from mistral_common.protocol.instruct.messages import SystemMessage as MSystem

    expected = reference.encode_chat_completion(
        MRequest(messages=[MSystem(content="Be terse."), MUser(content="Bonjour, ça va ?")])
    )
    assert prompt.token_ids == expected.tokens
    assert prompt.image_tokens == 0


async def test_tool_round_trip_counts_and_structure(fmt):
    inner = fmt._tokenizer.instruct_tokenizer.tokenizer
    ask = {
        "model": MISTRAL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER],
    }
    offered = await _encode(fmt, ask)
    text = inner.decode(offered.token_ids, special_token_policy="keep")
    assert "[AVAILABLE_TOOLS]" in text and "get_weather" in text
    round_trip = {
        **ask,
        "messages": [
            *ask["messages"],
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123xyz",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123xyz", "content": '{"temp_c": 21}'},
        ],
    }
    answered = await _encode(fmt, round_trip)
    text = inner.decode(answered.token_ids, special_token_policy="keep")
    mapped = mistral_tool_id("call_abc123xyz")
    assert f"[TOOL_CALLS]get_weather[CALL_ID]{mapped}[ARGS]" in text
    assert f"[TOOL_RESULTS]{mapped}[TOOL_CONTENT]" in text
    assert answered.prompt_tokens > offered.prompt_tokens
    none = await _encode(fmt, {**ask, "tool_choice": "none"})
    assert "[AVAILABLE_TOOLS]" not in inner.decode(none.token_ids, special_token_policy="keep")


async def test_required_and_named_tool_choice_force_a_call_with_a_grammar(fmt):
    add = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
    }
    body = {
        "model": MISTRAL,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER, add],
    }
    assert (await _encode(fmt, body)).grammar is None
    required = await _encode(fmt, {**body, "tool_choice": "required"})
    assert '"get_weather"' in required.grammar and '"add"' in required.grammar
    named = await _encode(
        fmt, {**body, "tool_choice": {"type": "function", "function": {"name": "add"}}}
    )
    assert '"add"' in named.grammar and "get_weather" not in named.grammar
    inner = fmt._tokenizer.instruct_tokenizer.tokenizer
    assert "get_weather" not in inner.decode(named.token_ids, special_token_policy="keep")
    for grammar in (required.grammar, named.grammar):
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None
    schema = await _encode(
        fmt,
        {
            "model": MISTRAL,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                },
            },
        },
    )
    assert llama_cpp.LlamaGrammar.from_string(schema.grammar, verbose=False) is not None


def test_client_tool_ids_map_to_stable_mistral_ids():
    mapped = mistral_tool_id("call_9f8e7d6c5b4a")
    assert len(mapped) == 9 and mapped.isalnum()
    assert mistral_tool_id("call_9f8e7d6c5b4a") == mapped
    assert mistral_tool_id("call_other") != mapped
    assert mistral_tool_id("abcDEF123") == "abcDEF123"


MODEL_OUTPUT = 'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Lyon"}'


@pytest.mark.parametrize("piece", [1, 3, 7, len(MODEL_OUTPUT)])
def test_parser_streams_calls_that_reassemble_to_the_whole(piece):
    parsed = parse(MistralToolParser(tools_enabled=True), MODEL_OUTPUT, piece)
    assert parsed.content == "Let me check."
    assert [(c["name"], json.loads(c["arguments"])) for c in parsed.calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Lyon"}),
    ]
    assert all(len(c["id"]) == 9 and c["id"].isalnum() for c in parsed.calls)
    heads = [d for d in parsed.deltas if isinstance(d, ToolCallDelta) and d.id]
    assert [(h.index, h.name) for h in heads] == [(0, "get_weather"), (1, "get_weather")]
    assert not any(
        "[TOOL_CALLS]" in getattr(d, "text", "") + getattr(d, "arguments", "")
        for d in parsed.deltas
    )


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ("[TOOL_CALLS]get weather now[ARGS]{}", "get weather now{}", []),
        ("[TOOL_CALLS]" + "x" * 100, "x" * 100, []),
        ("Just [TOOL_CALL text", "Just [TOOL_CALL text", []),
        # Cut short (max_tokens): still a call, with what was generated.
        ('[TOOL_CALLS]get_weather[ARGS]{"city": "Par', "", [("get_weather", '{"city": "Par')]),
        ("[TOOL_CALLS]get_weather", "", [("get_weather", "")]),
    ],
)
def test_output_that_is_not_a_whole_call(text, content, calls):
    parsed = parse(MistralToolParser(tools_enabled=True), text)
    assert parsed.content == content
    assert [(c["name"], c["arguments"]) for c in parsed.calls] == calls


def test_parser_keeps_a_call_id_the_model_wrote():
    parsed = parse(
        MistralToolParser(tools_enabled=True),
        '[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{"city": "Oslo"}',
        1000,
    )
    assert (parsed.calls[0]["id"], parsed.calls[0]["name"]) == ("abcDEF123", "get_weather")


def test_without_tools_the_marker_is_just_text():
    parser = MistralToolParser(tools_enabled=False)
    assert parser.feed(MODEL_OUTPUT) == [ContentDelta(MODEL_OUTPUT)]
    assert parser.finish() == []
    assert parser.markers == frozenset()


def test_tokenize_cli_without_weights():
    out = subprocess.run(
        [sys.executable, "-m", "modelhub.cli", "tokenize", "--model", MISTRAL],
        input=json.dumps(seed_request()),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == {
        "prompt_tokens": 29,
        "image_tokens": 20,
        "max_model_len": 131072,
    }


def test_tokenize_endpoint_and_context_window(demo_server):
    r = httpx.post(f"{demo_server.base_url}/tokenize", json=seed_request(), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["prompt_tokens"], body["image_tokens"], body["max_model_len"]) == (29, 20, 131072)
    assert body["count"] == 29 and len(body["tokens"]) == 29


def test_seed_request_to_the_unconfigured_model_is_503_not_500(demo_server):
    r = httpx.post(f"{demo_server.base_url}/v1/chat/completions", json=seed_request(), timeout=60)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "model_not_configured"


def test_bad_image_over_http_is_a_400_naming_the_part(demo_server):
    body = seed_request()
    body["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64,bm90IGFuIGltYWdl"
    r = httpx.post(f"{demo_server.base_url}/tokenize", json=body, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].content[1]"
    assert r.json()["error"]["code"] == "invalid_image"


def test_audio_to_mistral_is_refused(demo_server):
    body = {
        "model": MISTRAL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                ],
            }
        ],
    }
    r = httpx.post(f"{demo_server.base_url}/tokenize", json=body, timeout=60)
    assert r.status_code == 400
    assert "does not support audio input" in r.json()["error"]["message"]


def test_reasoning_effort_is_refused_for_mistral(demo_server):
    body = {
        "model": MISTRAL,
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "high",
    }
    r = httpx.post(f"{demo_server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"


def test_context_overflow_names_both_numbers(tmp_path, demo_server):
    body = {
        "model": MISTRAL,
        "messages": [{"role": "user", "content": "word " * 10}],
        "max_tokens": 131072,
    }
    # The unconfigured model answers 503 before counting; count through the format instead.
    from modelhub.catalog import Catalog, load_cards
    from modelhub.errors import ContextLengthExceededError
    from modelhub.serving.deployment import ServedModel
    from modelhub.serving.prepare import PromptStage, Resolved
    from modelhub.settings import default_catalog_dir

    card = Catalog(load_cards(default_catalog_dir())).get(MISTRAL)
    served = ServedModel(card, None)
    stage = PromptStage(None, Settings(max_request_completion_tokens=1_000_000))
    request = ChatCompletionRequest.model_validate(body)
    prompt = MistralFormat(None, Path(tmp_path)).encode(to_conversation(request), {})
    with pytest.raises(ContextLengthExceededError) as info:
        stage.max_tokens(Resolved(served, {}, 131072), request, prompt)
    assert (
        "131072" in info.value.message and str(prompt.prompt_tokens + 131072) in info.value.message
    )
    assert info.value.code == "context_length_exceeded"
    without = ChatCompletionRequest.model_validate({**body, "max_tokens": None})
    assert stage.max_tokens(Resolved(served, {}, None), without, prompt) == (
        131072 - prompt.prompt_tokens
    )
