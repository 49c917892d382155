"""Chat completions, from a parsed request to OpenAI response objects. No HTTP here.

A request goes through explicit stages: resolve (catalog, lifecycle, backend) -> validate
(against the model card) -> load images -> encode (the model's format: exact prompt tokens)
-> limit (contract-wide reservation) -> generate (one engine job per choice) -> decode
(stop strings, output parser) -> account (ledger row, reservation reconciled).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from modelhub.engines.base import (
    FinishEvent,
    GenerationJob,
    MessageDelta,
    RemoteCounter,
    SamplingParams,
    TokenEvent,
)
from modelhub.errors import ContextLengthExceededError, RateLimitError
from modelhub.formats.base import (
    ContentDelta,
    EncodedPrompt,
    OutputDelta,
    ParsedOutput,
    ToolCallDelta,
)
from modelhub.media import load_images
from modelhub.metrics import Metrics
from modelhub.platform import Platform, Principal, Reservation, UsageRecord
from modelhub.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
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
    new_completion_id,
)
from modelhub.serving.deployment import Deployment, ServedModel
from modelhub.serving.merge import merge
from modelhub.serving.stops import StopMatcher
from modelhub.serving.validation import validate_for_model
from modelhub.settings import Settings

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["ChatService", "PreparedChat"]

log = logging.getLogger(__name__)


@dataclass
class PreparedChat:
    """A request that passed every check up to inference, with its exact prompt."""

    id: str
    request: ChatCompletionRequest
    served: ServedModel
    prompt: EncodedPrompt
    max_tokens: int
    headers: dict[str, str]
    received_at: datetime
    principal: Principal
    images: Mapping[str, Image] = field(default_factory=dict)
    reservation: Reservation | None = None


@dataclass
class _ChoiceUpdate:
    index: int
    deltas: list[OutputDelta]
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    parsed: ParsedOutput | None = None


@dataclass
class _Tally:
    """What a request actually used, kept while it runs, for billing and metrics."""

    choice_tokens: dict[int, int] = field(default_factory=dict)
    engine_prompt_tokens: int | None = None  # the engine's own count, once it reports it
    first_token_at: datetime | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return sum(self.choice_tokens.values())

    def token(self, index: int) -> None:
        self.choice_tokens[index] = self.choice_tokens.get(index, 0) + 1
        if self.first_token_at is None:
            self.first_token_at = datetime.now(UTC)

    def finished(self, index: int, event: FinishEvent) -> None:
        # An engine's final count is authoritative (an upstream's usage); before it, each
        # token or delta received counts as one, which is what a cut stream is billed.
        self.choice_tokens[index] = event.completion_tokens
        self.engine_prompt_tokens = event.prompt_tokens

    def prompt_tokens(self, prepared: PreparedChat) -> int:
        if self.engine_prompt_tokens is not None:
            return self.engine_prompt_tokens
        return prepared.prompt.prompt_tokens


class _UpstreamMessage:
    """Collects an upstream's already-parsed deltas into the final message."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._calls: dict[int, dict] = {}

    def feed(self, text: str, calls: tuple[ToolCallDelta, ...]) -> list[OutputDelta]:
        deltas: list[OutputDelta] = [ContentDelta(text)] if text else []
        self._content.append(text)
        for call in calls:
            entry = self._calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            entry["name"] += call.name or ""
            entry["arguments"] += call.arguments
            deltas.append(call)
        return deltas

    def finish(self) -> ParsedOutput:
        calls = [
            ToolCall(
                id=c["id"] or f"call_{i}",
                function=FunctionCall(name=c["name"], arguments=c["arguments"]),
            )
            for i, c in sorted(self._calls.items())
        ]
        content = "".join(self._content)
        return ParsedOutput(content=content or None, tool_calls=calls)


def _logprob_entry(event: TokenEvent) -> TokenLogprob:
    return TokenLogprob(
        token=event.text,
        logprob=event.logprob if event.logprob is not None else 0.0,
        bytes=list(event.text.encode()),
        top_logprobs=[
            TopLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in event.top_logprobs
        ],
    )


