"""Edges of the Mistral format: images side by side, a named tool that is not offered,
parallel_tool_calls=false."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from modelhub.errors import InvalidRequestError
from modelhub.formats.base import ContentDelta, ToolCallDelta
from modelhub.formats.mistral import MistralFormat
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.conversation import to_conversation
from tests.conftest import MISTRAL
from tests.formats.parsed import parse

CACHE = Path.home() / ".cache" / "modelhub"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def fmt() -> MistralFormat:
    return MistralFormat(None, CACHE)


def test_images_side_by_side_are_placed_apart(fmt):
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "two"}, IMAGE, IMAGE]}],
    )
    images = {
        "messages[0].content[1]": Image.new("RGB", (56, 56)),  # 2x2 grid: 6 tokens
        "messages[0].content[2]": Image.new("RGB", (28, 28)),  # 1x1 grid: 2 tokens
    }
    prompt = fmt.encode(to_conversation(request), images)
    placed = [(p.location, p.offset, p.n_tokens) for p in prompt.images]
    first = placed[0][1]
    assert placed == [
        ("messages[0].content[1]", first, 6),
        ("messages[0].content[2]", first + 6, 2),
    ]
    assert prompt.image_tokens == 8


def test_a_named_tool_that_is_not_offered_is_a_400():
    from modelhub.catalog import Catalog, load_cards
    from modelhub.serving.validation import validate_for_model
    from modelhub.settings import Settings, default_catalog_dir

    card = Catalog(load_cards(default_catalog_dir())).get(MISTRAL)
    request = ChatCompletionRequest(
        model=MISTRAL,
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    with pytest.raises(InvalidRequestError) as info:
        validate_for_model(request, card, Settings())
    assert info.value.param == "tool_choice"
    assert "get_time" in info.value.message


def _parse(fmt, text: str, *, parallel: bool):
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER],
        parallel_tool_calls=parallel,
    )
    return parse(fmt.output_parser(to_conversation(request)), text)


TWO_CALLS = (
    '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}'
)


def test_parallel_calls_are_kept_when_allowed(fmt):
    done = _parse(fmt, TWO_CALLS, parallel=True)
    assert [c["arguments"] for c in done.calls] == [
        '{"city": "Paris"}',
        '{"city": "Rome"}',
    ]


def test_without_parallel_calls_only_the_first_is_kept(fmt):
    done = _parse(fmt, TWO_CALLS, parallel=False)
    deltas = done.deltas
    assert [c["arguments"] for c in done.calls] == ['{"city": "Paris"}']
    assert {d.index for d in deltas if isinstance(d, ToolCallDelta)} == {0}
    assert not [d for d in deltas if isinstance(d, ContentDelta)]
    streamed = "".join(d.arguments for d in deltas if isinstance(d, ToolCallDelta))
    assert streamed == '{"city": "Paris"}'


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("Hi [TOOL_CALLS]" + "x" * 100 + " end", "Hi " + "x" * 100 + " end"),
        ("Hi [TOOL_CALLS]bad name![ARGS]{}", "Hi bad name!{}"),
        ("Hi [TOOL_C", "Hi [TOOL_C"),
        ("plain [x] text [", "plain [x] text ["),
    ],
)
def test_malformed_calls_are_content_without_the_markers(fmt, text, content):
    done = _parse(fmt, text, parallel=True)
    assert not done.calls
    assert all(isinstance(d, ContentDelta) for d in done.deltas)
    assert done.content == content


def test_a_call_cut_before_its_arguments_stays_a_call(fmt):
    done = _parse(fmt, "Hi [TOOL_CALLS]get_weather", parallel=True)
    assert done.content == "Hi "
    assert [(c["name"], c["arguments"]) for c in done.calls] == [("get_weather", "")]
