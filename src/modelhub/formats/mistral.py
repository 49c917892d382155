"""Mistral Small 3.2's chat format, through mistral-common (the vendor's reference encoder).

Conversation -> mistral-common's typed request (messages, image chunks, tools, tool choice) ->
``encode_chat_completion`` -> token ids; the image tokens are counted apart. Generated text
goes back through ``MistralToolParser`` (``mistral_tools``).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
from mistral_common.protocol.instruct.messages import (
    AssistantMessage as MAssistant,
)
from mistral_common.protocol.instruct.messages import (
    SystemMessage as MSystem,
)
from mistral_common.protocol.instruct.messages import (
    ToolMessage as MTool,
)
from mistral_common.protocol.instruct.messages import (
    UserMessage as MUser,
)
from mistral_common.protocol.instruct.request import ChatCompletionRequest as MRequest
from mistral_common.protocol.instruct.tool_calls import (
    Function,
    FunctionCall,
    Tool,
    ToolCall,
    ToolChoiceEnum,
)
from mistral_common.tokens.tokenizers.base import SpecialTokens
from mistral_common.tokens.tokenizers.image import DATASET_MEAN, DATASET_STD
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from modelhub.errors import InvalidRequestError
from modelhub.formats.base import EncodedPrompt, PromptImage
from modelhub.formats.conversation import Conversation, Text, Turn
from modelhub.formats.grammar import response_format_grammar
from modelhub.formats.mistral_tools import MistralToolParser, forced_call_grammar
from modelhub.formats.tekken import v11_tokenizer_file

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["MistralFormat", "mistral_tool_id"]


def _pixels(normalised: np.ndarray) -> Image:
    """mistral-common's encoder output (resized, CHW, normalised) back to 8-bit RGB."""
    hwc = normalised.transpose(1, 2, 0) * np.asarray(DATASET_STD) + np.asarray(DATASET_MEAN)
    return PIL.Image.fromarray(np.clip(np.rint(hwc * 255.0), 0, 255).astype(np.uint8), "RGB")


_ALPHANUMERIC = string.ascii_letters + string.digits


def mistral_tool_id(client_id: str) -> str:
    """Mistral wants 9 alphanumeric characters; clients send ids like ``call_...``. A valid
    id is kept; any other maps deterministically, so a call and its result still match."""
    if len(client_id) == 9 and client_id.isalnum() and client_id.isascii():
        return client_id
    digest = int.from_bytes(hashlib.sha256(client_id.encode()).digest(), "big")
    chars = []
    for _ in range(9):
        digest, rest = divmod(digest, len(_ALPHANUMERIC))
        chars.append(_ALPHANUMERIC[rest])
    return "".join(chars)


