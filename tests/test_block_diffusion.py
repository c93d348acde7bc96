"""Block diffusion in the simulator: exact plans and token times of a lone request, the step
count every scheduler x allocator x preemption reaches, the threshold model, the summary keys,
the cost of a denoising step, and one-line errors for bad knobs."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from policies.decoding.block_diffusion import (BlockDiffusion, BlockDiffusionScheduler,
                                               DiffusionParams)
from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.types import Request, SeqStatus
from sim.api import simulate
from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.roofline import CostModel
from sim.decoding import DiffusionExecutor
from tests.helpers import FixedCostExecutor, drive
from traces import Trace


def _trace(*rows: tuple[float, int, int]) -> Trace:
    return Trace(name="t", requests=[Request(i, t, p, o) for i, (t, p, o) in enumerate(rows)],
                 invalid_rows=[], notes=[])


def _fixed_steps(output_tokens: int, block: int, steps: int) -> int:
    """Denoising steps of a request under `fixed`: ceil(size / (B / S)) per block."""
    per_step = block // steps
    sizes = [min(block, output_tokens - start) for start in range(0, output_tokens, block)]
    return sum(math.ceil(size / per_step) for size in sizes)


def test_lone_request_plans_and_bursts():
    """P = 10, O = 20, B = 8, S = 4: blocks 8, 8, 4 in 4, 4, 2 steps. Each block's first step
    also computes the finished block before it; its tokens appear together at its last step."""
    params = DiffusionParams("block-diffusion", 8, 4, "fixed")
    policy = BlockDiffusion(params)
    allocator = PagedAllocator(PagedParams(num_blocks=64, block_size=4))
    scheduler = BlockDiffusionScheduler(ContinuousScheduler(ContinuousParams(), allocator), policy)
    fixed = FixedCostExecutor(step_s=1.0)
    engine = Engine(scheduler, DiffusionExecutor(fixed, policy, seed=0), max_model_len=4096,
                    decoding=policy)
    drive(engine, [Request(0, 0.0, 10, 20)])
    assert [plan[0][1] for plan in fixed.plans] == [18, 8, 8, 8, 16, 8, 8, 8, 12, 4]
    seq = engine.sequences[0]
    assert seq.status is SeqStatus.FINISHED
    assert list(seq.token_times_s) == [4.0] * 8 + [8.0] * 8 + [10.0] * 4
    assert seq.num_diffusion_steps == 10
    assert allocator.usage().reserved_slots == 0
    # Only the prompt is prefill; every denoising step (and the blocks folded into the next
    # block's first step) is decoding, as the dashboard's iteration kinds show it.
    assert list(engine.log.prefill_tokens) == [10] + [0] * 9


def test_kv_grows_a_block_at_a_time():
    """A block's slots are allocated when it starts and held through its steps."""
    params = DiffusionParams("block-diffusion", 8, 2, "fixed")
    policy = BlockDiffusion(params)
    allocator = PagedAllocator(PagedParams(num_blocks=64, block_size=1))
    scheduler = BlockDiffusionScheduler(ContinuousScheduler(ContinuousParams(), allocator), policy)
    engine = Engine(scheduler, DiffusionExecutor(FixedCostExecutor(), policy, 0),
                    max_model_len=4096, decoding=policy)
    engine.submit(Request(0, 0.0, 5, 16), 0.0)
    reserved = []
    for step in range(4):
        engine.step(float(step))
        reserved.append(engine.log.kv_reserved_slots[-1])
    assert reserved == [13, 13, 21, 21]


@settings(max_examples=20, deadline=None)
@given(scheduler=st.sampled_from(["continuous", "chunked", "static", "orca"]),
       allocator=st.sampled_from(["paged", "paged-prefix", "radix", "contiguous"]),
       blocks=st.sampled_from([40, 400]), block=st.sampled_from([4, 8, 16]),
       steps_per_block=st.sampled_from([1, 2, 4]), preemption=st.sampled_from(["recompute", "swap"]),
       commit=st.sampled_from(["fixed", "threshold:0.6"]))
