"""Chunked prefill: exact chunking decisions, and the Sarathi-Serve trade-off on a real trace."""

from __future__ import annotations

import pytest

from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.chunked import ChunkedParams, ChunkedScheduler
from policies.types import Request, Sequence
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from tests.helpers import FixedCostExecutor, drive
from tests.test_fast_forward import assert_shortcut_keeps_results


def chunked_engine(budget: int, threshold: int = 0, order: str = "decode-first"):
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=200, watermark=0.0))
    sched = ChunkedScheduler(ChunkedParams(max_num_seqs=8, token_budget=budget, long_prefill_token_threshold=threshold, chunked_order=order), alloc)
    ex = FixedCostExecutor()
    return Engine(sched, ex, max_model_len=10_000), ex


def test_long_prompt_is_chunked_and_decodes_go_first():
    engine, ex = chunked_engine(budget=8)
    engine.submit(Request(0, 0.0, 4, 4), 0.0)
    engine.step(0.0)  # request 0 prefilled whole (4 <= 8), samples its first token
    engine.submit(Request(1, 0.0, 20, 2), 1.0)
    for t in range(1, 5):
        engine.step(float(t))
    # Decode of 0 first, then 7-token chunks of request 1 until its 20 prompt tokens are done.
    assert ex.plans == [[(0, 4)], [(0, 1), (1, 7)], [(0, 1), (1, 7)], [(0, 1), (1, 6)], [(1, 1)]]
    s1 = engine.sequences[1]
    assert len(s1.token_times_s) == 2 and s1.token_times_s[0] == 4.0  # first token after last chunk


def test_threshold_lets_several_prompts_progress_together():
    engine, ex = chunked_engine(budget=12, threshold=4)
    for i in range(3):
        engine.submit(Request(i, 0.0, 8, 1), 0.0)
    engine.step(0.0)
    engine.step(1.0)
    assert ex.plans == [[(0, 4), (1, 4), (2, 4)], [(0, 4), (1, 4), (2, 4)]]


def test_prefill_first_serves_prompts_before_decodes():
    engine, ex = chunked_engine(budget=6, order="prefill-first")
    engine.submit(Request(0, 0.0, 2, 5), 0.0)
    engine.step(0.0)
    engine.submit(Request(1, 0.0, 10, 1), 1.0)
    engine.step(1.0)
    engine.step(2.0)
    assert ex.plans[1:] == [[(1, 6)], [(1, 4), (0, 1)]]


def test_requests_finish_with_exact_outputs_under_preemption():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=6, watermark=0.0))
    engine = Engine(ChunkedScheduler(ChunkedParams(max_num_seqs=4, token_budget=8), alloc), FixedCostExecutor(),
                    max_model_len=100)
    requests = [Request(i, 0.1 * i, 9, 6) for i in range(5)]
    drive(engine, requests)
    assert all(len(engine.sequences[r.request_id].token_times_s) == 6 for r in requests)
    assert any(s.num_preemptions for s in engine.sequences.values())
    assert alloc.num_free_blocks == 6


def test_sarathi_tradeoff_on_the_bundled_trace(capsys):
    """Chunked prefill lowers P99 time-between-tokens against whole-prompt prefills at the
    same rate, and pays for it in TTFT."""
    rows = {}
    for name, options in (("continuous", dict(scheduler="continuous")),
                          ("chunked 512", dict(scheduler="chunked", token_budget=512))):
        s = simulate(resolve(ReplayOptions(rate_scale=2.0, max_requests=1000, **options))).summary
        rows[name] = s
    with capsys.disabled():
        print("\n  scheduler      ITL p99 (ms)  TPOT p99 (ms)  TTFT p50 (ms)  TTFT p99 (ms)")
        for name, s in rows.items():
            print(f"  {name:<14} {s['itl_p99_s'] * 1e3:>12.1f} {s['tpot_p99_s'] * 1e3:>14.1f}"
                  f" {s['ttft_p50_s'] * 1e3:>14.1f} {s['ttft_p99_s'] * 1e3:>14.1f}")
    cont, chunk = rows["continuous"], rows["chunked 512"]
    assert chunk["itl_p99_s"] < 0.5 * cont["itl_p99_s"]
    assert chunk["tpot_p99_s"] < cont["tpot_p99_s"]
    assert chunk["ttft_p50_s"] > cont["ttft_p50_s"]


