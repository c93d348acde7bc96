"""Allocator behaviour pinned exactly, then invariants under random operation sequences."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.kv.paged import PagedAllocator, PagedParams
from tests.helpers import make_seq


def test_paged_hands_out_fresh_blocks_in_order_then_freed_ones_tail_first():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=6))
    a, b = make_seq(0, 9, 4), make_seq(1, 3, 4)
    assert alloc.allocate_slots(a, 9)
    assert alloc.block_tables[0] == [0, 1, 2]
    assert alloc.allocate_slots(b, 3)
    assert alloc.block_tables[1] == [3]
    alloc.free(a)
    assert alloc.allocate_slots(b, 13)  # needs 3 more: 2 fresh, then the freed tail block
    assert alloc.block_tables[1] == [3, 4, 5, 2]
    usage = alloc.usage()
    assert (usage.total_slots, usage.reserved_slots, usage.filled_slots) == (24, 16, 13)


def test_paged_allocation_is_all_or_nothing():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=2))
    a = make_seq(0, 4, 8)
    assert not alloc.allocate_slots(a, 12)
    assert 0 not in alloc.block_tables
    assert alloc.num_free_blocks == 2
    assert alloc.usage().filled_slots == 0


def test_paged_never_fits_counts_every_token_but_the_last():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=2))
    assert alloc.never_fits_reason(make_seq(0, 5, 4).request) is None  # 8 slots
    assert "needs 3 KV blocks" in alloc.never_fits_reason(make_seq(1, 5, 5).request)


def test_paged_pool_of_millions_of_blocks_costs_nothing_until_used():
    alloc = PagedAllocator(PagedParams(block_size=16, num_blocks=50_000_000))
    assert alloc.allocate_slots(make_seq(0, 100, 1), 100)
    assert alloc.num_free_blocks == 50_000_000 - 7


def test_contiguous_reservation_modes():
    seq = make_seq(0, 100, 30)
    sizes = {}
    for mode in ("max", "pow2", "oracle"):
        alloc = ContiguousAllocator(
            ContiguousParams(block_size=16, num_blocks=64, max_model_len=1000, reserve=mode)
        )
        assert alloc.allocate_slots(seq, 100)
        sizes[mode] = alloc.usage().reserved_slots
        assert alloc.usage().filled_slots == 100
    assert sizes == {"max": 1000, "pow2": 256, "oracle": 129}


def test_contiguous_first_fit_and_external_fragmentation():
    alloc = ContiguousAllocator(
        ContiguousParams(block_size=1, num_blocks=10, reserve="oracle")
    )
    a, b, c = make_seq(0, 3, 1), make_seq(1, 4, 1), make_seq(2, 3, 1)
    for s in (a, b, c):
        assert alloc.allocate_slots(s, s.request.prompt_tokens)
    assert alloc.spans == {0: (0, 3), 1: (3, 4), 2: (7, 3)}
    alloc.free(a)
    alloc.free(c)
    # 6 slots free in total, but in two gaps of 3: a 4-slot request does not fit.
    big = make_seq(3, 4, 1)
    assert not alloc.allocate_slots(big, 4)
    alloc.free(b)  # gaps merge into one
    assert alloc.allocate_slots(big, 4)
    assert alloc.spans[3] == (0, 4)


class AllocatorMachine(RuleBasedStateMachine):
    """Random allocate/grow/free sequences keep the pool consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.allocs = [
            PagedAllocator(PagedParams(block_size=4, num_blocks=12)),
            ContiguousAllocator(ContiguousParams(block_size=4, num_blocks=12, max_model_len=20,
                                                 reserve="pow2")),
        ]
        self.live: dict[int, tuple[object, int]] = {}
        self.next_id = 0

    @rule(prompt=st.integers(1, 14), which=st.integers(0, 1))
    def allocate(self, prompt: int, which: int) -> None:
        seq = make_seq(self.next_id, prompt, 20 - prompt)
        self.next_id += 1
        alloc = self.allocs[which]
        before = alloc.usage()
        if alloc.allocate_slots(seq, prompt):
            self.live[seq.seq_id] = (seq, which)
        else:
            assert alloc.usage() == before

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def grow(self, data) -> None:
        seq_id = data.draw(st.sampled_from(sorted(self.live)))
        seq, which = self.live[seq_id]
        seq.num_computed_tokens = min(19, seq.request.prompt_tokens + data.draw(st.integers(0, 6)))
        self.allocs[which].allocate_slots(seq, seq.num_computed_tokens)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data) -> None:
        seq_id = data.draw(st.sampled_from(sorted(self.live)))
        seq, which = self.live.pop(seq_id)
        self.allocs[which].free(seq)

    @invariant()
    def usage_within_capacity(self) -> None:
        for alloc in self.allocs:
            u = alloc.usage()
            assert 0 <= u.filled_slots <= u.reserved_slots <= u.total_slots

    @invariant()
    def paged_blocks_owned_once(self) -> None:
        paged = self.allocs[0]
        owned = [b for table in paged.block_tables.values() for b in table]
        assert len(owned) == len(set(owned))
        never_used = range(paged.num_blocks - paged.pool.num_never_used(), paged.num_blocks)
        free = set(paged.pool.free_queue()) | set(never_used)
        assert not free & set(owned)
        assert len(free) + len(owned) == paged.num_blocks

    @invariant()
    def contiguous_spans_disjoint(self) -> None:
        spans = sorted(self.allocs[1].spans.values())
        for (s1, l1), (s2, _) in zip(spans, spans[1:]):
            assert s1 + l1 <= s2

    def teardown(self) -> None:
        for seq, which in self.live.values():
            self.allocs[which].free(seq)
        for alloc in self.allocs:
            assert alloc.usage().reserved_slots == 0 and alloc.usage().filled_slots == 0
        assert self.allocs[0].num_free_blocks == 12
        assert self.allocs[1]._gap_starts == [0] and self.allocs[1]._gap_ends == [48]


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