def test_every_policy_finishes_every_request_in_the_rule_s_steps(
        scheduler, allocator, blocks, block, steps_per_block, preemption, commit):
    """Whatever schedules and preempts, each request emits exactly its outputs, in exactly
    the fixed rule's steps (threshold: one to S per block), and the pool ends empty."""
    options = ReplayOptions(
        trace="synthetic:n=12,arrivals=poisson:50,prompt=uniform:4:40,output=uniform:1:40",
        model="tiny-diffusion", hardware="cpu", scheduler=scheduler, allocator=allocator,
        num_gpu_blocks=blocks, block_size=4, token_budget=24, max_num_batched_tokens=64,
        decoding="block-diffusion", diffusion_block=block, diffusion_steps=steps_per_block,
        diffusion_commit=commit, preemption=preemption,
        reserve="pow2", seed=1)
    results = simulate(resolve(options))
    engine = results.engines[0]
    assert results.summary["requests_finished"] == 12
    for seq in engine.sequences.values():
        assert seq.num_output_tokens == seq.request.output_tokens
        num_blocks = -(-seq.request.output_tokens // block)
        if commit == "fixed":
            assert seq.num_diffusion_steps == _fixed_steps(seq.request.output_tokens, block,
                                                           steps_per_block)
        else:
            assert num_blocks <= seq.num_diffusion_steps <= num_blocks * steps_per_block
    assert results.summary["diffusion_steps_total"] == sum(
        s.num_diffusion_steps for s in engine.sequences.values())
    assert engine.scheduler.allocator.usage().reserved_slots == 0


def test_a_small_pool_preempts_and_still_finishes():
    options = ReplayOptions(
        trace="synthetic:n=12,arrivals=poisson:50,prompt=uniform:4:40,output=uniform:20:40",
        model="tiny-diffusion", hardware="cpu", num_gpu_blocks=30, block_size=4,
        decoding="block-diffusion", diffusion_block=8, diffusion_steps=4, seed=1)
    results = simulate(resolve(options))
    assert results.summary["preemptions"] > 0
    assert results.summary["requests_finished"] == 12


def test_summary_keys_and_tokens_per_step():
    trace = _trace((0.0, 20, 64), (0.0, 30, 64))
    options = ReplayOptions(model="tiny-diffusion", hardware="cpu", decoding="block-diffusion",
                            diffusion_block=16, diffusion_steps=4)
    summary = simulate(resolve(options, trace)).summary
    assert summary["diffusion_steps_total"] == 2 * 16
    assert summary["tokens_per_step_mean"] == 4.0
    plain = simulate(resolve(ReplayOptions(model="tiny-diffusion", hardware="cpu"), trace))
    assert "diffusion_steps_total" not in plain.summary


@pytest.mark.parametrize("threshold,steps,expected", [
    (1.0, 64, 64), (1.0, 4, 16), (1e-9, 4, 4)])
def test_threshold_extremes(threshold, steps, expected):
    """T = 1: no position clears it, one commits per step until the S-th step commits the
    rest; T -> 0: a block per step."""
    options = ReplayOptions(model="tiny-diffusion", hardware="cpu", decoding="block-diffusion",
                            diffusion_block=16, diffusion_steps=steps,
                            diffusion_commit=f"threshold:{threshold}")
    summary = simulate(resolve(options, _trace((0.0, 20, 64)))).summary
    assert summary["diffusion_steps_total"] == expected


def test_threshold_draws_are_seeded_and_in_between():
    def steps(seed: int) -> int:
        options = ReplayOptions(model="tiny-diffusion", hardware="cpu", seed=seed,
                                decoding="block-diffusion", diffusion_block=32,
                                diffusion_steps=32, diffusion_commit="threshold:0.7")
        return simulate(resolve(options, _trace((0.0, 20, 256), (0.0, 10, 256)))).summary[
            "diffusion_steps_total"]

    assert steps(0) == steps(0)
    # Each masked position clears 0.7 with probability 0.3: far fewer steps than one per
    # position, far more than one per block.
    assert 2 * 8 < steps(0) < 2 * 256 / 2


def test_a_denoising_step_is_compute_bound_long_before_a_decode():
    """The same context: a block of 32 query tokens costs far more FLOPs than one decode but
    reads about the same bytes, so its intensity is ~32 times higher."""
    cost = CostModel(get_model("llama-3-8b"), get_hardware("h100"), default_coefficients("h100"))
    decode = cost.breakdown([1] * 8, [2000] * 8)
    block = cost.breakdown([32] * 8, [2000] * 8, 8 * 32)
    assert block.flops > 30 * decode.flops
    assert block.bytes < 1.5 * decode.bytes
    assert block.time_s < 4 * decode.time_s  # 32x the tokens for a few times the time


def test_block_diffusion_speeds_up_a_lone_request_on_h100():
    """At batch 1 a decode is memory-bound: 4 positions per step cut the output time."""
    trace = _trace((0.0, 512, 256))
    base = dict(model="llama-3-8b", hardware="h100", cost_model="roofline")
    ar = simulate(resolve(ReplayOptions(**base), trace)).summary
    bd = simulate(resolve(ReplayOptions(**base, decoding="block-diffusion", diffusion_block=32,
                                        diffusion_steps=8), trace)).summary
    assert bd["e2e_mean_s"] < 0.5 * ar["e2e_mean_s"]


def test_diffusion_knobs_without_block_diffusion_are_an_error():
    with pytest.raises(ValueError,
                       match="--diffusion-steps applies only to --decoding block-diffusion"):
        resolve(ReplayOptions(model="tiny-diffusion", hardware="cpu", diffusion_steps=4),
                _trace((0.0, 5, 5)))


@pytest.mark.parametrize("options,message", [
    ({"diffusion_block": 30, "diffusion_steps": 8}, "not divisible"),
    ({"diffusion_commit": "threshold:0"}, "0 < T <= 1"),
    ({"diffusion_commit": "threshold:1.5"}, "0 < T <= 1"),
    ({"diffusion_commit": "threshold:high"}, "0 < T <= 1"),
    ({"diffusion_commit": "greedy"}, "fixed or threshold"),
    ({"speculator": "ngram"}, "does not combine with --speculator ngram"),
    ({"n": 2}, "does not combine with --n"),
    ({"allocator": "contiguous", "reserve": "oracle"}, "--reserve oracle"),
    ({"diffusion_block": 8192, "diffusion_steps": 1}, "exceeds --max-num-batched-tokens"),
    ({"scheduler": "chunked", "token_budget": 16}, "exceeds --token-budget 16"),
])
def test_bad_knobs_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        resolve(ReplayOptions(model="tiny-diffusion", hardware="cpu",
                              decoding="block-diffusion", **options), _trace((0.0, 5, 5)))


def test_replay_options_default_to_the_policy_defaults():
    """The knobs are declared once on `DiffusionParams`; the options mirror them."""
    options, params = ReplayOptions(), DiffusionParams()
    for name in ("decoding", "diffusion_block", "diffusion_steps", "diffusion_commit"):
        assert getattr(options, name) == getattr(params, name)


def test_bad_values_from_the_cli(capsys):
    assert main(["replay", "--decoding", "diffusion", "--quiet"]) == 2
    assert "unknown decoding 'diffusion'" in capsys.readouterr().err
    assert main(["replay", "--decoding", "block-diffusion", "--diffusion-block", "0"]) == 2
    assert "diffusion_block" in capsys.readouterr().err


def test_replay_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = capsys.readouterr().out
    for flag in ("--decoding", "--diffusion-block", "--diffusion-steps", "--diffusion-commit"):
        assert flag in out
    assert main(["list", "decodings"]) == 0
    listed = capsys.readouterr().out
    assert "block-diffusion" in listed and "ar" in listed.split()


def test_roofline_view_puts_denoising_between_decode_and_prefill(capsys):
    from sim.cost.intensity import intensity_curve, intensity_table

    cost = CostModel(get_model("llama-3-8b"), get_hardware("h100"), default_coefficients("h100"))
    rows = {(r.phase, r.group): r for r in intensity_table(cost, 8, 2048, 0, 32)}
    decode, denoise = rows[("decode", "linear")], rows[("denoise", "linear")]
    assert denoise.intensity_flops_per_byte > 25 * decode.intensity_flops_per_byte
    assert denoise.intensity_flops_per_byte < rows[("prefill", "linear")].intensity_flops_per_byte
    curve = intensity_curve(cost, 2048, 0, 32)
    denoise_curve = [r for r in curve if r.phase == "denoise"]
    assert [r.num_seqs for r in denoise_curve] == [r.num_seqs for r in curve
                                                   if r.phase == "decode"]
    # Compute-bound at a batch 1/32 of where decode turns: decode is memory-bound throughout.
    assert all(r.memory_bound for r in curve if r.phase == "decode")
    assert any(not r.memory_bound for r in denoise_curve)
    assert main(["roofline", "--model", "llama-3-8b", "--hardware", "h100", "--batch", "8",
                 "--diffusion-block", "16"]) == 0
    assert "denoise" in capsys.readouterr().out
    assert main(["roofline", "--model", "llama-3-8b", "--hardware", "h100", "--batch", "8",
                 "--diffusion-block", "-1"]) == 2
