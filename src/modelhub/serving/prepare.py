"""The stages of a request before inference, shared by chat and ``/tokenize``.

``resolve`` (no I/O): the catalog entry, its lifecycle, the request's checks against the
card, and the per-request output cap. ``encode`` (the expensive part, run only after the
caller passed its rate limits): fetch and decode the images, encode the prompt through the
model's backend, and fit it to the context window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import anyio

from modelhub.errors import (
    ContextLengthExceededError,
    EndpointNotSupportedError,
    InvalidRequestError,
)
from modelhub.formats.base import EncodedPrompt
from modelhub.formats.conversation import Conversation
from modelhub.media import load_images
from modelhub.platform import Principal, Reservation
from modelhub.schemas.chat import ChatCompletionRequest, ImagePart
from modelhub.serving.conversation import to_conversation
from modelhub.serving.deployment import Deployment, ServedModel
from modelhub.serving.validation import validate_for_model
from modelhub.settings import Settings

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["Encoded", "PreparedChat", "PromptStage", "Resolved", "estimate_prompt_tokens"]

# Before encoding, a prompt is reckoned at a token per 4 characters (Tekken and Gemma
# average 3.5-4.5 on English) and an image at 256 tokens; the reservation is reconciled
# to the exact count once the request ends.
_CHARS_PER_TOKEN = 4
_IMAGE_TOKENS_GUESS = 256


@dataclass
class Resolved:
    served: ServedModel
    headers: dict[str, str]
    # The most tokens each choice may generate, when the request names it.
    asked_max_tokens: int | None


@dataclass
class Encoded:
    conversation: Conversation
    images: dict[str, Image]
    prompt: EncodedPrompt


@dataclass
class PreparedChat:
    """A request that passed every check up to inference, with its exact prompt."""

    id: str
    request: ChatCompletionRequest
    served: ServedModel
    principal: Principal
    received_at: datetime
    headers: dict[str, str]
    conversation: Conversation
    prompt: EncodedPrompt
    max_tokens: int
    images: Mapping[str, Image] = field(default_factory=dict)
    reservation: Reservation | None = None


def estimate_prompt_tokens(request: ChatCompletionRequest) -> int:
    """A cheap upper-ish guess, for rate limits checked before any work is done. Text is
    measured in characters as given (``repr``, not JSON: a lone surrogate must not fail)."""
    chars = images = 0
    for message in request.messages:
        parts = message.content if isinstance(message.content, list) else [message.content]
        for part in parts:
            if isinstance(part, ImagePart):
                images += 1
            else:
                chars += len(repr(part))
        chars += len(repr(getattr(message, "tool_calls", None) or ""))
    chars += len(repr(request.tools or ""))
    return chars // _CHARS_PER_TOKEN + 1 + _IMAGE_TOKENS_GUESS * images


class PromptStage:
    def __init__(self, deployment: Deployment, settings: Settings):
        self._deployment = deployment
        self._settings = settings

    def resolve(self, request: ChatCompletionRequest, *, generating: bool = True) -> Resolved:
        """``generating=False``: only counting, which a model's format can do alone."""
        served = self._deployment.get(request.model)
        headers = self._deployment.catalog.check_lifecycle(served.card)
        validate_for_model(request, served.card, self._settings)
        if generating or served.format is None:
            served.require_backend()
        asked = request.requested_max_tokens
        cap = self._settings.max_request_completion_tokens
        # A max_tokens beyond the window itself is the context check's to report (below).
        if asked is not None and asked * request.n > cap and asked <= served.max_context:
            param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise InvalidRequestError(
                f"n x {param} is {request.n} x {asked} = {request.n * asked} tokens; this hub "
                f"generates at most {cap} tokens per request.",
                param=param,
            )
        return Resolved(served, headers, asked)

    async def encode(self, resolved: Resolved, request: ChatCompletionRequest) -> Encoded:
        conversation = to_conversation(request)
        slots = [(slot.location, slot.url) for slot in conversation.image_slots()]
        images = await load_images(slots, self._settings)
        served = resolved.served
        if served.backend is not None:
            prompt = await served.backend.encode(request, conversation, images)
        else:
            prompt = await anyio.to_thread.run_sync(
                served.require_format().encode, conversation, images
            )
        return Encoded(conversation, images, prompt)

    def max_tokens(
        self, resolved: Resolved, request: ChatCompletionRequest, prompt: EncodedPrompt
    ) -> int:
        """Each choice's output budget: what was asked, or what is left of the window (and
        of the per-request cap); a prompt that does not fit is a 400."""
        window = resolved.served.max_context
        asked = resolved.asked_max_tokens
        per_choice_cap = max(self._settings.max_request_completion_tokens // request.n, 1)
        if prompt.estimated_tokens is not None:
            # The upstream counts and enforces its window itself.
            return asked or min(max(window - prompt.prompt_tokens, 1), per_choice_cap)
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        if prompt.prompt_tokens >= window or (asked and prompt.prompt_tokens + asked > window):
            wanted = f" + {asked} ({param})" if asked else ""
            raise ContextLengthExceededError(
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{prompt.prompt_tokens + (asked or 0)} tokens ({prompt.prompt_tokens} in the "
                f"messages{wanted}). Please reduce the length of the messages or completion.",
                param=param if asked else "messages",
            )
        return asked or min(window - prompt.prompt_tokens, per_choice_cap)

    def token_prompt(self, resolved: Resolved, prompt: list[int] | str) -> Encoded:
        """A prompt given as token ids, or as text the model's own tokenizer encodes as it
        is (``/v1/completions``): no chat format, no images. Only an engine that holds the
        vocabulary here can take it."""
        engine = getattr(resolved.served.backend, "engine", None)
        vocab = getattr(engine, "vocab_size", 0)
        if not vocab:
            raise EndpointNotSupportedError(
                f"The model '{resolved.served.card.id}' does not support text completions "
                "(/v1/completions) on this hub; use /v1/chat/completions.",
                param="model",
            )
        if isinstance(prompt, str):
            ids = engine.tokenizer.encode(prompt, add_bos=True)
        elif all(0 <= t < vocab for t in prompt):
            ids = list(prompt)
        else:
            raise InvalidRequestError(
                f"Every prompt token id must be between 0 and {vocab - 1}.", param="prompt"
            )
        return Encoded(Conversation(turns=()), {}, EncodedPrompt(token_ids=ids))

    async def count(self, resolved: Resolved, request: ChatCompletionRequest) -> dict:
        """``/tokenize`` and ``modelhub tokenize``: chat's own path up to the exact count."""
        prompt = (await self.encode(resolved, request)).prompt
        return {
            "prompt_tokens": prompt.prompt_tokens,
            "image_tokens": prompt.image_tokens,
            "estimated": prompt.estimated_tokens is not None,
            "max_model_len": resolved.served.max_context,
            # vLLM's /tokenize answers with these two; clients written for it keep working.
            "count": prompt.prompt_tokens,
            "tokens": prompt.token_ids,
        }