@pytest.mark.parametrize("allocator,order,num_gpu_blocks", [
    ("paged", "decode-first", 400), ("paged", "prefill-first", 400),
    ("paged-prefix", "decode-first", 400), ("paged-prefix", "prefill-first", 400),
    ("radix", "decode-first", 400), ("radix", "prefill-first", 400),
    ("contiguous", "decode-first", 3000), ("contiguous", "prefill-first", 3000)])
def test_decodes_grown_at_once_leave_every_result_unchanged(monkeypatch, allocator, order,
                                                            num_gpu_blocks):
    """A step's decodes grown in one lockstep round (`_grow_at_once`) leave the same plans,
    blocks, preemptions, token times and log rows as growing them one by one, on pools small
    enough to preempt (paged), in both orders. Every request finishes: paged prefill-first on
    this pool used to livelock (a prompt too big for the memory left, preempted and readmitted
    every iteration, took the budget the decodes holding that memory needed)."""
    options = ReplayOptions(scheduler="chunked", allocator=allocator, chunked_order=order,
                            token_budget=256, rate_scale=4.0, max_requests=200,
                            num_gpu_blocks=num_gpu_blocks, fast_forward=False)
    at_once, share = assert_shortcut_keeps_results(monkeypatch, ChunkedScheduler,
                                                   "_grow_at_once", options)
    assert at_once.summary["requests_finished"] == 200
    assert share > 0.5  # most steps grew their decodes at once
    assert (at_once.summary["preemptions"] > 0) == (allocator != "contiguous")
    if allocator == "paged-prefix":  # preempted requests found their own blocks again
        assert at_once.summary["prefix_hit_tokens"] > 0


def test_the_prefix_caches_grow_decodes_at_once():
    """`ChunkedScheduler._lockstep`: a prefix cache's lockstep round must do what
    `allocate_slots` does with the tokens a verify accepted but left out of the cache:
    `paged-prefix` registers their full blocks or declines (`tests/test_prefix_own_runs.py`),
    the radix tree declines (below)."""
    from policies.kv.paged import PagedPrefixAllocator, PagedPrefixParams
    from policies.kv.radix import RadixAllocator, RadixParams

    params = ChunkedParams(max_num_seqs=8, token_budget=64)
    cached = PagedPrefixAllocator(PagedPrefixParams(block_size=4, num_blocks=50, watermark=0.0))
    plain = PagedAllocator(PagedParams(block_size=4, num_blocks=50, watermark=0.0))
    radix = RadixAllocator(RadixParams(block_size=4, num_blocks=50, watermark=0.0))
    assert ChunkedScheduler(params, cached)._lockstep is cached
    assert ChunkedScheduler(params, plain)._lockstep is plain
    assert ChunkedScheduler(params, radix)._lockstep is radix


def test_a_radix_lockstep_round_declines_tokens_a_verify_left_out_of_the_tree():
    """A verify holds slots for its drafts and inserts only the known tokens; the accepted
    ones join the tree at the next `allocate_slots`. A lockstep round declines until then."""
    from policies.kv.radix import RadixAllocator, RadixParams

    alloc = RadixAllocator(RadixParams(block_size=4, num_blocks=50, watermark=0.0))
    seq = Sequence(Request(1, 0.0, 4, 20))
    assert alloc.allocate_slots(seq, 4)
    seq.num_output_tokens = 1
    assert alloc.allocate_slots(seq, 4 + 1 + 3)  # the decode slot and 3 drafts
    seq.num_output_tokens = 1 + 3 + 1  # all 3 accepted, and a bonus token
    seq.num_computed_tokens = seq.num_known_tokens - 1
    before = alloc.usage()
    assert alloc.grow_in_lockstep([seq], 1) is None and alloc.usage() == before
    assert alloc.allocate_slots(seq, seq.num_known_tokens)  # inserts the accepted tokens
    seq.num_computed_tokens, seq.num_output_tokens = seq.num_known_tokens, seq.num_output_tokens + 1
    assert alloc.grow_in_lockstep([seq], 1) is not None
