"""The embedded engine: llama.cpp with continuous batching, through llama-cpp-python's
low-level API.

One llama context holds ``slots`` sequences in a unified KV cache. A decode thread loops:
admit waiting requests into free slots, build one batch with the next token of every
decoding sequence plus prompt chunks of the ones still prefilling, decode it once, sample
each sequence with its own sampler chain, emit the tokens, and drop sequences that
finished or whose client went away. The event loop only enqueues jobs and reads events,
so a slow client never stalls the batch.

Which sequence runs, waits or is preempted is decided by ``scheduler.Scheduler`` (fair
shares between tenants, the KV budget); this module carries its decisions out on the
model. A preempted sequence goes back to the front of its tenant's queue with its
generated tokens appended to its prompt (the approach vLLM takes); output stays the same.

Prefix caching (``prefix_cache``): a finished or preempted sequence's KV is saved to host
memory as a cache entry (``llama_state_seq_get_data``) and its cells freed; an admitted
request restores the longest prefix an entry holds, or borrows it from a running sequence
(``llama_memory_seq_cp``: no copy, no compute), and prefills only the rest. There are at
most ``cache_entries`` entries within ``cache_bytes``, least recently used first. A request
run alone therefore finds the KV cache as a cold run would, with its prefix in the same
cells; with ``exact_reuse`` the prefix also ends where a cold prefill's chunk starts
(``Sequence.reuse_point``) and holds no answer decoded for another request (``_usable``),
so its greedy output is the same with and without the cache.
Chunks end at turn boundaries as well as every ``batch`` tokens (``prefill_chunks``), so
a follow-up turn recomputes little of what it shares. A sliding-window model's saved state
keeps only the window before its end, so an entry gives just its whole length: a finished
sequence is saved cut at the point a follow-up turn reuses, and a prompt that shares a
prefix with an earlier one that could not give it is saved there too, on the way (a
checkpoint, as llama-server keeps for such models). Measured on the demo model (one
thread, busy machine): a 2,741-token system prompt took 60 s to the first token cold,
0.34-0.53 s once cached.

Grammars. A request's grammar is compiled in a worker thread before it is queued (one
that does not compile is refused then), and a constrained sequence's token is sampled in
the engine's sampling pool from a copy of its logits while the batch goes on without it:
a grammar as costly as a 10,000-value enum delays only its own request.

Threads. The event loop runs ``generate``: it checks the job, submits its sequence under
``_cond`` and reads the sequence's event queue. The decode thread owns the llama context,
the batch, the slots, the cache entries and every sequence once submitted; it takes
``_cond`` whenever it changes the scheduler's queues, which ``generate`` also touches, and
saves a finished sequence's KV before it takes ``_cond``.
Sampling workers touch only their sequence's sampler and a logits copy, and wake the
decode thread through ``_cond`` when done. Otherwise the threads meet only through
``Sequence.cancel`` (a flag the decode thread polls each step) and
``loop.call_soon_threadsafe`` for events, once per step for all of them (``Outbox``).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import llama_cpp
import numpy as np

from modelhub.engines.base import EngineEvent, EngineStats, FinishEvent, GenerationJob
from modelhub.engines.llamacpp_sequence import Outbox, PieceDecoder, SamplerChain, Sequence
from modelhub.engines.llamacpp_vision import ImageKVFullError, VisionEncoder, VisionEncoderError
from modelhub.engines.prefill_chunks import AttentionTiles, Chunking, break_kinds
from modelhub.engines.prefix_cache import (
    CachedPrefix,
    KVHolder,
    PrefixCache,
    borrow,
    common_prefix,
    distinct_cells,
    image_digest,
    new_origin,
    prompt_keys,
)
from modelhub.engines.scheduler import Scheduler
from modelhub.errors import EngineOverloadedError, InvalidRequestError, ModelhubError

__all__ = ["LlamaCppEngine", "LlamaTokenizer", "StepObserver"]

log = logging.getLogger(__name__)

# Called after each decode step with (sequences in the batch, tokens in the batch).
StepObserver = Callable[[int, int], None]

# How long a decode step waits for grammar-constrained tokens still being sampled.
_SAMPLING_WAIT_S = 0.02

_backend_lock = threading.Lock()
_backend_ready = False


# llama.cpp's LLAMA_MAX_SEQ: the sequence ids one context may hold.
_MAX_SEQ = 256


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama.cpp logs every tensor it loads; keep warnings and errors only.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            _backend_ready = True


def _utf8(text: str) -> bytes:
    """UTF-8 for llama.cpp. JSON may carry lone surrogates (``"\\ud800"``), which UTF-8
    cannot encode: each becomes U+FFFD, one character as the client wrote one, and what a
    client decoding our own output would see."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def _release_unused(built: asyncio.Future) -> None:
    if not built.cancelled() and built.exception() is None:
        built.result().release()


