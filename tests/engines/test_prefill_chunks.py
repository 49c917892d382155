"""Where a prefill cuts a prompt: the same cuts over a shared prefix, whatever follows."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from modelhub.engines.prefill_chunks import Chunking

BREAK, WORD = 7, 1


@dataclass(frozen=True)
class Span:  # what Chunking reads of a PromptImage
    offset: int
    n_tokens: int


CHUNKING = Chunking(breaks=np.isin(np.arange(100), [BREAK]), size=64, min_size=8)


def _turns(rng: random.Random, n: int) -> list[int]:
    tokens = []
    while len(tokens) < n:
        tokens += [WORD] * rng.randint(1, 90) + [BREAK] * rng.randint(1, 2)
    return tokens[:n]


def test_a_prompt_and_its_follow_up_are_cut_alike_over_what_they_share():
    rng = random.Random(3)
    for _ in range(200):
        follow_up = _turns(rng, rng.randint(1, 600))
        prompt = follow_up[: rng.randint(1, len(follow_up))]
        images = [Span(5, 20)] if len(prompt) > 30 and rng.random() < 0.5 else []
        full = CHUNKING.starts(follow_up, images).tolist()
        assert CHUNKING.starts(prompt, images).tolist() == [s for s in full if s < len(prompt)]


def test_chunks_end_after_breaks_and_never_inside_an_image():
    tokens = [WORD] * 20 + [BREAK] + [WORD] * 3 + [BREAK] + [WORD] * 200
    image = Span(100, 30)
    starts = CHUNKING.starts(tokens, [image]).tolist()
    # After the first break (21 tokens in); not after the second (4 tokens: below
    # min_size); at most 64 tokens of text a chunk; the image is one piece of its own.
    assert starts == [0, 21, 85, 100, 130, 194]
    assert all(not image.offset < s < image.offset + image.n_tokens for s in starts)
    assert all(b - a <= 64 for a, b in zip(starts, [*starts[1:], len(tokens)], strict=True))
