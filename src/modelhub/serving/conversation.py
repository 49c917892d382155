"""OpenAI chat request -> ``formats.conversation.Conversation``, once per request."""

from __future__ import annotations

from modelhub.formats.conversation import (
    Conversation,
    ImageSlot,
    JsonOutput,
    Part,
    PastCall,
    Text,
    ToolSpec,
    Turn,
)
from modelhub.schemas.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ImagePart,
    NamedToolChoice,
    SystemMessage,
    TextPart,
    ToolMessage,
)

__all__ = ["to_conversation"]


def _parts(index: int, content) -> tuple[Part, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (Text(content),)
    parts: list[Part] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            parts.append(Text(part.text))
        elif isinstance(part, ImagePart):
            parts.append(ImageSlot(f"messages[{index}].content[{j}]", part.image_url.url))
    return tuple(parts)


def _turn(index: int, message) -> Turn:
    parts = _parts(index, message.content)
    if isinstance(message, SystemMessage):
        return Turn("system", parts)
    if isinstance(message, AssistantMessage):
        calls = tuple(
            PastCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
        )
        return Turn("assistant", parts, tool_calls=calls)
    if isinstance(message, ToolMessage):
        return Turn("tool", parts, tool_call_id=message.tool_call_id)
    return Turn("user", parts)


def _json_output(request: ChatCompletionRequest) -> JsonOutput | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return JsonOutput()
    assert response_format.json_schema is not None
    return JsonOutput(response_format.json_schema.schema_)


def to_conversation(request: ChatCompletionRequest) -> Conversation:
    choice = request.tool_choice
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    return Conversation(
        turns=tuple(_turn(i, m) for i, m in enumerate(request.messages)),
        tools=tuple(
            ToolSpec(t.function.name, t.function.description or "", t.function.parameters)
            for t in request.tools or ()
        ),
        tool_choice="required" if named else (choice or "auto"),
        forced_tool=named,
        parallel_tool_calls=request.parallel_tool_calls,
        json_output=_json_output(request),
    )
