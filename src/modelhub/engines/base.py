"""The token-level engine interface: token ids, image spans and sampling in, token events
out. Nothing here knows the OpenAI wire format; serving's local backend wraps an engine
with a chat format, stop strings and an output parser.

An engine takes one generation job and yields token events until it finishes. Closing the
iterator early (client gone, stop string seen) cancels the sequence and frees its slot at
the next step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from modelhub.formats.base import EncodedPrompt

__all__ = [
    "Engine",
    "EngineEvent",
    "EngineStats",
    "FinishEvent",
    "GenerationJob",
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
    tenant: str = ""  # the contract id; sequences are shared fairly between tenants
    max_running: int | None = None  # the tenant's cap on running sequences (None: default)


@dataclass(frozen=True)
class TokenEvent:
    token_id: int
    text: str  # the piece this token completes; "" while a UTF-8 sequence is unfinished
    logprob: float | None = None
    top_logprobs: tuple[tuple[str, float], ...] = ()
    special: bool = False  # a control token ([TOOL_CALLS], [IMG]...): markup, not text


@dataclass(frozen=True)
class FinishEvent:
    reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    completion_tokens: int


EngineEvent = TokenEvent | FinishEvent


@dataclass
class EngineStats:
    queued: int = 0
    running: int = 0
    slots: int = 0
    preemptions: int = 0  # since start
    kv_cache_usage: float | None = None  # 0 to 1; None where the engine cannot tell
    healthy_replicas: int | None = None  # upstream engines only
    extra: dict[str, float] = field(default_factory=dict)  # an engine's own counters


class Engine(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]: ...
