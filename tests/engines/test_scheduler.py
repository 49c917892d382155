"""The engine's scheduling policy alone: fair admission, lent slots, KV budget, victims."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from modelhub.engines.scheduler import Scheduler

_orders = itertools.count()


@dataclass(eq=False)
class Seq:
    tenant: str
    max_running: int | None = None
    kv_cells: int = 0
    cancelled: bool = False
    order: int = field(default_factory=lambda: next(_orders))


def _scheduler(slots=4, context=1000, queue_limit=64, cap=None) -> Scheduler[Seq]:
    return Scheduler(slots=slots, context=context, queue_limit=queue_limit, default_cap=cap)


def _admit_all(sched: Scheduler[Seq]) -> list[Seq]:
    """What the engine does with free slots and no KV limit."""
    admitted = []
    while (seq := sched.candidate()) is not None and sched.has_free_slot():
        sched.admit(seq)
        admitted.append(seq)
    return admitted


def test_default_cap_is_half_the_slots_and_at_least_one():
    assert _scheduler(slots=16).default_cap == 8
    assert _scheduler(slots=1).default_cap == 1
    assert _scheduler(slots=16, cap=3).default_cap == 3


def test_a_deep_queue_does_not_delay_another_tenants_first_request():
    sched = _scheduler(slots=4)
    flood = [Seq("a") for _ in range(16)]
    for seq in flood:
        sched.submit(seq)
    late = Seq("b")
    sched.submit(late)
    admitted = _admit_all(sched)
    assert late in admitted[:2]
    assert [s.tenant for s in admitted].count("a") == 3  # a borrows the slots b leaves idle
    assert admitted == [s for s in admitted if s is late or s in flood[:3]]  # FIFO within a


def test_free_slots_alternate_between_tenants_with_equal_shares():
    sched = _scheduler(slots=4, cap=4)
    for tenant in "aaaabbbb":
        sched.submit(Seq(tenant))
    assert [s.tenant for s in _admit_all(sched)] == ["a", "b", "a", "b"]


def test_a_tenant_at_its_cap_gives_a_slot_back_to_a_waiting_tenant():
    sched = _scheduler(slots=4)  # cap 2
    flood = [Seq("a") for _ in range(4)]
    for seq in flood:
        sched.submit(seq)
    _admit_all(sched)
    assert len(sched.running) == 4  # idle slots lent to a
    late = Seq("b")
    sched.submit(late)
    assert sched.candidate() is late
    assert sched.slot_victim(late) is flood[-1]  # a's youngest
    sched.finish(flood[-1])
    sched.requeue(flood[-1])
    sched.admit(late)
    # a is back at its cap plus the lent slot b does not need; nothing more to take.
    assert sched.candidate() is flood[-1]
    assert sched.slot_victim(flood[-1]) is None
    assert sched.slot_victim(Seq("c")) in flood  # a still holds one slot over its cap


def test_no_slot_is_taken_for_a_tenant_already_at_its_cap():
    sched = _scheduler(slots=2)  # cap 1
    a1, a2, b1, b2 = Seq("a"), Seq("a"), Seq("b"), Seq("b")
    for seq in (a1, b1, a2, b2):
        sched.submit(seq)
    _admit_all(sched)
    assert set(sched.running) == {a1, b1}
    assert sched.slot_victim(sched.candidate()) is None  # both at their cap: wait


def test_a_contracts_own_cap_overrides_the_default():
    sched = _scheduler(slots=8)  # default cap 4
    flood = [Seq("a", max_running=1) for _ in range(3)]
    other = [Seq("b") for _ in range(3)]
    for seq in flood + other:
        sched.submit(seq)
    # a holds its one; b's three go first, then a borrows what is idle.
    assert [s.tenant for s in _admit_all(sched)] == ["a", "b", "b", "b", "a", "a"]


def test_queue_limit_refuses_only_when_no_slot_is_free():
    sched = _scheduler(slots=1, queue_limit=1)
    first = Seq("a")
    sched.submit(first)
    assert sched.accepts()
    sched.admit(first)
    assert sched.accepts()  # one may wait
    sched.submit(Seq("a"))
    assert not sched.accepts()


def test_cancelled_waiting_sequences_leave_the_queue():
    sched = _scheduler()
    keep, gone = Seq("a"), Seq("a", cancelled=True)
    sched.submit(gone)
    sched.submit(keep)
    sched.drop_cancelled()
    assert sched.queued == 1
    assert list(sched.waiting()) == [keep]


def test_kv_pressure_preempts_the_youngest_of_the_heaviest_tenant():
    sched = _scheduler(slots=4, cap=4)
    a_old, a_young, b = Seq("a", kv_cells=300), Seq("a", kv_cells=200), Seq("b", kv_cells=400)
    for seq in (a_old, b, a_young):
        sched.submit(seq)
    _admit_all(sched)
    assert not sched.fits(101, kv_used=900)
    assert sched.kv_victim() is a_young  # a holds 500 cells, b 400
    # A waiting request of a lighter tenant may claim cells; one of the heaviest may not.
    assert sched.kv_victim(Seq("c")) is a_young
    assert sched.kv_victim(Seq("a")) is None


def test_a_lone_sequence_is_never_preempted_for_its_own_growth():
    sched = _scheduler()
    only = Seq("a", kv_cells=999)
    sched.submit(only)
    _admit_all(sched)
    assert sched.kv_victim() is None


def test_a_preempted_sequence_goes_first_within_its_tenant():
    sched = _scheduler(slots=1)
    first, second = Seq("a"), Seq("a")
    sched.submit(first)
    sched.submit(second)
    sched.admit(sched.candidate())
    sched.finish(first)
    sched.requeue(first)
    assert sched.candidate() is first
    assert sched.queued == 2
