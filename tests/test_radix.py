"""The `radix` allocator: exact tree shapes and slot ids, token-granular hits, LRU leaf eviction,
a state machine for its invariants, the Mooncake hit rate, and request conservation."""

from __future__ import annotations

import copy

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies.kv.layout import KVLayout
from policies.kv.paged import PagedPrefixAllocator, PagedPrefixParams
from policies.kv.radix import RadixAllocator, RadixNode, RadixParams
from policies.types import Request, Sequence
from sim.api import simulate
from sim.cli import main
from sim.config import ReplayOptions, resolve
from tests.helpers import make_seq
from tests.test_prefix_caching import MOONCAKE, _independent_hit_rate
from tests.test_simulate import _check_conservation
import traces


def seq_with_ids(request_id: int, ids, output: int = 4) -> Sequence:
    return Sequence(Request(request_id, 0.0, len(ids), output, prompt_token_ids=tuple(ids)))


def radix(num_blocks: int = 8, block_size: int = 4, track_slot_ids: bool = True) -> RadixAllocator:
    return RadixAllocator(RadixParams(block_size=block_size, num_blocks=num_blocks, watermark=0.0,
                                      track_slot_ids=track_slot_ids))


def node_keys(node: RadixNode) -> list:
    return [run.first_key(i) for run in node.runs for i in range(len(run))]


def shape(node: RadixNode) -> dict:
    """The tree below `node` as {first token id: (token ids, ref count, slots, children)}."""
    return {
        key: (node_keys(child), child.ref_count, [s for e in child.slots for s in e], shape(child))
        for key, child in node.children.items()
    }


def test_partial_match_splits_the_edge_and_shares_its_head():
    alloc = radix()
    a = seq_with_ids(0, range(10))
    b = seq_with_ids(1, [*range(6), 99, 98])
    assert alloc.match_prefix(a) == 0
    assert alloc.allocate_slots(a, 10)
    assert alloc.slot_table(a) == list(range(10))
    assert alloc.match_prefix(b) == 6
    assert alloc.allocate_slots(b, 8, 6)
    assert alloc.slot_table(b) == [0, 1, 2, 3, 4, 5, 10, 11]
    assert shape(alloc.root) == {
        0: ([0, 1, 2, 3, 4, 5], 2, [0, 1, 2, 3, 4, 5], {
            6: ([6, 7, 8, 9], 1, [6, 7, 8, 9], {}),
            99: ([99, 98], 1, [10, 11], {}),
        }),
    }
    assert alloc.usage().reserved_slots == alloc.usage().filled_slots == 12
    assert alloc.stats()["prefix_hit_tokens"] == 6
    alloc.free(a)
    assert alloc.usage().cached_free_slots == 4  # a's own tail; the head is still b's
    alloc.free(b)
    assert alloc.usage().cached_free_slots == 12 and alloc.usage().reserved_slots == 0


def test_hits_are_token_granular_where_paged_prefix_hits_whole_blocks():
    alloc = radix()
    paged = PagedPrefixAllocator(PagedPrefixParams(block_size=4, num_blocks=8, watermark=0.0))
    a = seq_with_ids(0, range(13))
    for allocator in (alloc, paged):
        assert allocator.allocate_slots(a, 13)
    longer = seq_with_ids(1, [*range(13), 50, 51])
    same = seq_with_ids(2, range(13))
    assert (alloc.match_prefix(longer), paged.match_prefix(longer)) == (13, 12)
    # A full hit still computes the last token (its logits are needed): one token, not a block.
    assert (alloc.match_prefix(same), paged.match_prefix(same)) == (12, 12)
    assert alloc.match_prefix(seq_with_ids(3, range(9))) == 8
    assert paged.match_prefix(seq_with_ids(3, range(9))) == 8
    assert alloc.match_prefix(seq_with_ids(4, range(8))) == 7
    assert paged.match_prefix(seq_with_ids(4, range(8))) == 4


def test_trace_block_ids_hit_inside_a_partial_trace_block():
    """Mooncake-style ids: a prompt ending inside trace block 9 still shares its first tokens,
    which `paged-prefix` (whole blocks only) cannot hit."""
    alloc = radix()
    paged = PagedPrefixAllocator(PagedPrefixParams(block_size=4, num_blocks=8, watermark=0.0))
    a = Sequence(Request(0, 0.0, 10, 1, prefix_block_hashes=(7, 8, 9), prefix_block_tokens=4))
    for allocator in (alloc, paged):
        assert allocator.allocate_slots(a, 10)
    other_third = Sequence(Request(1, 0.0, 12, 1, prefix_block_hashes=(7, 8, 5), prefix_block_tokens=4))
    full_third = Sequence(Request(2, 0.0, 12, 1, prefix_block_hashes=(7, 8, 9), prefix_block_tokens=4))
    assert alloc.match_prefix(other_third) == 8 == paged.match_prefix(other_third)
    assert (alloc.match_prefix(full_third), paged.match_prefix(full_third)) == (10, 8)


