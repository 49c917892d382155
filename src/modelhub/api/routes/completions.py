"""POST /v1/completions: a prompt of token ids (or text) continued as it is, no chat format.

It is what benchmarks send to every server alike (vLLM's ``benchmark_serving`` does the
same): the exact token ids, ``ignore_eos`` and ``max_tokens``. It runs through the chat
service's stages (limits, engine job, ledger) with the prompt already encoded, so billing
and metrics are the chat endpoint's own. Only engines that run the model here (they own a
vocabulary) can take token ids; an upstream model answers that it does not support this.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelhub.api.deps import authenticate, hub
from modelhub.api.sse import sse_events
from modelhub.errors import (
    ContextLengthExceededError,
    EndpointNotSupportedError,
    InvalidRequestError,
)
from modelhub.formats.base import EncodedPrompt
from modelhub.schemas.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    StreamOptions,
    Usage,
    new_completion_id,
)
from modelhub.serving.chat import PreparedChat

__all__ = ["CompletionRequest", "router"]

router = APIRouter()


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: list[int] | str = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False


class _Choice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class _Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[_Choice]
    usage: Usage | None = None


def _prompt_ids(body: CompletionRequest, engine: object) -> list[int]:
    vocab = getattr(engine, "vocab_size", None)
    if not vocab:
        raise EndpointNotSupportedError(
            f"The model '{body.model}' does not support legacy text completions "
            "(/v1/completions) on this hub; use /v1/chat/completions.",
            param="model",
        )
    if isinstance(body.prompt, str):
        return engine.tokenizer.encode(body.prompt, add_bos=True)
    if not all(0 <= t < vocab for t in body.prompt):
        raise InvalidRequestError(
            f"Every prompt token id must be between 0 and {vocab - 1}.", param="prompt"
        )
    return body.prompt


def _prepare(body: CompletionRequest, request: Request, principal) -> PreparedChat:
    h = hub(request)
    served = h.deployment.get(body.model)
    headers = h.deployment.catalog.check_lifecycle(served.card)
    ids = _prompt_ids(body, served.require_engine())
    if len(ids) + body.max_tokens > served.max_context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {served.max_context} tokens. However, you "
            f"requested {len(ids) + body.max_tokens} tokens ({len(ids)} in the prompt + "
            f"{body.max_tokens} (max_tokens)). Please reduce the prompt or max_tokens.",
            param="max_tokens",
        )
    # The chat service's stages take a chat request; this one carries only the sampling
    # fields (its message is never rendered: the prompt is already encoded).
    chat = ChatCompletionRequest(
        model=body.model,
        messages=[{"role": "user", "content": ""}],
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop,
        stream=body.stream,
        stream_options=body.stream_options,
        ignore_eos=body.ignore_eos,
    )
    return PreparedChat(
        id=new_completion_id().replace("chatcmpl-", "cmpl-"),
        request=chat,
        served=served,
        prompt=EncodedPrompt(token_ids=ids),
        max_tokens=body.max_tokens,
        headers=headers,
        received_at=datetime.now(UTC),
        principal=principal,
    )


def _as_text(chunk: ChatCompletionChunk) -> _Completion | None:
    choices = [
        _Choice(index=c.index, text=c.delta.content or "", finish_reason=c.finish_reason)
        for c in chunk.choices
        if c.delta.content or c.finish_reason
    ]
    if not choices and chunk.usage is None:
        return None  # the chat stream's opening role chunk
    return _Completion(
        id=chunk.id, created=chunk.created, model=chunk.model, choices=choices, usage=chunk.usage
    )


async def _text_chunks(chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[_Completion]:
    async for chunk in chunks:
        if (text := _as_text(chunk)) is not None:
            yield text


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    h = hub(request)
    principal = await authenticate(request, body.model)
    prepared = _prepare(body, request, principal)
    await h.chat.admit(prepared)
    if body.stream:
        return StreamingResponse(
            sse_events(_text_chunks(h.chat.stream(prepared))),
            media_type="text/event-stream",
            headers={**prepared.headers, "Cache-Control": "no-cache"},
        )
    done = await h.chat.complete(prepared)
    choice = done.choices[0]
    completion = _Completion(
        id=done.id,
        created=int(time.time()),
        model=body.model,
        choices=[_Choice(text=choice.message.content or "", finish_reason=choice.finish_reason)],
        usage=done.usage,
    )
    return Response(
        completion.model_dump_json(), media_type="application/json", headers=prepared.headers
    )
