"""Automatic prefix caching (`paged-prefix`): exact sharing, eviction order, invariants, and
the Mooncake trace's hit rate against an independent count."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from policies.engine import Engine
from policies.kv.block_hashes import block_hashes
from policies.kv.hybrid_paged import make_paged_allocator
from policies.kv.layout import KVLayout
from policies.kv.paged import PagedPrefixAllocator, PagedPrefixParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.types import Request, Sequence
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from tests.helpers import SHARED, FixedCostExecutor
import traces

MOONCAKE = SHARED / "traces/mooncake_fast25/synthetic_trace.jsonl"


def seq_with_ids(request_id: int, ids, output: int = 4) -> Sequence:
    return Sequence(Request(request_id, 0.0, len(ids), output, prompt_token_ids=tuple(ids)))


def prefix_alloc(num_blocks=8, block_size=4) -> PagedPrefixAllocator:
    return PagedPrefixAllocator(PagedPrefixParams(block_size=block_size, num_blocks=num_blocks,
                                                  watermark=0.0))


def test_shared_prefix_blocks_are_shared_by_reference():
    alloc = prefix_alloc()
    a = seq_with_ids(0, range(10))
    b = seq_with_ids(1, [*range(8), 99, 98, 97])
    assert alloc.match_prefix(a) == 0
    assert alloc.allocate_slots(a, 10)
    assert alloc.block_tables[0] == [0, 1, 2]
    assert alloc.match_prefix(b) == 8  # blocks [0..3] and [4..7] are identical
    assert alloc.allocate_slots(b, 11, 8)
    assert alloc.block_tables[1] == [0, 1, 3]
    assert [alloc.pool.owners(b) for b in range(5)] == [2, 2, 1, 1, 0]
    usage = alloc.usage()
    assert usage.reserved_slots == 16 and usage.filled_slots == 10 + 3
    assert alloc.stats()["prefix_hit_tokens"] == 8


def test_full_hit_still_computes_the_last_block():
    alloc = prefix_alloc()
    a, b = seq_with_ids(0, range(8)), seq_with_ids(1, range(8))
    assert alloc.allocate_slots(a, 8)
    assert alloc.match_prefix(b) == 4


def test_freed_blocks_stay_cached_and_are_evicted_lazily_tail_first():
    alloc = prefix_alloc(num_blocks=4)
    a = seq_with_ids(0, range(12))
    assert alloc.allocate_slots(a, 12)  # blocks 0, 1, 2 all hashed
    alloc.free(a)
    assert alloc.usage().cached_free_slots == 12
    # A stranger takes the never-used block 3, then the tail block 2 (freed first), not 0.
    stranger = seq_with_ids(1, [500 + i for i in range(8)])
    assert alloc.allocate_slots(stranger, 8)
    assert alloc.block_tables[1] == [3, 2]
    assert alloc.stats()["evictions"] == 1
    # The head of a's prompt is still cached.
    again = seq_with_ids(2, range(12))
    assert alloc.match_prefix(again) == 8


def test_hit_skips_prefill_compute_but_the_cost_model_reads_the_cached_kv():
    alloc = prefix_alloc(num_blocks=64)
    sched = ContinuousScheduler(ContinuousParams(max_num_seqs=8, max_num_batched_tokens=64), alloc)
    ex = FixedCostExecutor()
    engine = Engine(sched, ex, max_model_len=1000)
    engine.submit(seq_with_ids(0, range(20), 2).request, 0.0)
    engine.step(0.0)
    engine.submit(seq_with_ids(1, [*range(16), 7, 7, 7], 2).request, 1.0)
    plan = sched.schedule(1.0)
    (chunk,) = plan.chunks
    assert (chunk.num_new_tokens, chunk.num_context_tokens) == (3, 16)


@pytest.mark.parametrize("block_size", [16, 48, 100, 512, 1024])
def test_mooncake_hash_ids_map_onto_any_block_size_exactly(block_size):
    shared = (7, 8, 9)
    a = Request(0, 0.0, 1500, 1, prefix_block_hashes=shared + (10,), prefix_block_tokens=512)
    b = Request(1, 0.0, 1700, 1, prefix_block_hashes=shared + (11,), prefix_block_tokens=512)
    ha, hb = block_hashes(a, block_size, 1500), block_hashes(b, block_size, 1700)
    common = 0
    while common < min(len(ha), len(hb)) and ha[common] == hb[common]:
        common += 1
    # Both prompts share exactly their first 3 x 512 = 1536 tokens... but a has only 1500.
    assert common == min(1500, 1536) // block_size
    assert len(ha) == 1500 // block_size


class PrefixAllocatorMachine(RuleBasedStateMachine):
    """Random admissions with shared prefixes, growth and frees."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = prefix_alloc(num_blocks=10, block_size=2)
        self.live: dict[int, Sequence] = {}
        self.next_id = 0

    @rule(family=st.integers(0, 2), length=st.integers(1, 9))
    def admit(self, family: int, length: int) -> None:
        seq = seq_with_ids(self.next_id, [family * 100 + i for i in range(length)], output=3)
        self.next_id += 1
        cached = self.alloc.match_prefix(seq)
        assert cached % 2 == 0 and cached < length
        free_before = self.alloc.num_free_blocks
        if self.alloc.allocate_slots(seq, length, cached):
            self.live[seq.seq_id] = seq
            table = self.alloc.block_tables[seq.seq_id]
            hashes = block_hashes(seq.request, 2, length)
            for i in range(cached // 2):  # a hit returns exactly the content asked for
                assert self.alloc.pool.key_of(table[i]) == hashes[i]
        else:
            assert self.alloc.num_free_blocks == free_before

    @rule(data=st.data())
    def free(self, data) -> None:
        if self.live:
            seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
            self.alloc.free(seq)

    @rule(length=st.integers(1, 20))
    def evictable_is_what_eviction_frees(self, length: int) -> None:
        """A stranger can take exactly the free + cached-free blocks, evicting the cache."""
        need = self.alloc.blocks_for(length)
        stranger = seq_with_ids(10_000 + self.next_id, [5000 + self.next_id * 50 + i for i in range(length)])
        self.next_id += 1
        ok = self.alloc.allocate_slots(stranger, length)
        assert ok == (need <= self.alloc.num_free_blocks + (need if ok else 0))
        if ok:
            self.alloc.free(stranger)

    @invariant()
    def consistent(self) -> None:
        a = self.alloc
        owned = {b for table in a.block_tables.values() for b in table}
        queue = a.pool.free_queue()
        assert len(queue) == len(set(queue))  # stale entries a hit left behind never show
        assert a.num_free_blocks == len(queue) + a.pool.num_never_used()
        never_used = range(a.num_blocks - a.pool.num_never_used(), a.num_blocks)
        free = set(queue) | set(never_used)
        assert not owned & free
        assert len(owned) + len(free) == a.num_blocks
        assert all(count > 0 for count in a.pool._extra_owners.values())
        assert set(a.pool._extra_owners) <= owned
        for block in range(a.num_blocks):
            assert a.pool.owners(block) == sum(table.count(block) for table in a.block_tables.values())
        assert a.pool._cached_free == {b for b in queue if b in a.pool._key_of}
        assert a.usage().cached_free_slots == 2 * len(a.pool._cached_free)
        assert {b: h for h, b in a.pool._block_of.items()} == a.pool._key_of
        u = a.usage()
        assert 0 <= u.filled_slots <= u.reserved_slots <= u.total_slots

    def teardown(self) -> None:
        for seq in self.live.values():
            self.alloc.free(seq)
        assert self.alloc.num_free_blocks == 10 and not self.alloc.pool._extra_owners
        assert self.alloc.usage().reserved_slots == 0 == self.alloc.usage().filled_slots


TestPrefixAllocatorMachine = PrefixAllocatorMachine.TestCase
TestPrefixAllocatorMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)


