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
    prompt = fmt.encode(request, images)
    placed = [(p.location, p.offset, p.n_tokens) for p in prompt.images]
    first = placed[0][1]
    assert placed == [
        ("messages[0].content[1]", first, 6),
        ("messages[0].content[2]", first + 6, 2),
    ]
    assert prompt.image_tokens == 8


def test_a_named_tool_that_is_not_offered_is_a_400(fmt):
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    with pytest.raises(InvalidRequestError) as info:
        fmt.encode(request, {})
    assert info.value.param == "tool_choice.function.name"
    assert "get_time" in info.value.message


def _parse(fmt, text: str, *, parallel: bool):
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER],
        parallel_tool_calls=parallel,
    )
    parser = fmt.output_parser(request)
    deltas = [d for ch in text for d in parser.feed(ch)]
    done = parser.finish()
    return deltas + done.deltas, done


TWO_CALLS = (
    '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}'
)


def test_parallel_calls_are_kept_when_allowed(fmt):
    _, done = _parse(fmt, TWO_CALLS, parallel=True)
    assert [c.function.arguments for c in done.tool_calls] == [
        '{"city": "Paris"}',
        '{"city": "Rome"}',
    ]


def test_without_parallel_calls_only_the_first_is_kept(fmt):
    deltas, done = _parse(fmt, TWO_CALLS, parallel=False)
    assert [c.function.arguments for c in done.tool_calls] == ['{"city": "Paris"}']
    assert {d.index for d in deltas if isinstance(d, ToolCallDelta)} == {0}
    assert not [d for d in deltas if isinstance(d, ContentDelta)]
    streamed = "".join(d.arguments for d in deltas if isinstance(d, ToolCallDelta))
    assert streamed == '{"city": "Paris"}'


@pytest.mark.parametrize(
    "text",
    [
        "Hi [TOOL_CALLS]" + "x" * 100 + " end",  # no [ARGS] within any name's length
        "Hi [TOOL_CALLS]bad name![ARGS]{}",
        "Hi [TOOL_CALLS]get_weather",  # ended before [ARGS]
        "Hi [TOOL_C",
        "plain [x] text [",
    ],
)
def test_malformed_calls_stream_the_same_content_they_finish_with(fmt, text):
    deltas, done = _parse(fmt, text, parallel=True)
    assert not done.tool_calls
    assert all(isinstance(d, ContentDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == done.content == text
