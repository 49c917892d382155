"""Prefix caching for the embedded engine: which running sequences and which saved entries
hold KV for which prefix, and how many distinct KV cells the running ones hold between
them. Pure Python; ``llamacpp.py`` makes the llama.cpp calls.

Two sources. A running sequence shares its cells: in llama.cpp's unified KV cache a cell
may belong to several sequences, ``llama_memory_seq_cp(mem, src, dst, 0, p)`` gives
``dst`` the cells of ``src``'s first ``p`` positions without computing anything, and a
cell is freed when its last sequence lets go. A finished sequence's KV is saved to host
memory (``CachedPrefix``) and its cells freed; a later request restores it. Finished
prefixes stay out of the KV cache because every cell in use widens the range each decode
attends over, and llama.cpp's CPU attention splits that range between threads by cell
index: with entries in the cache, a 2-6k-token prompt took 18.7 s to its first token
against 11.0 s, and a request's greedy output depended on what else was cached.

Prefixes are compared token by token (llama-server's granularity, not vLLM's 16-token
blocks); an image's span compares equal only for the same pixels, by content hash.

Accounting. Each running sequence records the cells it borrowed as segments
``(origin, start, end)`` (the holder that computed them, and which positions) plus its own
cells from ``own_start`` to ``n_past``. The distinct cells in use are, for each origin,
the widest range any live holder still references: borrowed cells stay counted after
their origin finishes, exactly as llama.cpp keeps them.

Entries are kept least-recently-used first, within a count and a byte budget.
"""

from __future__ import annotations

import hashlib
import itertools
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
    """A finished sequence's KV, saved to host memory (llama.cpp's per-sequence state) for
    later requests: it holds positions ``[0, len(keys))`` and can give any prefix from
    ``min_reuse`` positions on (a sliding-window model's state keeps only the window
    before its end, so it gives just its whole length)."""

    keys: np.ndarray
    state: bytearray
    min_reuse: int
    # What it gives a request other than ``owner`` (the ``Sequence.order`` of the sequence
    # that saved it): with exact reuse, only the positions a prefill computed, not an
    # answer decoded one token at a time (``LlamaCppEngine._usable``).
    prefilled: int
    owner: int

    @property
    def n_past(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return len(self.state)

    def cache_keys(self, n: int) -> np.ndarray:
        return self.keys[:n]

    def serves(self, n: int) -> bool:
        return self.min_reuse <= n <= self.n_past

    def covers(self, other: CachedPrefix) -> bool:
        """Whether every prefix ``other`` gives anyone, this entry gives too."""
        return (
            other.n_past <= self.n_past
            and self.min_reuse <= other.min_reuse
            and self.prefilled >= other.prefilled
            and (self.owner == other.owner or self.prefilled >= other.n_past)
            and common_prefix(self.keys, other.keys) == other.n_past
        )


class PrefixCache:
    """Cache entries, least recently used first, within a count and a byte budget."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: list[CachedPrefix] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def wants(self, entry: CachedPrefix, nbytes: int) -> bool:
        """Whether ``entry`` would be kept with a state of ``nbytes``: not when one kept
        already gives all it would (that one counts as used) or when it is larger than the
        budget. Asked before the engine copies a state, so a repeated prompt costs no copy."""
        for kept in self._entries:
            if kept.covers(entry):
                self.touch(kept)
                return False
        return nbytes <= self.max_bytes

    def add(self, entry: CachedPrefix) -> bool:
        """Keep ``entry`` if ``wants`` it; entries it makes redundant go, then the least
        recently used past the limits. Returns whether it was kept."""
        if not self.wants(entry, entry.nbytes):
            return False
        for redundant in [e for e in self._entries if entry.covers(e)]:
            self._remove(redundant)
        self._entries.append(entry)
        self.nbytes += entry.nbytes
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            self._remove(self._entries[0])
        return True

    def touch(self, entry: CachedPrefix) -> None:
        self._entries.remove(entry)
        self._entries.append(entry)

    def _remove(self, entry: CachedPrefix) -> None:
        self._entries.remove(entry)
        self.nbytes -= entry.nbytes
