"""The seam serving talks to: one backend per served model.

A backend does two things:

- ``encode`` a request: the exact prompt tokens (a local format, or the upstream's
  ``/tokenize``), or an estimate that says it is one;
- ``generate`` one choice of a request as a stream of choice events.

Two kinds exist. ``LocalBackend`` is a chat format plus a token-level engine, with the
stop strings and the output parser applied here; ``UpstreamBackend`` relays an
OpenAI-compatible server (vLLM in production), which applies its own. Serving renders the
same events into a response or into stream chunks, so both renderings agree by
construction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from modelhub.engines.base import EngineStats
from modelhub.formats.base import ContentDelta, EncodedPrompt, ToolCallDelta
from modelhub.formats.conversation import Conversation
from modelhub.schemas.chat import ChatCompletionRequest

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "Backend",
    "ChoiceEnd",
    "ChoiceEvent",
    "ContentDelta",
    "FinishReason",
    "Logprob",
    "Progress",
    "RequestJob",
    "ToolCallDelta",
]

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class Logprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Progress:
    """Tokens generated since the last event, whether or not they produced output (a held
    stop-string prefix, a tool-call marker): what a cut request is billed."""

    tokens: int = 1


@dataclass(frozen=True)
class ChoiceEnd:
    """The choice is over. The counts are the backend's own and override the progress seen."""

    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int


ChoiceEvent = ContentDelta | ToolCallDelta | Logprob | Progress | ChoiceEnd


@dataclass(eq=False)
class RequestJob:
    """What every choice of one admitted request shares."""

    id: str
    request: ChatCompletionRequest
    conversation: Conversation
    prompt: EncodedPrompt
    images: Mapping[str, Image]
    max_tokens: int
    tenant: str = ""
    max_running: int | None = None


class Backend(Protocol):
    name: str
    where: str  # for logs and errors: a GGUF path or upstream URLs

    @property
    def max_context(self) -> int | None: ...

    @property
    def ready(self) -> bool: ...

    async def close(self) -> None: ...

    def stats(self) -> EngineStats: ...

    async def encode(
        self,
        request: ChatCompletionRequest,
        conversation: Conversation,
        images: Mapping[str, Image],
    ) -> EncodedPrompt: ...

    def generate(self, job: RequestJob, index: int) -> AsyncIterator[ChoiceEvent]: ...
