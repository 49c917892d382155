"""The seam between serving and whatever runs the model.

An engine takes one generation job (a prompt already encoded by the model's format, and
the sampling parameters) and yields token events until it finishes. Closing the iterator
early (client gone, stop string seen) cancels the sequence and frees its slot at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from modelhub.formats.base import EncodedPrompt, ToolCallDelta
from modelhub.schemas.chat import ChatCompletionRequest

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "Engine",
    "EngineEvent",
    "EngineStats",
    "FinishEvent",
    "GenerationJob",
    "MessageDelta",
    "RemoteCounter",
    "SamplingParams",
    "TokenEvent",
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
    # vLLM's and llama-server's ``ignore_eos``: generate max_tokens whatever the model says
    # (benchmarks need equal output lengths on every server).
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationJob:
    request_id: str
    prompt: EncodedPrompt
    params: SamplingParams
    # The original request and its checked images by location, for engines that forward
    # the request (an upstream OpenAI server).
    request: ChatCompletionRequest | None = None
    images: Mapping[str, Image] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenEvent:
    token_id: int
    text: str  # the piece this token completes; "" while a UTF-8 sequence is unfinished
    logprob: float | None = None
    top_logprobs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class MessageDelta:
    """Output an engine has already parsed (an upstream OpenAI server): no token ids, and
    the model's format is not applied again."""

    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    completion_tokens: int = 0  # tokens this delta is known to cover, when the engine says


@dataclass(frozen=True)
class FinishEvent:
    reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    completion_tokens: int


EngineEvent = TokenEvent | MessageDelta | FinishEvent


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


@runtime_checkable
class RemoteCounter(Protocol):
    """An engine that can count a prompt itself, for models with no local format."""

    async def count_prompt(self, request: ChatCompletionRequest) -> EncodedPrompt: ...