def _independent_hit_rate(trace, max_total_tokens: int) -> float:
    """Leading trace blocks seen before, in arrival order, with an unbounded cache."""
    seen: set[int] = set()
    hit = total = 0
    for r in trace.requests:
        if r.total_tokens > max_total_tokens:
            continue
        run = 0
        for block_id in r.prefix_block_hashes:
            if block_id not in seen:
                break
            run += 1
        hit += min(run * r.prefix_block_tokens, r.prompt_tokens)
        total += r.prompt_tokens
        seen.update(r.prefix_block_hashes)
    return hit / total


@pytest.mark.skipif(not MOONCAKE.exists(), reason=f"shared trace not found at {MOONCAKE}")
def test_mooncake_hit_rate_matches_the_trace_and_falls_as_the_pool_shrinks(capsys):
    trace = traces.load_trace(MOONCAKE, max_requests=1000)
    expected = _independent_hit_rate(trace, max_total_tokens=131072)
    curve = []
    for blocks in (4_000_000, 200_000, 50_000, 12_000):
        options = ReplayOptions(model="llama-3.1-8b", allocator="paged-prefix",
                                num_gpu_blocks=blocks, rate_scale=0.5)
        s = simulate(resolve(options, trace)).summary
        curve.append((blocks, s["prefix_hit_rate"], s["evictions"]))
    with capsys.disabled():
        print(f"\n  Mooncake (first 1000 requests) independent hit rate {expected:.4f}")
        print("  KV blocks   token hit rate   evictions")
        for blocks, rate, evictions in curve:
            print(f"  {blocks:>9,}   {rate:>14.4f}   {evictions:>9,}")
    assert curve[0][1] == pytest.approx(expected, abs=0.02)
    assert curve[0][2] == 0
    rates = [rate for _, rate, _ in curve]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0] / 2


