"""One request's life inside the embedded engine: its sampler, its text, its events.

A sequence is built in a worker thread (its grammar compiled there), then belongs to the
decode thread, except ``cancel`` and the event queue's consumer, which run on the event
loop; the two meet only through ``loop.call_soon_threadsafe`` and a flag that the decode
thread polls between steps. A grammar-constrained sampler runs in the engine's sampling
pool, one token at a time, while its sequence sits out of the batch (``pending``).
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from modelhub.engines.base import FinishEvent, GenerationJob, SamplingParams, TokenEvent
from modelhub.engines.prefill_chunks import Chunking

__all__ = ["Outbox", "PieceDecoder", "SamplerChain", "Sequence"]

# Penalties look back this far; llama.cpp's server uses the same default window.
_PENALTY_WINDOW = 64


# llama_token_data as numpy sees it: the candidates array built from a row of logits.
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
# How many of the likeliest tokens a grammar checks before it checks the whole vocabulary.
_SHORTLIST = 512


class SamplerChain:
    """A llama.cpp sampler chain for one request (temperature, top_p, seed, penalties), and
    the output grammar apart from it.

    A grammar is checked against the whole vocabulary only when it has to be. As llama.cpp's
    own common sampler does, the token is first sampled without it and kept if the grammar
    allows it (a rejected draw is resampled from the allowed tokens, so the result has the
    constrained distribution). When it is rejected, the grammar is applied to the
    ``_SHORTLIST`` likeliest tokens and the token drawn among those it allows (for greedy
    decoding the same token; otherwise the top-k truncation happens before the grammar
    instead of after it); only when it allows none of them does it check every token. A
    grammar with a 10,000-value enum, which takes seconds over a 262k vocabulary, thus
    costs its full price only where the model strays far from it.
    """

    def __init__(
        self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, params: SamplingParams, top_k: int
    ):
        self.n_vocab = n_vocab
        self.grammar = None
        if params.grammar:
            self.grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, params.grammar.encode(), b"root"
            )
            if not self.grammar:
                raise ValueError("the output grammar does not compile")
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = llama_cpp.llama_sampler_chain_init(chain_params)
        add = lambda s: llama_cpp.llama_sampler_chain_add(self.ptr, s)
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
        # Greedy with nothing before it is the logits' argmax, read in place: the chain
        # would first copy the whole vocabulary into a candidates array (0.35 ms a token
        # on a 262k vocabulary, 7% of a 16-sequence step).
        self._argmax = params.temperature <= 0.0 and llama_cpp.llama_sampler_chain_n(self.ptr) == 0
        if params.temperature <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        add(llama_cpp.llama_sampler_init_dist(seed))

    @property
    def constrained(self) -> bool:
        return self.grammar is not None

    def sample(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> int:
        if self.constrained:
            row = llama_cpp.llama_get_logits_ith(ctx, batch_index)
            return self.sample_logits(np.ctypeslib.as_array(row, shape=(self.n_vocab,)))
        if self._argmax:
            row = llama_cpp.llama_get_logits_ith(ctx, batch_index)
            return int(np.ctypeslib.as_array(row, shape=(self.n_vocab,)).argmax())
        # llama_sampler_sample also accepts the token into the chain (penalties).
        return llama_cpp.llama_sampler_sample(self.ptr, ctx, batch_index)

    def sample_logits(self, logits: np.ndarray) -> int:
        """Sample from a row of logits and accept the token; any thread, one at a time."""
        token = self._draw(_all_candidates(logits), grammar=False)
        if self.constrained:
            if not self._allows(token, logits):
                shortlist = np.argpartition(-logits, _SHORTLIST)[:_SHORTLIST]
                token = self._draw(_some_candidates(shortlist, logits), grammar=True)
                if token < 0:
                    token = self._draw(_all_candidates(logits), grammar=True)
            llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.ptr, token)
        return token

    def _draw(self, data: np.ndarray, *, grammar: bool) -> int:
        """Apply the grammar (if asked) and the chain to the candidates; -1 if the grammar
        allows none of them."""
        candidates = _candidates(data)
        if grammar:
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
            if not np.isfinite(data["logit"][: candidates.size]).any():
                return -1
        llama_cpp.llama_sampler_apply(self.ptr, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id)

    def _allows(self, token: int, logits: np.ndarray) -> bool:
        one = _some_candidates(np.array([token]), logits)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(_candidates(one)))
        return bool(np.isfinite(one["logit"][0]))

    def free(self) -> None:
        for ptr in (self.ptr, self.grammar):
            if ptr:
                llama_cpp.llama_sampler_free(ptr)
        self.ptr = self.grammar = None


def _some_candidates(ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    data = np.empty(len(ids), _TOKEN_DATA)
    data["id"] = ids
    data["logit"] = logits[ids]
    data["p"] = 0.0
    return data


def _all_candidates(logits: np.ndarray) -> np.ndarray:
    return _some_candidates(np.arange(len(logits), dtype=np.int32), logits)


def _candidates(data: np.ndarray) -> llama_cpp.llama_token_data_array:
    return llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(llama_cpp.llama_token_data_p),
        size=len(data),
        selected=-1,
        sorted=False,
    )


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


class Outbox:
    """The events of one decode step, handed to each event loop in one call: a call per
    token would wake the loop (a write to its self-pipe) once per sequence per step, while
    the decode threads want both cores."""

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue, object]] = []

    def put(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, event: object) -> None:
        self._items.append((loop, queue, event))

    def flush(self) -> None:
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, object]]] = {}
        for loop, queue, event in items:
            by_loop.setdefault(loop, []).append((queue, event))
        for loop, batch in by_loop.items():
            loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue, object]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    """A request admitted to (or waiting for) a slot of the engine."""

    job: GenerationJob
    loop: asyncio.AbstractEventLoop
    keys: np.ndarray  # the prompt's prefix-cache keys (``prefix_cache.prompt_keys``)
    chunking: Chunking  # where a cold prefill of its history starts each chunk
    exact: bool  # reuse cached prefixes only up to such a start
    sampler: SamplerChain | None
    decoder: PieceDecoder
    outbox: Outbox  # the engine's; flushed after every step
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    order: int = field(default_factory=lambda: next(_ids))
    queued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    # Decode-thread state.
    seq_id: int = -1
    history: list[int] = field(default_factory=list)  # tokens whose KV the sequence needs
    n_past: int = 0  # tokens of history already in the KV cache
    next_image: int = 0  # index into job.prompt.images of the next image to evaluate
    generated: int = 0
    logits_index: int = -1
    # Cells borrowed from other holders and its own (``prefix_cache.KVHolder``).
    borrowed: tuple[tuple[int, int, int], ...] = ()
    origin: int = -1
    own_start: int = 0
    # Where its prefill reaches a prefix shared with a cache entry that could not give it
    # (a sliding-window model's): the prefix is saved there, for the next request.
    checkpoint_at: int = 0
    # Whether it has computed part of its prompt since it was admitted; until then it may
    # still borrow a prefix another sequence computed meanwhile.
    prefill_started: bool = False
    # ``chunking.starts`` of the history, and the history's length then.
    _starts: tuple[int, np.ndarray] = (-1, np.zeros(0, dtype=np.int64))
    # A token being sampled off the decode thread (grammar-constrained), and its logits.
    pending: Future | None = None
    pending_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.history = list(self.job.prompt.token_ids)

    # What the scheduler reads (``scheduler.Schedulable``).
    @property
    def tenant(self) -> str:
        return self.job.tenant

    @property
    def max_running(self) -> int | None:
        return self.job.max_running

    @property
    def kv_cells(self) -> int:
        return self.n_past

    def cache_keys(self, n: int) -> np.ndarray:
        """Prefix-cache keys of the first ``n`` positions: the prompt's, then generated ids."""
        prompt = len(self.keys)
        if n <= prompt:
            return self.keys[:n]
        return np.concatenate([self.keys, np.asarray(self.history[prompt:n], dtype=np.int64)])

    @property
    def prefilled(self) -> int:
        """Positions of its KV computed by a prefill: its prompt's (the rest is its answer,
        decoded one token at a time)."""
        return min(self.n_past, len(self.job.prompt.token_ids))

    def chunk_starts(self) -> np.ndarray:
        """Where a cold prefill of the history starts each chunk (``prefill_chunks``); the
        history grows only when a preempted sequence takes its generated tokens along."""
        if self._starts[0] != len(self.history):
            starts = self.chunking.starts(self.history, self.job.prompt.images)
            self._starts = (len(self.history), starts)
        return self._starts[1]

    def ubatch_end(self, n: int) -> int:
        """Where the ubatch that computes position ``n`` ends: with its prefill chunk, or
        where the chunk is split in two (``Chunking.ubatch_end``)."""
        if n >= len(self.history) - 1:
            # The last position (a decoding sequence's every step): no chunk starts after
            # it, and its history has just grown, so the starts are not worth recomputing.
            return len(self.history)
        starts = self.chunk_starts()
        i = int(np.searchsorted(starts, n, side="right"))
        end = int(starts[i]) if i < len(starts) else len(self.history)
        return self.chunking.ubatch_end(int(starts[i - 1]), end, n)

    def reuse_point(self, n: int) -> int:
        """How much of a cached prefix ``n`` positions long this sequence reuses: never part
        of an image, and when ``exact``, only up to the start of the prefill chunk it would
        cut. Reusing whole chunks only, and computing the rest in the same chunks as a cold
        prefill, keeps a greedy output the same with and without the cache; reusing up to
        ``n`` flipped near-tied choices on the demo model (as llama-server's
        ``cache_prompt`` warns it may)."""
        if not self.exact:
            images = self.job.prompt.images
            inside = (im.offset for im in images if im.offset < n < im.offset + im.n_tokens)
            return next(inside, n)
        starts = self.chunk_starts()
        return int(starts[int(np.searchsorted(starts, n, side="right")) - 1])

    # Loop side -----------------------------------------------------------------------
    def cancel(self) -> None:
        self.cancelled = True

    # Decode-thread side ---------------------------------------------------------------
    def emit(self, event: object) -> None:
        self.outbox.put(self.loop, self.events, event)

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.history)

    def on_token(self, token: int, logits: np.ndarray | None, vocab) -> bool:
        """Record a sampled token and emit it; True when the sequence is finished.
        ``logits`` (the row it was sampled from) is needed only for logprobs."""
        self.generated += 1
        if not self.job.params.ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, token):
            self.finish("stop")
            return True
        logprob, top = None, ()
        k = self.job.params.top_logprobs
        if k is not None:
            logprob, top = _top_logprobs(logits, token, k, self.decoder)
        self.history.append(token)
        special = bool(llama_cpp.llama_vocab_is_control(vocab, token))
        self.emit(TokenEvent(token, self.decoder.decode(token), logprob, top, special))
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
        """Free the sampler, once a sampling worker still holding it is done."""
        sampler, self.sampler = self.sampler, None
        if sampler is None:
            return
        if self.pending is not None:
            self.pending.add_done_callback(lambda _: sampler.free())
        else:
            sampler.free()
