"""One request's life inside the embedded engine: its sampler, its text, its events.

Everything here runs on the decode thread except ``cancel`` and the event queue's consumer,
which run on the event loop; the two meet only through ``loop.call_soon_threadsafe`` and a
flag that the decode thread polls between steps.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import itertools
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from modelhub.engines.base import FinishEvent, GenerationJob, SamplingParams, TokenEvent

__all__ = ["PieceDecoder", "SamplerChain", "Sequence"]

# Penalties look back this far; llama.cpp's server uses the same default window.
_PENALTY_WINDOW = 64


class SamplerChain:
    """A llama.cpp sampler chain for one request (temperature, top_p, seed, penalties, grammar)."""

    def __init__(
        self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, params: SamplingParams, top_k: int
    ):
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = llama_cpp.llama_sampler_chain_init(chain_params)
        add = lambda s: llama_cpp.llama_sampler_chain_add(self.ptr, s)
        if params.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(self.ptr)
                raise ValueError("the output grammar does not compile")
            add(grammar)
        if top_k and params.temperature > 0.0:
            # Sorting a 262k-token softmax per sampled token costs a quarter of the engine's
            # throughput at 16 sequences; the tokens past the top_k most likely carry a
            # negligible share of the probability.
            add(llama_cpp.llama_sampler_init_top_k(top_k))
        if params.presence_penalty or params.frequency_penalty:
            add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, _PENALTY_WINDOW, 1.0, params.frequency_penalty, params.presence_penalty
                )
            )
        if params.temperature <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        add(llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> int:
        # llama_sampler_sample also accepts the token into the chain (penalties, grammar).
        return llama_cpp.llama_sampler_sample(self.ptr, ctx, batch_index)

    def free(self) -> None:
        if self.ptr:
            llama_cpp.llama_sampler_free(self.ptr)
            self.ptr = None


class PieceDecoder:
    """Token ids -> text, holding back bytes of a UTF-8 character split across tokens."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p):
        self._vocab = vocab
        self._buf = ctypes.create_string_buffer(256)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def piece_bytes(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, True)
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(
                self._vocab, token, self._buf, len(self._buf), 0, True
            )
        return self._buf.raw[:n]

    def decode(self, token: int) -> str:
        return self._utf8.decode(self.piece_bytes(token))


def _top_logprobs(
    logits: np.ndarray, token: int, k: int, decoder: PieceDecoder
) -> tuple[float, tuple[tuple[str, float], ...]]:
    shifted = logits - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    top: tuple[tuple[str, float], ...] = ()
    if k:
        best = np.argpartition(-logprobs, k)[:k]
        best = best[np.argsort(-logprobs[best])]
        top = tuple(
            (decoder.piece_bytes(int(t)).decode("utf-8", "replace"), float(logprobs[t]))
            for t in best
        )
    return float(logprobs[token]), top


_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    """A request admitted to (or waiting for) a slot of the engine."""

    job: GenerationJob
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    order: int = field(default_factory=lambda: next(_ids))
    cancelled: bool = False
    # Decode-thread state.
    seq_id: int = -1
    history: list[int] = field(default_factory=list)  # tokens whose KV the sequence needs
    n_past: int = 0  # tokens of history already in the KV cache
    next_image: int = 0  # index into job.prompt.images of the next image to evaluate
    generated: int = 0
    logits_index: int = -1
    sampler: SamplerChain | None = None
    decoder: PieceDecoder | None = None

    def __post_init__(self) -> None:
        self.history = list(self.job.prompt.token_ids)

    # Loop side -----------------------------------------------------------------------
    def cancel(self) -> None:
        self.cancelled = True

    # Decode-thread side ---------------------------------------------------------------
    def emit(self, event: object) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.history)

    def on_token(self, token: int, ctx: llama_cpp.llama_context_p, vocab, n_vocab: int) -> bool:
        """Record a sampled token and emit it; True when the sequence is finished."""
        assert self.decoder is not None
        self.generated += 1
        if not self.job.params.ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, token):
            self.finish("stop")
            return True
        logprob, top = None, ()
        k = self.job.params.top_logprobs
        if k is not None:
            ptr = llama_cpp.llama_get_logits_ith(ctx, self.logits_index)
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
            logprob, top = _top_logprobs(logits, token, k, self.decoder)
        self.history.append(token)
        self.emit(TokenEvent(token, self.decoder.decode(token), logprob, top))
        if self.generated >= self.job.params.max_tokens:
            self.finish("length")
            return True
        return False

    def finish(self, reason: str) -> None:
        # Bytes of a character cut off by max_tokens are dropped, as llama.cpp's server does.
        self.emit(FinishEvent(reason, self.job.prompt.prompt_tokens, self.generated))

    def fail(self, exc: BaseException) -> None:
        self.emit(exc)

    def release(self) -> None:
        if self.sampler is not None:
            self.sampler.free()
            self.sampler = None