class LlamaTokenizer:
    """The GGUF's own tokenizer, for formats that have no tokenizer of their own."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p):
        self._vocab = vocab

    def encode(self, text: str, *, add_bos: bool) -> list[int]:
        data = _utf8(text)
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, size, add_bos, True)
            if n >= 0:
                return list(buf[:n])
            size = -n


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(
        self,
        model_path: Path,
        *,
        slots: int,
        context: int,
        batch: int,
        queue_limit: int,
        threads: int | None = None,
        top_k: int = 0,
        mmproj: Path | None = None,
        max_running: int | None = None,
        cache_entries: int = 64,
        cache_bytes: int = 2 << 30,
        exact_reuse: bool = True,
        observer: StepObserver | None = None,
        queue_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.model_path = model_path
        self.mmproj = mmproj
        self._vision: VisionEncoder | None = None
        self.slots = slots
        self.context = context
        self.batch_size = batch
        self.queue_limit = queue_limit
        self.threads = threads
        self.top_k = top_k
        self._observer = observer
        self._queue_observer = queue_observer  # seconds each sequence waited for a slot
        self._model = None
        self._ctx = None
        self._mem = None
        self._vocab = None
        self._n_vocab = 0
        self._n_swa = 0
        self._batch = None
        self._cond = threading.Condition()
        self._sched: Scheduler[Sequence] = Scheduler(
            slots=slots, context=context, queue_limit=queue_limit, default_cap=max_running
        )
        if slots > _MAX_SEQ:
            raise ValueError(f"slots must be at most {_MAX_SEQ} (llama.cpp)")
        # Finished sequences' KV, in host memory (0 entries: no cache).
        self._cache = PrefixCache(max_entries=cache_entries, max_bytes=cache_bytes)
        self._exact = exact_reuse
        self._chunking: Chunking | None = None  # once the vocabulary is loaded
        self._free_ids: list[int] = list(range(slots))
        # Grammar-constrained sampling runs here, so one grammar cannot stall the batch.
        self._samplers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llamacpp-sample")
        self._sampling: list[Sequence] = []
        self._outbox = Outbox()  # written and flushed by the decode thread only
        self._counts = dict.fromkeys(
            ("preemptions", "prefix_cache_queries_tokens", "prefix_cache_hits_tokens"), 0
        )
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ready = False
        self.tokenizer: LlamaTokenizer | None = None
        self.chat_template: str | None = None

    # Lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._loop, name="llamacpp-decode", daemon=True)
        self._thread.start()
        self._ready = True

    def _load(self) -> None:
        _init_backend()
        mparams = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {self.model_path}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.context
        cparams.n_batch = self.batch_size
        cparams.n_ubatch = self.batch_size
        cparams.n_seq_max = len(self._free_ids)
        cparams.kv_unified = True  # every slot may use the whole window, and share cells
        cparams.no_perf = True
        # llama.cpp defaults to 4 threads; more threads than cores halves single-stream speed.
        cparams.n_threads = cparams.n_threads_batch = self.threads or os.cpu_count() or 1
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {self.model_path}")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._n_swa = llama_cpp.llama_model_n_swa(self._model)
        self._batch = llama_cpp.llama_batch_init(self.batch_size, 0, 1)
        pieces = PieceDecoder(self._vocab)
        kinds = break_kinds(
            self._n_vocab,
            lambda token: bool(llama_cpp.llama_vocab_is_control(self._vocab, token)),
            pieces.piece_bytes,
            llama_cpp.llama_vocab_bos(self._vocab),
        )
        # Where the model runs on the CPU, a chunk may take two ubatches to fill whole
        # flash-attention tiles (``prefill_chunks.AttentionTiles``).
        tiles = None
        if not llama_cpp.llama_supports_gpu_offload():
            heads = llama_cpp.llama_model_n_head(self._model)
            tiles = AttentionTiles(heads, cparams.n_threads_batch)
        self._chunking = Chunking(kinds, self.batch_size, tiles=tiles)
        if self.mmproj is not None:
            self._vision = VisionEncoder(self.mmproj, self._model, cparams.n_threads)
        self.tokenizer = LlamaTokenizer(self._vocab)
        template = llama_cpp.llama_model_chat_template(self._model, None)
        self.chat_template = template.decode() if template else None

    async def close(self) -> None:
        self._ready = False
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._samplers.shutdown)
        if self._vision is not None:
            self._vision.close()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
        self._batch = self._ctx = self._mem = self._model = None

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def max_context(self) -> int:
        return self.context

    @property
    def vocab_size(self) -> int:
        """Token ids a prompt may hold are 0 .. vocab_size - 1 (0 before start)."""
        return self._n_vocab

    def stats(self) -> EngineStats:
        return EngineStats(
            queued=self._sched.queued,
            running=len(self._sched.running),
            slots=self.slots,
            preemptions=int(self._counts["preemptions"]),
            kv_cache_usage=min(self._kv_used() / self.context, 1.0),
            extra={
                **self._counts,
                "prefix_cache_entries": len(self._cache),
                "prefix_cache_bytes": self._cache.nbytes,
            },
        )

    # Event-loop side ---------------------------------------------------------------------
    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        self._check(job)
        seq = await self._prepared(job)
        try:
            with self._cond:
                self._check_queue()
                self._sched.submit(seq)
                self._cond.notify()
        except BaseException:
            seq.release()
            raise
        try:
            while True:
                event = await seq.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, FinishEvent):
                    return
        finally:
            seq.cancel()
            with self._cond:
                self._cond.notify()

    def _check(self, job: GenerationJob) -> None:
        if not self._ready:
            raise EngineOverloadedError(
                "The engine is not ready yet.", headers={"Retry-After": "5"}
            )
        if job.prompt.images and self._vision is None:
            raise InvalidRequestError(
                "This model's engine was configured without a vision projector (mmproj).",
                param="messages",
            )
        with self._cond:
            self._check_queue()

    def _check_queue(self) -> None:
        if not self._sched.accepts():
            raise EngineOverloadedError(
                "The engine's queue is full; retry shortly.", headers={"Retry-After": "1"}
            )

    async def _prepared(self, job: GenerationJob) -> Sequence:
        """The job's sequence, built in a worker thread: compiling a grammar and hashing
        images never hold the decode thread. A caller gone meanwhile leaves nothing behind."""
        loop = asyncio.get_running_loop()
        built = loop.run_in_executor(None, self._prepare, job, loop)
        try:
            return await asyncio.shield(built)
        except asyncio.CancelledError:
            built.add_done_callback(_release_unused)
            raise

    def _prepare(self, job: GenerationJob, loop: asyncio.AbstractEventLoop) -> Sequence:
        try:
            sampler = SamplerChain(self._vocab, self._n_vocab, job.params, self.top_k)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="response_format") from exc
        images = [
            (im.offset, im.n_tokens, image_digest(im.image.tobytes(), im.image.size))
            for im in job.prompt.images
        ]
        return Sequence(
            job=job,
            loop=loop,
            keys=prompt_keys(job.prompt.token_ids, images),
            chunking=self._chunking,
            exact=self._exact,
            sampler=sampler,
            decoder=PieceDecoder(self._vocab),
            outbox=self._outbox,
        )

    # Decode thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        farewell = "The engine is shutting down."
        try:
            while True:
                with self._cond:
                    self._reap()
                    self._admit()
                    while not self._stopping and not self._has_work():
                        self._cond.wait()
                        self._reap()
                        self._admit()
                    if self._stopping:
                        break
                self._step()
                self._outbox.flush()
        except Exception:
            # A llama.cpp failure must still end every request with an error, not a hang.
            log.exception("decode loop failed")
            farewell = "The engine failed while generating."
            self._ready = False
        finally:
            for seq in [*self._sched.running, *self._sched.waiting()]:
                seq.fail(ModelhubError(farewell))
            self._outbox.flush()

    def _has_work(self) -> bool:
        """Something to decode, or a sampled token to collect."""
        return any(s.pending is None or s.pending.done() for s in self._sched.running) or any(
            s.pending.done() for s in self._sampling
        )

    def _wake(self, _future: object = None) -> None:
        with self._cond:
            self._cond.notify()

    def _kv_used(self) -> int:
        return distinct_cells(self._sched.running)

    def _kv_committed(self) -> int:
        """Cells in use plus those the running sequences' prompts still need."""
        prefill = sum(len(s.history) - s.n_past for s in self._sched.running)
        return self._kv_used() + prefill

    def _reap(self) -> None:
        """Drop cancelled sequences, waiting or running, and free their slots."""
        for seq in [s for s in self._sched.running if s.cancelled]:
            self._finish(seq)
        for seq in self._sched.drop_cancelled():
            seq.release()

    # Admission and KV room ---------------------------------------------------------------
    def _admit(self) -> None:
        sched = self._sched
        while (seq := sched.candidate()) is not None:
            if not sched.has_free_slot():
                victim = sched.slot_victim(seq)
                if victim is None:
                    return
                self._preempt(victim)
            while True:
                source, reused = self._match(seq)
                if sched.fits(len(seq.history) - reused + 1, self._kv_committed()):
                    break
                if not self._free_kv(claimant=seq):
                    if sched.running:
                        return
                    break  # an empty cache always fits one request (``_check``)
            sched.admit(seq)
            if self._queue_observer is not None:
                self._queue_observer(time.monotonic() - seq.queued_at)
            self._place(seq, source, reused)

    def _free_kv(self, claimant: Sequence | None = None) -> bool:
        """Free some cells by preempting the sequence the scheduler names. False when none
        can be preempted."""
        victim = self._sched.kv_victim(claimant)
        if victim is None:
            return False
        self._preempt(victim)
        return True

    def _match(self, seq: Sequence) -> tuple[KVHolder | CachedPrefix | None, int]:
        """The running sequence or cache entry giving the longest usable prefix of ``seq``,
        and its length. On a sliding-window model, a longer prefix shared with a source
        that cannot give it becomes the sequence's checkpoint."""
        seq.checkpoint_at = 0
        if not self._cache.max_entries:
            return None, 0
        keys = seq.cache_keys(len(seq.history))
        best: tuple[KVHolder | CachedPrefix | None, int] = (None, 0)
        shared = 0
        for source in [*self._cache, *self._sched.running]:
            n = self._shared_prefix(seq, keys, source.cache_keys(self._usable(seq, source)))
            shared = max(shared, n)
            if n > best[1] and self._gives(source, n):
                best = (source, n)
        if self._n_swa and shared > best[1]:
            seq.checkpoint_at = shared
        return best

    def _usable(self, seq: Sequence, source: Sequence | CachedPrefix) -> int:
        """How many of ``source``'s positions ``seq`` may take. With exact reuse, another
        request's answer is not among them: decoded one token at a time, its KV is not
        what a cold prefill computes (a preempted sequence takes back its own, as it was)."""
        if isinstance(source, CachedPrefix) and source.owner == seq.order:
            return source.n_past
        return source.prefilled if self._exact else source.n_past

    def _shared_prefix(self, seq: Sequence, keys: np.ndarray, held: np.ndarray) -> int:
        """How much of a prefix whose keys are ``held`` ``seq`` (whose keys are ``keys``)
        would reuse."""
        # The prompt's last token is decoded again, for its logits.
        n = min(common_prefix(held, keys), len(keys) - 1)
        return seq.reuse_point(n)

    def _gives(self, source: KVHolder | CachedPrefix, n: int) -> bool:
        if isinstance(source, CachedPrefix):
            return source.serves(n)
        # A sliding-window model needs the window before the prefix's end still cached.
        pos_min = llama_cpp.llama_memory_seq_pos_min(self._mem, source.seq_id)
        return self._n_swa == 0 or pos_min <= max(0, n - self._n_swa)

    def _place(self, seq: Sequence, source: KVHolder | CachedPrefix | None, reused: int) -> None:
        """Give an admitted sequence a sequence id and the prefix it reuses."""
        seq.seq_id = self._free_ids.pop()  # running sequences never exceed the ids
        seq.origin, seq.own_start, seq.borrowed = new_origin(), 0, ()
        seq.n_past, seq.next_image, seq.prefill_started = 0, 0, False
        if seq.generated == 0:
            self._counts["prefix_cache_queries_tokens"] += len(seq.history)
        if isinstance(source, CachedPrefix):
            self._reused(seq, self._restore(seq.seq_id, source, reused))
        elif source is not None:
            self._borrow(seq, source, reused)

    def _borrow(self, seq: Sequence, holder: KVHolder, n: int) -> None:
        """Give ``seq`` (which has computed nothing yet) ``holder``'s first ``n`` cells."""
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, holder.seq_id, seq.seq_id, 0, n)
        seq.borrowed = borrow(holder, n)
        seq.own_start = n
        self._reused(seq, n)

    def _reused(self, seq: Sequence, n: int) -> None:
        if seq.generated == 0:
            self._counts["prefix_cache_hits_tokens"] += n - seq.n_past
        seq.n_past = n
        seq.next_image = sum(1 for im in seq.job.prompt.images if im.offset < n)

    def _borrow_late(self) -> set[Sequence]:
        """A sequence admitted beside one still computing the prefix they share borrows it
        once computed, and waits for it rather than start its own prefill: a burst of
        requests with a new system prompt computes it once, not once per request. Returns
        the sequences to hold back this step. Only a sequence that has started its prefill
        is waited for, so two never wait for each other."""
        running = self._sched.running
        waiting: set[Sequence] = set()
        for seq in running:
            if seq.prefill_started or not seq.prefilling:
                continue
            keys = seq.cache_keys(len(seq.history))
            best, best_n, coming = None, seq.n_past, 0
            for holder in running:
                # A decoding holder holds all it will: past ``best_n`` or of no use.
                if holder is seq or (not holder.prefilling and holder.n_past <= best_n):
                    continue
                # Not n_past: the prefix it is still computing counts too.
                usable = len(holder.job.prompt.token_ids) if self._exact else len(holder.history)
                n = self._shared_prefix(seq, keys, holder.cache_keys(usable))
                if n <= best_n:
                    continue
                ready = seq.reuse_point(min(n, holder.n_past))
                if ready > best_n and self._gives(holder, ready):
                    best, best_n = holder, ready
                if n > ready and holder.prefill_started and holder.prefilling:
                    coming = max(coming, n)
            if best is not None:
                self._borrow(seq, best, best_n)
            if coming > best_n:
                waiting.add(seq)
        return waiting

    def _restore(self, seq_id: int, entry: CachedPrefix, reused: int) -> int:
        """Load ``entry`` into ``seq_id`` and keep its first ``reused`` positions; 0 when the
        KV cache has no room for it (the prefix is then computed)."""
        state = (ctypes.c_uint8 * entry.nbytes).from_buffer(entry.state)
        if llama_cpp.llama_state_seq_set_data(self._ctx, state, entry.nbytes, seq_id) == 0:
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
            return 0
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, reused, -1)
        self._cache.touch(entry)
        return reused

    def _save(self, seq: Sequence, end: int) -> None:
        """Keep ``seq``'s first ``end`` positions as a cache entry; its cells past ``end``
        are dropped (it is leaving, or ``end`` is where it stands)."""
        if end <= 0:
            return
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, end, -1)
        min_reuse = 0 if self._n_swa == 0 or end <= self._n_swa else end
        prefilled = min(end, seq.prefilled) if self._exact else end
        entry = CachedPrefix(seq.cache_keys(end), bytearray(), min_reuse, prefilled, seq.order)
        size = llama_cpp.llama_state_seq_get_size(self._ctx, seq.seq_id)
        if not self._cache.wants(entry, size):
            return
        entry.state = bytearray(size)
        buffer = (ctypes.c_uint8 * size).from_buffer(entry.state)
        if llama_cpp.llama_state_seq_get_data(self._ctx, buffer, size, seq.seq_id) == size:
            self._cache.add(entry)

    def _vacate(self, seq: Sequence, end: int) -> None:
        """Take the sequence out of its slot, keeping its first ``end`` positions as a cache
        entry when the cache is on. Its KV is saved before ``_cond`` is taken, so the event
        loop never waits on the copy."""
        if self._cache.max_entries and seq.n_past > 0:
            self._save(seq, min(seq.n_past, end))
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        with self._cond:
            self._sched.finish(seq)
            self._free_ids.append(seq.seq_id)
        seq.seq_id = -1

    def _entry_end(self, seq: Sequence, follow_up: int) -> int:
        """Where ``seq``'s cache entry ends: all it holds, or, on a sliding-window model
        (whose entry gives only its whole length), where a request sharing its first
        ``follow_up`` positions takes the prefix up."""
        return seq.reuse_point(follow_up) if self._n_swa else seq.n_past

    def _finish(self, seq: Sequence) -> None:
        # What a follow-up turn surely shares is the prompt (the client's copy of the answer
        # may be tokenized otherwise) but its last token, which the same prompt decodes again.
        self._vacate(seq, self._entry_end(seq, len(seq.job.prompt.token_ids) - 1))
        seq.release()

    def _preempt(self, seq: Sequence) -> None:
        # Its KV becomes a cache entry like any finished sequence's, so it may resume
        # without recomputing; its sampler stays, so the output continues the same either way.
        self._vacate(seq, self._entry_end(seq, seq.n_past))
        seq.n_past = seq.own_start = 0
        seq.borrowed = ()
        seq.next_image = 0
        self._sched.requeue(seq)
        self._counts["preemptions"] += 1

    def _make_room(self) -> None:
        """Preempt until every decoding sequence has a cell (prefill takes what is left)."""
        running = self._sched.running
        while not self._sched.fits(sum(not s.prefilling for s in running) + 1, self._kv_used()):
            with self._cond:
                victim = self._sched.kv_victim()
                if victim is None:
                    return
                self._preempt(victim)

    # One step ---------------------------------------------------------------------------
    def _fill_batch(self) -> list[Sequence]:
        """Next token of every decoding sequence first, then prompt chunks, oldest first."""
        waiting = self._borrow_late() if self._cache.max_entries else set()
        batch = self._batch
        n = 0
        with_logits: list[Sequence] = []
        budget_kv = self.context - self._kv_used()
        for seq in sorted(self._sched.running, key=lambda s: s.order):
            if n >= self.batch_size or budget_kv <= 0:
                break
            if seq.pending is not None or seq in waiting:
                continue  # its next token is still being sampled, or its prefix computed
            # A prompt chunk ends where a cold prefill's would, so that one computed after
            # a reused prefix is the same chunk.
            take = min(self._prefill_end(seq), seq.ubatch_end(seq.n_past)) - seq.n_past
            take = min(take, self.batch_size - n, budget_kv)
            for i in range(take):
                batch.token[n] = seq.history[seq.n_past + i]
                batch.pos[n] = seq.n_past + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                batch.logits[n] = False
                n += 1
            seq.n_past += take
            seq.prefill_started |= take > 0
            budget_kv -= take
            if take and not seq.prefilling:
                batch.logits[n - 1] = True
                seq.logits_index = n - 1
                with_logits.append(seq)
        batch.n_tokens = n
        return with_logits

    @staticmethod
    def _prefill_end(seq: Sequence) -> int:
        """Text tokens may be batched up to the next image's span, which the projector fills."""
        images = seq.job.prompt.images
        if seq.next_image < len(images):
            return images[seq.next_image].offset
        return len(seq.history)

    def _eval_images(self) -> None:
        """Images whose span starts where a sequence's prefill stands, one decode each."""
        for seq in sorted(self._sched.running, key=lambda s: s.order):
            images = seq.job.prompt.images
            while seq.next_image < len(images) and images[seq.next_image].offset == seq.n_past:
                image = images[seq.next_image]
                try:
                    seq.prefill_started = True
                    seq.n_past = self._vision.eval_image(
                        self._ctx, image, seq.seq_id, seq.n_past, self.batch_size
                    )
                except ImageKVFullError as exc:
                    llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, seq.n_past, -1)
                    with self._cond:
                        freed = self._free_kv()
                    if freed:
                        return  # the next step tries again with the freed cells
                    seq.fail(exc)
                    self._finish(seq)
                    break
                except VisionEncoderError as exc:
                    seq.fail(exc)
                    self._finish(seq)
                    break
                seq.next_image += 1

    def _collect(self) -> None:
        """Tokens sampled off the decode thread since the last step. A usual grammar
        samples in a few milliseconds, so the step waits that long to keep its sequence in
        the next batch; a costly one is left behind instead of holding the batch."""
        if self._sampling:
            wait([s.pending for s in self._sampling], timeout=_SAMPLING_WAIT_S)
        for seq in [s for s in self._sampling if s.pending.done()]:
            self._sampling.remove(seq)
            future, logits = seq.pending, seq.pending_logits
            seq.pending = seq.pending_logits = None
            if seq.cancelled:
                continue
            try:
                token = future.result()
            except Exception:  # a sampler failure ends this request only
                log.exception("sampling failed")
                seq.fail(ModelhubError("The engine failed while sampling."))
                finished = True
            else:
                finished = seq.on_token(token, logits, self._vocab)
            if finished:
                if seq.seq_id >= 0:
                    self._finish(seq)
                else:  # preempted meanwhile: it leaves the queue at the next reap
                    seq.cancel()

    def _step(self) -> None:
        self._collect()
        self._outbox.flush()  # tokens sampled off the thread leave now, not after the decode
        self._make_room()
        if self._vision is not None:
            self._eval_images()
            self._checkpoint()
        with_logits = self._fill_batch()
        n_tokens = self._batch.n_tokens
        if n_tokens == 0:
            return
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self._checkpoint()
        if self._observer is not None:
            self._observer(len(with_logits), n_tokens)
        for seq in with_logits:
            if seq.cancelled:
                continue
            if seq.sampler.constrained:
                seq.pending_logits = self._logits(seq).copy()
                seq.pending = self._samplers.submit(seq.sampler.sample_logits, seq.pending_logits)
                seq.pending.add_done_callback(self._wake)
                self._sampling.append(seq)
                continue
            token = seq.sampler.sample(self._ctx, seq.logits_index)
            row = self._logits(seq) if seq.job.params.top_logprobs is not None else None
            if seq.on_token(token, row, self._vocab):
                self._finish(seq)

    def _checkpoint(self) -> None:
        """Save the prefixes that sequences have just finished computing up to their
        checkpoint (``_match``)."""
        for seq in self._sched.running:
            if seq.checkpoint_at and seq.n_past == seq.checkpoint_at:
                seq.checkpoint_at = 0
                self._save(seq, seq.n_past)

    def _logits(self, seq: Sequence) -> np.ndarray:
        """The row of logits the last decode left for ``seq`` (valid until the next one)."""
        row = llama_cpp.llama_get_logits_ith(self._ctx, seq.logits_index)
        return np.ctypeslib.as_array(row, shape=(self._n_vocab,))
