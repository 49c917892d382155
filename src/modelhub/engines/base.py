"""The seam between serving and whatever runs the model.

An engine takes one generation job (a prompt already encoded by the model's format, and
the sampling parameters) and yields token events until it finishes. Closing the iterator
early (client gone, stop string seen) cancels the sequence and frees its slot at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from modelhub.formats.base import EncodedPrompt
from modelhub.schemas.chat import ChatCompletionRequest

__all__ = [
    "SamplingParams",
    "GenerationJob",
    "TokenEvent",
    "FinishEvent",
    "EngineEvent",
    "EngineStats",
    "Engine",
]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int | None = None  # None: no logprobs at all
    grammar: str | None = None


@dataclass(frozen=True)
class GenerationJob:
    request_id: str
    prompt: EncodedPrompt
    params: SamplingParams
    # The original request, for engines that forward it (an upstream OpenAI server).
    request: ChatCompletionRequest | None = None


@dataclass(frozen=True)
class TokenEvent:
    token_id: int
    text: str  # the piece this token completes; "" while a UTF-8 sequence is unfinished
    logprob: float | None = None
    top_logprobs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


EngineEvent = TokenEvent | FinishEvent


@dataclass
class EngineStats:
    queued: int = 0
    running: int = 0
    slots: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]: ...
