"""The embedded engine: llama.cpp with continuous batching, through llama-cpp-python's
low-level API.

One llama context holds ``slots`` sequences in a unified KV cache. A decode thread loops:
admit waiting requests into free slots, build one batch with the next token of every
decoding sequence plus prompt chunks of the ones still prefilling, decode it once, sample
each sequence with its own sampler chain, emit the tokens, and drop (and clear the KV of)
sequences that finished or whose client went away. The event loop only enqueues jobs and
reads events, so a slow client never stalls the batch.

When the KV cache runs short, the youngest sequence is preempted: its cells are freed and
it goes back to the front of the queue with its generated tokens appended to its prompt,
to be recomputed later (the approach vLLM takes). Output stays the same; only time is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import llama_cpp

from modelhub.engines.base import EngineEvent, EngineStats, FinishEvent, GenerationJob
from modelhub.engines.llamacpp_sequence import PieceDecoder, SamplerChain, Sequence
from modelhub.engines.llamacpp_vision import ImageKVFullError, VisionEncoder, VisionEncoderError
from modelhub.errors import EngineOverloadedError, InvalidRequestError, ModelhubError

__all__ = ["LlamaCppEngine", "LlamaTokenizer", "StepObserver"]

log = logging.getLogger(__name__)

# Called after each decode step with (sequences in the batch, tokens in the batch).
StepObserver = Callable[[int, int], None]

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama.cpp logs every tensor it loads; keep warnings and errors only.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            _backend_ready = True


class LlamaTokenizer:
    """The GGUF's own tokenizer, for formats that have no tokenizer of their own."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p):
        self._vocab = vocab

    def encode(self, text: str, *, add_bos: bool) -> list[int]:
        data = text.encode()
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
        observer: StepObserver | None = None,
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
        self._model = None
        self._ctx = None
        self._vocab = None
        self._n_vocab = 0
        self._batch = None
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._free_ids: list[int] = list(range(slots))
        self._preemptions = 0
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
        cparams.n_seq_max = self.slots
        cparams.kv_unified = True  # every slot may use the whole window
        cparams.no_perf = True
        # llama.cpp defaults to 4 threads; more threads than cores halves single-stream speed.
        cparams.n_threads = cparams.n_threads_batch = self.threads or os.cpu_count() or 1
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {self.model_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(self.batch_size, 0, 1)
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
        if self._vision is not None:
            self._vision.close()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
        self._batch = self._ctx = self._model = None

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
            queued=len(self._waiting),
            running=len(self._running),
            slots=self.slots,
            extra={"preemptions": self._preemptions},
        )

    # Event-loop side ---------------------------------------------------------------------
    async def generate(self, job: GenerationJob) -> AsyncIterator[EngineEvent]:
        if not self._ready:
            raise EngineOverloadedError(
                "The engine is not ready yet.", headers={"Retry-After": "5"}
            )
        if job.prompt.images and self._vision is None:
            raise InvalidRequestError(
                "This model's engine was configured without a vision projector (mmproj).",
                param="messages",
            )
        if job.prompt.prompt_tokens + job.params.max_tokens > self.context:
            raise InvalidRequestError(
                "The request does not fit the engine's context.", param="messages"
            )
        seq = Sequence(job=job, loop=asyncio.get_running_loop())
        with self._cond:
            if len(self._waiting) >= self.queue_limit and not self._free_ids:
                raise EngineOverloadedError(
                    "The engine's queue is full; retry shortly.", headers={"Retry-After": "1"}
                )
            self._waiting.append(seq)
            self._cond.notify()
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

    # Decode thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        farewell = "The engine is shutting down."
        try:
            while True:
                with self._cond:
                    self._reap()
                    self._admit()
                    while not self._running and not self._stopping:
                        self._cond.wait()
                        self._reap()
                        self._admit()
                    if self._stopping:
                        break
                self._step()
        except Exception:
            # A llama.cpp failure must still end every request with an error, not a hang.
            log.exception("decode loop failed")
            farewell = "The engine failed while generating."
            self._ready = False
        finally:
            for seq in [*self._running, *self._waiting]:
                seq.fail(ModelhubError(farewell))

    def _kv_used(self) -> int:
        return sum(seq.n_past for seq in self._running)

    def _reap(self) -> None:
        """Drop cancelled sequences, waiting or running, and free their slots."""
        for seq in [s for s in self._running if s.cancelled]:
            self._evict(seq)
        if any(s.cancelled for s in self._waiting):
            self._waiting = deque(s for s in self._waiting if not s.cancelled)

    def _admit(self) -> None:
        while self._waiting and self._free_ids:
            seq = self._waiting[0]
            need = len(seq.history) - seq.n_past + 1
            if self._running and self._kv_used() + need > self.context:
                return
            self._waiting.popleft()
            seq.seq_id = self._free_ids.pop()
            if seq.sampler is None:
                try:
                    seq.sampler = SamplerChain(
                        self._vocab, self._n_vocab, seq.job.params, self.top_k
                    )
                except ValueError as exc:
                    seq.fail(InvalidRequestError(str(exc), param="response_format"))
                    self._free_ids.append(seq.seq_id)
                    continue
                seq.decoder = PieceDecoder(self._vocab)
            self._running.append(seq)

    def _vacate(self, seq: Sequence) -> None:
        """Free the sequence's KV cells and its slot."""
        mem = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_seq_rm(mem, seq.seq_id, -1, -1)
        self._running.remove(seq)
        self._free_ids.append(seq.seq_id)
        seq.seq_id = -1

    def _evict(self, seq: Sequence) -> None:
        self._vacate(seq)
        seq.release()

    def _preempt_youngest(self) -> None:
        youngest = max(self._running, key=lambda s: s.order)
        self._vacate(youngest)
        # Its sampler stays: recomputing the KV later continues the same output.
        youngest.n_past = 0
        youngest.next_image = 0
        self._waiting.appendleft(youngest)
        self._preemptions += 1

    def _make_room(self) -> None:
        while len(self._running) > 1:
            decoding = sum(1 for s in self._running if not s.prefilling)
            if self._kv_used() + decoding + 1 <= self.context:
                return
            with self._cond:
                self._preempt_youngest()

    def _fill_batch(self) -> list[Sequence]:
        """Next token of every decoding sequence first, then prompt chunks, oldest first."""
        batch = self._batch
        n = 0
        with_logits: list[Sequence] = []
        budget_kv = self.context - self._kv_used()
        for seq in sorted(self._running, key=lambda s: s.order):
            if n >= self.batch_size or budget_kv <= 0:
                break
            take = min(self._prefill_end(seq) - seq.n_past, self.batch_size - n, budget_kv)
            for i in range(take):
                batch.token[n] = seq.history[seq.n_past + i]
                batch.pos[n] = seq.n_past + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                batch.logits[n] = False
                n += 1
            seq.n_past += take
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
        for seq in sorted(self._running, key=lambda s: s.order):
            images = seq.job.prompt.images
            while seq.next_image < len(images) and images[seq.next_image].offset == seq.n_past:
                image = images[seq.next_image]
                try:
                    seq.n_past = self._vision.eval_image(
                        self._ctx, image.image, seq.seq_id, seq.n_past, self.batch_size
                    )
                except ImageKVFullError as exc:
                    mem = llama_cpp.llama_get_memory(self._ctx)
                    llama_cpp.llama_memory_seq_rm(mem, seq.seq_id, seq.n_past, -1)
                    if len(self._running) > 1:
                        with self._cond:
                            self._preempt_youngest()
                        return  # the next step tries again with the freed cells
                    seq.fail(exc)
                    with self._cond:
                        self._evict(seq)
                    break
                except VisionEncoderError as exc:
                    seq.fail(exc)
                    with self._cond:
                        self._evict(seq)
                    break
                seq.next_image += 1

    def _step(self) -> None:
        self._make_room()
        if self._vision is not None:
            self._eval_images()
        with_logits = self._fill_batch()
        n_tokens = self._batch.n_tokens
        if n_tokens == 0:
            return
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        if self._observer is not None:
            self._observer(len(with_logits), n_tokens)
        for seq in with_logits:
            if seq.cancelled:
                continue
            token = seq.sampler.sample(self._ctx, seq.logits_index)
            if seq.on_token(token, self._ctx, self._vocab, self._n_vocab):
                with self._cond:
                    self._evict(seq)
