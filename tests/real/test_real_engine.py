"""Policies on real tensors: greedy outputs are token-identical to a no-cache full-recompute
loop under every allocator, scheduler and forced preemption, and the scheduler's decisions
match the simulator's on the same trace and arrival order."""

from __future__ import annotations

import pytest
import torch

from backend.model import LlamaModel, init_random
from backend.recompute import generate_recompute
from backend.replay import replay_real
from backend.runner import seeded_prompt
from sim.api import simulate
from sim.config import resolve
from tests.real.tiny_llama import tiny_options





def _run(**overrides):
    results, outputs = replay_real(resolve(tiny_options(**overrides)))
    return results, outputs


@pytest.mark.parametrize("overrides,min_preemptions", [
    ({}, 0),
    ({"allocator": "contiguous", "reserve": "oracle"}, 0),
    ({"allocator": "contiguous", "reserve": "max", "max_model_len": 128, "num_gpu_blocks": 80}, 0),
    ({"scheduler": "static", "max_num_seqs": 4}, 0),
    ({"num_gpu_blocks": 22}, 1),                                    # recompute preemption
    ({"scheduler": "static", "num_gpu_blocks": 22}, 1),
    ({"allocator": "contiguous", "reserve": "oracle", "num_gpu_blocks": 22}, 0),
    ({"max_num_batched_tokens": 40, "max_num_seqs": 2}, 0),
    ({"scheduler": "chunked", "token_budget": 24}, 0),              # Sarathi chunked prefill
    ({"scheduler": "chunked", "token_budget": 16, "num_gpu_blocks": 22}, 1),
    ({"scheduler": "orca", "max_num_seqs": 3}, 0),
])
def test_greedy_outputs_equal_the_recompute_loop(reference_outputs, overrides, min_preemptions):
    results, outputs = _run(**overrides)
    assert results.summary["requests_finished"] == len(reference_outputs)
    assert results.summary["preemptions"] >= min_preemptions
    assert outputs == reference_outputs


def test_small_pool_really_preempts():
    results, _ = _run(num_gpu_blocks=22)
    assert results.summary["preemptions"] >= 2


@pytest.mark.parametrize("overrides", [
    {"num_gpu_blocks": 22},
    {"scheduler": "chunked", "token_budget": 16, "num_gpu_blocks": 22},
    {"scheduler": "static", "num_gpu_blocks": 22, "max_num_seqs": 3},
    {"allocator": "contiguous", "reserve": "pow2", "num_gpu_blocks": 40},
])
def test_scheduler_decisions_match_the_simulator(overrides):
    """Same trace, all arriving at 0 in trace order: per-iteration batch sizes, token counts,
    queue lengths, KV occupancy and per-request preemptions are identical."""
    real, _ = _run(**overrides)
    sim = simulate(resolve(tiny_options(executor="sim", **overrides)))
    for column in ("batch_size", "new_tokens", "prefill_tokens", "num_waiting",
                   "kv_reserved_slots", "kv_filled_slots"):
        assert list(getattr(real.engine.log, column)) == list(getattr(sim.engine.log, column))
    preempted = {i: s.num_preemptions for i, s in real.engine.sequences.items()}
    assert preempted == {i: s.num_preemptions for i, s in sim.engine.sequences.items()}
    assert real.summary["iterations"] == sim.summary["iterations"] > 0


def test_sampling_is_seeded_per_request_and_independent_of_the_schedule():
    _, roomy = _run(temperature=0.8, top_k=50, top_p=0.9)
    _, tight = _run(temperature=0.8, top_k=50, top_p=0.9, num_gpu_blocks=22,
                    scheduler="static")
    _, other_seed = _run(temperature=0.8, top_k=50, top_p=0.9, seed=4)
    assert roomy == tight
    assert roomy != other_seed


def test_trace_pacing_submits_requests_at_their_arrival_times():
    trace = "synthetic:n=3,arrivals=poisson:20,prompt=fixed:8,output=fixed:4"
    results, _ = _run(trace=trace, pace="trace")
    for seq in results.engine.sequences.values():
        assert seq.first_scheduled_s >= seq.request.arrival_time_s
    assert max(s.request.arrival_time_s for s in results.engine.sequences.values()) > 0


def test_prompt_ids_the_model_cannot_read_are_named():
    from backend.kv_cache import KVCache
    from backend.runner import RealExecutor
    from policies.kv.paged import PagedAllocator, PagedParams
    from policies.types import Request

    spec = resolve(tiny_options()).model
    kv = KVCache(num_layers=spec.num_layers, num_blocks=2, block_size=4,
                 num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                 dtype=torch.float32, device="cpu")
    executor = RealExecutor(LlamaModel(spec), kv,
                            PagedAllocator(PagedParams(block_size=4, num_blocks=2)))
    assert executor.prompt_problem(Request(0, 0.0, 2, 1, prompt_token_ids=(5, 9))) is None
    assert executor.prompt_problem(Request(0, 0.0, 2, 1)) is None
    assert "outside the vocabulary of 512" in executor.prompt_problem(
        Request(0, 0.0, 2, 1, prompt_token_ids=(5, 512)))
    assert "3 prompt token ids for a 2-token prompt" in executor.prompt_problem(
        Request(0, 0.0, 2, 1, prompt_token_ids=(5, 6, 7)))


def _shared_prefix_trace():
    """Mooncake-style rows: requests 0-3 share their first two 16-token trace blocks."""
    from policies.types import Request
    from traces.trace import Trace

    rows = [(40, 6, (1, 2, 3)), (35, 8, (1, 2, 4)), (48, 5, (1, 2, 5)), (33, 7, (1, 2, 6)),
            (20, 4, (9, 10))]
    return Trace("shared", [Request(i, 0.0, p, o, prefix_block_hashes=h, prefix_block_tokens=16)
                            for i, (p, o, h) in enumerate(rows)])


def test_prefix_caching_computes_fewer_tokens_with_identical_outputs():
    trace = _shared_prefix_trace()
    runs = {}
    for allocator in ("paged", "paged-prefix"):
        config = resolve(tiny_options(allocator=allocator, block_size=16, max_num_seqs=1), trace)
        runs[allocator] = replay_real(config)
    (plain, plain_out), (cached, cached_out) = runs["paged"], runs["paged-prefix"]
    assert cached_out == plain_out
    # Requests 1-3 each find the two shared 16-token blocks cached.
    assert sum(plain.engine.log.new_tokens) - sum(cached.engine.log.new_tokens) == 3 * 32
    model = init_random(LlamaModel(resolve(tiny_options()).model), seed=3).eval()
    for request in trace.requests:
        prompt = seeded_prompt(request, 512, 3)
        assert cached_out[request.request_id] == generate_recompute(model, prompt,
                                                                    request.output_tokens)


def test_swap_preemption_keeps_outputs_and_matches_the_simulator(reference_outputs):
    options = {"preemption": "swap", "num_gpu_blocks": 22}
    results, outputs = _run(**options)
    assert sum(s.num_swaps for s in results.engine.sequences.values()) >= 1
    assert outputs == reference_outputs
    sim = simulate(resolve(tiny_options(executor="sim", **options)))
    assert list(results.engine.log.new_tokens) == list(sim.engine.log.new_tokens)
    assert ({i: s.num_swaps for i, s in results.engine.sequences.items()}
            == {i: s.num_swaps for i, s in sim.engine.sequences.items()})


def test_chunked_scheduler_really_splits_prompts():
    results, _ = _run(scheduler="chunked", token_budget=16)
    assert max(results.engine.log.new_tokens) <= 16
    assert results.summary["requests_finished"] == 6
