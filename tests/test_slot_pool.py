"""The slot pool and its extent helpers against naive references over slot ids: whatever the
pool does in bulk (pending frees merged in one sort, a take of every free slot handing over
the free list), it must hand out exactly the lowest free slots and keep maximal extents."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from policies.kv.slot_pool import (SlotCounter, SlotPool, extend_extents, merged_extents, pop_head_extents,
                                   pop_tail_extents, split_extents)


def slots_of(extents: list[range]) -> list[int]:
    return [slot for extent in extents for slot in extent]


def no_adjacent(extents: list[range]) -> bool:
    return all(a.stop != b.start for a, b in zip(extents, extents[1:]))


def extents_from(slots: list[int]) -> list[range]:
    """Maximal runs of consecutive ids in `slots` (in its order)."""
    runs: list[range] = []
    for slot in slots:
        if runs and runs[-1].stop == slot:
            runs[-1] = range(runs[-1].start, slot + 1)
        else:
            runs.append(range(slot, slot + 1))
    return runs


slot_lists = st.lists(st.integers(0, 60), unique=True, max_size=40)


@given(slot_lists, st.integers(0, 45))
def test_pop_head_extents_removes_the_first_slots(slots, num_slots):
    num_slots = min(num_slots, len(slots))
    extents = extents_from(slots)
    head = pop_head_extents(extents, num_slots)
    assert slots_of(head) == slots[:num_slots] and slots_of(extents) == slots[num_slots:]
    assert all(head) and all(extents)


@given(slot_lists, st.integers(0, 45))
def test_pop_tail_extents_removes_the_last_slots(slots, num_slots):
    num_slots = min(num_slots, len(slots))
    extents = extents_from(slots)
    popped = pop_tail_extents(extents, num_slots)
    assert slots_of(extents) == slots[:len(slots) - num_slots]
    assert slots_of(popped) == slots[len(slots) - num_slots:]


@given(slot_lists, slot_lists)
def test_extend_extents_merges_at_the_junction(first, second):
    second = [slot for slot in second if slot not in first]
    extents = extents_from(first)
    extend_extents(extents, extents_from(second))
    assert slots_of(extents) == first + second
    assert all(extents)


@given(slot_lists, st.lists(st.integers(1, 4), max_size=40))
def test_merged_extents_are_maximal(slots, widths):
    pieces = []  # the sorted slots cut into pieces of the drawn widths
    for slot in sorted(slots):
        if pieces and pieces[-1].stop == slot and len(pieces[-1]) < (widths or [1])[0]:
            pieces[-1] = range(pieces[-1].start, slot + 1)
        else:
            widths = widths[1:]
            pieces.append(range(slot, slot + 1))
    merged = merged_extents(pieces)
    assert slots_of(merged) == sorted(slots) and no_adjacent(merged) and all(merged)


def test_a_take_of_every_free_slot_gets_the_pending_frees_in_order():
    pool = SlotPool(12)
    first, _, last = pool.take(5), pool.take(3), pool.take(4)
    pool.give(pop_tail_extents(last, 2))
    pool.give(first)  # both pending: merged in one sort when the pool is next read
    assert pool.num_free == 7
    assert pool.take(7) == [range(0, 5), range(10, 12)] and pool.num_free == 0


class PoolAgainstSetOfIds(RuleBasedStateMachine):
    """Random takes and frees (of whole holdings or their tails) against the set of free ids:
    a take hands out the lowest free ids, in order, and the free list stays sorted, disjoint
    and maximal."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = SlotPool(64)
        self.free = set(range(64))
        self.holders: list[list[range]] = []

    @rule(num_slots=st.integers(1, 20))
    def take(self, num_slots):
        num_slots = min(num_slots, self.pool.num_free)
        takes_all = num_slots == self.pool.num_free
        extents = self.pool.take(num_slots)
        expected = sorted(self.free)[:num_slots]
        assert slots_of(extents) == expected and all(extents)
        assert takes_all or no_adjacent(extents)  # (all: sorted, not joined)
        self.free -= set(expected)
        holding: list[range] = []
        extend_extents(holding, extents)
        self.holders.append(holding)

    @rule(data=st.data())
    def give_tail(self, data):
        if not self.holders:
            return
        holding = data.draw(st.sampled_from(self.holders))
        num_slots = data.draw(st.integers(0, len(slots_of(holding))))
        popped = pop_tail_extents(holding, num_slots)
        self.free |= set(slots_of(popped))
        self.pool.give(popped)

    @rule(data=st.data())
    def give_all(self, data):
        if not self.holders:
            return
        holding = self.holders.pop(data.draw(st.integers(0, len(self.holders) - 1)))
        self.free |= set(slots_of(holding))
        self.pool.give(holding)

    @invariant()
    def free_ids_match(self):
        assert self.pool.num_free == len(self.free)
        assert list(self.pool.free_slots()) == sorted(self.free)
        assert no_adjacent(self.pool._free) and all(self.pool._free)


TestPoolAgainstSetOfIds = PoolAgainstSetOfIds.TestCase
TestPoolAgainstSetOfIds.settings = settings(max_examples=200, stateful_step_count=40,
                                            deadline=None)


@given(slot_lists, st.integers(1, 8))
def test_split_extents_cuts_equal_pieces_in_order(slots, num_slots):
    slots = slots[:len(slots) // num_slots * num_slots]
    pieces = split_extents(extents_from(slots), num_slots)
    assert [slots_of(piece) for piece in pieces] == [
        slots[i:i + num_slots] for i in range(0, len(slots), num_slots)]
    assert all(all(piece) for piece in pieces)


def test_slot_counter_counts_what_the_pool_would_and_tracks_no_ids():
    counter, pool = SlotCounter(12), SlotPool(12)
    for a in (counter, pool):
        first = a.take(5)
        a.take(3)
        a.give(pop_tail_extents(first, 2))
    assert counter.num_free == pool.num_free == 6
    assert counter.take(6) == [range(6)] and counter.num_free == 0
    with pytest.raises(ValueError, match="asked for 1 slots, 0 free"):
        counter.take(1)
    with pytest.raises(ValueError, match="does not track"):
        list(counter.free_slots())
