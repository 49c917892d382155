"""Upstream engines: OpenAI-compatible servers (vLLM in production, llama-server, another
modelhub) behind the gateway.

The gateway has already validated the request (context window, images, tools, limits).
Images go upstream as data URIs of the bytes the gateway fetched and checked, so an
upstream never fetches a caller's URL itself. Every upstream call streams with
``include_usage``, so billing uses the engine's own counts. A request moves to another
replica only while nothing has reached the client; after that a failure ends the stream
with an error.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import httpx

from modelhub.engines.base import EngineStats, FinishEvent, GenerationJob, MessageDelta
from modelhub.engines.upstream_pool import Replica, ReplicaPool
from modelhub.errors import (
    InvalidRequestError,
    ModelhubError,
    UpstreamError,
    UpstreamTimeoutError,
)
from modelhub.formats.base import EncodedPrompt, ToolCallDelta
from modelhub.schemas.chat import ChatCompletionRequest, ImagePart

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["UpstreamEngine"]

log = logging.getLogger(__name__)

# Fields the gateway owns: it fans out ``n`` itself and always streams with usage.
_NOT_FORWARDED = {"model", "n", "stream", "stream_options", "messages"}


def _data_uri(image: Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _messages(request: ChatCompletionRequest, images: Mapping[str, Image]) -> list[dict]:
    messages = []
    for i, message in enumerate(request.messages):
        data = message.model_dump(exclude_none=True)
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, ImagePart) and f"messages[{i}].content[{j}]" in images:
                    data["content"][j]["image_url"]["url"] = _data_uri(
                        images[f"messages[{i}].content[{j}]"]
                    )
        messages.append(data)
    return messages


class UpstreamEngine:
    name = "upstream"

    def __init__(
        self,
        urls: list[str],
        served_model_name: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        health_interval_s: float,
        api_key: str | None = None,
        on_prompt_mismatch: Callable[[int, int], None] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        self.pool = ReplicaPool(urls, self._client, check_interval_s=health_interval_s)
        self.served_model_name = served_model_name
        self._on_mismatch = on_prompt_mismatch
        self._remote_tokenize = True
        self._ready = False

    async def start(self) -> None:
        self.pool.start()
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        await self.pool.close()
        await self._client.aclose()

    @property
    def ready(self) -> bool:
        return self._ready and self.pool.any_healthy

    def stats(self) -> EngineStats:
        running = sum(r.outstanding for r in self.pool.replicas)
        healthy = sum(r.healthy for r in self.pool.replicas)
        return EngineStats(running=running, slots=len(self.pool.replicas), healthy_replicas=healthy)

    # Counting ------------------------------------------------------------------------
    async def count_prompt(self, request: ChatCompletionRequest) -> EncodedPrompt:
        """The upstream's own count (vLLM's and modelhub's ``/tokenize``), or an estimate
        when it has none; billing uses the upstream's usage either way."""
        body = {
            "model": self.served_model_name,
            "messages": [m.model_dump(exclude_none=True) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
        for replica in self.pool.candidates() if self._remote_tokenize else ():
            root = replica.url.removesuffix("/v1")
            try:
                r = await self._client.post(f"{root}/tokenize", json=body)
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and isinstance(r.json().get("tokens"), list):
                return EncodedPrompt(token_ids=list(r.json()["tokens"]))
            if r.status_code in (404, 405):
                # This engine has no /tokenize: stop paying a round trip per request for it.
                self._remote_tokenize = False
            break
        text = json.dumps(body["messages"]) + json.dumps(body.get("tools", []))
        return EncodedPrompt(token_ids=[], estimated_tokens=len(text) // 3 + 1)

    # Generation ------------------------------------------------------------------------
    def _payload(self, job: GenerationJob, images: Mapping[str, Image]) -> dict:
        request = job.request
        assert request is not None
        payload = request.model_dump(exclude_unset=True, exclude=_NOT_FORWARDED)
        payload.update(
            model=self.served_model_name,
            messages=_messages(request, images),
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=job.params.max_tokens,
        )
        payload.pop("max_completion_tokens", None)
        if job.params.seed is not None:
            payload["seed"] = job.params.seed
        return payload

    async def generate(self, job: GenerationJob) -> AsyncIterator[MessageDelta | FinishEvent]:
        payload = self._payload(job, job.images)
        last_error: ModelhubError | None = None
        for replica in self.pool.candidates():
            response = await self._open(replica, payload)
            if isinstance(response, ModelhubError):
                last_error = response
                if response.status_code < 500:
                    raise response  # the request itself is wrong: no other replica will do better
                continue
            replica.outstanding += 1
            relayed = False
            try:
                async for event in self._relay(replica, response, job):
                    relayed = True
                    yield event
                replica.served += 1
                return
            except ModelhubError as exc:
                if relayed:
                    raise
                last_error = exc  # nothing reached the client yet: the next replica may do
            finally:
                replica.outstanding -= 1
                await response.aclose()
        raise last_error or UpstreamError("No upstream replica is configured.")

    async def _open(self, replica: Replica, payload: dict) -> httpx.Response | ModelhubError:
        """Send the request and wait for the status line; a failure here can still move on."""
        request = self._client.build_request(
            "POST", f"{replica.url}/chat/completions", json=payload
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            replica.eject("timed out")
            return UpstreamTimeoutError("The model's engine did not answer in time.")
        except httpx.HTTPError as exc:
            replica.eject(type(exc).__name__)
            return UpstreamError("The model's engine could not be reached.")
        if response.status_code >= 500:
            await response.aclose()
            replica.eject(f"status {response.status_code}")
            return UpstreamError(f"The model's engine failed (status {response.status_code}).")
        if response.status_code >= 400:
            body = (await response.aread()).decode(errors="replace")
            await response.aclose()
            try:
                message = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = body[:500]
            return InvalidRequestError(f"The model's engine refused the request: {message}")
        return response

    async def _relay(
        self, replica: Replica, response: httpx.Response, job: GenerationJob
    ) -> AsyncIterator[MessageDelta | FinishEvent]:
        finish_reason = "stop"
        usage = None
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise UpstreamError(
                        f"The model's engine failed: {chunk['error'].get('message', '')}"
                    )
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    calls = tuple(
                        ToolCallDelta(
                            index=c.get("index", 0),
                            id=c.get("id"),
                            name=(c.get("function") or {}).get("name"),
                            arguments=(c.get("function") or {}).get("arguments") or "",
                        )
                        for c in delta.get("tool_calls") or []
                    )
                    if delta.get("content") or calls:
                        yield MessageDelta(content=delta.get("content") or "", tool_calls=calls)
                    finish_reason = choice.get("finish_reason") or finish_reason
        except httpx.TimeoutException as exc:
            replica.eject("stalled mid-stream")
            raise UpstreamTimeoutError("The model's engine stalled while generating.") from exc
        except httpx.HTTPError as exc:
            replica.eject(type(exc).__name__)
            raise UpstreamError(
                "The connection to the model's engine broke while generating."
            ) from exc
        if usage is None:
            raise UpstreamError("The model's engine sent no usage; the request cannot be billed.")
        local = job.prompt.prompt_tokens
        if (
            self._on_mismatch is not None
            and job.prompt.estimated_tokens is None
            and usage["prompt_tokens"] != local
        ):
            self._on_mismatch(local, usage["prompt_tokens"])
        yield FinishEvent(finish_reason, usage["prompt_tokens"], usage["completion_tokens"])