def test_an_identical_prompt_adopts_the_cached_copy_of_its_last_token():
    alloc = radix()
    a, b = seq_with_ids(0, range(8)), seq_with_ids(1, range(8))
    assert alloc.allocate_slots(a, 8)
    assert alloc.allocate_slots(b, 8, alloc.match_prefix(b))
    # b computed token 7 into slot 8, found it cached in slot 7, and gave slot 8 back.
    assert alloc.slot_table(b) == alloc.slot_table(a) == list(range(8))
    assert alloc.usage().reserved_slots == 8 and alloc.pool.num_free == 24
    # Admission split the edge at the hit (7 tokens); both sequences then share both parts.
    assert shape(alloc.root) == {0: (list(range(7)), 2, list(range(7)), {7: ([7], 2, [7], {})})}


def test_lru_leaf_is_evicted_first_and_trimmed_from_its_tail():
    alloc = radix(num_blocks=5)  # 20 slots
    a = seq_with_ids(0, range(100, 106), output=1)
    b = seq_with_ids(1, range(200, 206), output=1)
    assert alloc.allocate_slots(a, 6) and alloc.allocate_slots(b, 6)
    alloc.free(a)
    alloc.free(b)  # a's leaf is now the least recently used
    assert alloc.usage().cached_free_slots == 12 and alloc.pool.num_free == 8
    c = make_seq(2, 10, 1)
    assert alloc.allocate_slots(c, 10)  # 8 free slots, then the last 2 of a's leaf
    assert alloc.slot_table(c) == [4, 5, *range(12, 20)]  # the pool hands out lowest ids first
    assert alloc.stats()["evictions"] == 2
    assert alloc.match_prefix(seq_with_ids(3, range(100, 106))) == 4
    assert alloc.match_prefix(seq_with_ids(4, range(200, 206))) == 5
    d = make_seq(5, 6, 1)
    assert alloc.allocate_slots(d, 6)  # the rest of a's leaf, then 2 from b's tail
    assert alloc.slot_table(d) == [0, 1, 2, 3, 10, 11]
    assert alloc.match_prefix(seq_with_ids(6, range(100, 106))) == 0
    assert alloc.match_prefix(seq_with_ids(7, range(200, 206))) == 4
    assert alloc.stats()["evictions"] == 8
    assert not alloc.allocate_slots(make_seq(8, 5, 1), 5)  # 4 evictable left: all-or-nothing
    assert alloc.usage().cached_free_slots == 4


def test_a_shared_node_is_evicted_only_after_its_children():
    alloc = radix(num_blocks=3)  # 12 slots
    a = seq_with_ids(0, [1, 2, 3, 4, 10, 11], output=1)
    b = seq_with_ids(1, [1, 2, 3, 4, 20, 21], output=1)
    assert alloc.allocate_slots(a, 6)
    assert alloc.allocate_slots(b, 6, alloc.match_prefix(b))
    alloc.free(a)
    alloc.free(b)
    assert alloc.evictable_slots == 8
    stranger = make_seq(2, 9, 1)
    assert alloc.allocate_slots(stranger, 9)
    # 4 free, then a's leaf, b's leaf, and only then the shared head, from its tail.
    assert alloc.slot_table(stranger) == list(range(3, 12))
    assert shape(alloc.root)[1] == ([1, 2, 3], 0, [0, 1, 2], {})
    assert alloc.match_prefix(seq_with_ids(3, [1, 2, 3, 4, 10])) == 3


def test_speculative_slots_are_never_cached():
    alloc = radix()
    a = seq_with_ids(0, range(5))
    assert alloc.allocate_slots(a, 5 + 3)
    assert alloc.slot_table(a) == list(range(8))
    assert sum(n.num_tokens for n in alloc.nodes()) == 5
    alloc.free(a)
    assert alloc.usage().cached_free_slots == 5 and alloc.pool.num_free == 27


