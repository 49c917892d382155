"""The tiny random Mistral Small 3.2 GGUF + projector: llama.cpp loads both, tokenizes as
mistral-common does, and fills exactly the positions mistral-common counts for an image."""

from __future__ import annotations

import ctypes
import io
import logging
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
from mistral_common.protocol.instruct.messages import UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from PIL import Image

from modelhub.engines.llamacpp_vision import ImageKVFullError, VisionEncoder
from modelhub.serving.conversation import to_conversation
from tests.conftest import TINY_MISTRAL_CACHE, tiny_mistral_script
from tests.formats.parsed import parse

CACHE = TINY_MISTRAL_CACHE


@pytest.fixture(scope="module")
def tiny(tiny_mistral):
    return tiny_mistral


def _context(model, n_ctx: int):
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = n_ctx, 512, 512, 4
    params.n_threads = params.n_threads_batch = 2
    params.kv_unified = True  # as the engine runs it: sequences share the cells
    return llama_cpp.llama_init_from_model(model, params)


@pytest.fixture(scope="module")
def llama(tiny):
    """(model, context) through the low-level API, as the embedded engine holds them."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(
        str(tiny[0]).encode(), llama_cpp.llama_model_default_params()
    )
    ctx = _context(model, 4096)
    yield model, ctx
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


@pytest.fixture(scope="module")
def vision(tiny, llama):
    with VisionEncoder(tiny[1], llama[0], n_threads=2) as encoder:
        yield encoder


def test_the_gguf_loads_and_tokenizes_like_mistral_common(tiny):
    gguf_path, _, tekken = tiny
    text = "Hello, world! Héllo 1234 ünïcödé [TOOL_CALLS] not special in user text\n\tend"
    found = tiny_mistral_script().check_tiny_mistral(gguf_path, tekken, text)
    assert found["llama_cpp"] == found["mistral_common"]
    assert found["n_vocab"] == 131_072
    assert found["eos"] == 2
    # The engine passes text with control tokens rendered, so the output parser sees them.
    assert found["controls"] == {name: name for name in found["controls"]}


def test_generation_reuses_the_cached_files(tiny):
    again = tiny_mistral_script().make_tiny_mistral(CACHE)
    assert again == tiny
    assert all(path.exists() for path in again)


def _seed_ico() -> Image.Image:
    """The seed's image: an ICO whose largest frame is 96x96 (dark blue, one white line)."""
    image = Image.new("RGBA", (96, 96), (0, 0, 100, 255))
    image.paste((255, 255, 255, 255), (20, 10, 22, 86))
    buf = io.BytesIO()
    image.save(buf, format="ICO", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 72, 96)])
    return Image.open(io.BytesIO(buf.getvalue()))


def _mistral_common_image_tokens(tekken: Path, image: Image.Image) -> int:
    tokenizer = MistralTokenizer.from_file(str(tekken))
    with_image = tokenizer.encode_chat_completion(
        ChatCompletionRequest(
            messages=[UserMessage(content=[TextChunk(text="x"), ImageChunk(image=image)])]
        )
    )
    without = tokenizer.encode_chat_completion(
        ChatCompletionRequest(messages=[UserMessage(content=[TextChunk(text="x")])])
    )
    return len(with_image.tokens) - len(without.tokens)


def _placed(tekken: Path, image: Image.Image):
    """The image as the Mistral format hands it to the engine (resized once, placed)."""
    from modelhub.formats.mistral import MistralFormat
    from modelhub.schemas.chat import ChatCompletionRequest as Request

    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    request = Request(
        model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]
    )
    [placed] = (
        MistralFormat(tekken, CACHE)
        .encode(to_conversation(request), {"messages[0].content[1]": image})
        .images
    )
    return placed


def _clear(ctx, seq_id: int) -> None:
    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq_id, -1, -1)


