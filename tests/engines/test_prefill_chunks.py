"""Where a prefill cuts a prompt: the same cuts over a shared prefix, whatever follows."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from modelhub.engines.prefill_chunks import PARAGRAPH, TURN, AttentionTiles, Chunking

WORD, BREAK, MARKUP = 1, 7, 9  # a word, a blank line, a control token


@dataclass(frozen=True)
class Span:  # what Chunking reads of a PromptImage
    offset: int
    n_tokens: int


KINDS = np.zeros(100, dtype=np.int8)
KINDS[BREAK], KINDS[MARKUP] = PARAGRAPH, TURN
CHUNKING = Chunking(kinds=KINDS, size=64, min_size=8)


def _turns(rng: random.Random, n: int) -> list[int]:
    tokens = []
    while len(tokens) < n:
        end = [MARKUP] if rng.random() < 0.1 else [BREAK] * rng.randint(1, 2)
        tokens += [WORD] * rng.randint(1, 90) + end
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


def test_a_prompt_in_turn_markup_is_cut_at_its_markup_not_at_its_paragraphs():
    paragraphs = ([WORD] * 20 + [BREAK]) * 5
    plain = CHUNKING.starts([WORD] * 3 + paragraphs, []).tolist()
    marked = CHUNKING.starts([WORD, MARKUP, WORD] + paragraphs + [MARKUP] + [WORD] * 5, []).tolist()
    # Plain text: after every blank line that closes 8 tokens or more. In markup (the
    # first control token at 1, below min_size): 64-token chunks, then the turn's end.
    assert plain == [0, 24, 45, 66, 87]
    assert marked == [0, 64, 109]


def test_attention_tiles_follow_llama_cpps_partition_of_query_rows():
    # 4 heads on 2 threads (the demo model): 8 ranges of tokens/2 rows each, 64-row tiles
    # that never cross a head. An odd count makes ranges straddle heads; 129 tokens need a
    # second tile per range. Under 64 tokens the kernel does not tile.
    tiles = AttentionTiles(heads=4, threads=2)
    counts = {n: tiles.count(n) for n in (63, 64, 65, 66, 128, 129, 130, 256, 512)}
    assert counts == {63: 0, 64: 8, 65: 11, 66: 8, 128: 8, 129: 15, 130: 16, 256: 16, 512: 32}
    # One thread: one range, so a head's rows are tiled whole.
    assert AttentionTiles(heads=4, threads=1).count(67) == 8


def test_a_chunk_is_split_only_where_a_short_tail_saves_whole_tiles():
    tiles = AttentionTiles(heads=4, threads=2)
    firsts = {n: tiles.first_ubatch(n) for n in (40, 64, 65, 66, 67, 128, 131, 140, 200, 512)}
    assert firsts == {
        40: 40,
        64: 64,
        65: 64,
        66: 66,
        67: 66,
        128: 128,
        131: 128,
        140: 140,
        200: 200,
        512: 512,
    }
    with_tiles = Chunking(kinds=KINDS, size=256, tiles=tiles)
    assert [with_tiles.ubatch_end(100, 231, n) for n in (100, 227, 228, 230)] == [
        228,
        228,
        231,
        231,
    ]
    assert CHUNKING.ubatch_end(100, 231, 100) == 231  # no tiles: one ubatch a chunk
