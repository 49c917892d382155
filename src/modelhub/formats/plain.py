"""A plain question/answer prompt for base (not instruction-tuned) models.

Measured on the demo model (Gemma 3 270M base, greedy, 4 short factual questions):
``Question: ...\\nAnswer:`` gave the right short answer to all four and then started a new
``Question:``; Gemma's own chat turns (``<start_of_turn>user``) gave echoes and noise for
all four. So the prompt is Q/A lines, and a new ``\\nQuestion:`` ends the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from modelhub.formats.base import (
    ContentDelta,
    EncodedPrompt,
    OutputDelta,
    Tokenizer,
)
from modelhub.formats.conversation import Conversation
from modelhub.formats.grammar import response_format_grammar

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["PlainFormat", "PlainOutputParser"]

_TURN_STOP = "\nQuestion:"


class PlainOutputParser:
    """Text is content; the space the model puts after ``Answer:`` is not."""

    markers: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._started = False

    def feed(self, text: str) -> list[OutputDelta]:
        if not self._started:
            text = text.lstrip()
            if not text:
                return []
            self._started = True
        return [ContentDelta(text)]

    def finish(self) -> list[OutputDelta]:
        return []


class PlainFormat:
    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer

    def render(self, conversation: Conversation) -> str:
        lines: list[str] = []
        for turn in conversation.turns:
            text = turn.text.strip()
            if turn.role == "system":
                lines.append(text + "\n")
            elif turn.role == "user":
                lines.append(f"Question: {text}\n")
            elif turn.role == "assistant":
                lines.append(f"Answer: {text}\n")
            else:  # a tool result reads as context for the next answer
                lines.append(f"Result: {text}\n")
        return "".join(lines) + "Answer:"

    def encode(self, conversation: Conversation, images: Mapping[str, Image]) -> EncodedPrompt:
        ids = self._tokenizer.encode(self.render(conversation), add_bos=True)
        return EncodedPrompt(
            token_ids=ids,
            grammar=response_format_grammar(conversation.json_output),
            stop=(_TURN_STOP,),
        )

    def output_parser(self, conversation: Conversation) -> PlainOutputParser:
        return PlainOutputParser()