@pytest.mark.parametrize("size", [(96, 96), (16, 16), (300, 200), (57, 1000), (1600, 900)])
def test_an_image_fills_exactly_the_positions_mistral_common_counts(tiny, llama, vision, size):
    _, ctx = llama
    image = _seed_ico() if size == (96, 96) else Image.new("RGB", size, (10, 200, 30))
    expected = _mistral_common_image_tokens(tiny[2], image)
    placed = _placed(tiny[2], image)
    rows, cols = placed.grid
    assert placed.n_tokens == rows * cols + rows == expected  # a break or end after each row
    assert placed.image.size == (cols * 28, rows * 28)  # patch 14, merged 2 by 2
    _clear(ctx, 1)
    n_past = vision.eval_image(ctx, placed, seq_id=1, n_past=7, n_batch=512)
    assert n_past == 7 + expected
    assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(ctx), 1) == n_past - 1


def _next_token_logits(ctx, model, seq_id: int, n_past: int, token: int) -> np.ndarray:
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    try:
        batch.n_tokens = 1
        batch.token[0], batch.pos[0], batch.n_seq_id[0] = token, n_past, 1
        batch.seq_id[0][0], batch.logits[0] = seq_id, True
        assert llama_cpp.llama_decode(ctx, batch) == 0
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        logits = llama_cpp.llama_get_logits_ith(ctx, 0)
        return np.ctypeslib.as_array(
            ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)), (n_vocab,)
        ).copy()
    finally:
        llama_cpp.llama_batch_free(batch)


def test_an_image_without_room_in_the_kv_cache_says_so(tiny, llama, vision):
    small = _context(llama[0], 1024)
    placed = _placed(tiny[2], Image.new("RGB", (1540, 1540)))
    try:
        with pytest.raises(ImageKVFullError):  # 55 rows of 55 + 1: 3,080 positions
            vision.eval_image(small, placed, seq_id=0, n_past=0, n_batch=512)
    finally:
        llama_cpp.llama_free(small)


def test_the_image_reaches_the_model(tiny, llama, vision):
    """Different pixels, different next-token logits: the embeddings are really decoded."""
    model, ctx = llama
    logits = []
    for colour in ((250, 0, 0), (0, 0, 250)):
        _clear(ctx, 2)
        placed = _placed(tiny[2], Image.new("RGB", (64, 64), colour))
        n_past = vision.eval_image(ctx, placed, seq_id=2, n_past=0, n_batch=512)
        logits.append(_next_token_logits(ctx, model, 2, n_past, token=4))
    assert not np.allclose(logits[0], logits[1])


def _decode_text(ctx, tokens: list[int], seq_id: int, n_past: int) -> int:
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, n_past + i, 1
            batch.seq_id[i][0], batch.logits[i] = seq_id, i == len(tokens) - 1
        assert llama_cpp.llama_decode(ctx, batch) == 0
    finally:
        llama_cpp.llama_batch_free(batch)
    return n_past + len(tokens)


def test_a_prompt_with_images_decodes_to_exactly_its_token_count(tiny, llama, vision):
    """The engine's walk: text ids up to each PromptImage, the image, the rest. Two images
    side by side in one message, one in a later turn."""
    from modelhub.formats.mistral import MistralFormat
    from modelhub.schemas.chat import ChatCompletionRequest as Request

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    request = Request(
        model="m",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Compare"}, image, image]},
            {"role": "assistant", "content": "Two squares."},
            {"role": "user", "content": [image, {"type": "text", "text": "And this?"}]},
        ],
    )
    images = {
        "messages[0].content[1]": Image.new("RGB", (100, 60), (200, 0, 0)),
        "messages[0].content[2]": Image.new("RGB", (20, 20), (0, 200, 0)),
        "messages[2].content[0]": _seed_ico(),
    }
    prompt = MistralFormat(tiny[2], CACHE).encode(to_conversation(request), images)
    assert [p.location for p in prompt.images] == list(images)
    assert sum(p.n_tokens for p in prompt.images) == prompt.image_tokens
    assert [p.n_tokens for p in prompt.images] == [
        _mistral_common_image_tokens(tiny[2], i) for i in images.values()
    ]

    _, ctx = llama
    _clear(ctx, 0)
    n_past = 0
    for placed in prompt.images:
        if placed.offset > n_past:
            n_past = _decode_text(ctx, prompt.token_ids[n_past : placed.offset], 0, n_past)
        n_past = vision.eval_image(ctx, placed, seq_id=0, n_past=n_past, n_batch=512)
        assert n_past == placed.offset + placed.n_tokens
    n_past = _decode_text(ctx, prompt.token_ids[n_past:], 0, n_past)
    assert n_past == prompt.prompt_tokens
    assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(ctx), 0) == n_past - 1
    _clear(ctx, 0)


