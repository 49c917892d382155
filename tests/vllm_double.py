"""A stand-in for vLLM's OpenAI server serving Mistral Small 3.2 with
``--tokenizer-mode mistral --tool-call-parser mistral --enable-auto-tool-choice``.

A real HTTP server on a loopback port whose wire behaviour follows vLLM's source (main,
read November 2026):

- ``chat_completion/serving.py``: a stream opens with one chunk per choice whose delta is
  ``{"role": "assistant", "content": ""}``; then one chunk per generated token, dumped with
  ``exclude_unset`` (so a delta is ``{"content": "..."}``, ``"logprobs": null`` and
  ``"finish_reason": null`` always present); the token that ends a choice carries
  ``finish_reason``, ``stop_reason`` and ``token_ids`` (null); the end-of-sequence token's text
  is empty, so a natural end is ``{"content": ""}`` (or ``{}`` after a tool call). With
  ``stream_options.include_usage`` a last chunk has ``"choices": []`` and the usage, dumped
  ``exclude_none``. Then ``data: [DONE]``. A non-streamed answer is the full model dump.
  ``finish_reason`` is ``"tool_calls"`` once a tool call was streamed unless the tool choice
  names a function (then ``"stop"``, as OpenAI does), even when the call was cut by
  ``max_tokens``. ``completion_tokens`` counts the end-of-sequence token.
- ``tool_parsers/mistral_tool_parser.py`` (v11+ tokenizer, ``[TOOL_CALLS]name[ARGS]{args}``):
  nothing is streamed while the name is read; the delta holding the first ``{`` carries
  ``{"id": <9 alphanumerics>, "type": "function", "index": i, "function": {"name", "arguments"}}``;
  later deltas carry ``"id": null`` and only ``arguments`` fragments. Non-streamed, the text
  before ``[TOOL_CALLS]`` is the content (``null`` when empty).
- ``engine/protocol.py`` ``ErrorResponse``: ``{"error": {"message", "type", "param", "code"}}``
  with ``code`` the HTTP status as an integer and ``type`` such as ``BadRequestError``; a
  failure after the stream started is a ``data: {"error": ...}`` event, then ``[DONE]``.
- ``serving_engine.py`` / ``SamplingParams._verify_args``: the context-length and parameter
  messages; ``/tokenize`` answers ``{"count", "max_model_len", "tokens", "token_strs"}``;
  ``/v1/models`` lists the served name with ``max_model_len``.

With ``logprobs`` each token chunk carries ``{"content": [{"token", "logprob", "bytes",
"top_logprobs"}]}`` (the values are scripted, not a model's).

Prompts are counted with modelhub's own Mistral format, so the double's ``/tokenize`` and
``usage.prompt_tokens`` equal the gateway's exact count. What a request generates is scripted
(``Reply``); tokens are the tekken tokenizer's, decoded incrementally as vLLM's detokenizer does.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from pathlib import Path

from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelhub.errors import ModelhubError
from modelhub.formats.mistral import MistralFormat
from modelhub.formats.tekken import v11_tokenizer_file
from modelhub.media.images import load_images
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.conversation import to_conversation
from modelhub.settings import Settings
from tests.servers import serve_in_thread

__all__ = ["SERVED_MODEL", "Reply", "VllmDouble"]

SERVED_MODEL = "mistralai/Mistral-Small-3.2-24B-Instruct-2506"
TOOL_CALLS = "[TOOL_CALLS]"
_ALPHANUMERIC = string.ascii_letters + string.digits
_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
}


class _CutStream(Exception):
    """Raised inside a streaming body: uvicorn drops the connection mid-response."""


@dataclass
class Reply:
    """What one choice generates, and how the double misbehaves while sending it."""

    content: str = ""
    tool_calls: Sequence[tuple[str, str]] = ()  # (name, arguments as JSON text)
    # Forced over vLLM's own rule (a natural end is "stop"/"tool_calls", max_tokens "length").
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # an upstream whose usage disagrees with /tokenize
    completion_tokens: int | None = None
    delay_s: float = 0.0  # before every chunk
    cut_after: int | None = None  # drop the connection after this many chunks
    stall_after: int | None = None  # stop sending (connection open) after this many chunks
    error_after: int | None = None  # vLLM's in-stream error event after this many chunks
    error: tuple[int, str] | None = None  # answer (status, message) instead of generating
    logprob: float = -0.25  # every sampled token's, when the request asks for logprobs


@dataclass
class _Choice:
    index: int
    pieces: list[str]  # each generated token's text; "" for the end-of-sequence token
    deltas: list[dict | None]  # what each token streams (None: nothing)
    finish_reason: str
    stop_reason: str | None
    reply: Reply
    logprobs: list[dict] | None = None  # one entry per token, when asked for


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = _ERROR_TYPES.get(status) or HTTPStatus(status).phrase
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


@cache
def _tokenizers(tokenizer: Path | None, cache_dir: Path) -> tuple[MistralFormat, object]:
    """The prompt format and the raw tekkenizer, loaded once per session (seconds each)."""
    path = tokenizer or v11_tokenizer_file(cache_dir)
    tekken = MistralTokenizer.from_file(str(path)).instruct_tokenizer.tokenizer
    return MistralFormat(tokenizer, cache_dir), tekken


def _logprob(token: str, logprob: float, top: int) -> dict:
    """vLLM's ``ChatCompletionLogProbsContent``: the sampled token first among the top ones."""

    def entry(text: str, value: float) -> dict:
        return {"token": text, "logprob": value, "bytes": list(text.encode())}

    alternatives = [entry(f"alt{i}", logprob - i) for i in range(1, top)]
    ranked = [entry(token, logprob), *alternatives] if top else []
    return {**entry(token, logprob), "top_logprobs": ranked}


