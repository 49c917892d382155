"""A model served in this process: a chat format around a token-level engine.

The format encodes the request; the engine turns token ids into token events; this module
applies the stop strings and the format's output parser and hands serving choice events.
Control tokens reach the parser only when it uses them as markers (Mistral's
``[TOOL_CALLS]`` with tools on); any other control token is counted and dropped, so none
ever shows up in content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import anyio

from modelhub.engines.base import Engine, EngineStats, FinishEvent, GenerationJob, SamplingParams
from modelhub.formats.base import ChatFormat, EncodedPrompt, ToolCallDelta
from modelhub.formats.conversation import Conversation
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.backends.base import (
    ChoiceEnd,
    ChoiceEvent,
    Logprob,
    Progress,
    RequestJob,
)
from modelhub.serving.stops import StopMatcher

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["LocalBackend"]

_PROGRESS = Progress()


def sampling_params(job: RequestJob, index: int) -> SamplingParams:
    request = job.request
    return SamplingParams(
        max_tokens=job.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        # Choices of one request must differ yet stay reproducible for a given seed.
        seed=None if request.seed is None else request.seed + index,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        grammar=job.prompt.grammar,
        ignore_eos=request.ignore_eos,
    )


class LocalBackend:
    def __init__(self, chat_format: ChatFormat, engine: Engine, where: str):
        self.format = chat_format
        self.engine = engine
        self.name = engine.name
        self.where = where

    @property
    def max_context(self) -> int | None:
        return getattr(self.engine, "max_context", None)

    @property
    def ready(self) -> bool:
        return self.engine.ready

    async def close(self) -> None:
        await self.engine.close()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    async def encode(
        self,
        request: ChatCompletionRequest,
        conversation: Conversation,
        images: Mapping[str, Image],
    ) -> EncodedPrompt:
        # mistral-common and llama.cpp's tokenizer take milliseconds per long prompt.
        return await anyio.to_thread.run_sync(self.format.encode, conversation, images)

    async def generate(self, job: RequestJob, index: int) -> AsyncIterator[ChoiceEvent]:
        request = job.request
        stops = StopMatcher([*request.stop_strings, *job.prompt.stop])
        parser = self.format.output_parser(job.conversation)
        markers = parser.markers
        engine_job = GenerationJob(
            f"{job.id}/{index}",
            job.prompt,
            sampling_params(job, index),
            tenant=job.tenant,
            max_running=job.max_running,
        )
        reason, generated, called = "stop", 0, False
        events = self.engine.generate(engine_job)
        try:
            async for event in events:
                if isinstance(event, FinishEvent):
                    reason, generated = event.reason, event.completion_tokens
                    break
                generated += 1
                yield _PROGRESS
                if event.logprob is not None:
                    yield Logprob(event.text, event.logprob, event.top_logprobs)
                if event.special and event.text not in markers:
                    continue
                for delta in parser.feed(stops.feed(event.text)):
                    called = called or isinstance(delta, ToolCallDelta)
                    yield delta
                if stops.stopped:
                    reason = "stop"
                    break
        finally:
            await events.aclose()
        tail = stops.flush()
        for delta in [*(parser.feed(tail) if tail else ()), *parser.finish()]:
            called = called or isinstance(delta, ToolCallDelta)
            yield delta
        if called and reason == "stop":
            reason = "tool_calls"
        yield ChoiceEnd(reason, generated, job.prompt.prompt_tokens)
