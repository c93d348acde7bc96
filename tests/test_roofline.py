"""The roofline executor's terms behave as the hardware does."""

from __future__ import annotations

import pytest

from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import Coefficients
from sim.cost.memory import ImpossibleConfigError, kv_budget
from sim.cost.roofline import CostModel

IDEAL = Coefficients(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, provenance="ideal peaks")


def cost(model="llama-3-8b", hardware="h100", **kw) -> CostModel:
    return CostModel(get_model(model), get_hardware(hardware), kw.pop("coefficients", IDEAL), **kw)


def test_batch_one_decode_is_weight_streaming_and_memory_bound():
    c = cost()
    b = c.breakdown([1], [100])
    linear = b.groups[0]
    assert linear.memory_s > 50 * linear.compute_s
    m = get_model("llama-3-8b")
    # At ideal peaks the time is (every weight but the embedding table, which is only
    # gathered, + a little KV and activations) / bandwidth.
    streamed = m.weight_bytes() - m.vocab_size * m.hidden_size * 2
    assert b.time_s == pytest.approx(streamed / 3350e9, rel=0.02)
    assert b.arithmetic_intensity == pytest.approx(1.0, abs=0.1)


def test_prefill_turns_compute_bound_past_the_ridge_point():
    c = cost()
    short = c.breakdown([32], [0]).groups[0]
    long = c.breakdown([4096], [0]).groups[0]
    assert short.memory_s > short.compute_s
    assert long.compute_s > long.memory_s
    assert long.arithmetic_intensity > get_hardware("h100").ridge_point_flops_per_byte


def test_decode_batching_amortizes_weights():
    c = cost()
    one = c.decode_time([1000])
    many = c.decode_time([1000] * 64)
    assert many < 3 * one  # 64x the tokens for well under 3x the time
    assert many / 64 < one / 20


def test_attention_kv_read_grows_with_context_and_gqa_shrinks_it():
    llama2, llama3 = cost("llama-2-7b"), cost("llama-3-8b")
    short = llama2.breakdown([1] * 32, [100] * 32).groups[1].bytes
    long = llama2.breakdown([1] * 32, [4000] * 32).groups[1].bytes
    assert long / short == pytest.approx(4001 / 101, rel=1e-6)
    # Llama-3-8B has 8 KV heads against Llama-2-7B's 32: a quarter of the KV bytes.
    gqa = llama3.breakdown([1] * 32, [4000] * 32).groups[1].bytes
    assert gqa / long == pytest.approx(0.25, rel=1e-6)


def test_tensor_parallel_splits_work_and_adds_allreduce():
    one, four = cost("llama-2-70b", "a100"), cost("llama-2-70b", "a100", tp=4)
    b1, b4 = one.breakdown([512], [0]), four.breakdown([512], [0])
    assert b4.groups[0].flops == pytest.approx(b1.groups[0].flops / 4)
    assert b1.comm_s == 0 and b4.comm_s > 0
    assert four.prefill_time(512) < one.prefill_time(512)


def test_weight_quantization_speeds_up_memory_bound_decode():
    bf16 = cost().decode_time([500])
    int4 = cost(weight_dtype="int4").decode_time([500])
    assert int4 == pytest.approx(bf16 / 4, rel=0.1)


def test_moe_reads_more_experts_as_the_batch_grows():
    c = cost("mixtral-8x7b")
    one = c.breakdown([1], [100]).groups[0].bytes
    many = c.breakdown([1] * 64, [100] * 64).groups[0].bytes
    m = get_model("mixtral-8x7b")
    assert one < 0.4 * m.weight_bytes()
    assert many == pytest.approx(m.weight_bytes() - 2 * m.vocab_size * m.hidden_size * 2, rel=0.02)


def test_kv_budget_and_impossible_configs():
    budget = kv_budget(cost(coefficients=IDEAL), block_size=16, gpu_memory_utilization=0.9,
                       max_num_batched_tokens=8192, max_num_seqs=256)
    m = get_model("llama-3-8b")
    assert budget.kv_bytes_per_block == 16 * m.kv_bytes_per_token()
    assert budget.num_blocks == int(budget.kv_bytes_per_device // budget.kv_bytes_per_block)
    assert 20e9 < budget.kv_bytes_per_device < 60e9
    with pytest.raises(ImpossibleConfigError, match="raise --tp"):
        kv_budget(cost("llama-2-70b", "a100"), block_size=16, gpu_memory_utilization=0.9,
                  max_num_batched_tokens=4096, max_num_seqs=256)


def test_tp_must_divide_heads():
    with pytest.raises(ValueError, match="not divisible"):
        cost("qwen2-0.5b", tp=4)