def test_sessions_workload_hits_the_shared_history():
    spec = "sessions:n=60,turns=3,system=512,user=lognormal:100:0.5,answer=lognormal:80:0.5,arrivals=poisson:2,think=5"
    plain = simulate(resolve(ReplayOptions(trace=spec, allocator="paged"))).summary
    cached = simulate(resolve(ReplayOptions(trace=spec, allocator="paged-prefix"))).summary
    assert plain["prefix_hit_rate"] is None
    assert cached["prefix_hit_rate"] > 0.6
    assert cached["ttft_mean_s"] < plain["ttft_mean_s"]


def test_the_free_queue_stays_bounded_when_hits_keep_reclaiming_cached_blocks():
    """A prompt admitted and freed over and over, in a pool with never-used blocks left,
    leaves a stale queue entry per reclaimed block each time; compaction bounds them."""
    from policies.kv.block_pool import COMPACT_AT_STALE

    alloc = prefix_alloc(num_blocks=4096, block_size=4)
    prompt = list(range(40))  # ten full blocks, nine reusable (the last is recomputed)
    for request_id in range(1000):
        seq = seq_with_ids(request_id, prompt)
        assert alloc.allocate_slots(seq, len(prompt), alloc.match_prefix(seq))
        alloc.free(seq)
    assert len(alloc.pool._free) <= 2 * COMPACT_AT_STALE + 10
    queue = alloc.pool.free_queue()
    assert len(queue) == len(set(queue)) and alloc.num_free_blocks == 4096
    assert alloc.stats()["prefix_hit_blocks"] == 999 * 9
    alloc.pool._compact_free_queue()  # compaction keeps the live entries' order
    assert alloc.pool.free_queue() == queue and alloc.num_free_blocks == 4096


@pytest.mark.parametrize("layout", [KVLayout(), KVLayout(full_units=1, window_units=2,
                                                          window_tokens=8)])
def test_a_hit_longer_than_the_cache_holds_is_refused_with_nothing_taken(layout):
    """`allocate_slots`' cached-token count must be a `match_prefix` answer; a longer claim
    is a caller's bug, refused before the pool changes (plain and hybrid layouts alike)."""
    alloc = make_paged_allocator(PagedPrefixParams(block_size=4, num_blocks=32, watermark=0.0,
                                                   layout=layout))
    assert alloc.allocate_slots(seq_with_ids(0, list(range(9))), 9)
    free_before = alloc.num_free_blocks
    other = seq_with_ids(1, [50 + i for i in range(9)])
    assert alloc.match_prefix(other) == 0
    with pytest.raises(ValueError, match="cache holds a shorter prefix"):
        alloc.allocate_slots(other, 9, 8)
    assert alloc.num_free_blocks == free_before
