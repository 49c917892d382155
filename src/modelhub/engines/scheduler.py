"""Who runs next on the embedded engine: admission, fair shares between tenants, the KV
budget, and which sequence to preempt. Pure Python and no llama.cpp, so the policy is
tested with plain objects (``tests/engines/test_scheduler.py``); ``llamacpp.py`` asks it
and does what it says with the model.

Fair sharing. Each tenant (a contract) has a cap on running sequences: the job's own
``max_running``, else the engine's default (half the slots). Waiting sequences queue per
tenant; a free slot goes to the waiting tenant with the fewest running sequences, ties to
the one served longest ago, so one tenant's deep queue never delays another tenant's
first request. Caps lend idle slots: a tenant at its cap still gets a slot that nobody
under their cap is waiting for, and gives one back (its youngest sequence is preempted)
as soon as such a tenant waits for a slot. Under KV pressure the youngest sequence of the
tenant holding the most KV cells is preempted, and a waiting tenant that holds less than
the heaviest one may claim cells the same way, so a tenant's long generations cannot keep
another's short request out. Within a tenant, first come first served; a preempted
sequence goes back to the front of its tenant's queue.

Threads. One ``Scheduler`` belongs to one engine and every call is made under the
engine's condition lock: ``accepts``/``submit`` from the event loop (``generate``), all
the rest from the decode thread, which alone admits, preempts and finishes sequences.
``queued`` and ``running`` may be read without the lock for statistics.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["Schedulable", "Scheduler"]


class Schedulable(Protocol):
    tenant: str
    max_running: int | None  # None: the engine's default cap
    order: int  # arrival order: a larger number is a younger sequence
    cancelled: bool
    kv_cells: int  # KV cells the sequence holds now


S = TypeVar("S", bound=Schedulable)


class Scheduler(Generic[S]):
    def __init__(self, *, slots: int, context: int, queue_limit: int, default_cap: int | None):
        self.slots = slots
        self.context = context
        self.queue_limit = queue_limit
        self.default_cap = max(1, default_cap if default_cap is not None else slots // 2)
        self.running: list[S] = []
        self._waiting: dict[str, deque[S]] = {}
        self._queued = 0
        self._turns = itertools.count()
        self._last_turn: dict[str, int] = {}

    # Event loop ------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._queued

    def accepts(self) -> bool:
        """False when the queue is full and no slot is free: the request is refused."""
        return self._queued < self.queue_limit or len(self.running) < self.slots

    def submit(self, seq: S) -> None:
        self._waiting.setdefault(seq.tenant, deque()).append(seq)
        self._queued += 1

    # Decode thread ---------------------------------------------------------------------
    def waiting(self) -> Iterator[S]:
        for queue in self._waiting.values():
            yield from queue

    def drop_cancelled(self) -> list[S]:
        """Take cancelled sequences out of the queues; returns them."""
        dropped = []
        for tenant, queue in self._waiting.items():
            dropped.extend(s for s in queue if s.cancelled)
            self._waiting[tenant] = deque(s for s in queue if not s.cancelled)
        self._queued -= len(dropped)
        return dropped

    def cap(self, seq: S) -> int:
        return max(1, seq.max_running) if seq.max_running is not None else self.default_cap

    def _running_of(self, tenant: str) -> list[S]:
        return [s for s in self.running if s.tenant == tenant]

    def _heads(self) -> list[S]:
        return [queue[0] for queue in self._waiting.values() if queue]

    def _under_cap(self, seq: S) -> bool:
        return len(self._running_of(seq.tenant)) < self.cap(seq)

    def candidate(self) -> S | None:
        """The next sequence to admit, ignoring slots and KV (see ``slot_victim``/``fits``)."""
        heads = self._heads()
        if not heads:
            return None
        pool = [s for s in heads if self._under_cap(s)] or heads
        return min(
            pool,
            key=lambda s: (len(self._running_of(s.tenant)), self._last_turn.get(s.tenant, -1)),
        )

    def has_free_slot(self) -> bool:
        return len(self.running) < self.slots

    def slot_victim(self, candidate: S) -> S | None:
        """No slot is free and ``candidate``'s tenant is under its cap: the youngest sequence
        of the tenant furthest over its cap gives its slot back. None: the candidate waits."""
        if self.has_free_slot() or not self._under_cap(candidate):
            return None
        over = {}
        for seq in self.running:
            excess = len(self._running_of(seq.tenant)) - self.cap(seq)
            if excess > 0:
                over[seq.tenant] = excess
        if not over:
            return None
        tenant = max(over, key=over.get)
        return max(self._running_of(tenant), key=lambda s: s.order)

    def fits(self, need: int, kv_used: int) -> bool:
        return kv_used + need <= self.context

    def _kv_by_tenant(self) -> dict[str, int]:
        held: dict[str, int] = {}
        for seq in self.running:
            held[seq.tenant] = held.get(seq.tenant, 0) + seq.kv_cells
        return held

    def kv_victim(self, claimant: S | None = None) -> S | None:
        """The sequence to preempt for KV cells: the youngest of the tenant holding the most.
        For a running sequence (``claimant`` None) there must be another one to take from;
        for a waiting ``claimant``, its tenant must hold less than the heaviest tenant."""
        held = self._kv_by_tenant()
        if not held or (claimant is None and len(self.running) < 2):
            return None
        heaviest = max(held, key=held.get)
        if claimant is not None and (
            claimant.tenant == heaviest or held.get(claimant.tenant, 0) >= held[heaviest]
        ):
            return None
        return max(self._running_of(heaviest), key=lambda s: s.order)

    def admit(self, seq: S) -> None:
        queue = self._waiting[seq.tenant]
        assert queue[0] is seq, "admit the candidate, the head of its tenant's queue"
        queue.popleft()
        if not queue:
            del self._waiting[seq.tenant]
        self._queued -= 1
        self.running.append(seq)
        self._last_turn[seq.tenant] = next(self._turns)

    def requeue(self, seq: S) -> None:
        """A preempted sequence (already ``finish``ed): back to the front of its queue."""
        self._waiting.setdefault(seq.tenant, deque()).appendleft(seq)
        self._queued += 1

    def finish(self, seq: S) -> None:
        self.running.remove(seq)
