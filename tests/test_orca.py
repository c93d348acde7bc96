"""Orca mixes decodes and whole new prompts in one iteration, under the sequence cap only."""

from __future__ import annotations

from policies.engine import Engine
from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.scheduler.orca import OrcaParams, OrcaScheduler
from policies.types import Request
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from tests.helpers import FixedCostExecutor


def test_orca_batches_decodes_with_new_prompts():
    alloc = ContiguousAllocator(ContiguousParams(block_size=1, num_blocks=100, max_model_len=30))
    ex = FixedCostExecutor()
    engine = Engine(OrcaScheduler(OrcaParams(max_num_seqs=3), alloc), ex, max_model_len=30)
    engine.submit(Request(0, 0.0, 10, 3), 0.0)
    engine.step(0.0)
    for i in (1, 2, 3):
        engine.submit(Request(i, 1.0, 5000 if i == 3 else 8, 2), 1.0)
    engine.step(1.0)
    # Reservations are 30 slots each (max_model_len): 3 fit in 100, the cap is 3 anyway;
    # request 3 (too long for max_model_len) was rejected at arrival.
    assert ex.plans == [[(0, 10)], [(0, 1), (1, 8), (2, 8)]]
    assert engine.sequences[3].reason.startswith("prompt + output")


def test_orca_max_vs_paged_continuous_on_the_bundled_trace():
    common = dict(rate_scale=4.0, max_requests=600, num_gpu_blocks=2500)
    orca = simulate(resolve(ReplayOptions(scheduler="orca", allocator="contiguous", **common))).summary
    vllm = simulate(resolve(ReplayOptions(scheduler="continuous", allocator="paged", **common))).summary
    assert orca["requests_finished"] == vllm["requests_finished"] == 600
    assert vllm["output_throughput_tok_s"] > 2 * orca["output_throughput_tok_s"]
