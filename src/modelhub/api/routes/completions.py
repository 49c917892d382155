"""POST /v1/completions: a prompt of token ids (or text) continued as it is, no chat format.

It is what benchmarks send to every server alike (vLLM's ``benchmark_serving`` does the
same): the exact token ids, ``ignore_eos`` and ``max_tokens``. It runs through the chat
service's stages (limits, backend, accounting) with the prompt already encoded, so billing
and metrics are the chat endpoint's own. Only a model whose engine runs here (it owns a
vocabulary) can take token ids; an upstream model answers that it does not support this.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from modelhub.api.cancellation import until_disconnect
from modelhub.api.deps import AuthenticatedRoute, authenticate, hub
from modelhub.api.openapi import MODEL_ERRORS
from modelhub.api.sse import EventStreamResponse
from modelhub.schemas.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    StreamOptions,
    Usage,
)
from modelhub.serving.chat import ChatStream

__all__ = ["CompletionRequest", "router"]

router = APIRouter(route_class=AuthenticatedRoute, responses=MODEL_ERRORS)


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


def _sampling(body: CompletionRequest) -> ChatCompletionRequest:
    """The chat stages take a chat request: this one carries only the sampling fields (its
    message is never rendered: the prompt is given)."""
    return ChatCompletionRequest(
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


async def _text_chunks(chunks: ChatStream) -> AsyncGenerator[_Completion, None]:
    try:
        async for chunk in chunks:
            if (text := _as_text(chunk)) is not None:
                yield text
    finally:
        await chunks.aclose()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    h = hub(request)
    principal = await authenticate(request, body.model)
    prepared = await until_disconnect(
        request, h.chat.prepare_tokens(_sampling(body), body.prompt, principal)
    )
    if body.stream:
        stream = await until_disconnect(request, h.chat.open_stream(prepared))
        return EventStreamResponse(stream, prepared.headers, chunks=_text_chunks(stream))
    done = await until_disconnect(request, h.chat.complete(prepared))
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
