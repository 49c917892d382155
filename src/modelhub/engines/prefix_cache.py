"""Prefix caching for the embedded engine: which sequence ids hold KV for which prefix, and
how many distinct KV cells they hold between them. Pure Python; ``llamacpp.py`` makes the
llama.cpp calls.

In llama.cpp's unified KV cache a cell may belong to several sequences:
``llama_memory_seq_cp(mem, src, dst, 0, p)`` gives ``dst`` the cells of ``src``'s first
``p`` positions without computing anything, and a cell is freed when its last sequence
lets go. So a request whose prompt starts like one the engine has seen (a system prompt,
the conversation so far, the same image) borrows those cells from whoever holds them, a
running sequence or a finished one kept as a cache entry, and computes only the rest.
Prefixes are compared token by token (llama-server's granularity, not vLLM's 16-token
blocks); an image's span compares equal only for the same pixels, by content hash.

Accounting. Each holder records the cells it borrowed as segments ``(origin, start, end)``
(the holder that computed them, and which positions) plus its own cells from
``own_start`` to ``n_past``. The distinct cells in use are, for each origin, the widest
range any live holder still references: borrowed cells stay counted after their origin
is evicted, exactly as llama.cpp keeps them.

Entries are kept least-recently-used first; the engine evicts them before it preempts a
running sequence, and when it needs their sequence ids.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "CachedPrefix",
    "KVHolder",
    "PrefixCache",
    "borrow",
    "common_prefix",
    "distinct_cells",
    "image_digest",
    "new_origin",
    "prompt_keys",
]

Segment = tuple[int, int, int]  # (origin, start, end): positions [start, end) computed by origin

_origins = itertools.count()


def new_origin() -> int:
    return next(_origins)


class KVHolder(Protocol):
    n_past: int  # positions [0, n_past) are in the KV cache
    borrowed: tuple[Segment, ...]  # cells shared from other holders, in position order
    origin: int  # the id of the cells this holder computed itself
    own_start: int  # its own cells are [own_start, n_past)


def image_digest(pixels: bytes, size: tuple[int, int]) -> int:
    """A 63-bit content key for an image as the encoder will see it."""
    h = hashlib.blake2b(pixels, digest_size=8, person=b"modelhub-img")
    h.update(repr(size).encode())
    return int.from_bytes(h.digest(), "big") >> 1


def prompt_keys(token_ids: list[int], images: Iterable[tuple[int, int, int]]) -> np.ndarray:
    """The prompt's token ids, with each image span (offset, n_tokens, digest) replaced by
    keys drawn from the image's digest: negative, so never equal to a token id."""
    keys = np.asarray(token_ids, dtype=np.int64)
    for offset, n_tokens, digest in images:
        keys[offset : offset + n_tokens] = -1 - ((digest + np.arange(n_tokens)) % (1 << 62))
    return keys


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def borrow(source: KVHolder, length: int) -> tuple[Segment, ...]:
    """The segments a holder gets when it shares ``source``'s first ``length`` positions."""
    segments = [(o, s, min(e, length)) for o, s, e in source.borrowed if s < length]
    own_end = min(source.n_past, length)
    if own_end > source.own_start:
        segments.append((source.origin, source.own_start, own_end))
    return tuple(segments)


def distinct_cells(holders: Iterable[KVHolder]) -> int:
    spans: dict[int, tuple[int, int]] = {}

    def cover(origin: int, start: int, end: int) -> None:
        if end > start:
            old = spans.get(origin)
            spans[origin] = (start, end if old is None else max(old[1], end))

    for holder in holders:
        for origin, start, end in holder.borrowed:
            cover(origin, start, end)
        cover(holder.origin, holder.own_start, holder.n_past)
    return sum(end - start for start, end in spans.values())


@dataclass(eq=False)
class CachedPrefix:
    """A finished sequence's KV, kept under its sequence id for later requests."""

    seq_id: int
    keys: np.ndarray
    borrowed: tuple[Segment, ...]
    origin: int
    own_start: int

    @property
    def n_past(self) -> int:
        return len(self.keys)

    def cache_keys(self, n: int) -> np.ndarray:
        return self.keys[:n]


class PrefixCache:
    """Cache entries by sequence id, least recently used first."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[int, CachedPrefix] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries.values())

    def add(self, entry: CachedPrefix) -> list[CachedPrefix]:
        """Keep ``entry``; returns the entries it makes redundant (their keys are a prefix of
        its keys) and any past the size limit, least recently used first: evict them."""
        dropped = [
            e for e in self._entries.values() if common_prefix(e.keys, entry.keys) == e.n_past
        ]
        for e in dropped:
            del self._entries[e.seq_id]
        self._entries[entry.seq_id] = entry
        while len(self._entries) > self.max_entries:
            dropped.append(self._entries.popitem(last=False)[1])
        return dropped

    def touch(self, seq_id: int) -> None:
        if seq_id in self._entries:
            self._entries.move_to_end(seq_id)

    def pop_lru(self, keep: int | None = None) -> CachedPrefix | None:
        """Remove and return the least recently used entry other than ``keep``."""
        for seq_id in self._entries:
            if seq_id != keep:
                return self._entries.pop(seq_id)
        return None
