"""What a chat format encodes: a conversation, apart from any wire format.

Serving turns an OpenAI request into a ``Conversation`` once (``serving.conversation``);
formats, and everything below serving, never see the OpenAI wire models. Images appear
as slots naming where they sat in the request (``messages[0].content[1]``); the media
stage decodes them and formats receive them keyed by that location.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Conversation",
    "ImageSlot",
    "JsonOutput",
    "Part",
    "PastCall",
    "Text",
    "ToolSpec",
    "Turn",
]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ImageSlot:
    location: str
    url: str


Part = Text | ImageSlot


@dataclass(frozen=True)
class PastCall:
    """A tool call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Turn:
    role: Literal["system", "user", "assistant", "tool"]
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[PastCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if isinstance(p, Text))


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class JsonOutput:
    """Structured output: JSON matching ``schema``, or any JSON object when it is None."""

    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    tools: tuple[ToolSpec, ...] = ()
    # "auto": the model may call a tool; "required": it must; "none": tools are context only.
    tool_choice: Literal["auto", "none", "required"] = "auto"
    forced_tool: str | None = None  # a named tool choice: this tool, and a call is required
    parallel_tool_calls: bool = True
    json_output: JsonOutput | None = None

    @property
    def tools_enabled(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def image_slots(self) -> list[ImageSlot]:
        """Every image, in request order."""
        return [p for turn in self.turns for p in turn.parts if isinstance(p, ImageSlot)]