def _tool_call_id() -> str:
    return "".join(random.choices(_ALPHANUMERIC, k=9))


class VllmDouble:
    """``start()`` it, point an upstream at ``api_url``, ``script()`` what comes back; every
    chat body received lands in ``requests``. Unscripted requests answer ``default``."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        tokenizer: Path | None = None,
        model: str = SERVED_MODEL,
        max_model_len: int = 32768,
    ):
        self.model = model
        self.max_model_len = max_model_len
        self.format, self._tekken = _tokenizers(tokenizer, cache_dir)
        self.replies: deque[Reply] = deque()
        self.responder: Callable[[dict], Reply] | None = None
        self.default = Reply(content="Hello from the vLLM double.")
        self.requests: list[dict] = []
        self.base_url = ""
        self._server = self._thread = None
        self._stopping = False

    # Lifecycle ----------------------------------------------------------------------
    def start(self) -> VllmDouble:
        routes = [
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", lambda _: Response(status_code=200), methods=["GET"]),
            Route("/tokenize", self._tokenize, methods=["POST"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ]
        self.base_url, self._server, self._thread = serve_in_thread(Starlette(routes=routes))
        return self

    def stop(self) -> None:
        self._stopping = True  # releases stalled streams
        self._server.should_exit = True
        self._thread.join(timeout=30)

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies: each choice of each request takes the next one."""
        self.replies.extend(replies)

    def _next_reply(self, body: dict) -> Reply:
        if self.replies:
            return self.replies.popleft()
        return self.responder(body) if self.responder else self.default

    # Counting ---------------------------------------------------------------------
    async def count(self, body: dict) -> list[int]:
        """The prompt's token ids, as the gateway's Mistral format encodes them."""
        request = ChatCompletionRequest.model_validate(body)
        conversation = to_conversation(request)
        slots = [(slot.location, slot.url) for slot in conversation.image_slots()]
        images = await load_images(slots, Settings())
        return self.format.encode(conversation, images).token_ids

    def _token_texts(self, text: str) -> list[str]:
        """Per-token texts as vLLM's incremental detokenizer emits them: a token that ends
        inside a UTF-8 character waits for the next one."""
        ids = self._tekken.encode(text, bos=False, eos=False)
        texts, emitted = [], ""
        for i in range(1, len(ids) + 1):
            decoded = self._tekken.decode(ids[:i])
            if decoded.endswith("\ufffd") and i < len(ids):
                texts.append("")
                continue
            texts.append(decoded[len(emitted) :])
            emitted = decoded
        return texts

    def _pieces(self, reply: Reply) -> list[str]:
        pieces = self._token_texts(reply.content) if reply.content else []
        for name, arguments in reply.tool_calls:
            # vLLM's Mistral tokenizer keeps [TOOL_CALLS] in the text and renders [ARGS] as "".
            pieces += [TOOL_CALLS, *self._token_texts(name), "", *self._token_texts(arguments)]
        return pieces

    # Generation -------------------------------------------------------------------
    @staticmethod
    def _apply_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], str | None]:
        """vLLM ends at the first stop string in the content and leaves it out of the text;
        the token that completed it is still generated (and billed)."""
        text = ""
        for n, piece in enumerate(pieces):
            if TOOL_CALLS in piece:
                break
            window = text + piece
            hits = [(window.find(s), s) for s in stops if s and s in window]
            if hits:
                at, stop = min(hits)
                return [*pieces[:n], window[len(text) : at]], stop
            text = window
        return pieces, None

    def _generate(self, index: int, reply: Reply, body: dict, max_tokens: int) -> _Choice:
        stops = body.get("stop") or []
        pieces, stop_reason = self._apply_stop(
            self._pieces(reply), [stops] if isinstance(stops, str) else stops
        )
        finish = "stop"
        if len(pieces) > max_tokens:
            pieces, finish, stop_reason = pieces[:max_tokens], "length", None
        elif stop_reason is None:
            pieces = [*pieces, ""]  # the end-of-sequence token: counted, no text
        deltas = self._stream_deltas(pieces)
        if any(delta and "tool_calls" in delta for delta in deltas):
            named = isinstance(body.get("tool_choice"), dict)
            finish = "stop" if named else "tool_calls"
        logprobs = None
        if body.get("logprobs"):
            top = body.get("top_logprobs") or 0
            logprobs = [_logprob(piece, reply.logprob, top) for piece in pieces]
        return _Choice(
            index, pieces, deltas, reply.finish_reason or finish, stop_reason, reply, logprobs
        )

    @staticmethod
    def _stream_deltas(pieces: list[str]) -> list[dict | None]:
        """Each token's delta after the Mistral tool parser (None: nothing is sent)."""
        deltas, state, name, tool = [], "content", "", -1
        for piece in pieces:
            if piece.startswith(TOOL_CALLS):
                state, name, tool = "name", "", tool + 1
                piece = piece[len(TOOL_CALLS) :]
            if state == "content":
                deltas.append({"content": piece})
            elif state == "name" and "{" not in piece:
                name += piece
                deltas.append(None)
            elif state == "name":
                head, _, rest = piece.partition("{")
                call = {"name": name + head, "arguments": "{" + rest}
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "id": _tool_call_id(),
                                "type": "function",
                                "index": tool,
                                "function": call,
                            }
                        ]
                    }
                )
                state = "arguments"
            elif piece:
                call = {"arguments": piece}
                deltas.append(
                    {
                        "tool_calls": [
                            {"id": None, "type": "function", "index": tool, "function": call}
                        ]
                    }
                )
            else:
                deltas.append({})  # tool calls done: an empty delta so finish_reason is sent
        return deltas

    @staticmethod
    def _message(choice: _Choice) -> dict:
        """The non-streamed message, as the parser's ``extract_tool_calls`` builds it."""
        text = "".join(choice.pieces)
        content, *raw_calls = text.split(TOOL_CALLS)
        calls = []
        for raw in raw_calls:
            if "{" not in raw:
                continue
            end = raw.find("{")
            function = {"name": raw[:end], "arguments": raw[end:]}
            calls.append({"id": _tool_call_id(), "type": "function", "function": function})
        return {
            "role": "assistant",
            "content": (content or None) if raw_calls else content,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": calls,
            "reasoning_content": None,
        }

    # Routes -----------------------------------------------------------------------
    async def _models(self, _: Request) -> JSONResponse:
        created = int(time.time())
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}",
            "object": "model_permission",
            "created": created,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": self.model,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": self.model,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [permission],
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def _read(self, request: Request) -> dict | JSONResponse:
        try:
            body = await request.json()
        except ValueError as exc:
            return _error(400, f"Invalid JSON body: {exc}")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        if body.get("model", self.model) != self.model:
            return _error(404, f"The model `{body['model']}` does not exist.", param="model")
        return body

    async def _prompt(self, body: dict) -> list[int] | JSONResponse:
        try:
            return await self.count(body)
        except ValidationError as exc:
            return _error(400, str(exc))
        except ModelhubError as exc:
            return _error(400, exc.message)

    async def _tokenize(self, request: Request) -> JSONResponse:
        body = await self._read(request)
        if isinstance(body, JSONResponse):
            return body
        if "messages" in body:
            tokens = await self._prompt({**body, "model": self.model})
            if isinstance(tokens, JSONResponse):
                return tokens
        else:
            tokens = self._tekken.encode(str(body.get("prompt", "")), bos=True, eos=False)
        return JSONResponse(
            {
                "count": len(tokens),
                "max_model_len": self.max_model_len,
                "tokens": tokens,
                "token_strs": None,
            }
        )

    def _sampling_error(self, body: dict) -> str | None:
        """``SamplingParams._verify_args``' messages for the parameters tests exercise."""
        n, temperature, top_p = body.get("n", 1), body.get("temperature"), body.get("top_p")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(n, int) or n < 1:
            return f"n must be at least 1, got {n}."
        if temperature is not None and temperature < 0:
            return f"temperature must be non-negative, got {temperature}."
        if top_p is not None and not 0 < top_p <= 1:
            return f"top_p must be in (0, 1], got {top_p}."
        if max_tokens is not None and max_tokens < 1:
            return f"max_tokens must be at least 1, got {max_tokens}."
        return None

    def _context_error(self, prompt: int, max_tokens: int | None) -> str | None:
        limit = self.max_model_len
        if prompt > limit:
            return (
                f"This model's maximum context length is {limit} tokens. However, your request "
                f"has {prompt} input tokens. Please reduce the length of the input messages."
            )
        if max_tokens is not None and prompt + max_tokens > limit:
            return (
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                f"maximum context length is {limit} tokens and your request has {prompt} input "
                f"tokens ({max_tokens} > {limit} - {prompt})."
            )
        return None

    async def _chat(self, request: Request) -> Response:
        body = await self._read(request)
        if isinstance(body, JSONResponse):
            return body
        self.requests.append(body)
        if message := self._sampling_error(body):
            return _error(400, message)
        prompt = await self._prompt(body)
        if isinstance(prompt, JSONResponse):
            return prompt
        requested = body.get("max_completion_tokens") or body.get("max_tokens")
        if message := self._context_error(len(prompt), requested):
            return _error(400, message)
        max_tokens = requested or self.max_model_len - len(prompt)
        replies = [self._next_reply(body) for _ in range(body.get("n", 1))]
        if failed := next((r.error for r in replies if r.error), None):
            return _error(*failed)
        choices = [self._generate(i, r, body, max_tokens) for i, r in enumerate(replies)]
        prompt_tokens = next(
            (r.prompt_tokens for r in replies if r.prompt_tokens is not None), len(prompt)
        )
        completion = sum(
            c.reply.completion_tokens if c.reply.completion_tokens is not None else len(c.pieces)
            for c in choices
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens": completion,
        }
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": self.model,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self._chunks(head, choices, usage if include_usage else None)
            return StreamingResponse(self._send(chunks, replies), media_type="text/event-stream")
        return JSONResponse(self._completion(head, choices, usage))

    def _completion(self, head: dict, choices: list[_Choice], usage: dict) -> dict:
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": c.index,
                    "message": self._message(c),
                    "logprobs": None if c.logprobs is None else {"content": c.logprobs},
                    "finish_reason": c.finish_reason,
                    "stop_reason": c.stop_reason,
                    "token_ids": None,
                }
                for c in choices
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {**usage, "prompt_tokens_details": None},
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "kv_transfer_params": None,
        }

    def _chunks(self, head: dict, choices: list[_Choice], usage: dict | None) -> list[dict]:
        """Every chunk vLLM sends for these choices, in order (choices take turns per step)."""
        head = {"id": head["id"], "object": "chat.completion.chunk", **head}

        def chunk(index: int, delta: dict, logprobs=None, finish=None, stop=None) -> dict:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            if finish is not None:
                choice.update(stop_reason=stop, token_ids=None)
            return {**head, "choices": [choice]}

        out = [chunk(c.index, {"role": "assistant", "content": ""}) for c in choices]
        for step in range(max(len(c.pieces) for c in choices)):
            for c in choices:
                if step >= len(c.deltas):
                    continue
                last = step == len(c.deltas) - 1
                delta = c.deltas[step]
                logprobs = None if c.logprobs is None else {"content": [c.logprobs[step]]}
                if last:
                    finish = (c.finish_reason, c.stop_reason)
                    out.append(chunk(c.index, delta or {}, logprobs, *finish))
                elif delta is not None:
                    out.append(chunk(c.index, delta, logprobs))
        if usage is not None:
            out.append({**head, "choices": [], "usage": usage})
        return out

    async def _send(self, chunks: list[dict], replies: list[Reply]):
        reply = replies[0]
        for sent, payload in enumerate(chunks):
            if sent == reply.cut_after:
                raise _CutStream("scripted: connection dropped mid-stream")
            if sent == reply.stall_after:
                while not self._stopping:
                    await asyncio.sleep(0.05)
                return
            if sent == reply.error_after:
                yield _sse(
                    {
                        "error": {
                            "message": "scripted engine failure",
                            "type": "InternalServerError",
                            "param": None,
                            "code": 500,
                        }
                    }
                )
                break
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            yield _sse(payload)
        yield "data: [DONE]\n\n"
