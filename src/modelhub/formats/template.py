"""The chat template a GGUF carries, applied by llama.cpp itself (``llama_chat_apply_template``).

For instruction-tuned models served from a GGUF with no format of their own in modelhub
(e.g. Llama 3.3). llama.cpp recognises the common templates by their text; tool calling
is not offered through this path.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import TYPE_CHECKING

import llama_cpp

from modelhub.formats.base import ContentDelta, EncodedPrompt, OutputDelta, Tokenizer
from modelhub.formats.conversation import Conversation
from modelhub.formats.grammar import response_format_grammar

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["TemplateFormat", "TextOutputParser"]


class TextOutputParser:
    markers: frozenset[str] = frozenset()

    def feed(self, text: str) -> list[OutputDelta]:
        return [ContentDelta(text)] if text else []

    def finish(self) -> list[OutputDelta]:
        return []


class TemplateFormat:
    def __init__(self, template: str, tokenizer: Tokenizer):
        self._template = template.encode()
        self._tokenizer = tokenizer

    def render(self, conversation: Conversation) -> str:
        encoded = [(t.role.encode(), t.text.encode()) for t in conversation.turns]
        chat = (llama_cpp.llama_chat_message * len(encoded))(*encoded)
        size = 1024 + 2 * sum(len(c) for _, c in encoded)
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_chat_apply_template(
                self._template, chat, len(encoded), True, buf, size
            )
            if n < 0:
                raise ValueError("llama.cpp does not recognise this model's chat template")
            if n <= size:
                return buf.raw[:n].decode()
            size = n

    def encode(self, conversation: Conversation, images: Mapping[str, Image]) -> EncodedPrompt:
        ids = self._tokenizer.encode(self.render(conversation), add_bos=True)
        # Some templates write the BOS token as text too; the model wants it once.
        if len(ids) > 1 and ids[0] == ids[1]:
            ids = ids[1:]
        return EncodedPrompt(
            token_ids=ids, grammar=response_format_grammar(conversation.json_output)
        )

    def output_parser(self, conversation: Conversation) -> TextOutputParser:
        return TextOutputParser()
