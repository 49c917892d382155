"""Choice events -> OpenAI objects: the whole response, or its stream chunks.

Both renderings fold the same events the same way, so a streamed and a non-streamed
request give the same content, tool calls, logprobs, finish reason and usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelhub.formats.base import ContentDelta, ToolCallDelta
from modelhub.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    DeltaToolCall,
    FunctionCall,
    ResponseMessage,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from modelhub.serving.backends.base import ChoiceEnd, ChoiceEvent, Logprob

__all__ = ["ChunkRenderer", "CompletionBuilder"]


def _wire_logprob(entry: Logprob) -> TokenLogprob:
    return TokenLogprob(
        token=entry.token,
        logprob=entry.logprob,
        bytes=list(entry.token.encode()),
        top_logprobs=[
            TopLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in entry.top
        ],
    )


@dataclass
class _Call:
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, event: ChoiceEvent) -> None:
        if isinstance(event, ContentDelta):
            self.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(event.index, _Call())
            call.id = call.id or event.id
            call.name += event.name or ""
            call.arguments += event.arguments
        elif isinstance(event, Logprob):
            self.logprobs.append(_wire_logprob(event))
        elif isinstance(event, ChoiceEnd):
            self.finish_reason = event.finish_reason

    def message(self, index: int) -> ResponseMessage:
        calls = [
            ToolCall(
                id=call.id or f"call_{index}_{i}",
                function=FunctionCall(name=call.name, arguments=call.arguments),
            )
            for i, call in sorted(self.calls.items())
        ]
        content = "".join(self.text)
        return ResponseMessage(content=content or (None if calls else ""), tool_calls=calls)


class CompletionBuilder:
    """Folds a request's events into one ``ChatCompletion``."""

    def __init__(self, completion_id: str, model: str, n: int, logprobs: bool):
        self._id = completion_id
        self._model = model
        self._logprobs = logprobs
        self._choices = [_ChoiceState() for _ in range(n)]

    def add(self, index: int, event: ChoiceEvent) -> None:
        self._choices[index].add(event)

    def build(self, usage: Usage) -> ChatCompletion:
        return ChatCompletion(
            id=self._id,
            model=self._model,
            choices=[
                Choice(
                    index=i,
                    message=state.message(i),
                    logprobs=ChoiceLogprobs(content=state.logprobs) if self._logprobs else None,
                    finish_reason=state.finish_reason or "stop",
                )
                for i, state in enumerate(self._choices)
            ],
            usage=usage,
        )


class ChunkRenderer:
    """Turns a request's events into stream chunks. A token's logprobs travel with the
    chunk that carries its text (or alone, when the token produced none)."""

    def __init__(self, completion_id: str, model: str, created: int, n: int):
        self._id = completion_id
        self._model = model
        self._created = created
        self._pending: list[list[TokenLogprob]] = [[] for _ in range(n)]
        self._n = n

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self._id, created=self._created, model=self._model, choices=choices, usage=usage
        )

    def opening(self) -> list[ChatCompletionChunk]:
        return [
            self._chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            for i in range(self._n)
        ]

    def _with_logprobs(self, index: int, delta: Delta, **extra) -> ChatCompletionChunk:
        pending, self._pending[index] = self._pending[index], []
        logprobs = ChoiceLogprobs(content=pending) if pending else None
        return self._chunk([ChunkChoice(index=index, delta=delta, logprobs=logprobs, **extra)])

    def render(self, index: int, event: ChoiceEvent) -> list[ChatCompletionChunk]:
        if isinstance(event, Logprob):
            self._pending[index].append(_wire_logprob(event))
            return []
        if isinstance(event, ContentDelta):
            return [self._with_logprobs(index, Delta(content=event.text))] if event.text else []
        if isinstance(event, ToolCallDelta):
            call = DeltaToolCall(
                index=event.index,
                id=event.id,
                type="function" if event.id else None,
                function={"name": event.name, "arguments": event.arguments},
            )
            return [self._with_logprobs(index, Delta(tool_calls=[call]))]
        if isinstance(event, ChoiceEnd):
            end = self._chunk(
                [ChunkChoice(index=index, delta=Delta(), finish_reason=event.finish_reason)]
            )
            if self._pending[index]:
                return [self._with_logprobs(index, Delta()), end]
            return [end]
        return []

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self._chunk([], usage=usage)
