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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from modelhub.formats.base import PromptImage

__all__ = ["PARAGRAPH", "TURN", "Chunking", "break_kinds"]

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


@dataclass(frozen=True)
class Chunking:
    kinds: np.ndarray  # per token id: the break it makes, from break_kinds
    size: int  # the longest chunk: the engine's batch
    min_size: int = MIN_CHUNK

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

    def _fill(self, starts: list[int], until: int) -> None:
        """Starts every ``size`` tokens of text between the last start and ``until``."""
        while until - starts[-1] > self.size:
            starts.append(starts[-1] + self.size)