def test_outputs_are_cached_under_keys_private_to_the_request():
    alloc = radix()
    a = seq_with_ids(0, range(4), output=5)
    assert alloc.allocate_slots(a, 4)
    for _ in range(3):
        a.num_output_tokens += 1
        assert alloc.allocate_slots(a, a.num_known_tokens)
    assert len(list(alloc.nodes())) == 1  # decodes grow the sequence's own leaf in place
    alloc.free(a)  # preempted: it finds its own outputs again, a stranger does not
    assert alloc.match_prefix(a) == 6
    assert alloc.match_prefix(seq_with_ids(1, range(4))) == 3


def test_slot_ids_are_read_only_where_tracked():
    alloc = radix(track_slot_ids=False)
    seq = seq_with_ids(0, range(6))
    assert alloc.allocate_slots(seq, 6, 0) and alloc.usage().reserved_slots == 6
    with pytest.raises(ValueError, match="track_slot_ids=True"):
        alloc.slot_table(seq)


def test_fork_shares_the_path_and_copies_only_uncached_slots():
    alloc = radix()
    request = Request(0, 0.0, 10, 5, n=2, prompt_token_ids=tuple(range(10)))
    parent, child = Sequence(request), Sequence(request, sample_index=1)
    assert alloc.allocate_slots(parent, 12)  # 10 prompt tokens cached, 2 draft slots private
    assert alloc.fork(parent, child)
    assert alloc.slot_table(child) == [*range(10), 12, 13]
    assert alloc.take_copies() == [(10, 12, 1), (11, 13, 1)] and alloc.take_copies() == []
    assert [n.ref_count for n in alloc.nodes()] == [2]
    alloc.shrink_slots(parent, 10)  # its drafts were rejected
    assert alloc.slot_table(parent) == list(range(10)) and alloc.pool.num_free == 20
    child.num_output_tokens = 1
    assert alloc.allocate_slots(child, 11)  # its first output joins the tree under its own key
    assert shape(alloc.root) == {0: (list(range(10)), 2, list(range(10)), {
        (("out", 0, 1), 10): ([(("out", 0, 1), 10)], 1, [12], {})})}
    alloc.free(parent)
    alloc.free(child)
    assert alloc.usage().reserved_slots == 0 and alloc.usage().cached_free_slots == 11
    # What a cache-aware router sees for requests not on this replica.
    assert alloc.cached_prefix_tokens(Request(1, 0.0, 12, 1, prompt_token_ids=tuple(range(12)))) == 10
    assert alloc.cached_prefix_tokens(Request(2, 0.0, 12, 1, prompt_token_ids=(7,) * 12)) == 0


def test_admission_respects_the_watermark_and_growth_does_not():
    alloc = RadixAllocator(RadixParams(block_size=4, num_blocks=10, watermark=0.2))  # 8 slots kept
    assert alloc.never_fits_reason(make_seq(0, 30, 3).request) is None
    reason = alloc.never_fits_reason(make_seq(1, 30, 4).request)
    assert reason == "needs 33 KV slots but the whole pool has 40 (8 kept free as watermark)"
    assert not alloc.allocate_slots(make_seq(2, 33, 1), 33)
    assert alloc.pool.num_free == 40
    big = make_seq(3, 32, 9)
    assert alloc.allocate_slots(big, 32)
    assert alloc.allocate_slots(big, 40)
    assert not alloc.allocate_slots(make_seq(4, 1, 1), 1)


def test_models_with_ssm_layers_are_refused():
    with pytest.raises(ValueError, match="SSM layers keep a recurrent state"):
        RadixParams(block_size=16, num_blocks=10, layout=KVLayout(full_units=1, fixed_blocks=2))


def test_listed_by_the_cli(capsys):
    assert main(["list", "allocators"]) == 0
    assert "radix" in capsys.readouterr().out


# ---- invariants -----------------------------------------------------------------------------
BLOCK, NUM_BLOCKS, TRACE_BLOCK = 3, 10, 3


