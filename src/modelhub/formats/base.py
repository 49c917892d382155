"""What a model family's chat format does: messages in, prompt token ids out; text out,
OpenAI content and tool calls back.

A format is chosen per catalog entry (``format = "mistral"`` or ``"plain"``). It never
touches HTTP, the OpenAI wire models or an engine: it receives a validated conversation
(``conversation.Conversation``) and the images the media stage has already decoded, keyed
by where they sit in the request (``messages[0].content[1]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from modelhub.formats.conversation import Conversation

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "ChatFormat",
    "ContentDelta",
    "EncodedPrompt",
    "OutputDelta",
    "OutputParser",
    "PromptImage",
    "Tokenizer",
    "ToolCallDelta",
]


@dataclass(frozen=True)
class PromptImage:
    """An image as the model sees it, and where its tokens sit in the prompt.

    The format resizes the image once, to its model's geometry; ``image`` holds exactly the
    pixels the vision encoder must take (it resizes nothing), and ``grid`` the rows and
    columns of image tokens they make.
    """

    location: str
    image: Image
    offset: int
    n_tokens: int
    grid: tuple[int, int]


@dataclass(frozen=True)
class EncodedPrompt:
    token_ids: list[int]
    image_tokens: int = 0
    images: tuple[PromptImage, ...] = ()
    # GBNF grammar constraining the output (structured output, forced tool calls).
    grammar: str | None = None
    # Stop strings the format itself needs (e.g. where a base model starts a new turn).
    stop: tuple[str, ...] = ()
    # Set only when no tokenizer could count the prompt (an upstream without /tokenize):
    # limits reserve this estimate, and billing uses the engine's own count afterwards.
    estimated_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        if self.estimated_tokens is not None:
            return self.estimated_tokens
        return len(self.token_ids)


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """OpenAI streams a tool call as a head (index, id, name) then argument fragments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


OutputDelta = ContentDelta | ToolCallDelta


class OutputParser(Protocol):
    """Generated text -> content and tool-call deltas. The message is the fold of the
    deltas, so a streamed and a whole response cannot differ."""

    # Control-token texts this parser reads as markup (e.g. ``[TOOL_CALLS]``); the local
    # backend drops every other control token before the parser sees it.
    markers: frozenset[str]

    def feed(self, text: str) -> list[OutputDelta]:
        """Take the next piece of generated text; return what can be emitted now."""

    def finish(self) -> list[OutputDelta]:
        """End of generation: the deltas still held back."""


class Tokenizer(Protocol):
    def encode(self, text: str, *, add_bos: bool) -> list[int]: ...


class ChatFormat(Protocol):
    def encode(self, conversation: Conversation, images: Mapping[str, Image]) -> EncodedPrompt: ...

    def output_parser(self, conversation: Conversation) -> OutputParser: ...
