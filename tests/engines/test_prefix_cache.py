"""Prefix-cache bookkeeping alone: keys, matching, and the distinct cells shared holders use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelhub.engines.prefix_cache import (
    CachedPrefix,
    PrefixCache,
    borrow,
    common_prefix,
    distinct_cells,
    image_digest,
    new_origin,
    prompt_keys,
)


@dataclass
class Holder:
    n_past: int
    borrowed: tuple = ()
    origin: int = 0
    own_start: int = 0

    def __post_init__(self):
        self.origin = new_origin()


def test_an_image_span_compares_equal_only_for_the_same_pixels():
    red = image_digest(b"\xff\x00\x00" * 4, (2, 2))
    blue = image_digest(b"\x00\x00\xff" * 4, (2, 2))
    ids = [1, 10, 10, 10, 2]  # the same placeholder ids for any image of that size
    a, b = prompt_keys(ids, [(1, 3, red)]), prompt_keys(ids, [(1, 3, blue)])
    assert common_prefix(a, prompt_keys(ids, [(1, 3, red)])) == 5
    assert common_prefix(a, b) == 1
    assert (a[1:4] < 0).all() and a[0] == 1


def test_common_prefix():
    assert common_prefix(np.array([1, 2, 3]), np.array([1, 2, 4, 5])) == 2
    assert common_prefix(np.array([1, 2]), np.array([1, 2, 3])) == 2
    assert common_prefix(np.array([], np.int64), np.array([1])) == 0


def test_shared_cells_are_counted_once_and_outlive_their_origin():
    system = Holder(n_past=100)  # computed a 100-token prompt
    first = Holder(n_past=130)
    first.borrowed, first.own_start = borrow(system, 100), 100
    second = Holder(n_past=120)
    second.borrowed, second.own_start = borrow(system, 80), 80
    assert distinct_cells([system, first, second]) == 100 + 30 + 40
    # The system prompt's holder is evicted: first still holds all 100 of its cells.
    assert distinct_cells([first, second]) == 100 + 30 + 40
    assert distinct_cells([second]) == 80 + 40


def test_borrowing_a_borrower_chains_its_segments():
    root = Holder(n_past=50)
    mid = Holder(n_past=90)
    mid.borrowed, mid.own_start = borrow(root, 50), 50
    leaf = Holder(n_past=70)
    leaf.borrowed, leaf.own_start = borrow(mid, 60), 60
    assert [(s, e) for _, s, e in leaf.borrowed] == [(0, 50), (50, 60)]
    assert distinct_cells([leaf]) == 70
    assert distinct_cells([root, mid, leaf]) == 90 + 10


def _entry(
    keys: list[int], nbytes: int = 10, min_reuse: int = 0, prefilled: int | None = None, owner=0
) -> CachedPrefix:
    ids = np.asarray(keys, np.int64)
    prefilled = len(keys) if prefilled is None else prefilled
    return CachedPrefix(ids, bytearray(nbytes), min_reuse, prefilled, owner)


def _kept(cache: PrefixCache) -> list[list[int]]:
    return [e.keys.tolist() for e in cache]


def test_a_longer_entry_replaces_its_prefix_and_the_oldest_goes_first():
    cache = PrefixCache(max_entries=2, max_bytes=1000)
    assert cache.add(_entry([1, 2, 3]))
    assert cache.add(_entry([1, 2, 3, 4, 5]))  # the same conversation, one turn on
    assert _kept(cache) == [[1, 2, 3, 4, 5]]
    assert not cache.add(_entry([1, 2]))  # the kept entry gives that prefix already
    cache.add(_entry([7, 8]))
    cache.touch(next(iter(cache)))
    cache.add(_entry([9]))
    assert _kept(cache) == [[1, 2, 3, 4, 5], [9]]


def test_the_byte_budget_evicts_least_recently_used_and_refuses_what_cannot_fit():
    cache = PrefixCache(max_entries=10, max_bytes=100)
    for k in range(4):
        cache.add(_entry([k], nbytes=30))
    assert _kept(cache) == [[1], [2], [3]] and cache.nbytes == 90
    assert not cache.add(_entry([5], nbytes=101))
    assert cache.nbytes == 90


def test_a_sliding_window_entry_gives_only_its_whole_length():
    whole = _entry([1, 2, 3, 4], min_reuse=4)
    assert whole.serves(4) and not whole.serves(3)
    cache = PrefixCache(max_entries=10, max_bytes=1000)
    cache.add(_entry([1, 2], min_reuse=2))  # a checkpoint at the shared prefix
    cache.add(whole)  # does not replace it: it cannot give the first two positions alone
    assert _kept(cache) == [[1, 2], [1, 2, 3, 4]]
    assert not cache.add(_entry([1, 2, 3, 4], min_reuse=4))


def test_an_answer_is_kept_for_its_own_request_until_another_entry_gives_it_whole():
    cache = PrefixCache(max_entries=8, max_bytes=1000)
    # A preempted request's entry: 3 prompt positions, then 2 it decoded itself.
    assert cache.add(_entry([1, 2, 3, 4, 5], prefilled=3, owner=1))
    # Another request with the same ids gives the request 1 only its prefilled part.
    assert cache.add(_entry([1, 2, 3, 4, 5], prefilled=3, owner=2))
    assert len(cache) == 2
    # One that prefilled all five gives everyone everything: both go.
    assert cache.add(_entry([1, 2, 3, 4, 5, 6], prefilled=6, owner=3))
    assert _kept(cache) == [[1, 2, 3, 4, 5, 6]]