def reference_keys(request: Request, num_tokens: int) -> list:
    """Per-token identity, written independently of `token_keys.py`."""
    keys = []
    for p in range(num_tokens):
        if p < request.prompt_tokens and request.prompt_token_ids is not None:
            keys.append(("id", request.prompt_token_ids[p]))
        elif (p < request.prompt_tokens and request.prefix_block_hashes
              and p < len(request.prefix_block_hashes) * request.prefix_block_tokens):
            keys.append(("trace", request.prefix_block_hashes[p // TRACE_BLOCK], p % TRACE_BLOCK))
        elif p < request.prompt_tokens:
            keys.append(("own", request.request_id, p))
        else:
            keys.append(("out", request.request_id, 0, p))
    return keys


class RadixMachine(RuleBasedStateMachine):
    """Admissions with shared prefixes (token ids or trace block ids), decodes, speculative
    slots, recompute preemptions and frees. `content` is the ground truth of each slot: the
    prefix whose KV was last written there, set only when a sequence computes a token into a
    slot it just took from the pool. `counted`, a twin that tracks no slot ids (what the
    simulator runs), is driven alike and must agree on every count, tree and stamp."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = radix(num_blocks=NUM_BLOCKS, block_size=BLOCK)
        self.counted = radix(num_blocks=NUM_BLOCKS, block_size=BLOCK, track_slot_ids=False)
        self.live: dict[int, Sequence] = {}
        self.committed: dict[int, int] = {}
        self.held: dict[int, int] = {}
        self.content: dict[int, tuple] = {}
        self.next_id = 0

    def _allocate(self, seq: Sequence, num_tokens: int, num_cached: int = 0) -> bool:
        taken: set[int] = set()
        pool = self.alloc.pool
        take = pool.take

        def recording_take(n):
            extents = take(n)
            taken.update(s for e in extents for s in e)
            return extents

        state = self.alloc._seqs.get(seq.seq_id)
        own_before = {s for e in state.private for s in e} if state else set()
        before = (pool.num_free, self.alloc.evictable_slots, sorted(pool.free_slots()))
        pool.take = recording_take
        try:
            ok = self.alloc.allocate_slots(seq, num_tokens, num_cached)
        finally:
            del pool.take
        assert self.counted.allocate_slots(seq, num_tokens, num_cached) == ok
        if not ok:
            assert (pool.num_free, self.alloc.evictable_slots, sorted(pool.free_slots())) == before
            return False
        keys = reference_keys(seq.request, seq.num_known_tokens)
        self.held[seq.seq_id] = max(self.held.get(seq.seq_id, 0), num_tokens)
        table = self.alloc.slot_table(seq)
        assert len(table) == len(set(table)) == self.held[seq.seq_id]
        start = self.committed.get(seq.seq_id, num_cached)
        for p in range(num_cached):  # a hit returns exactly the content asked for
            assert self.content[table[p]] == tuple(keys[:p + 1])
        end = min(num_tokens, seq.num_known_tokens)
        for p in range(start, end):
            if table[p] in taken or table[p] in own_before:
                self.content[table[p]] = tuple(keys[:p + 1])
            else:  # adopted from the tree instead of the sequence's own copy
                assert self.content[table[p]] == tuple(keys[:p + 1])
        self.committed[seq.seq_id] = max(start, end)
        return True

    @rule(family=st.integers(0, 2), length=st.integers(1, 12), traced=st.booleans())
    def admit(self, family: int, length: int, traced: bool) -> None:
        rid = self.next_id
        self.next_id += 1
        if traced:
            num_trace_blocks = -(-length // TRACE_BLOCK)
            hashes = tuple(family * 10 + j for j in range(num_trace_blocks))
            request = Request(rid, 0.0, length, 3, prefix_block_hashes=hashes,
                              prefix_block_tokens=TRACE_BLOCK)
        else:
            request = Request(rid, 0.0, length, 3,
                              prompt_token_ids=tuple(family * 100 + i for i in range(length)))
        self._admit(Sequence(request))

    def _admit(self, seq: Sequence) -> None:
        cached = self.alloc.match_prefix(seq)
        assert 0 <= cached < seq.num_known_tokens and self.counted.match_prefix(seq) == cached
        self.committed.pop(seq.seq_id, None)
        self.held.pop(seq.seq_id, None)
        if self._allocate(seq, seq.num_known_tokens, cached):
            self.live[seq.seq_id] = seq

    @precondition(lambda self: self.live)
    @rule(data=st.data(), extra=st.integers(0, 2))
    def decode(self, data, extra: int) -> None:
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if seq.num_output_tokens < seq.request.output_tokens:
            seq.num_output_tokens += 1
        self._allocate(seq, seq.num_known_tokens + extra)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def recompute(self, data) -> None:
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.alloc.free(seq)
        self.counted.free(seq)
        self._admit(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data) -> None:
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.alloc.free(seq)
        self.counted.free(seq)

    @rule()
    def evictable_is_what_eviction_frees(self) -> None:
        """A stranger can take exactly the free plus evictable slots, and not one more; taking
        them all leaves only referenced nodes in the tree."""
        room = self.alloc.pool.num_free + self.alloc.evictable_slots
        too_big = copy.deepcopy(self.alloc)
        assert not too_big.allocate_slots(make_seq(10_000, room + 1, 1), room + 1)
        if room:
            full = copy.deepcopy(self.alloc)
            assert full.allocate_slots(make_seq(10_001, room, 1), room)
            assert full.pool.num_free == 0 and full.evictable_slots == 0
            assert full.stats()["evictions"] - self.alloc.stats()["evictions"] == (
                self.alloc.evictable_slots)
            assert all(node.ref_count > 0 for node in full.nodes())

    @invariant()
    def counting_agrees(self) -> None:
        def tree(alloc):  # every node's place, keys, references, stamp and slot count
            return sorted((n.node_id, n.parent.node_id, tuple(node_keys(n)), n.ref_count,
                           n.last_access, sum(map(len, n.slots))) for n in alloc.nodes())

        a, c = self.alloc, self.counted
        assert (a.usage(), a.stats(), a.pool.num_free) == (c.usage(), c.stats(), c.pool.num_free)
        assert tree(a) == tree(c)

    @invariant()
    def consistent(self) -> None:
        a = self.alloc
        nodes = list(a.nodes())
        refs = {id(n): 0 for n in nodes}
        for seq in self.live.values():
            node = a._seqs[seq.seq_id].node
            while node is not a.root:
                refs[id(node)] += 1
                node = node.parent
        for node in nodes:
            assert node.ref_count == refs[id(node)] >= 0
            assert node.num_tokens == sum(map(len, node.runs)) == sum(map(len, node.slots)) > 0
            assert node.parent.children[node.runs[0].first_key()] is node
        held = [s for seq in self.live.values() for s in a._seqs[seq.seq_id].private]
        owned = [s for n in nodes for e in n.slots for s in e] + [s for e in held for s in e]
        free = list(a.pool.free_slots())
        assert sorted(owned + free) == list(range(NUM_BLOCKS * BLOCK))  # disjoint, complete
        assert a.pool.num_free == len(free)
        evictable = sum(n.num_tokens for n in nodes if n.ref_count == 0)
        assert a.evictable_slots == evictable == a.usage().cached_free_slots
        u = a.usage()
        assert u.reserved_slots == u.filled_slots == u.total_slots - len(free) - evictable >= 0
        for node in nodes:  # every cached token holds the KV of its path
            path, up = [], node
            while up is not a.root:
                path.append(up)
                up = up.parent
            keys = [k for n in reversed(path) for k in node_keys(n)]
            slots = [s for e in node.slots for s in e]
            first = len(keys) - node.num_tokens
            for i, slot in enumerate(slots):
                assert len(self.content[slot]) == first + i + 1
                assert [_runs_key(k) for k in keys[:first + i + 1]] == list(self.content[slot])

    def teardown(self) -> None:
        for seq in self.live.values():
            self.alloc.free(seq)
        u = self.alloc.usage()
        assert u.reserved_slots == 0 and u.filled_slots == 0
        assert self.alloc.pool.num_free + self.alloc.evictable_slots == NUM_BLOCKS * BLOCK
        assert all(node.ref_count == 0 for node in self.alloc.nodes())


def _runs_key(key) -> tuple:
    """A `token_keys` key in `reference_keys` form."""
    if isinstance(key, int):
        return ("id", key)
    stream, offset = key
    return (*stream, offset)


TestRadixMachine = RadixMachine.TestCase
TestRadixMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ---- end to end -----------------------------------------------------------------------------
@pytest.mark.skipif(not MOONCAKE.exists(), reason=f"shared trace not found at {MOONCAKE}")
def test_mooncake_hit_rate_matches_the_trace_and_paged_prefix(capsys):
    """With a pool that never evicts, radix hits what the trace's leading-prefix count says;
    it may hit more than `paged-prefix` (the partial last 16-token block of a shared prefix,
    and a full hit recomputes one token, not one block), never less; hits fall with the pool."""
    trace = traces.load_trace(MOONCAKE, max_requests=1000)
    expected = _independent_hit_rate(trace, max_total_tokens=131072)

    def run(allocator: str, blocks: int) -> dict:
        options = ReplayOptions(model="llama-3.1-8b", allocator=allocator, num_gpu_blocks=blocks,
                                rate_scale=0.5)
        return simulate(resolve(options, trace)).summary

    paged = run("paged-prefix", 4_000_000)
    curve = [(blocks, run("radix", blocks)) for blocks in (4_000_000, 200_000, 12_000)]
    with capsys.disabled():
        print(f"\n  Mooncake (first 1000 requests) independent hit rate {expected:.4f}, "
              f"paged-prefix {paged['prefix_hit_rate']:.4f}")
        print("  KV blocks   radix token hit rate   evicted tokens")
        for blocks, s in curve:
            print(f"  {blocks:>9,}   {s['prefix_hit_rate']:>20.4f}   {s['evictions']:>14,}")
    big = curve[0][1]
    assert big["prefix_hit_rate"] == pytest.approx(expected, abs=0.02)
    assert big["evictions"] == 0
    assert big["prefix_hit_rate"] >= paged["prefix_hit_rate"]
    rates = [s["prefix_hit_rate"] for _, s in curve]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0] / 2


def test_bundled_trace_conserves_every_request_under_memory_pressure():
    options = ReplayOptions(allocator="radix", rate_scale=4.0, num_gpu_blocks=600, max_requests=300)
    results = simulate(resolve(options))
    _check_conservation(results)
    s = results.summary
    assert s["requests_finished"] + s["requests_rejected"] == 300
    assert s["preemptions"] > 0 and s["evictions"] > 0


def test_sessions_workload_hits_the_shared_history_at_least_as_well_as_paged_prefix():
    spec = ("sessions:n=60,turns=3,system=512,user=lognormal:100:0.5,answer=lognormal:80:0.5,"
            "arrivals=poisson:2,think=5")
    paged = simulate(resolve(ReplayOptions(trace=spec, allocator="paged-prefix"))).summary
    tree = simulate(resolve(ReplayOptions(trace=spec, allocator="radix"))).summary
    assert tree["prefix_hit_rate"] >= paged["prefix_hit_rate"] > 0.6
    assert tree["requests_finished"] == paged["requests_finished"] == 180


@pytest.mark.parametrize("track_slot_ids", [True, False])
@pytest.mark.parametrize("num_blocks", [40, 8])
def test_lockstep_growth_equals_rounds_of_allocation(num_blocks, track_slot_ids):
    """The decode fast-forward's growth: the same usage after each round, tree, stamps and
    evictions as the rounds of `allocate_slots` it stands for (at 8 blocks the rounds evict
    cached leaves of finished requests; slot ids may differ)."""
    def setup():
        alloc = radix(num_blocks=num_blocks, track_slot_ids=track_slot_ids)
        for i in range(3):  # finished requests leave cached leaves behind
            done = seq_with_ids(10 + i, [50 + i] * 5)
            assert alloc.allocate_slots(done, 5, 0)
            alloc.free(done)
        seqs = []
        for i in range(2):
            seq = seq_with_ids(i, [*range(6), i], output=40)
            assert alloc.allocate_slots(seq, 7, alloc.match_prefix(seq))
            seq.num_computed_tokens, seq.num_output_tokens = 7, 1
            assert alloc.allocate_slots(seq, 8)  # its first decode gives it its own leaf
            seq.num_computed_tokens, seq.num_output_tokens = 8, 2
            seqs.append(seq)
        return alloc, seqs

    stepped, seqs_a = setup()
    rows = []
    for _ in range(5):
        for seq in seqs_a:
            assert stepped.allocate_slots(seq, seq.num_known_tokens)
        rows.append(stepped.usage())
        for seq in seqs_a:
            seq.num_computed_tokens += 1
            seq.num_output_tokens += 1
    jumped, seqs_b = setup()
    usage = jumped.grow_in_lockstep(seqs_b, 5)
    assert usage.reserved_slots == [u.reserved_slots for u in rows]
    assert usage.filled_slots == [u.filled_slots for u in rows]
    assert usage.cached_free_slots == [u.cached_free_slots for u in rows]
    def tree(alloc):  # every node's place, keys, stamp and slot count (not the slot ids)
        return sorted((n.node_id, n.parent.node_id, tuple(node_keys(n)), n.ref_count,
                       n.last_access, sum(map(len, n.slots))) for n in alloc.nodes())

    assert tree(stepped) == tree(jumped)
    assert stepped._clock == jumped._clock
    assert stepped.evicted_slots == jumped.evicted_slots
    assert (stepped.evicted_slots > 0) == (num_blocks == 8)
    assert jumped.grow_in_lockstep(seqs_b, 10_000) is None  # more than the pool: nothing done
    assert jumped.usage() == stepped.usage()
