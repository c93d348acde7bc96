"""Paged KV and prefix caching on hybrid layouts (`hybrid_paged.py`): exact block ids and hit
lengths on tiny hand-worked cases, a state machine over allocate/grow/speculate/fork/preempt
checking the pool, the plain layout giving exactly `PagedAllocator`'s blocks, and a whole run
of Gemma-3-12B with a shared system prompt."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from policies.kv.base import PrefixCache
from policies.kv.block_hashes import extend_block_hashes
from policies.kv.hybrid_paged import (HybridPagedAllocator, HybridPagedPrefixAllocator,
                                      make_paged_allocator)
from policies.kv.layout import KVLayout
from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixAllocator, PagedPrefixParams
from policies.types import Request, Sequence
from sim.api import simulate
from sim.config import ReplayOptions, resolve

# 1 full + 2 window units, block_size 4, a sliding window of 2 blocks: window units keep 3
# blocks (the window plus its partly filled edge); a hit needs the 2 blocks before it.
ONE_FULL_TWO_WINDOW = KVLayout(full_units=1, window_units=2, window_tokens=8)


def seq_with_ids(request_id: int, ids, output: int = 4) -> Sequence:
    return Sequence(Request(request_id, 0.0, len(ids), output, prompt_token_ids=tuple(ids)))


def hybrid(layout=ONE_FULL_TWO_WINDOW, num_blocks=64, caching=True) -> HybridPagedAllocator:
    params = PagedPrefixParams if caching else PagedParams
    allocator = HybridPagedPrefixAllocator if caching else HybridPagedAllocator
    return allocator(params(block_size=4, num_blocks=num_blocks, watermark=0.0, layout=layout))


def test_a_prefill_keeps_the_window_and_caches_what_slid_past_it():
    alloc = hybrid()
    a = seq_with_ids(0, range(21))
    assert alloc.match_prefix(a) == 0 and alloc.allocate_slots(a, 21)
    # Window positions 0..2 were computed but are out of the window at once: each window
    # unit's block is taken, cached and freed (fresh ids 0..5), before the held blocks.
    assert alloc.unit_tables(0) == [[6, 7, 8, 9, 10, 11],
                                    [None, None, None, 12, 13, 14],
                                    [None, None, None, 15, 16, 17]]
    assert alloc.pool.free_queue() == [0, 1, 2, 3, 4, 5]
    assert alloc.num_held_blocks(0) == alloc.blocks_for(21) == 6 + 2 * 3
    usage = alloc.usage()
    assert (usage.reserved_slots, usage.filled_slots, usage.cached_free_slots) == (48, 21 + 2 * 9, 24)


def test_a_shared_prefix_hits_full_blocks_and_the_window_before_it():
    alloc = hybrid()
    a = seq_with_ids(0, range(21))
    assert alloc.allocate_slots(a, 21)
    b = seq_with_ids(1, [*range(16), 99, 98, 97, 96, 95])
    # Full unit: blocks 0..3 match. Windows: the hit at 16 tokens needs blocks 2 and 3.
    assert alloc.match_prefix(b) == 16
    assert alloc.allocate_slots(b, 21, 16)
    # b's window starts at block 3 (21 tokens), so it shares block 3 and not the cached 2.
    assert alloc.unit_tables(1) == [[6, 7, 8, 9, 18, 19],
                                    [None, None, None, 12, 20, 21],
                                    [None, None, None, 15, 22, 23]]
    assert [alloc.pool.owners(block) for block in (6, 9, 10, 12, 15, 13, 4)] == [2, 2, 1, 2, 2, 1, 0]
    assert alloc.usage().filled_slots == 39 + 5 + 2 * 5
    assert alloc.stats()["prefix_hit_tokens"] == 16


def test_a_window_hit_needs_only_the_blocks_the_window_reads():
    alloc = hybrid(num_blocks=18)
    a = seq_with_ids(0, range(24))
    assert alloc.allocate_slots(a, 24)
    alloc.free(a)  # tail first, position by position: 11 14 17 | 10 13 16 | 9 12 15 | 8 | 7 | 6
    assert alloc.pool.free_queue() == [0, 1, 2, 3, 4, 5, 11, 14, 17, 10, 13, 16, 9, 12, 15, 8, 7, 6]
    stranger = seq_with_ids(1, range(100, 104))
    assert alloc.allocate_slots(stranger, 4)  # 3 blocks: evicts the window's blocks 0 and
    alloc.free(stranger)                       # block 1 of the first window unit
    assert alloc.stats()["evictions"] == 3
    # Full blocks 0..3 are all cached; the windows still hold blocks 2 and 3: a hit.
    assert alloc.match_prefix(seq_with_ids(2, [*range(16), 50, 51])) == 16
    # At 8 tokens the windows would need blocks 0 and 1, which are gone: no hit at all,
    # although the full unit has both.
    assert alloc.match_prefix(seq_with_ids(3, [*range(8), 50, 51])) == 0
    # A stranger evicting the last position (and more) shortens the first hit to the window.
    assert alloc.allocate_slots(seq_with_ids(4, range(200, 220)), 20)
    assert alloc.match_prefix(seq_with_ids(5, [*range(24), 1, 2, 3])) == 0


def test_mistral_style_all_window_layout_hits_on_the_window_alone():
    alloc = hybrid(KVLayout(full_units=0, window_units=1, window_tokens=8))
    a = seq_with_ids(0, range(40))
    assert alloc.allocate_slots(a, 40)
    assert alloc.unit_tables(0) == [[None] * 7 + [7, 8, 9]]  # ids 0..6 passed through the cache
    assert alloc.pool.free_queue() == list(range(7))
    alloc.free(a)
    b = seq_with_ids(1, [*range(30), 7, 7, 7])
    # No full unit: the hit is as long as the window blocks before it are cached (all are).
    assert alloc.match_prefix(b) == 28
    assert alloc.allocate_slots(b, 33, 28)
    # The hit needed blocks 5 and 6; at 33 tokens the window keeps 6..8: 6 is reused.
    assert alloc.unit_tables(1) == [[None] * 6 + [6, 10, 11]]


def test_chunked_local_window_keeps_the_current_chunk():
    layout = KVLayout(full_units=1, window_units=1, window_tokens=8, chunked=True)
    alloc = hybrid(layout, num_blocks=12)
    a = seq_with_ids(0, range(21))
    assert alloc.allocate_slots(a, 21)
    # Chunks of 8 tokens: the last token (20) is in the chunk 16..23, blocks 4 and 5.
    assert alloc.unit_tables(0) == [[4, 5, 6, 7, 8, 9], [None] * 4 + [10, 11]]
    assert alloc.num_held_blocks(0) == alloc.blocks_for(21) == 8
    # A hit at a chunk boundary needs no window block; one inside a chunk needs its blocks.
    assert layout.window_start_block(4 * 4 + 1, 4) == 4
    assert alloc.match_prefix(seq_with_ids(1, [*range(16), 5, 5, 5, 5, 5])) == 16
    assert alloc.match_prefix(seq_with_ids(2, [*range(20), 5, 5])) == 20
    alloc.free(a)
    assert alloc.allocate_slots(seq_with_ids(3, range(300, 304)), 4)  # evicts window blocks 0, 1
    assert alloc.match_prefix(seq_with_ids(4, [*range(20), 5, 5])) == 20  # block 4 still cached
    assert alloc.match_prefix(seq_with_ids(5, [*range(4), 5, 5])) == 0


def test_decoding_slides_the_window_one_block_at_a_time_into_the_cache():
    alloc = hybrid()
    a = seq_with_ids(0, range(12), output=20)
    assert alloc.allocate_slots(a, 12)
    assert alloc.unit_tables(0) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    for _ in range(5):  # tokens 12..16: token 12 opens block 3 (block 0 slides), 16 block 4
        a.num_computed_tokens = a.num_known_tokens
        a.num_output_tokens += 1
        assert alloc.allocate_slots(a, a.num_known_tokens)
    assert alloc.unit_tables(0) == [[0, 1, 2, 9, 12], [None, None, 5, 10, 13], [None, None, 8, 11, 14]]
    assert alloc.pool.free_queue() == [3, 6, 4, 7]  # oldest position first, still cached
    assert alloc.usage().cached_free_slots == 16 and alloc.num_held_blocks(0) == alloc.blocks_for(17)


def test_speculative_tokens_never_slide_the_window():
    alloc = hybrid()
    a = seq_with_ids(0, range(11), output=20)
    assert alloc.allocate_slots(a, 11)
    a.num_computed_tokens, a.num_output_tokens = 11, 1
    # Verify the sampled token plus 6 drafts: 18 slots, but the window slides by the 12
    # committed tokens only (it keeps block 0), so a rejection never needs a freed block back.
    assert alloc.allocate_slots(a, 18)
    assert alloc.unit_tables(0) == [[0, 1, 2, 9, 10], [3, 4, 5, 11, 12], [6, 7, 8, 13, 14]]
    assert alloc.num_held_blocks(0) == alloc.blocks_for(18) + 2 * 2
    a.num_computed_tokens, a.num_output_tokens = 13, 3  # one draft accepted
    alloc.shrink_slots(a, 13)
    # Block 4 held only rejected drafts (tail first, across units); block 0 slides out now.
    assert alloc.unit_tables(0) == [[0, 1, 2, 9], [None, 4, 5, 11], [None, 7, 8, 13]]
    assert alloc.pool.free_queue() == [10, 12, 14, 3, 6]
    assert alloc.num_held_blocks(0) == alloc.blocks_for(13)
    assert alloc.usage().filled_slots == 13 + 2 * (13 - 4)


def test_fork_shares_windows_and_copies_the_shared_edge_and_ssm_state():
    layout = KVLayout(full_units=1, window_units=1, window_tokens=8, fixed_blocks=1)
    alloc = hybrid(layout, caching=False)
    parent = seq_with_ids(0, range(14), output=8)
    assert alloc.allocate_slots(parent, 14)
    assert alloc.unit_tables(0) == [[1, 2, 3, 4], [None, 5, 6, 7]] and alloc.fixed_blocks(0) == [0]
    child = Sequence(parent.request, num_computed_tokens=14, num_output_tokens=1, sample_index=1)
    assert alloc.fork(parent, child)
    assert alloc.unit_tables(child.seq_id) == alloc.unit_tables(0)
    assert alloc.fixed_blocks(child.seq_id) == [8]  # SSM state is copied at once
    assert alloc.take_copies() == [(0, 8, 4)]
    parent.num_computed_tokens, parent.num_output_tokens = 14, 1
    assert alloc.allocate_slots(parent, 15)  # writes into the shared edge blocks: copies
    assert alloc.take_copies() == [(4, 9, 2), (7, 10, 2)]
    assert alloc.unit_tables(0) == [[1, 2, 3, 9], [None, 5, 6, 10]]
    # Shared blocks count once: 2 SSM blocks, full 1..3 + both edges, window 5, 6 + both edges.
    assert alloc.usage().filled_slots == 2 * 4 + (12 + 3 + 2) + (8 + 3 + 2)
    alloc.free(parent)
    alloc.free(child)
    assert alloc.usage().reserved_slots == 0 == alloc.usage().filled_slots


def test_ssm_layouts_refuse_prefix_caching_and_plain_layouts_stay_on_paged():
    with pytest.raises(ValueError, match="SSM layers keep a recurrent state"):
        PagedPrefixParams(block_size=4, num_blocks=8, layout=KVLayout(1, 0, 0, 2))
    assert isinstance(make_paged_allocator(PagedPrefixParams(block_size=4, num_blocks=8)), PagedAllocator)
    assert isinstance(make_paged_allocator(PagedParams(block_size=4, num_blocks=8,
                                                       layout=ONE_FULL_TWO_WINDOW)), HybridPagedAllocator)
    with pytest.raises(ValueError, match="HybridPagedAllocator"):
        PagedAllocator(PagedParams(block_size=4, num_blocks=8, layout=ONE_FULL_TWO_WINDOW))


def test_lockstep_growth_equals_rounds_of_allocation():
    def setup():
        alloc = hybrid(num_blocks=200)
        seqs = []
        for i in range(3):
            seq = seq_with_ids(i, [*range(10), i] * 2, output=40)
            assert alloc.allocate_slots(seq, 22, alloc.match_prefix(seq))
            seq.num_computed_tokens, seq.num_output_tokens = 22, 1
            seqs.append(seq)
        return alloc, seqs

    stepped, seqs_a = setup()
    rows = []
    for _ in range(13):  # what the engine's decode steps do
        for seq in seqs_a:
            assert stepped.allocate_slots(seq, seq.num_known_tokens)
        rows.append(stepped.usage())
        for seq in seqs_a:
            seq.num_computed_tokens += 1
            seq.num_output_tokens += 1
    jumped, seqs_b = setup()
    usage = jumped.grow_in_lockstep(seqs_b, 13)
    assert usage.reserved_slots == [u.reserved_slots for u in rows]
    assert usage.filled_slots == [u.filled_slots for u in rows]
    assert usage.cached_free_slots == [u.cached_free_slots for u in rows]
    for a, b in zip(seqs_a, seqs_b):
        assert stepped.unit_tables(a.seq_id) == jumped.unit_tables(b.seq_id)
    assert stepped.pool.free_queue() == jumped.pool.free_queue()


LAYOUTS = [
    ONE_FULL_TWO_WINDOW,
    KVLayout(full_units=0, window_units=1, window_tokens=8),
    KVLayout(full_units=2, window_units=1, window_tokens=5),
    KVLayout(full_units=1, window_units=1, window_tokens=8, chunked=True),
    KVLayout(full_units=1, window_units=1, window_tokens=4, fixed_blocks=1),
]


class HybridAllocatorMachine(RuleBasedStateMachine):
    """Admissions with shared prefixes, chunked prefill, decode, speculation with rejection,
    forks, recompute and swap preemption, strangers that evict: the pool stays exact."""

    @initialize(layout=st.sampled_from(LAYOUTS), caching=st.booleans(), num_blocks=st.integers(12, 60))
    def setup(self, layout: KVLayout, caching: bool, num_blocks: int) -> None:
        caching = caching and not layout.fixed_blocks
        self.alloc = hybrid(layout, num_blocks=num_blocks, caching=caching)
        self.layout = layout
        self.live: dict[int, Sequence] = {}
        self.out: list[Sequence] = []  # preempted, waiting to come back
        self.next_id = 0
        self.samples: dict[int, int] = {}

    def _new_seq(self, family: int, length: int) -> Sequence:
        self.next_id += 1
        return seq_with_ids(self.next_id, [family * 100 + i for i in range(length)], output=12)

    def _admit(self, seq: Sequence, size: int) -> None:
        cached = self.alloc.match_prefix(seq) if isinstance(self.alloc, PrefixCache) else 0
        assert cached % 4 == 0 and cached < seq.num_known_tokens
        target = min(seq.num_known_tokens, cached + size)
        free_before = self.alloc.num_free_blocks
        if not self.alloc.allocate_slots(seq, target, cached):
            assert self.alloc.num_free_blocks == free_before
            return
        hashes: list[int] = []
        extend_block_hashes(hashes, seq.request, 4, cached, seq.sample_index)
        for unit, table in enumerate(self.alloc.unit_tables(seq.seq_id)):
            for index in range(cached // 4):  # a hit returns exactly the content asked for
                if table[index] is not None:
                    assert self.alloc.pool.key_of(table[index]) == (unit, hashes[index])
        self._computed(seq, target)
        self.live[seq.seq_id] = seq

    @staticmethod
    def _computed(seq: Sequence, num_tokens: int) -> None:
        """`seq` now has KV for `num_tokens` tokens; with all known ones, it samples one."""
        seq.num_computed_tokens = num_tokens
        if num_tokens == seq.num_known_tokens and seq.num_output_tokens < 10:
            seq.num_output_tokens += 1

    @rule(family=st.integers(0, 2), length=st.integers(1, 30), size=st.integers(1, 30))
    def admit(self, family: int, length: int, size: int) -> None:
        self._admit(self._new_seq(family, length), size)

    @rule(data=st.data(), size=st.integers(1, 12))
    def step(self, data, size: int) -> None:
        """A prefill chunk, or a decode that samples a token."""
        if not self.live:
            return
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        target = min(seq.num_known_tokens, seq.num_computed_tokens + size)
        if target > seq.num_computed_tokens and self.alloc.allocate_slots(seq, target):
            self._computed(seq, target)

    @rule(data=st.data(), drafts=st.integers(1, 9))
    def speculate(self, data, drafts: int) -> None:
        if not self.live:
            return
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if seq.num_known_tokens - seq.num_computed_tokens != 1 or seq.num_output_tokens > 9:
            return
        if not self.alloc.allocate_slots(seq, seq.num_known_tokens + drafts):
            return
        self.held_matches_layout()
        accepted = data.draw(st.integers(0, drafts))
        seq.num_computed_tokens += 1 + accepted
        seq.num_output_tokens += 1 + accepted
        self.alloc.shrink_slots(seq, seq.num_computed_tokens)

    @rule(data=st.data())
    def fork(self, data) -> None:
        if not self.live:
            return
        parent = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        index = self.samples.get(parent.request.request_id, 0) + 1
        self.samples[parent.request.request_id] = index
        child = Sequence(parent.request, num_computed_tokens=parent.num_computed_tokens,
                         num_output_tokens=parent.num_output_tokens, sample_index=index)
        if self.alloc.fork(parent, child):
            self.live[child.seq_id] = child
        self.alloc.take_copies()

    @rule(data=st.data(), swap=st.booleans())
    def preempt(self, data, swap: bool) -> None:
        if not self.live:
            return
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.alloc.free(seq)
        if not swap:
            seq.num_computed_tokens = 0
        self.out.append(seq)

    @rule(size=st.integers(1, 30))
    def resume(self, size: int) -> None:
        if not self.out:
            return
        seq = self.out.pop(0)
        if seq.num_computed_tokens:  # swapped: fresh blocks for everything it had
            if self.alloc.allocate_slots(seq, seq.num_computed_tokens):
                self.live[seq.seq_id] = seq
            else:
                self.out.append(seq)
            return
        self._admit(seq, size)
        if seq.seq_id not in self.live:
            self.out.append(seq)

    @rule(data=st.data())
    def finish(self, data) -> None:
        if not self.live:
            return
        self.alloc.free(self.live.pop(data.draw(st.sampled_from(sorted(self.live)))))

    @rule(length=st.integers(1, 24))
    def stranger(self, length: int) -> None:
        seq = self._new_seq(50 + self.next_id, length)
        if self.alloc.allocate_slots(seq, length):
            self.alloc.free(seq)

    @invariant()
    def held_matches_layout(self) -> None:
        alloc, size = self.alloc, 4
        for seq in self.live.values():
            state = alloc._seqs[seq.seq_id]
            held, committed = state.num_tokens, min(state.num_tokens, seq.num_known_tokens)
            if held <= seq.num_known_tokens:
                assert alloc.num_held_blocks(seq.seq_id) == alloc.blocks_for(held)
            else:  # speculative tokens: the window still starts where the committed ones put it
                end = -(-held // size)
                start = self.layout.window_start_block(committed, size)
                expected = (self.layout.full_units * end + self.layout.window_units * (end - start)
                            + self.layout.fixed_blocks)
                assert alloc.num_held_blocks(seq.seq_id) == expected

    @invariant()
    def pool_is_exact(self) -> None:
        alloc, pool, size = self.alloc, self.alloc.pool, 4
        occurrences: dict[int, int] = {}
        fills: dict[int, int] = {}
        for seq_id, state in alloc._seqs.items():
            for table in alloc.unit_tables(seq_id):
                for index, block in enumerate(table):
                    if block is None:
                        continue
                    occurrences[block] = occurrences.get(block, 0) + 1
                    fill = min(size, state.num_tokens - index * size)
                    assert fills.setdefault(block, fill) == fill  # sharers see the same KV
            for block in state.fixed:
                occurrences[block] = occurrences.get(block, 0) + 1
                fills[block] = size
        assert pool.owned_blocks() == occurrences
        queue = pool.free_queue()
        never_used = set(range(pool.num_blocks - pool.num_never_used(), pool.num_blocks))
        assert len(queue) == len(set(queue)) and not set(queue) & set(occurrences)
        assert len(queue) + len(never_used) + len(occurrences) == pool.num_blocks == alloc.num_blocks
        assert not never_used & (set(queue) | set(occurrences))
        usage = alloc.usage()
        assert usage.filled_slots == sum(fills.values())
        assert usage.reserved_slots == size * len(occurrences)
        assert usage.cached_free_slots == size * sum(pool.key_of(b) is not None for b in queue)
        assert {pool.cached(pool.key_of(b)) for b in range(pool.num_blocks)
                if pool.key_of(b) is not None} <= set(range(pool.num_blocks))
        for block in range(pool.num_blocks):
            key = pool.key_of(block)
            assert key is None or pool.cached(key) == block

    def teardown(self) -> None:
        if not hasattr(self, "alloc"):
            return
        for seq in self.live.values():
            self.alloc.free(seq)
        usage = self.alloc.usage()
        assert usage.reserved_slots == 0 == usage.filled_slots
        assert self.alloc.num_free_blocks == self.alloc.num_blocks


TestHybridAllocatorMachine = HybridAllocatorMachine.TestCase
TestHybridAllocatorMachine.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


class PlainLayoutEquivalenceMachine(RuleBasedStateMachine):
    """On the plain layout the hybrid allocator hands out exactly `PagedAllocator`'s blocks,
    hits, copies and usage: the two are the same policy."""

    @initialize(caching=st.booleans())
    def setup(self, caching: bool) -> None:
        params = (PagedPrefixParams if caching else PagedParams)(block_size=4, num_blocks=24, watermark=0.0)
        self.plain, self.hybrid = (
            (PagedPrefixAllocator(params), HybridPagedPrefixAllocator(params)) if caching
            else (PagedAllocator(params), HybridPagedAllocator(params)))
        self.caching = caching
        self.live: dict[int, Sequence] = {}
        self.next_id = 0

    def both(self, method: str, *args):
        results = (getattr(self.plain, method)(*args), getattr(self.hybrid, method)(*args))
        assert results[0] == results[1], method
        return results[0]

    @rule(family=st.integers(0, 2), length=st.integers(1, 20))
    def admit(self, family: int, length: int) -> None:
        self.next_id += 1
        seq = seq_with_ids(self.next_id, [family * 100 + i for i in range(length)], output=8)
        cached = self.both("match_prefix", seq) if self.caching else 0
        if self.both("allocate_slots", seq, length, cached):
            seq.num_computed_tokens, seq.num_output_tokens = length, 1
            self.live[seq.seq_id] = seq

    @rule(data=st.data(), drafts=st.integers(0, 5))
    def decode(self, data, drafts: int) -> None:
        if not self.live:
            return
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if seq.num_output_tokens >= 7 or not self.both("allocate_slots", seq, seq.num_known_tokens + drafts):
            return
        accepted = data.draw(st.integers(0, min(drafts, 6 - seq.num_output_tokens)))
        seq.num_computed_tokens = seq.num_known_tokens + accepted
        seq.num_output_tokens += 1 + accepted
        self.both("shrink_slots", seq, seq.num_computed_tokens)

    @rule(data=st.data())
    def fork(self, data) -> None:
        if not self.live:
            return
        parent = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        self.next_id += 1
        child = Sequence(parent.request, num_computed_tokens=parent.num_computed_tokens,
                         num_output_tokens=parent.num_output_tokens, sample_index=self.next_id % 50 + 1)
        if child.seq_id not in self.live and self.both("fork", parent, child):
            self.live[child.seq_id] = child

    @rule(data=st.data())
    def free(self, data) -> None:
        if not self.live:
            return
        self.both("free", self.live.pop(data.draw(st.sampled_from(sorted(self.live)))))

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "plain"):
            return
        for seq_id in self.live:
            assert self.plain.block_tables[seq_id] == self.hybrid.unit_tables(seq_id)[0]
        assert self.plain.pool.free_queue() == self.hybrid.pool.free_queue()
        assert self.plain.usage() == self.hybrid.usage()
        if self.caching:
            assert self.plain.stats() == self.hybrid.stats()
        assert self.plain.take_copies() == self.hybrid.take_copies()


TestPlainLayoutEquivalence = PlainLayoutEquivalenceMachine.TestCase
TestPlainLayoutEquivalence.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


def test_gemma_3_shares_a_system_prompt_longer_than_its_window():
    """80 requests behind one 2048-token system prompt (twice Gemma-3's 1024-token window):
    every request after the first hits the whole prompt, and the pool holds far fewer blocks."""
    spec = ("sessions:n=80,turns=1,system=2048,user=lognormal:200:0.5,answer=lognormal:100:0.5,"
            "arrivals=poisson:4,think=1")
    runs = {}
    for allocator in ("paged", "paged-prefix"):
        result = simulate(resolve(ReplayOptions(trace=spec, model="gemma-3-12b", allocator=allocator)))
        log = result.engines[0].log
        cache = result.engines[0].prefix_cache
        runs[allocator] = (result.summary, cache.stats() if cache is not None else None,
                           sum(log.kv_reserved_slots) / len(log), max(log.kv_reserved_slots))
    (plain, _, plain_mean, plain_peak), (cached, stats, cached_mean, cached_peak) = runs.values()
    assert stats["prefix_hit_tokens"] == 79 * 2048 and stats["evictions"] == 0
    assert cached["prefix_hit_rate"] > 0.85
    assert cached_mean < plain_mean / 2 and cached_peak < plain_peak / 2
    assert cached["ttft_mean_s"] < plain["ttft_mean_s"] / 2
