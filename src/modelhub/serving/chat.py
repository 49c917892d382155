"""Chat completions, from a parsed request to OpenAI objects. No HTTP here.

A request goes through stages that each stand alone:

1. **prepare** (``prepare.PromptStage``): resolve the model (catalog, lifecycle, checks
   against the card), *admit* it against the contract's rate limits with a cheap token
   estimate, and only then fetch and decode its images and encode its prompt exactly;
2. **run**: one backend stream of choice events per choice, merged;
3. **render** (``render``): the events folded into a response, or into stream chunks;
4. **account** (``accounting``): journaled from the first event, settled exactly once
   with its final status, whatever the client does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import anyio

from modelhub.errors import EngineOverloadedError, RateLimitError, RateLimiterUnavailableError
from modelhub.metrics import Metrics
from modelhub.platform import Platform, Principal, Reservation
from modelhub.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    new_completion_id,
)
from modelhub.serving.accounting import Accounting, RequestAccount
from modelhub.serving.backends.base import ChoiceEvent, RequestJob
from modelhub.serving.deployment import Deployment
from modelhub.serving.merge import merge
from modelhub.serving.prepare import (
    Encoded,
    PreparedChat,
    PromptStage,
    Resolved,
    estimate_prompt_tokens,
)
from modelhub.serving.render import ChunkRenderer, CompletionBuilder
from modelhub.settings import Settings

__all__ = ["ChatService", "ChatStream", "PreparedChat"]

log = logging.getLogger(__name__)

Indexed = tuple[int, ChoiceEvent]


async def _indexed(index: int, events: AsyncIterator[ChoiceEvent]) -> AsyncIterator[Indexed]:
    try:
        async for event in events:
            yield index, event
    finally:
        await events.aclose()


def _final_status(exc: BaseException, account: RequestAccount) -> str:
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled"
    if isinstance(exc, EngineOverloadedError) and account.tally.first_token_at is None:
        return "refused"
    return "error"


class ChatStream:
    """The chunks of a streamed request that has started. Closing it settles the request,
    as cancelled if it had not ended, even when nobody ever asked for a chunk: a client
    that leaves just before the response starts leaves an async generator that never ran,
    and so could not settle anything itself."""

    def __init__(
        self,
        chunks: AsyncGenerator[ChatCompletionChunk, None],
        settle_unread: Callable[[], Awaitable[None]],
    ):
        self._chunks = chunks
        self._settle_unread: Callable[[], Awaitable[None]] | None = settle_unread

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        self._settle_unread = None  # the generator settles from here on
        return await anext(self._chunks)

    async def aclose(self) -> None:
        settle, self._settle_unread = self._settle_unread, None
        if settle is not None:
            await settle()
        await self._chunks.aclose()


class ChatService:
    def __init__(
        self, deployment: Deployment, platform: Platform, metrics: Metrics, settings: Settings
    ):
        self._prompts = PromptStage(deployment, settings)
        self._platform = platform
        self._accounting = Accounting(platform, metrics)
        self.settings = settings

    # 1. Prepare ---------------------------------------------------------------------------
    async def prepare(self, request: ChatCompletionRequest, principal: Principal) -> PreparedChat:
        if request.ignored_fields:
            log.debug("ignoring unknown request fields: %s", ", ".join(request.ignored_fields))
        return await self._prepare(
            new_completion_id(),
            request,
            principal,
            estimate_prompt_tokens(request),
            lambda resolved: self._prompts.encode(resolved, request),
        )

    async def prepare_tokens(
        self, request: ChatCompletionRequest, prompt: list[int] | str, principal: Principal
    ) -> PreparedChat:
        """``/v1/completions``: a prompt of token ids (or raw text), through chat's limits,
        run and accounting; ``request`` carries the sampling parameters."""
        return await self._prepare(
            new_completion_id().replace("chatcmpl-", "cmpl-"),
            request,
            principal,
            len(prompt) if isinstance(prompt, list) else len(prompt) // 4 + 1,
            lambda resolved: anyio.to_thread.run_sync(self._prompts.token_prompt, resolved, prompt),
        )

    async def _prepare(
        self,
        completion_id: str,
        request: ChatCompletionRequest,
        principal: Principal,
        estimate: int,
        encode: Callable[[Resolved], Awaitable[Encoded]],
    ) -> PreparedChat:
        """Resolve, admit on ``estimate``, then (only then) ``encode`` and fit the window."""
        received_at = datetime.now(UTC)
        resolved = self._prompts.resolve(request)
        reservation = await self._admit(
            completion_id, request, principal, resolved, received_at, estimate
        )
        try:
            encoded = await encode(resolved)
            max_tokens = self._prompts.max_tokens(resolved, request, encoded.prompt)
        except BaseException:
            await reservation.release()
            raise
        return PreparedChat(
            id=completion_id,
            request=request,
            served=resolved.served,
            principal=principal,
            received_at=received_at,
            headers={**resolved.headers, **reservation.headers},
            conversation=encoded.conversation,
            prompt=encoded.prompt,
            max_tokens=max_tokens,
            images=encoded.images,
            reservation=reservation,
        )

    async def _admit(
        self,
        completion_id: str,
        request: ChatCompletionRequest,
        principal: Principal,
        resolved: Resolved,
        received_at: datetime,
        estimate: int,
    ) -> Reservation:
        """Reserve the worst case against the contract's limits (429 if over), before any
        image is fetched or prompt encoded; it is reconciled to what was used."""
        per_choice = resolved.asked_max_tokens or max(resolved.served.max_context - estimate, 1)
        try:
            return await self._platform.reserve(
                principal, request.model, estimate + per_choice * request.n
            )
        except (RateLimitError, RateLimiterUnavailableError) as exc:
            status = "rate_limited" if isinstance(exc, RateLimitError) else "refused"
            await self._accounting.turned_away(
                completion_id, principal, request.model, received_at, status
            )
            raise

    async def tokenize(self, request: ChatCompletionRequest, principal: Principal) -> dict:
        """``/tokenize``, metered like chat: the caller's request limits apply first."""
        resolved = self._prompts.resolve(request, generating=False)
        reservation = await self._platform.reserve(principal, request.model, 0)
        try:
            return await self._prompts.count(resolved, request)
        finally:
            await reservation.release()

    # 2. Run ---------------------------------------------------------------------------------
    def _events(self, prepared: PreparedChat) -> AsyncIterator[Indexed]:
        backend = prepared.served.require_backend()
        principal = prepared.principal
        job = RequestJob(
            id=prepared.id,
            request=prepared.request,
            conversation=prepared.conversation,
            prompt=prepared.prompt,
            images=prepared.images,
            max_tokens=prepared.max_tokens,
            tenant="" if principal.contract_id is None else str(principal.contract_id),
            max_running=principal.limits.max_running,
        )
        runs = [_indexed(i, backend.generate(job, i)) for i in range(prepared.request.n)]
        return runs[0] if len(runs) == 1 else merge(runs)

    @staticmethod
    async def _settle(
        account: RequestAccount, events: AsyncIterator[Indexed], exc: BaseException
    ) -> None:
        with anyio.CancelScope(shield=True):
            await events.aclose()
            await account.close(_final_status(exc, account))

    # 3. Render, 4. account ----------------------------------------------------------------
    async def complete(self, prepared: PreparedChat) -> ChatCompletion:
        request = prepared.request
        account = self._accounting.open(prepared)
        builder = CompletionBuilder(prepared.id, request.model, request.n, request.logprobs)
        events = self._events(prepared)
        try:
            async for index, event in events:
                account.see(index, event)
                builder.add(index, event)
        except BaseException as exc:
            await self._settle(account, events, exc)
            raise
        await account.close("ok")
        return builder.build(account.tally.usage())

    async def open_stream(self, prepared: PreparedChat) -> ChatStream:
        """Start the request and wait for its first event, so that a refusal (a full
        queue, an upstream that says no) is still a status code, not an in-stream error."""
        account = self._accounting.open(prepared)
        events = self._events(prepared)
        try:
            first = await anext(events)
        except BaseException as exc:
            await self._settle(account, events, exc)
            raise
        return ChatStream(
            self._stream(prepared, account, first, events),
            lambda: self._settle(account, events, asyncio.CancelledError()),
        )

    async def _stream(
        self,
        prepared: PreparedChat,
        account: RequestAccount,
        first: Indexed,
        events: AsyncIterator[Indexed],
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        request = prepared.request
        renderer = ChunkRenderer(prepared.id, request.model, int(time.time()), request.n)
        try:
            for chunk in renderer.opening():
                yield chunk
            item: Indexed | None = first
            while item is not None:
                index, event = item
                account.see(index, event)
                for chunk in renderer.render(index, event):
                    yield chunk
                item = await anext(events, None)
        except BaseException as exc:
            await self._settle(account, events, exc)
            raise
        await account.close("ok")  # durable before the last bytes leave
        if request.stream_options and request.stream_options.include_usage:
            yield renderer.usage(account.tally.usage())