class MistralFormat:
    def __init__(self, tokenizer_path: Path | None, cache_dir: Path):
        path = tokenizer_path or v11_tokenizer_file(cache_dir)
        self._tokenizer = MistralTokenizer.from_file(str(path))
        inner = self._tokenizer.instruct_tokenizer.tokenizer
        self._image_ids = {
            inner.get_special_token(t)
            for t in (SpecialTokens.img, SpecialTokens.img_break, SpecialTokens.img_end)
        }
        self._img_end = inner.get_special_token(SpecialTokens.img_end)
        self._img_break = inner.get_special_token(SpecialTokens.img_break)
        self._tool_calls_token = inner.get_special_token(SpecialTokens.tool_calls)
        self._args_token = inner.get_special_token(SpecialTokens.args)

    # Conversation -> mistral-common ----------------------------------------------------
    @staticmethod
    def _user(turn: Turn, images: Mapping[str, Image]) -> MUser:
        if len(turn.parts) == 1 and isinstance(turn.parts[0], Text):
            return MUser(content=turn.parts[0].text)
        chunks = [
            TextChunk(text=p.text) if isinstance(p, Text) else ImageChunk(image=images[p.location])
            for p in turn.parts
        ]
        return MUser(content=chunks)

    @staticmethod
    def _assistant(turn: Turn) -> MAssistant:
        calls = [
            ToolCall(
                id=mistral_tool_id(c.id), function=FunctionCall(name=c.name, arguments=c.arguments)
            )
            for c in turn.tool_calls
        ]
        return MAssistant(content=turn.text or None, tool_calls=calls or None)

    def _messages(self, conversation: Conversation, images: Mapping[str, Image]) -> list:
        converted = []
        for turn in conversation.turns:
            if turn.role == "system":
                converted.append(MSystem(content=turn.text))
            elif turn.role == "user":
                converted.append(self._user(turn, images))
            elif turn.role == "assistant":
                converted.append(self._assistant(turn))
            else:
                tool_call_id = mistral_tool_id(turn.tool_call_id or "")
                converted.append(MTool(content=turn.text, tool_call_id=tool_call_id))
        return converted

    @staticmethod
    def _tools(conversation: Conversation) -> tuple[list[Tool] | None, ToolChoiceEnum]:
        if not conversation.tools_enabled:
            return None, ToolChoiceEnum.none if conversation.tools else ToolChoiceEnum.auto
        tools = conversation.tools
        if conversation.forced_tool is not None:
            # Only the named function is offered (validation checked it is there).
            tools = tuple(t for t in tools if t.name == conversation.forced_tool)
        choice = (
            ToolChoiceEnum.required
            if conversation.tool_choice == "required"
            else ToolChoiceEnum.auto
        )
        converted = [
            Tool(function=Function(name=t.name, description=t.description, parameters=t.parameters))
            for t in tools
        ]
        return converted, choice

    def _grammar(
        self, conversation: Conversation, tools: list[Tool] | None, choice: ToolChoiceEnum
    ) -> str | None:
        if tools and choice == ToolChoiceEnum.required:
            return forced_call_grammar(
                {t.function.name: t.function.parameters for t in tools},
                parallel=conversation.parallel_tool_calls,
                tool_calls_token=self._tool_calls_token,
                args_token=self._args_token,
            )
        return response_format_grammar(conversation.json_output)

    # ChatFormat -------------------------------------------------------------------------
    def encode(self, conversation: Conversation, images: Mapping[str, Image]) -> EncodedPrompt:
        tools, choice = self._tools(conversation)
        try:
            mistral_request = MRequest(
                messages=self._messages(conversation, images),
                tools=tools,
                tool_choice=choice,
                parallel_tool_calls=conversation.parallel_tool_calls,
            )
            tokenized = self._tokenizer.encode_chat_completion(mistral_request)
        except (MistralCommonException, ValueError) as exc:
            raise InvalidRequestError(
                f"The conversation cannot be encoded for this model: {exc}", param="messages"
            ) from exc
        ids = list(tokenized.tokens)
        return EncodedPrompt(
            token_ids=ids,
            image_tokens=sum(1 for t in ids if t in self._image_ids),
            images=self._placed_images(ids, list(images), tokenized.images),
            grammar=self._grammar(conversation, tools, choice),
        )

    def _placed_images(
        self, ids: list[int], locations: list[str], resized: list[np.ndarray]
    ) -> tuple[PromptImage, ...]:
        """Where each image's run of [IMG]/[IMG_BREAK]/[IMG_END] tokens sits in the prompt,
        with the pixels mistral-common resized it to (the only resize an image gets). A run
        ends at its [IMG_END]: images side by side in one message touch."""
        runs, start, breaks = [], None, 0
        for position, token in enumerate(ids):
            if token in self._image_ids and start is None:
                start, breaks = position, 0
            breaks += token == self._img_break
            if token == self._img_end:
                n = position + 1 - start
                rows = breaks + 1
                runs.append((start, n, (rows, (n - rows) // rows)))
                start = None
        # load_images keeps request order, and mistral-common returns images in that order.
        return tuple(
            PromptImage(location=loc, image=_pixels(array), offset=offset, n_tokens=n, grid=grid)
            for loc, array, (offset, n, grid) in zip(locations, resized, runs, strict=False)
        )

    def output_parser(self, conversation: Conversation) -> MistralToolParser:
        return MistralToolParser(
            tools_enabled=conversation.tools_enabled, parallel=conversation.parallel_tool_calls
        )
