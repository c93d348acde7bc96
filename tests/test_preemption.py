"""Recompute vs swap preemption: progress kept or redone, transfer time charged, fallbacks."""

from __future__ import annotations

import pytest

from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.types import Plan, Request, SeqStatus
from sim.api import simulate
from sim.assembly import build_cost_model
from sim.config import ReplayOptions, resolve
from tests.helpers import FixedCostExecutor, drive


def engine_with(preemption: str, num_cpu_blocks: int):
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=3, watermark=0.0))
    params = ContinuousParams(max_num_seqs=8, max_num_batched_tokens=64, preemption=preemption, num_cpu_blocks=num_cpu_blocks)
    ex = FixedCostExecutor()
    return Engine(ContinuousScheduler(params, alloc), ex, max_model_len=1000), ex


def test_swap_keeps_progress_where_recompute_redoes_it():
    requests = [Request(0, 0.0, 4, 6), Request(1, 0.0, 4, 6)]
    recompute, ex_r = engine_with("recompute", 0)
    drive(recompute, requests)
    swap, ex_s = engine_with("swap", 10)
    drive(swap, requests)
    # Recompute re-prefills request 1's prompt + first output (5 tokens); swap resumes decoding.
    assert [(1, 5)] in ex_r.plans and [(1, 5)] not in ex_s.plans
    assert ex_s.plans == [[(0, 4), (1, 4)]] + [[(0, 1)]] * 5 + [[(1, 1)]] * 5
    s1 = swap.sequences[1]
    assert s1.num_swaps == 1 and s1.num_recomputed_tokens == 0 and s1.status is SeqStatus.FINISHED
    assert recompute.sequences[1].num_recomputed_tokens == 5
    for engine in (recompute, swap):
        assert all(len(s.token_times_s) == 6 for s in engine.sequences.values())


def test_full_swap_space_falls_back_to_recompute():
    engine, ex = engine_with("swap", 1)  # request 1 holds 2 blocks of KV: does not fit
    drive(engine, [Request(0, 0.0, 4, 6), Request(1, 0.0, 6, 6)])
    s1 = engine.sequences[1]
    assert s1.num_swaps == 0 and s1.num_preemptions == 1 and s1.num_recomputed_tokens > 0


def test_swap_transfer_time_is_kv_bytes_over_the_host_link():
    config = resolve(ReplayOptions(model="llama-3-8b", hardware="h100"))
    cost = build_cost_model(config)
    plain = cost.execute(Plan()).duration_s
    swapped = Plan(swap_out_slots=1000, swap_in_slots=500)
    # Llama-3-8B: 128 KiB of KV per token, 64 GB/s PCIe Gen5 per direction.
    expected = 1500 * 32 * 2 * 8 * 128 * 2 / 64e9
    assert cost.execute(swapped).duration_s - plain == pytest.approx(expected, rel=1e-9)


def test_swap_under_memory_pressure_on_the_bundled_trace():
    common = dict(rate_scale=4.0, max_requests=600, num_gpu_blocks=1500)
    recompute = simulate(resolve(ReplayOptions(preemption="recompute", **common))).summary
    swap = simulate(resolve(ReplayOptions(preemption="swap", **common))).summary
    assert recompute["preemptions"] > 0 and recompute["recomputed_tokens"] > 0
    assert swap["swaps"] > 0 and swap["recomputed_tokens"] == 0
    for s in (recompute, swap):
        assert s["requests_finished"] == 600
