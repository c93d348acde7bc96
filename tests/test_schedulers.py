"""Scheduler decisions pinned on tiny cases, then invariants on random workloads."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.registry import ALLOCATORS, SCHEDULERS
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.scheduler.queue_order import QUEUE_POLICIES
from policies.scheduler.static import StaticParams, StaticScheduler
from policies.types import Request, SeqStatus
from sim.config import ReplayOptions
from tests.helpers import FixedCostExecutor, drive
from tests.test_fast_forward import assert_shortcut_keeps_results


def continuous_engine(num_blocks=100, block_size=4, max_seqs=8, max_tokens=64):
    alloc = PagedAllocator(PagedParams(block_size=block_size, num_blocks=num_blocks))
    sched = ContinuousScheduler(ContinuousParams(max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens), alloc)
    executor = FixedCostExecutor()
    return Engine(sched, executor, max_model_len=10_000), executor


def test_continuous_runs_prefills_alone_and_ahead_of_decodes():
    engine, ex = continuous_engine()
    engine.submit(Request(0, 0.0, 10, 3), 0.0)
    engine.step(0.0)
    engine.submit(Request(1, 0.0, 5, 2), 1.0)
    engine.step(1.0)
    engine.step(2.0)
    assert ex.plans == [[(0, 10)], [(1, 5)], [(0, 1), (1, 1)]]


def test_continuous_token_budget_and_oversized_prompt_alone():
    engine, ex = continuous_engine(max_tokens=64)
    for i, prompt in enumerate([40, 30, 20, 100, 5]):
        engine.submit(Request(i, 0.0, prompt, 1), 0.0)
    for t in range(4):
        engine.step(float(t))
    # 40 fits; 30 would exceed 64 -> next step; 30+20 fit; 100 > whole budget -> alone; then 5.
    assert ex.plans == [[(0, 40)], [(1, 30), (2, 20)], [(3, 100)], [(4, 5)]]


def test_continuous_max_num_seqs():
    engine, ex = continuous_engine(max_seqs=2)
    for i in range(3):
        engine.submit(Request(i, 0.0, 4, 5), 0.0)
    engine.step(0.0)
    assert ex.plans[0] == [(0, 4), (1, 4)]
    assert engine.scheduler.num_waiting == 1


def test_continuous_preempts_newest_by_recompute_and_resumes_with_outputs():
    # 3 blocks of 4 slots. Two prompts of 4 take a block each; decoding needs new blocks.
    engine, ex = continuous_engine(num_blocks=3, block_size=4)
    engine.submit(Request(0, 0.0, 4, 6), 0.0)
    engine.submit(Request(1, 0.0, 4, 6), 0.0)
    drive(engine, [])
    s0, s1 = engine.sequences[0], engine.sequences[1]
    assert s0.status is SeqStatus.FINISHED and s1.status is SeqStatus.FINISHED
    assert s0.num_preemptions == 0 and s1.num_preemptions >= 1
    assert len(s1.token_times_s) == 6
    # Request 1 yields its block at the first decode, waits until request 0 is done, then
    # re-prefills its prompt plus the one output it already had (4 + 1 tokens).
    assert ex.plans == [[(0, 4), (1, 4)]] + [[(0, 1)]] * 5 + [[(1, 5)]] + [[(1, 1)]] * 4
    assert engine.scheduler.allocator.num_free_blocks == 3


def test_static_batch_runs_to_longest_member_with_padding():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=100))
    sched = StaticScheduler(StaticParams(max_num_seqs=2, max_wait_s=0.0), alloc)
    ex = FixedCostExecutor()
    engine = Engine(sched, ex, max_model_len=1000)
    requests = [Request(0, 0.0, 4, 2), Request(1, 0.0, 4, 4), Request(2, 0.5, 4, 1)]
    drive(engine, requests)
    # Batch {0,1}: prefill, then 3 decodes (0 finishes after the first and becomes padding);
    # request 2 arrived at 0.5 s but waits for the whole batch.
    assert ex.plans == [[(0, 4), (1, 4)], [(0, 1), (1, 1)], [(1, 1)], [(1, 1)], [(2, 4)]]
    assert engine.sequences[0].finish_s == 2.0
    assert engine.sequences[2].first_scheduled_s == 4.0


@pytest.mark.parametrize("allocator,num_gpu_blocks", [
    ("paged", 500), ("paged-prefix", 500), ("radix", 500), ("contiguous", 3000)])
def test_static_decode_steps_grown_at_once_leave_every_result_unchanged(
        monkeypatch, allocator, num_gpu_blocks):
    """A static batch's decode step grown in one lockstep round (`_decode_at_once`) leaves
    the same plans, blocks, preemptions, token times and log rows as growing its members one
    by one, on pools small enough to preempt mid-batch (all but contiguous)."""
    options = ReplayOptions(scheduler="static", allocator=allocator, max_requests=150,
                            rate_scale=4.0, num_gpu_blocks=num_gpu_blocks, fast_forward=False)
    at_once, share = assert_shortcut_keeps_results(monkeypatch, StaticScheduler,
                                                   "_decode_at_once", options)
    assert at_once.summary["requests_finished"] == 150
    assert share > 0.5  # most steps decode at once
    assert (at_once.summary["preemptions"] > 0) == (allocator != "contiguous")


def test_static_waits_for_batch_to_fill_up_to_max_wait():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=100))
    sched = StaticScheduler(StaticParams(max_num_seqs=3, max_wait_s=2.0), alloc)
    ex = FixedCostExecutor()
    engine = Engine(sched, ex, max_model_len=1000)
    drive(engine, [Request(0, 0.0, 4, 1), Request(1, 1.0, 4, 1)])
    assert engine.sequences[0].first_scheduled_s == 2.0
    assert ex.plans[0] == [(0, 4), (1, 4)]


requests_strategy = st.lists(
    st.tuples(st.floats(0, 20), st.integers(1, 60), st.integers(1, 40), st.integers(0, 2)),
    min_size=1, max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    reqs=requests_strategy,
    scheduler=st.sampled_from(sorted(SCHEDULERS)),
    allocator=st.sampled_from(sorted(ALLOCATORS)),
    num_blocks=st.integers(4, 40),
    max_seqs=st.integers(1, 6),
    max_tokens=st.integers(8, 128),
    queue_policy=st.sampled_from(QUEUE_POLICIES),
)
def test_every_scheduler_and_allocator_keep_their_invariants(
    reqs, scheduler, allocator, num_blocks, max_seqs, max_tokens, queue_policy
):
    """Never over the sequence cap or token budget, never a non-running sequence scheduled,
    no block leaked, and no starvation: every request that fits finishes with its exact
    output, whatever the queue policy."""
    options = {"block_size": 4, "num_blocks": num_blocks, "max_model_len": 100,
               "max_num_seqs": max_seqs, "max_num_batched_tokens": max_tokens,
               "token_budget": max_tokens, "long_prefill_token_threshold": 0,
               "reserve": "oracle", "queue_policy": queue_policy}
    alloc = ALLOCATORS[allocator].policy(ALLOCATORS[allocator].make_params(options))
    sched = SCHEDULERS[scheduler].policy(SCHEDULERS[scheduler].make_params(options), alloc)
    total_slots = alloc.usage().total_slots

    class CheckingExecutor(FixedCostExecutor):
        def execute(self, plan):
            usage = alloc.usage()
            assert usage.reserved_slots <= total_slots
            ids = [c.seq.seq_id for c in plan.chunks]
            assert len(ids) == len(set(ids))
            assert len(plan.chunks) + len(plan.padding) <= max_seqs
            for c in plan.chunks:
                assert c.seq.status is SeqStatus.RUNNING
                assert c.num_new_tokens >= 1
            if scheduler == "continuous" and len(plan.chunks) > 1:
                assert plan.num_new_tokens <= max_tokens
            if scheduler == "chunked":
                assert plan.num_new_tokens <= max_tokens
            return super().execute(plan)

    engine = Engine(sched, CheckingExecutor(), max_model_len=100)
    requests = [Request(i, t, p, o, priority=c) for i, (t, p, o, c) in enumerate(reqs)]
    drive(engine, requests)
    for r in requests:
        seq = engine.sequences[r.request_id]
        if seq.status is SeqStatus.REJECTED:
            assert seq.reason
            continue
        assert seq.status is SeqStatus.FINISHED
        assert seq.num_output_tokens == r.output_tokens == len(seq.token_times_s)
        assert list(seq.token_times_s) == sorted(seq.token_times_s)
    usage = alloc.usage()
    assert usage.reserved_slots == 0 and usage.filled_slots == 0


def test_fcfs_admits_in_arrival_order_when_nothing_is_preempted():
    engine, _ = continuous_engine(num_blocks=1000, max_seqs=3)
    requests = [Request(i, 0.1 * i, 5 + (7 * i) % 11, 3) for i in range(12)]
    drive(engine, requests)
    starts = [engine.sequences[i].first_scheduled_s for i in range(12)]
    assert starts == sorted(starts)
