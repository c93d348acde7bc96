"""`radix` on hybrid layouts: window KV kept per node suffix, pinned by the windows that read it,
evicted from a node's front; hits stop where the window would read evicted KV. Exact slots and
hit lengths on tiny cases, then a state machine with ground truth for every slot's content and
a brute-force reference for the longest hit."""

from __future__ import annotations

import copy

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from policies.kv.layout import KVLayout
from policies.kv.radix import RadixAllocator, RadixParams
from policies.kv.token_keys import token_key_runs
from policies.types import Request, Sequence
from sim.api import simulate
from sim.config import ReplayOptions, resolve


def seq_with_ids(request_id: int, ids, output: int = 4) -> Sequence:
    return Sequence(Request(request_id, 0.0, len(ids), output, prompt_token_ids=tuple(ids)))


def radix(layout: KVLayout, num_blocks: int = 16, block_size: int = 4,
          track_slot_ids: bool = True) -> RadixAllocator:
    return RadixAllocator(RadixParams(block_size=block_size, num_blocks=num_blocks, watermark=0.0,
                                      layout=layout, track_slot_ids=track_slot_ids))


ONE_AND_ONE = KVLayout(full_units=1, window_units=1, window_tokens=4)


def test_a_prefill_holds_its_full_kv_and_its_window_and_caches_what_slid_past():
    alloc = radix(ONE_AND_ONE)
    a = seq_with_ids(0, range(10))
    assert alloc.allocate_slots(a, 10)
    (node,) = alloc.nodes()
    # 10 full slots, 4 window slots for tokens 6..9 (pinned), and 6 for tokens 0..5 that slid
    # out within the step: cached, evictable.
    assert node.slots == [range(0, 10)] and node.window_slots == [range(14, 20), range(10, 14)]
    assert (node.window_from, node.pins) == (0, {0: 6})
    usage = alloc.usage()
    assert (usage.reserved_slots, usage.cached_free_slots) == (10 + 4, 6)


def test_a_shared_prefix_hits_to_the_token_and_shares_the_window():
    alloc = radix(ONE_AND_ONE)
    assert alloc.allocate_slots(seq_with_ids(0, range(10)), 10)
    b = seq_with_ids(1, [*range(8), 99, 98])
    assert alloc.match_prefix(b) == 8  # the window at 8 reads 5..7: there
    assert alloc.allocate_slots(b, 10, 8)
    head = next(n for n in alloc.nodes() if n.num_tokens == 8)
    assert head.pins == {0: 6, 1: 6} and head.ref_count == 2
    assert alloc.usage().reserved_slots == 14 + 2 * 2  # b adds two tokens' full and window KV


def test_evicted_window_kv_stops_hits_that_would_read_it():
    alloc = radix(ONE_AND_ONE)
    assert alloc.allocate_slots(seq_with_ids(0, range(10)), 10)
    # A 42-token stranger fills the pool: its window and the newest of its passing tokens
    # take the evictable window KV of tokens 0..5 of the first sequence.
    assert alloc.allocate_slots(seq_with_ids(1, range(100, 142)), 42)
    assert alloc.stats()["evictions"] == 6
    first = next(n for n in alloc.nodes() if n.num_tokens == 10)
    assert (first.window_from, first.window_slots) == (6, [range(10, 14)])
    # Full KV for 0..4 is there, but the window at 5 would read 2..4: no hit at all.
    assert alloc.match_prefix(seq_with_ids(2, [*range(5), 77, 76])) == 0
    # At 10 the window reads 7..9, which are kept: a hit.
    assert alloc.match_prefix(seq_with_ids(3, [*range(10), 5])) == 10


def test_chunked_window_hits_at_a_chunk_start_read_nothing():
    alloc = radix(KVLayout(full_units=1, window_units=1, window_tokens=8, chunked=True))
    assert alloc.allocate_slots(seq_with_ids(0, range(21)), 21)
    assert alloc.usage().reserved_slots == 21 + 5  # the chunk 16..23 so far
    assert alloc.allocate_slots(seq_with_ids(1, range(100, 116)), 16)  # evicts window 0..9
    first = next(n for n in alloc.nodes() if n.num_tokens == 21)
    assert first.window_from == 10
    assert alloc.match_prefix(seq_with_ids(2, [*range(12), 7])) == 8  # 12 reads 8..11; 8 nothing
    assert alloc.match_prefix(seq_with_ids(3, [*range(20), 7])) == 20  # 20 reads 16..19


