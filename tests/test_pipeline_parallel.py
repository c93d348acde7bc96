"""Pipeline parallelism in the cost model: stages, micro-batches, the bubble, memory."""

from __future__ import annotations

import pytest

from sim.api import simulate
from sim.config import ReplayOptions, resolve
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.memory import ImpossibleConfigError, kv_budget
from sim.cost.roofline import CostModel


def cost(pp: int, tp: int = 1, model: str = "llama-3-8b", hardware: str = "h100") -> CostModel:
    return CostModel(get_model(model), get_hardware(hardware), default_coefficients(hardware),
                     tp=tp, pp=pp)


def test_pipelined_iteration_is_micro_batches_plus_the_bubble():
    one, two = cost(1), cost(2)
    c = one.coefficients
    micro = one.breakdown([1], [500])  # each of the 2 micro-batches holds one decode
    h100 = get_hardware("h100")
    send_s = 4096 * 2 / h100.interconnect_bandwidth_bytes_s + h100.interconnect_latency_s
    stage_s = (micro.time_s - micro.overhead_s) / 2 + send_s
    overhead_s = c.iteration_overhead_s + 2 * c.per_sequence_overhead_s
    assert two.iteration_time([1, 1], [500, 500]) == pytest.approx(3 * stage_s + overhead_s, rel=1e-12)
    assert one.iteration_time([1, 1], [500, 500]) < two.iteration_time([1, 1], [500, 500])


def test_pipeline_stages_split_the_weights_and_pool_the_kv():
    def budget(**kw):
        return kv_budget(cost(**kw, model="llama-2-70b", hardware="a100"), block_size=16,
                         gpu_memory_utilization=0.9, max_num_batched_tokens=4096, max_num_seqs=256)
    with pytest.raises(ImpossibleConfigError, match="--pp"):
        budget(pp=1)
    two, four = budget(pp=2), budget(pp=4)
    assert two.weights_bytes_per_device == pytest.approx(get_model("llama-2-70b").weight_bytes() / 2)
    assert four.num_blocks > 2 * two.num_blocks


def test_pp_degree_is_validated():
    with pytest.raises(ValueError, match="pipeline parallel degree"):
        cost(pp=33)


def test_replay_with_tp_and_pp():
    s = simulate(resolve(ReplayOptions(model="llama-3-70b", hardware="a100", tp=2, pp=2,
                                       max_requests=100))).summary
    assert s["requests_finished"] == 100
