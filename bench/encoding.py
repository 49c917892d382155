"""Benchmark 3: prompt encoding through modelhub's Mistral format vs mistral-common directly.

Both sides start from the same OpenAI-style JSON body and end with token ids from the same
Tekken v11 tokenizer file. modelhub: wire model (``ChatCompletionRequest``) -> images
decoded and checked (``load_images``) -> ``MistralFormat.encode``. mistral-common:
``ChatCompletionRequest.from_openai`` -> ``encode_chat_completion`` (it decodes the data URI
itself). Cases: the seed's vision request (text + a 7-frame ICO whose largest frame is
96x96: 29 prompt tokens) and a 100-message tool conversation. In-process, single thread of
Python, time-bounded loops after a warm-up.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field

from bench.aio import run_fast
from bench.report import fmt, header, package_version, ratio, table

__all__ = [
    "EncodingResult",
    "encoding_table",
    "run_encoding",
    "seed_vision_request",
    "tool_conversation",
]

MODEL = "mistralai/Mistral-Small-24B-Instruct"


def _seed_ico() -> bytes:
    """Like the seed's favicon: 7 frames up to 96x96, a thin white line on dark blue."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (96, 96), (16, 32, 96, 255))
    ImageDraw.Draw(image).line([(30, 8), (30, 88)], fill=(255, 255, 255, 255), width=3)
    buf = io.BytesIO()
    image.save(buf, format="ICO", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 72, 96)])
    return buf.getvalue()


def seed_vision_request() -> dict:
    uri = "data:image/vnd.microsoft.icon;base64," + base64.b64encode(_seed_ico()).decode()
    return {
        "model": MODEL,
        "temperature": 0.7,
        "max_tokens": 1000,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {"type": "image_url", "image_url": {"url": uri}},
                ],
            }
        ],
    }


def tool_conversation(n_messages: int = 100) -> dict:
    """system, user, then (assistant tool call, tool result) pairs: ``n_messages`` in all."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "enum": ["c", "f"]},
                    },
                    "required": ["city"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the web",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}},
                    "required": ["query"],
                },
            },
        },
    ]
    messages = [
        {"role": "system", "content": "You are a helpful travel assistant."},
        {"role": "user", "content": "Compare the weather in the fifty largest European cities."},
    ]
    i = 0
    while len(messages) < n_messages:
        call_id = f"call{i:05d}"  # 9 alphanumeric characters, as Mistral wants
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": json.dumps({"city": f"City {i}", "unit": "c"}),
                        },
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call_id,
                "content": json.dumps(
                    {"city": f"City {i}", "temperature": 10 + i % 15, "sky": "cloudy"}
                ),
            }
        )
        i += 1
    return {"model": MODEL, "messages": messages[:n_messages], "tools": tools}


@dataclass
class EncodingResult:
    cases: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _timed(step, seconds: float) -> tuple[float, int]:
    """Calls ``step`` for about ``seconds`` (after a few warm-up calls): (s per call, last token count)."""
    for _ in range(3):
        n_tokens = step()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        n_tokens = step()
        calls += 1
    return elapsed / calls, n_tokens


async def _timed_async(step, seconds: float) -> tuple[float, int]:
    """``_timed`` for a coroutine function, all in one task: as in the server, anyio's worker
    threads (which decode images) live as long as the loop's root task, not one call."""
    for _ in range(3):
        n_tokens = await step()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        n_tokens = await step()
        calls += 1
    return elapsed / calls, n_tokens


def run_encoding(quick: bool) -> EncodingResult:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest as MistralRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from modelhub.formats.mistral import MistralFormat
    from modelhub.formats.tekken import v11_tokenizer_file
    from modelhub.media import load_images
    from modelhub.schemas.chat import ChatCompletionRequest
    from modelhub.serving.conversation import to_conversation
    from modelhub.settings import Settings

    settings = Settings()
    tokenizer_file = v11_tokenizer_file(settings.cache_dir)
    ours = MistralFormat(tokenizer_file, settings.cache_dir)
    theirs = MistralTokenizer.from_file(str(tokenizer_file))
    seconds = 2.0 if quick else 8.0

    async def modelhub_step(body: dict) -> int:
        conversation = to_conversation(ChatCompletionRequest.model_validate(body))
        slots = [(s.location, s.url) for s in conversation.image_slots()]
        images = await load_images(slots, settings)
        return len(ours.encode(conversation, images).token_ids)

    def direct_step(body: dict) -> int:
        request = MistralRequest.from_openai(messages=body["messages"], tools=body.get("tools"))
        return len(theirs.encode_chat_completion(request).tokens)

    result = EncodingResult(
        versions={
            "modelhub": package_version("modelhub"),
            "mistral-common": package_version("mistral-common"),
        }
    )
    cases = {
        "seed vision request (text + ICO)": (seed_vision_request(), 1),
        "100-message tool conversation": (tool_conversation(100), 0),
    }
    for name, (body, n_images) in cases.items():
        ours_s, ours_tokens = run_fast(_timed_async(lambda body=body: modelhub_step(body), seconds))
        theirs_s, theirs_tokens = _timed(lambda body=body: direct_step(body), seconds)
        result.cases[name] = {
            "images": n_images,
            "modelhub_s": ours_s,
            "direct_s": theirs_s,
            "modelhub_tokens": ours_tokens,
            "direct_tokens": theirs_tokens,
        }
        print(
            f"[bench] encoding {name}: modelhub {1 / ours_s:.0f} req/s ({ours_tokens} tokens), "
            f"mistral-common {1 / theirs_s:.0f} req/s ({theirs_tokens} tokens)",
            flush=True,
        )
    return result


def _per_image(seconds: float, images: int) -> str:
    return fmt(1000 * seconds / images, 2) if images else "-"


def encoding_table(result: EncodingResult) -> str:
    rows = []
    for name, c in result.cases.items():
        rows.append(
            [
                name,
                f"{c['modelhub_tokens']} / {c['direct_tokens']}",
                fmt(1 / c["modelhub_s"], 0),
                fmt(1 / c["direct_s"], 0),
                ratio(1 / c["modelhub_s"], 1 / c["direct_s"]),
                fmt(1000 * c["modelhub_s"], 3),
                fmt(1000 * c["direct_s"], 3),
                _per_image(c["modelhub_s"], c["images"]),
                _per_image(c["direct_s"], c["images"]),
            ]
        )
    return (
        header("Prompt encoding (Mistral Small 3.2 format, Tekken v11)", result.versions)
        + "\n"
        + table(
            [
                "Case",
                "tokens (modelhub / mistral-common)",
                "modelhub req/s",
                "mistral-common req/s",
                "ratio",
                "modelhub ms/request",
                "mistral-common ms/request",
                "modelhub ms/image",
                "mistral-common ms/image",
            ],
            rows,
        )
        + "\nmodelhub's time covers parsing the wire request, decoding and checking the image, and "
        "encoding; mistral-common's covers from_openai (which decodes the data URI) and encoding. "
        "Ratio: modelhub's req/s over mistral-common's.\n"
    )
