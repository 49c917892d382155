"""Where a prefill cuts a prompt into chunks, so that a reused prefix changes no output.

llama.cpp's CPU kernels give a row a result that depends on the ubatch it is computed in
(its size picks the kernel, its place the row block). A prefix taken from the cache keeps
a greedy output the same as a cold run's only if it ends where a cold prefill's chunk
ends, and the rest is computed in the same chunks as the cold run computes it.

Chunks used to start at multiples of the batch size, so a follow-up turn recomputed half
a chunk (128 tokens) on average of the prefix it shared with the cache. Now a chunk also
ends after a *break* token once it is ``min_size`` tokens long, and before and after
every image. A prompt in the model's turn markup (a control token such as ``[/INST]`` or
``<end_of_turn>``) breaks only at its markup; plain text, which has none (the demo
model's question/answer format included), breaks at blank lines. Cutting a document in a
chat template's turn at every paragraph made its cold prefill 1.3-1.4x slower (many small
ubatches), and the template marks the turns anyway. The cuts depend only on the tokens
before them, so a prompt and its follow-up turn are cut alike over what they share, and
the follow-up reuses up to the last turn boundary before the part it adds.

A chunk may itself be computed in two ubatches (``AttentionTiles``): llama.cpp's CPU flash
attention pays for whole 64-row query tiles, so on the demo model (2 threads, 1,024 tokens
of context) a 67-token ubatch took 192 ms where 66 tokens and then 1 took 164 ms, and 131
tokens took 303 ms where 128 and then 3 took 228 ms. The split depends only on the chunk's
length, so a cold prefill and one after a reused prefix still compute each chunk alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from modelhub.formats.base import PromptImage

__all__ = ["PARAGRAPH", "TURN", "AttentionTiles", "Chunking", "break_kinds"]

# Below this a break does not end a chunk: lines of code or short list items would
# otherwise cut a prompt into many small ubatches, each a decode step of its own.
MIN_CHUNK = 32


# What a token ends, if anything: a turn (a control token) or a paragraph (a blank line).
TURN, PARAGRAPH = 2, 1


def break_kinds(
    n_vocab: int, is_control: Callable[[int], bool], piece: Callable[[int], bytes], bos: int
) -> np.ndarray:
    """Per token id, the break it makes (the BOS token starts a prompt instead)."""
    kinds = np.zeros(n_vocab, dtype=np.int8)
    for token in range(n_vocab):
        if token == bos:
            continue
        if is_control(token):
            kinds[token] = TURN
        elif b"\n\n" in piece(token):
            kinds[token] = PARAGRAPH
    return kinds


# llama.cpp's CPU flash attention (ggml-cpu's ops.cpp) parts a ubatch's query rows, tokens
# times heads, into 4 ranges per thread, and each range into tiles of up to 64 rows that
# never cross a head. Below 64 tokens it takes a row-by-row path instead.
_TILE_ROWS = 64
_RANGES_PER_THREAD = 4
# The longest tail split off a chunk, and the fewest tiles that split must save: a ubatch
# of a few tokens costs about what 1-2 tiles cost at 1,024 tokens of context.
_MAX_TAIL = 8
_MIN_SAVING = 3


@dataclass(frozen=True)
class AttentionTiles:
    """The query tiles a ubatch costs in llama.cpp's CPU flash attention, for a model's
    query heads and the threads a batch runs on."""

    heads: int
    threads: int

    @functools.cache  # noqa: B019 (a handful of small instances, one per engine)
    def count(self, tokens: int) -> int:
        if tokens < _TILE_ROWS:
            return 0
        rows = tokens * self.heads
        ranges = _ceil_div(rows, _ceil_div(rows, _RANGES_PER_THREAD * self.threads))
        if self.threads == 1 or ranges < self.threads:
            ranges = self.threads
        per_range = _ceil_div(rows, ranges)
        tiles = 0
        for first in range(0, rows, per_range):
            row, last = first, min(first + per_range, rows)
            while row < last:
                row += min(_TILE_ROWS, last - row, tokens - row % tokens)
                tiles += 1
        return tiles

    def first_ubatch(self, tokens: int) -> int:
        """How many of a chunk's ``tokens`` to compute in its first ubatch: all of them,
        or all but the shortest tail that saves ``_MIN_SAVING`` tiles or more."""
        whole = self.count(tokens)
        for tail in range(1, min(_MAX_TAIL, tokens - _TILE_ROWS) + 1):
            if self.count(tokens - tail) <= whole - _MIN_SAVING:
                return tokens - tail
        return tokens


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Chunking:
    kinds: np.ndarray  # per token id: the break it makes, from break_kinds
    size: int  # the longest chunk: the engine's batch
    min_size: int = MIN_CHUNK
    tiles: AttentionTiles | None = None  # None: a chunk is always one ubatch

    def starts(self, tokens: Sequence[int], images: Sequence[PromptImage]) -> np.ndarray:
        """The positions where a cold prefill of ``tokens`` starts a chunk (0 first); an
        image's span is one piece of its own, evaluated by the projector."""
        ids = np.asarray(tokens, dtype=np.int64)
        known = (ids >= 0) & (ids < len(self.kinds))
        kind = np.where(known, self.kinds[np.where(known, ids, 0)], 0)
        turns = np.flatnonzero(kind == TURN)
        markup = turns[0] if len(turns) else len(ids)  # plain text up to here
        after_break = np.union1d(turns, np.flatnonzero(kind[:markup] == PARAGRAPH)) + 1
        spans = {image.offset: image.offset + image.n_tokens for image in images}
        edges = set(spans) | set(spans.values())
        starts = [0]
        for point in sorted({*after_break.tolist(), *edges}):
            if point >= len(ids) or point <= starts[-1]:
                continue
            if starts[-1] in spans:  # an image: the next piece starts where it ends
                starts.append(spans[starts[-1]])
                if point <= starts[-1]:
                    continue
            self._fill(starts, point)
            if point in edges or point - starts[-1] >= self.min_size:
                starts.append(point)
        if starts[-1] in spans and spans[starts[-1]] < len(ids):
            starts.append(spans[starts[-1]])
        self._fill(starts, len(ids))
        return np.asarray(starts, dtype=np.int64)

    def ubatch_end(self, start: int, end: int, n: int) -> int:
        """Where the ubatch that computes position ``n`` of the chunk ``[start, end)``
        ends."""
        if self.tiles is None:
            return end
        split = start + self.tiles.first_ubatch(end - start)
        return split if n < split else end

    def _fill(self, starts: list[int], until: int) -> None:
        """Starts every ``size`` tokens of text between the last start and ``until``."""
        while until - starts[-1] > self.size:
            starts.append(starts[-1] + self.size)