class ChatService:
    def __init__(
        self, deployment: Deployment, platform: Platform, metrics: Metrics, settings: Settings
    ):
        self._deployment = deployment
        self._platform = platform
        self._metrics = metrics
        self.settings = settings

    # Stages up to inference ---------------------------------------------------------
    async def prepare(self, request: ChatCompletionRequest, principal: Principal) -> PreparedChat:
        received_at = datetime.now(UTC)
        if request.ignored_fields:
            log.debug("ignoring unknown request fields: %s", ", ".join(request.ignored_fields))
        served = self._deployment.get(request.model)
        lifecycle_headers = self._deployment.catalog.check_lifecycle(served.card)
        validate_for_model(request, served.card)
        engine = served.require_engine()
        images = await load_images(request, self.settings)
        if served.format is None and isinstance(engine, RemoteCounter):
            prompt = await engine.count_prompt(request)
        else:
            prompt = await anyio.to_thread.run_sync(served.require_format().encode, request, images)
        max_tokens = self._max_tokens(request, prompt, served)
        return PreparedChat(
            id=new_completion_id(),
            request=request,
            served=served,
            prompt=prompt,
            max_tokens=max_tokens,
            headers=lifecycle_headers,
            received_at=received_at,
            principal=principal,
            images=images,
        )

    @staticmethod
    def _max_tokens(
        request: ChatCompletionRequest, prompt: EncodedPrompt, served: ServedModel
    ) -> int:
        window = served.max_context
        asked = request.requested_max_tokens
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        if prompt.estimated_tokens is not None:
            return asked or max(window - prompt.prompt_tokens, 1)  # the upstream enforces it
        if prompt.prompt_tokens >= window or (asked and prompt.prompt_tokens + asked > window):
            wanted = f" + {asked} ({param})" if asked else ""
            raise ContextLengthExceededError(
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{prompt.prompt_tokens + (asked or 0)} tokens ({prompt.prompt_tokens} in the "
                f"messages{wanted}). Please reduce the length of the messages or completion.",
                param="messages" if not asked else param,
            )
        return asked or window - prompt.prompt_tokens

    async def admit(self, prepared: PreparedChat) -> None:
        """Reserve the request's tokens against its contract's limits (429 if over)."""
        # The reservation is for the worst case; it is reconciled to what was used.
        worst = prepared.prompt.prompt_tokens + prepared.max_tokens * prepared.request.n
        try:
            prepared.reservation = await self._platform.reserve(
                prepared.principal, prepared.request.model, worst
            )
        except RateLimitError:
            # On record, at no cost: nothing was processed.
            rejected = self._record(
                prepared, _Tally(), "rejected", prompt_tokens=0, finished_at=datetime.now(UTC)
            )
            self._platform.record(rejected)
            raise
        prepared.headers.update(prepared.reservation.headers)

    # Generation ------------------------------------------------------------------------
    def _job(self, prepared: PreparedChat, index: int) -> GenerationJob:
        request = prepared.request
        params = SamplingParams(
            max_tokens=prepared.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            # Choices of one request must differ yet stay reproducible for a given seed.
            seed=None if request.seed is None else request.seed + index,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
            grammar=prepared.prompt.grammar,
            ignore_eos=request.ignore_eos,
        )
        return GenerationJob(
            f"{prepared.id}/{index}", prepared.prompt, params, request, prepared.images
        )

    async def _run_choice(
        self, prepared: PreparedChat, index: int, tally: _Tally
    ) -> AsyncIterator[_ChoiceUpdate]:
        request = prepared.request
        engine = prepared.served.require_engine()
        stops = StopMatcher([*request.stop_strings, *prepared.prompt.stop])
        parser = prepared.served.format.output_parser(request) if prepared.served.format else None
        upstream = _UpstreamMessage()
        finish: str | None = None
        events = engine.generate(self._job(prepared, index))
        try:
            async for event in events:
                if isinstance(event, FinishEvent):
                    tally.finished(index, event)
                    finish = event.reason
                    break
                tally.token(index)
                text = stops.feed(event.text if isinstance(event, TokenEvent) else event.content)
                if isinstance(event, MessageDelta):
                    deltas = upstream.feed(text, event.tool_calls)
                    logprobs = []
                else:
                    deltas = parser.feed(text) if text else []
                    logprobs = [_logprob_entry(event)] if event.logprob is not None else []
                if deltas or logprobs:
                    yield _ChoiceUpdate(index, deltas, logprobs)
                if stops.stopped:
                    finish = "stop"
                    break
        finally:
            await events.aclose()
        tail = stops.flush()
        if parser is not None:
            deltas = parser.feed(tail) if tail else []
            parsed = parser.finish()
        else:
            deltas = upstream.feed(tail, ())
            parsed = upstream.finish()
        deltas.extend(parsed.deltas)
        if parsed.tool_calls:
            finish = "tool_calls"
        tally.finish_reasons[index] = finish or "stop"
        yield _ChoiceUpdate(index, deltas, finish_reason=finish or "stop", parsed=parsed)

    def _updates(self, prepared: PreparedChat, tally: _Tally) -> AsyncIterator[_ChoiceUpdate]:
        runs = [self._run_choice(prepared, i, tally) for i in range(prepared.request.n)]
        return runs[0] if len(runs) == 1 else merge(runs)

    async def complete(self, prepared: PreparedChat) -> ChatCompletion:
        tally = _Tally()
        choices: dict[int, Choice] = {}
        logprobs: dict[int, list[TokenLogprob]] = {i: [] for i in range(prepared.request.n)}
        status = "error"
        try:
            async for update in self._updates(prepared, tally):
                logprobs[update.index].extend(update.logprobs)
                if update.parsed is not None:
                    choices[update.index] = self._choice(prepared, update, logprobs[update.index])
            status = "ok"
        finally:
            await self._account(prepared, tally, status)
        return ChatCompletion(
            id=prepared.id,
            model=prepared.request.model,
            choices=[choices[i] for i in sorted(choices)],
            usage=self._usage(prepared, tally),
        )

    @staticmethod
    def _choice(
        prepared: PreparedChat, update: _ChoiceUpdate, logprobs: list[TokenLogprob]
    ) -> Choice:
        assert update.parsed is not None
        return Choice(
            index=update.index,
            message=ResponseMessage(
                content=update.parsed.content
                if update.parsed.content or not update.parsed.tool_calls
                else None,
                tool_calls=update.parsed.tool_calls,
            ),
            logprobs=ChoiceLogprobs(content=logprobs) if prepared.request.logprobs else None,
            finish_reason=update.finish_reason,
        )

    async def stream(self, prepared: PreparedChat) -> AsyncIterator[ChatCompletionChunk]:
        request = prepared.request
        tally = _Tally()
        created = int(time.time())
        status = "cancelled"

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=prepared.id, created=created, model=request.model, choices=choices, usage=usage
            )

        try:
            for i in range(request.n):
                yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            async for update in self._updates(prepared, tally):
                logprobs = ChoiceLogprobs(content=update.logprobs) if update.logprobs else None
                for delta in self._wire_deltas(update.deltas):
                    yield chunk([ChunkChoice(index=update.index, delta=delta, logprobs=logprobs)])
                    logprobs = None
                if logprobs is not None:
                    yield chunk([ChunkChoice(index=update.index, delta=Delta(), logprobs=logprobs)])
                if update.finish_reason is not None:
                    yield chunk(
                        [
                            ChunkChoice(
                                index=update.index,
                                delta=Delta(),
                                finish_reason=update.finish_reason,
                            )
                        ]
                    )
            status = "ok"
            if request.stream_options and request.stream_options.include_usage:
                yield chunk([], usage=self._usage(prepared, tally))
        except Exception:
            status = "error"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._account(prepared, tally, status)

    @staticmethod
    def _wire_deltas(deltas: list[OutputDelta]) -> list[Delta]:
        wire: list[Delta] = []
        for d in deltas:
            if isinstance(d, ContentDelta):
                if wire and wire[-1].content is not None:
                    wire[-1].content += d.text
                else:
                    wire.append(Delta(content=d.text))
            else:
                wire.append(
                    Delta(
                        tool_calls=[
                            DeltaToolCall(
                                index=d.index,
                                id=d.id,
                                type="function" if d.id else None,
                                function={"name": d.name, "arguments": d.arguments},
                            )
                        ]
                    )
                )
        return wire

    # Accounting ----------------------------------------------------------------------------
    @staticmethod
    def _usage(prepared: PreparedChat, tally: _Tally) -> Usage:
        prompt = tally.prompt_tokens(prepared)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=tally.completion_tokens,
            total_tokens=prompt + tally.completion_tokens,
        )

    async def _account(self, prepared: PreparedChat, tally: _Tally, status: str) -> None:
        model = prepared.request.model
        prompt = tally.prompt_tokens(prepared)
        finished_at = datetime.now(UTC)
        self._metrics.prompt_tokens.labels(model).inc(prompt)
        self._metrics.completion_tokens.labels(model).inc(tally.completion_tokens)
        # The metrics use the ledger's own three timestamps, so the two never disagree.
        first = tally.first_token_at
        if first is not None:
            ttft = (first - prepared.received_at).total_seconds()
            self._metrics.time_to_first_token.labels(model).observe(max(ttft, 0.0))
            if tally.completion_tokens > 1:
                decoding = (finished_at - first).total_seconds()
                per_token = decoding / (tally.completion_tokens - 1)
                self._metrics.time_per_output_token.labels(model).observe(per_token)
        if prepared.reservation is not None:
            await prepared.reservation.commit(prompt + tally.completion_tokens)
        self._platform.record(
            self._record(prepared, tally, status, prompt_tokens=prompt, finished_at=finished_at)
        )

    @staticmethod
    def _record(
        prepared: PreparedChat,
        tally: _Tally,
        status: str,
        *,
        prompt_tokens: int,
        finished_at: datetime,
    ) -> UsageRecord:
        reasons = set(tally.finish_reasons.values())
        return UsageRecord(
            request_id=prepared.id,
            principal=prepared.principal,
            model=prepared.request.model,
            received_at=prepared.received_at,
            first_token_at=tally.first_token_at,
            finished_at=finished_at,
            prompt_tokens=prompt_tokens,
            image_tokens=prepared.prompt.image_tokens if prompt_tokens else 0,
            completion_tokens=tally.completion_tokens,
            status=status,
            finish_reason=reasons.pop() if len(reasons) == 1 else None,
        )