def _generate(model, ctx, prompt: list[int], grammar: str, max_tokens: int = 200) -> list[int]:
    """Greedy decoding under the grammar with the engine's own sampler chain."""
    from modelhub.engines.base import SamplingParams
    from modelhub.engines.llamacpp_sequence import SamplerChain

    vocab = llama_cpp.llama_model_get_vocab(model)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, grammar=grammar)
    chain = SamplerChain(vocab, llama_cpp.llama_vocab_n_tokens(vocab), params, top_k=0)
    try:
        _clear(ctx, 0)
        n_past = _decode_text(ctx, prompt, 0, 0)
        out = []
        for _ in range(max_tokens):
            token = chain.sample(ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return out
            out.append(token)
            n_past = _decode_text(ctx, [token], 0, n_past)
        raise AssertionError(f"the grammar did not end the output in {max_tokens} tokens")
    finally:
        chain.free()
        _clear(ctx, 0)


def _render(model, tokens: list[int]) -> list[str]:
    from modelhub.engines.llamacpp_sequence import PieceDecoder

    decoder = PieceDecoder(llama_cpp.llama_model_get_vocab(model))
    return [decoder.decode(t) for t in tokens]


CITY = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 9},
        "metric": {"type": "boolean"},
    },
    "required": ["city", "days", "metric"],
    "additionalProperties": False,
}


def test_json_schema_output_parses_and_validates(tiny, llama):
    import json

    import jsonschema

    from modelhub.formats.mistral import MistralFormat
    from modelhub.schemas.chat import ChatCompletionRequest as Request

    model, ctx = llama
    fmt = MistralFormat(tiny[2], CACHE)
    request = Request(
        model="m",
        messages=[{"role": "user", "content": "Plan a trip."}],
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": CITY}},
    )
    prompt = fmt.encode(to_conversation(request), {})
    text = "".join(_render(model, _generate(model, ctx, prompt.token_ids, prompt.grammar)))
    jsonschema.validate(json.loads(text), CITY)


def test_a_forced_tool_call_parses_into_valid_arguments(tiny, llama):
    """(With parallel calls allowed, a random model never stops calling: one call here.)"""
    import json

    import jsonschema

    from modelhub.formats.mistral import MistralFormat
    from modelhub.schemas.chat import ChatCompletionRequest as Request

    model, ctx = llama
    fmt = MistralFormat(tiny[2], CACHE)
    tools = [
        {"type": "function", "function": {"name": "plan_trip", "parameters": CITY}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    request = Request(
        model="m",
        messages=[{"role": "user", "content": "Plan a trip."}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "plan_trip"}},
        parallel_tool_calls=False,
    )
    prompt = fmt.encode(to_conversation(request), {})
    tokens = _generate(model, ctx, prompt.token_ids, prompt.grammar)
    pieces = _render(model, tokens)
    assert pieces[0] == "[TOOL_CALLS]" and "[ARGS]" in pieces  # control tokens, not spelled
    done = parse(fmt.output_parser(to_conversation(request)), "".join(pieces), 1000)
    [call] = done.calls
    assert call["name"] == "plan_trip"
    assert len(call["id"]) == 9 and call["id"].isalnum()
    jsonschema.validate(json.loads(call["arguments"]), CITY)