def test_without_full_units_hits_need_only_the_window_and_empty_nodes_go():
    alloc = radix(KVLayout(full_units=0, window_units=1, window_tokens=4), num_blocks=4)
    a = seq_with_ids(0, range(12))
    assert alloc.allocate_slots(a, 12)
    alloc.free(a)
    assert alloc.allocate_slots(seq_with_ids(1, range(100, 108)), 8)  # trims a's tail 8..11
    assert sorted(n.num_tokens for n in alloc.nodes()) == [8, 8]
    assert alloc.match_prefix(seq_with_ids(2, [*range(12), 5])) == 8
    alloc.free(seq_with_ids(1, range(100, 108)))
    assert alloc.allocate_slots(seq_with_ids(3, range(200, 216)), 16)
    assert [n.num_tokens for n in alloc.nodes()] == [16]  # every other node lost its KV: gone


def test_gemma_3_shares_a_system_prompt_on_radix():
    spec = ("sessions:n=80,turns=1,system=2048,user=lognormal:200:0.5,answer=lognormal:100:0.5,"
            "arrivals=poisson:4,think=1")
    runs = {}
    for allocator in ("paged", "radix"):
        result = simulate(resolve(ReplayOptions(trace=spec, model="gemma-3-12b", allocator=allocator)))
        log = result.engines[0].log
        runs[allocator] = (result.engines[0].prefix_cache, max(log.kv_reserved_slots))
    (plain_cache, plain_peak), (radix_cache, radix_peak) = runs.values()
    assert plain_cache is None  # `paged` caches nothing
    assert radix_cache.stats()["prefix_hit_tokens"] >= 79 * 2048  # every later request hits the whole prompt
    assert radix_peak < plain_peak / 2


# ---- invariants -----------------------------------------------------------------------------
LAYOUTS = [
    KVLayout(full_units=1, window_units=2, window_tokens=4),
    KVLayout(full_units=0, window_units=1, window_tokens=5),
    KVLayout(full_units=2, window_units=1, window_tokens=3),
    KVLayout(full_units=1, window_units=1, window_tokens=6, chunked=True),
    KVLayout(full_units=1, window_units=1, window_tokens=1),
]
BLOCK, NUM_BLOCKS = 3, 20


def path_of(alloc: RadixAllocator, node) -> list:
    path = []
    while node is not alloc.root:
        path.append(node)
        node = node.parent
    return path[::-1]


def token_slots(alloc: RadixAllocator, seq: Sequence) -> tuple[dict, dict]:
    """Per held position of `seq`: its full slots and (where kept) its window slots."""
    state = alloc._seqs[seq.seq_id]
    full_units, window_units = alloc.layout.full_units, alloc.layout.window_units
    full, window, start = {}, {}, 0
    for node in path_of(alloc, state.node):
        slots = [s for e in node.slots for s in e]
        wslots = [s for e in node.window_slots for s in e]
        for i in range(node.num_tokens):
            full[start + i] = tuple(slots[i * full_units:(i + 1) * full_units])
            if i >= node.window_from:
                j = i - node.window_from
                window[start + i] = tuple(wslots[j * window_units:(j + 1) * window_units])
        start += node.num_tokens
    private = [s for e in state.private for s in e]
    private_window = [s for e in state.private_window for s in e]
    for i, p in enumerate(range(state.num_cached_tokens, state.num_held_tokens)):
        full[p] = tuple(private[i * full_units:(i + 1) * full_units])
    for i, p in enumerate(range(state.private_window_from, state.num_held_tokens)):
        window[p] = tuple(private_window[i * window_units:(i + 1) * window_units])
    return full, window


def reference_hit(alloc: RadixAllocator, seq: Sequence) -> int:
    """The longest hit, brute force: walk the tree key by key, then try every length."""
    limit = seq.num_known_tokens - 1
    keys = [k for run in token_key_runs(seq.request, 0, max(0, limit), seq.sample_index)
            for k in (run.ids[run.start:run.stop] if run.ids is not None
                      else [(run.stream, p) for p in range(run.start, run.stop)])]
    has_window: list[bool] = []
    node, offset = alloc.root, 0
    for key in keys:
        if offset == node.num_tokens:
            child = node.children.get(key)
            if child is None:
                break
            node, offset = child, 0
        node_keys = [k for run in node.runs for k in (run.ids[run.start:run.stop] if run.ids is not None
                     else [(run.stream, p) for p in range(run.start, run.stop)])]
        if node_keys[offset] != key:
            break
        has_window.append(offset >= node.window_from)
        offset += 1
    layout = alloc.layout
    for hit in range(len(has_window), 0, -1):
        if all(has_window[layout.window_start_token(hit + 1):hit]):
            return hit
    return 0


