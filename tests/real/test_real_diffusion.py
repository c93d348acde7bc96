"""Block diffusion on real tensors: KV-cached denoising gives exactly the tokens of a
full-recompute reference under every scheduler, allocator and preemption, and the real engine
takes the same denoising steps per request as the simulator on the same trace."""

from __future__ import annotations

import pytest
import torch

from backend.model import LlamaModel, init_random
from backend.recompute import block_diffusion_recompute
from backend.replay import replay_real
from backend.runner import seeded_prompt
from policies.decoding.block_diffusion import BlockDiffusion
from sim.api import simulate
from sim.config import diffusion_params, resolve
from tests.real.tiny_llama import tiny_options


def _options(**overrides):
    base = dict(model="tiny-diffusion", decoding="block-diffusion", diffusion_block=8,
                diffusion_steps=4)
    return tiny_options(**{**base, **overrides})


def _reference(options) -> dict[int, tuple[list[int], int]]:
    """Every request's outputs and denoising steps, recomputing the whole sequence per step."""
    torch.set_num_threads(1)
    config = resolve(options)
    model = init_random(LlamaModel(config.model), seed=options.seed).eval()
    policy = BlockDiffusion(diffusion_params(options))
    mask = config.model.mask_token_id
    references = {}
    for request in config.trace.requests:
        prompt = [(t + 1) % config.model.vocab_size if t == mask else t
                  for t in seeded_prompt(request, config.model.vocab_size, options.seed)]
        references[request.request_id] = block_diffusion_recompute(
            model, prompt, request.output_tokens, policy)
    return references


@pytest.fixture(scope="module")
def reference():
    return _reference(_options())


@pytest.mark.parametrize("overrides,min_preemptions", [
    ({}, 0),
    ({"scheduler": "chunked", "token_budget": 16}, 0),
    ({"scheduler": "chunked", "token_budget": 16, "num_gpu_blocks": 22}, 1),
    ({"num_gpu_blocks": 22}, 1),                                     # recompute preemption
    ({"num_gpu_blocks": 22, "preemption": "swap"}, 1),
    ({"allocator": "paged-prefix", "num_gpu_blocks": 22}, 1),
    ({"allocator": "contiguous", "reserve": "pow2", "num_gpu_blocks": 40}, 0),
    ({"scheduler": "static", "max_num_seqs": 3}, 0),
    ({"scheduler": "orca", "max_num_seqs": 3}, 0),
])
def test_kv_cached_block_diffusion_equals_full_recompute(reference, overrides, min_preemptions):
    results, outputs = replay_real(resolve(_options(**overrides)))
    assert results.summary["requests_finished"] == len(reference)
    assert results.summary["preemptions"] >= min_preemptions
    assert outputs == {i: tokens for i, (tokens, _) in reference.items()}
    steps = {i: s.num_diffusion_steps for i, s in results.engine.sequences.items()}
    assert steps == {i: num_steps for i, (_, num_steps) in reference.items()}


def test_threshold_commits_equal_full_recompute():
    options = _options(diffusion_commit="threshold:0.3")
    reference = _reference(options)
    results, outputs = replay_real(resolve(options))
    assert outputs == {i: tokens for i, (tokens, _) in reference.items()}
    steps = [s.num_diffusion_steps for s in results.engine.sequences.values()]
    # Confidence decides: some steps commit several positions, some only one.
    assert sum(r.output_tokens for r in results.config.trace.requests) > sum(steps) > sum(
        -(-r.output_tokens // 8) for r in results.config.trace.requests)


@pytest.mark.parametrize("overrides", [
    {},
    {"scheduler": "chunked", "token_budget": 16, "num_gpu_blocks": 22},
    {"scheduler": "static", "num_gpu_blocks": 22, "max_num_seqs": 3},
])
def test_real_and_simulated_engines_take_the_same_steps(overrides):
    """Same trace, all at 0 in trace order: per-request denoising steps, per-iteration batch
    and token counts, and both summary keys agree."""
    real, _ = replay_real(resolve(_options(**overrides)))
    sim = simulate(resolve(_options(executor="sim", **overrides)))
    for column in ("batch_size", "new_tokens", "prefill_tokens", "num_waiting", "kv_reserved_slots",
                   "kv_filled_slots"):
        assert list(getattr(real.engine.log, column)) == list(getattr(sim.engine.log, column))
    assert ({i: s.num_diffusion_steps for i, s in real.engine.sequences.items()}
            == {i: s.num_diffusion_steps for i, s in sim.engine.sequences.items()})
    for key in ("diffusion_steps_total", "tokens_per_step_mean"):
        assert real.summary[key] == sim.summary[key] > 0


@pytest.mark.parametrize("overrides,message", [
    ({"model": "tiny-llama"}, "needs a model with a mask token"),
    ({"temperature": 0.7}, "greedy"),
])
def test_real_backend_refusals(overrides, message):
    with pytest.raises(ValueError, match=message):
        replay_real(resolve(_options(**overrides)))


def test_autoregressive_decoding_of_tiny_diffusion_is_unchanged():
    """Without --decoding block-diffusion the mask token is an ordinary id: AR runs as on any
    Llama-shaped model."""
    results, outputs = replay_real(resolve(tiny_options(model="tiny-diffusion")))
    assert results.summary["requests_finished"] == 6
    assert "diffusion_steps_total" not in results.summary
    assert all(len(outputs[r.request_id]) == r.output_tokens
               for r in results.config.trace.requests)