class RadixHybridMachine(RuleBasedStateMachine):
    """Prefills in chunks, decodes with speculative slots and rejections, forks, recompute
    preemptions, frees and strangers that evict, on hybrid layouts. `content` is the ground
    truth of each slot: (kind, prefix keys) of the KV last computed into it. `counted`, a
    twin that tracks no slot ids (what the simulator runs), is driven alike and must agree
    on every count, tree and stamp."""

    @initialize(layout=st.sampled_from(LAYOUTS))
    def setup(self, layout: KVLayout) -> None:
        self.alloc = radix(layout, num_blocks=NUM_BLOCKS, block_size=BLOCK)
        self.counted = radix(layout, num_blocks=NUM_BLOCKS, block_size=BLOCK, track_slot_ids=False)
        self.layout = layout
        self.live: dict[int, Sequence] = {}
        self.content: dict[int, tuple] = {}
        self.next_id = 0

    def _keys(self, seq: Sequence, num_tokens: int) -> list:
        return [("id", k) if isinstance(k, int) else k for run in token_key_runs(
            seq.request, 0, num_tokens, seq.sample_index)
            for k in (run.ids[run.start:run.stop] if run.ids is not None
                      else [(run.stream, p) for p in range(run.start, run.stop)])]

    def _allocate(self, seq: Sequence, num_tokens: int, num_cached: int = 0) -> bool:
        alloc, pool = self.alloc, self.alloc.pool
        taken: set[int] = set()
        take = pool.take

        def recording_take(n):
            extents = take(n)
            taken.update(s for e in extents for s in e)
            return extents

        state = alloc._seqs.get(seq.seq_id)
        committed_before = state.num_cached_tokens if state else num_cached
        own_before = set()
        if state:
            own_before = {s for e in state.private + state.private_window for s in e}
        before = (pool.num_free, alloc.evictable_slots, sorted(pool.free_slots()))
        pool.take = recording_take
        try:
            ok = alloc.allocate_slots(seq, num_tokens, num_cached)
        finally:
            del pool.take
        assert self.counted.allocate_slots(seq, num_tokens, num_cached) == ok
        if not ok:
            assert (pool.num_free, alloc.evictable_slots, sorted(pool.free_slots())) == before
            return False
        state = alloc._seqs[seq.seq_id]
        keys = self._keys(seq, seq.num_known_tokens)
        full, window = token_slots(alloc, seq)
        assert set(full) == set(range(state.num_held_tokens))
        assert set(range(state.window_start, state.num_held_tokens)) <= set(window)
        expected_start = self.layout.window_start_token(min(num_tokens, seq.num_known_tokens))
        assert state.window_start >= expected_start
        for p in range(min(state.num_cached_tokens, seq.num_known_tokens)):
            for kind, slots in (("full", full[p]), ("window", window.get(p, ()))):
                for slot in slots:
                    truth = (kind, tuple(keys[:p + 1]))
                    if p >= committed_before and (slot in taken or slot in own_before):
                        self.content[slot] = truth  # computed now, or earlier as a draft
                    else:  # a hit or an adopted copy: exactly the content asked for
                        assert self.content[slot] == truth, (p, kind)
        return True

    def _computed(self, seq: Sequence, num_tokens: int) -> None:
        seq.num_computed_tokens = num_tokens
        if num_tokens == seq.num_known_tokens and seq.num_output_tokens < 6:
            seq.num_output_tokens += 1

    def _admit(self, seq: Sequence, size: int) -> None:
        cached = self.alloc.match_prefix(seq)
        assert cached == reference_hit(self.alloc, seq) == self.counted.match_prefix(seq)
        target = min(seq.num_known_tokens, cached + size)
        if self._allocate(seq, target, cached):
            self._computed(seq, target)
            self.live[seq.seq_id] = seq

    @rule(family=st.integers(0, 2), length=st.integers(1, 14), size=st.integers(1, 14))
    def admit(self, family: int, length: int, size: int) -> None:
        self.next_id += 1
        self._admit(seq_with_ids(self.next_id, [family * 100 + i for i in range(length)], 8), size)

    @rule(data=st.data(), size=st.integers(1, 6))
    def step(self, data, size: int) -> None:
        if not self.live:
            return
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        target = min(seq.num_known_tokens, seq.num_computed_tokens + size)
        if target > seq.num_computed_tokens and self._allocate(seq, target):
            self._computed(seq, target)

    @rule(data=st.data(), drafts=st.integers(1, 4))
    def speculate(self, data, drafts: int) -> None:
        if not self.live:
            return
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if seq.num_known_tokens - seq.num_computed_tokens != 1 or seq.num_output_tokens > 5:
            return
        if not self._allocate(seq, seq.num_known_tokens + drafts):
            return
        accepted = data.draw(st.integers(0, drafts))
        seq.num_computed_tokens += 1 + accepted
        seq.num_output_tokens += 1 + accepted
        self.alloc.shrink_slots(seq, seq.num_computed_tokens)
        self.counted.shrink_slots(seq, seq.num_computed_tokens)

    @rule(data=st.data())
    def fork(self, data) -> None:
        if not self.live:
            return
        parent = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if parent.num_computed_tokens > parent.request.prompt_tokens:
            return  # samples fork off a prefilled prompt (their outputs are their own)
        self.next_id += 1
        child = Sequence(parent.request, num_computed_tokens=parent.num_computed_tokens,
                         num_output_tokens=parent.num_output_tokens, sample_index=self.next_id % 90 + 1)
        if child.seq_id in self.live:
            return
        forked = self.alloc.fork(parent, child)
        assert self.counted.fork(parent, child) == forked
        if not forked:
            return
        self.live[child.seq_id] = child
        copies = self.alloc.take_copies()
        assert len(self.counted.take_copies()) == len(copies)
        for source, destination, _ in copies:
            if source in self.content:  # (drafts' slots hold no tracked content)
                self.content[destination] = self.content[source]

    @rule(data=st.data())
    def recompute(self, data) -> None:
        if not self.live:
            return
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.alloc.free(seq)
        self.counted.free(seq)
        seq.num_computed_tokens = 0
        self._admit(seq, 14)

    @rule(data=st.data())
    def finish(self, data) -> None:
        if self.live:
            seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
            self.alloc.free(seq)
            self.counted.free(seq)

    @rule()
    def evictable_is_what_eviction_frees(self) -> None:
        room = self.alloc.pool.num_free + self.alloc.evictable_slots
        emptied = copy.deepcopy(self.alloc)
        emptied._evict(emptied.evictable_slots)
        assert emptied.pool.num_free == room and emptied.evictable_slots == 0
        assert all(n.ref_count > 0 for n in emptied.nodes())

    @invariant()
    def counting_agrees(self) -> None:
        def tree(alloc):  # every node's place, keys, stamp, window start and slot counts
            return sorted((n.node_id, n.parent.node_id, tuple(n.runs), n.ref_count,
                           n.last_access, n.window_from, sum(map(len, n.slots)),
                           sum(map(len, n.window_slots))) for n in alloc.nodes())

        a, c = self.alloc, self.counted
        assert (a.usage(), a.stats(), a.pool.num_free) == (c.usage(), c.stats(), c.pool.num_free)
        assert tree(a) == tree(c)

    @invariant()
    def consistent(self) -> None:
        a = self.alloc
        full_units, window_units = self.layout.full_units, self.layout.window_units
        nodes = list(a.nodes())
        refs = {id(n): 0 for n in nodes}
        pins = {id(n): {} for n in nodes}
        for seq_id, state in a._seqs.items():
            end = state.num_cached_tokens
            for node in reversed(path_of(a, state.node)):
                refs[id(node)] += 1
                start = end - node.num_tokens
                if end > state.window_start:
                    pins[id(node)][seq_id] = max(0, state.window_start - start)
                end = start
            assert state.num_cached_tokens <= state.private_window_from <= max(
                state.num_cached_tokens, state.window_start, state.private_window_from)
            assert sum(map(len, state.private)) == full_units * (state.num_held_tokens - state.num_cached_tokens)
            assert sum(map(len, state.private_window)) == window_units * (
                state.num_held_tokens - state.private_window_from)
        owned, evictable = [], 0
        for node in nodes:
            assert node.ref_count == refs[id(node)] and node.pins == pins[id(node)]
            assert node.num_tokens == sum(map(len, node.runs)) > 0
            assert sum(map(len, node.slots)) == full_units * node.num_tokens
            assert 0 <= node.window_from <= node.num_tokens
            assert sum(map(len, node.window_slots)) == window_units * (node.num_tokens - node.window_from)
            assert all(offset >= node.window_from for offset in node.pins.values())  # read => kept
            assert full_units or node.ref_count or node.children or node.window_from < node.num_tokens
            needed = min(node.pins.values(), default=node.num_tokens)
            expected = (0 if node.ref_count else full_units * node.num_tokens) + window_units * max(
                0, needed - node.window_from)
            assert node.evictable_slots == expected
            evictable += expected
            owned += [s for e in node.slots + node.window_slots for s in e]
        for state in a._seqs.values():
            owned += [s for e in state.private + state.private_window for s in e]
        free = list(a.pool.free_slots())
        assert sorted(owned + free) == list(range(NUM_BLOCKS * BLOCK))  # disjoint, complete
        assert a.evictable_slots == evictable == a.usage().cached_free_slots

    def teardown(self) -> None:
        if not hasattr(self, "alloc"):
            return
        for seq in self.live.values():
            self.alloc.free(seq)
        u = self.alloc.usage()
        assert u.reserved_slots == 0
        assert self.alloc.pool.num_free + self.alloc.evictable_slots == NUM_BLOCKS * BLOCK


TestRadixHybridMachine = RadixHybridMachine.TestCase
TestRadixHybridMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
