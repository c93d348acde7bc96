"""Speculation with a separate draft model on real tensors (`--speculator draft --draft-model
tiny-llama-draft`): the draft runs on a KV pool of its own, addressed by the target's block
tables. Greedy outputs equal no speculation whatever the draft proposes; a draft that is the
target's own weights on that separate pool is always accepted (so its KV is right under
preemption, swap, forks and prefix caching); rejection sampling keeps the target's
distribution; measured acceptance is written for the simulator."""

from __future__ import annotations

import json

import pytest

from backend.drafting import layer_subset
from backend.replay import replay_real
from sim.cli import main
from sim.config import resolve
from sim.speculation.acceptance import parse_acceptance
from tests.real.tiny_llama import assert_speculation_keeps_distribution, tiny_options

DRAFT = {"speculator": "draft", "draft_model": "tiny-llama-draft"}
SCHEDULES = [
    {},
    {"spec_k": 2, "num_gpu_blocks": 22},                             # recompute preemption
    {"preemption": "swap", "num_gpu_blocks": 22},
    {"scheduler": "chunked", "token_budget": 16},
    {"allocator": "contiguous", "reserve": "oracle"},
    {"allocator": "paged-prefix", "block_size": 16},
    {"n": 2, "num_gpu_blocks": 128},                                 # forked samples
]


def _samples_agree(results, outputs) -> bool:
    """With `--n` 2 under greedy both samples are the answer: the second must match too."""
    executor = results.engines[0].executor
    return all(executor.sample_output_ids(r)[-1] == outputs[r.request_id]
               for r in results.config.trace.requests)


@pytest.mark.parametrize("overrides", SCHEDULES)
def test_a_separate_random_draft_keeps_greedy_outputs(reference_outputs, overrides):
    results, outputs = replay_real(resolve(tiny_options(**DRAFT, **overrides)))
    assert outputs == reference_outputs
    assert _samples_agree(results, outputs)
    assert results.summary["spec_verifies"] > 0
    # Random weights against random weights: almost nothing is accepted, which changes only
    # how many tokens a step emits.
    assert results.summary["spec_acceptance_rate"] < 0.05


@pytest.mark.parametrize("overrides", SCHEDULES)
def test_the_targets_weights_on_a_separate_pool_are_always_accepted(reference_outputs,
                                                                     overrides):
    """The draft is the target model on the draft's own KV pool: every greedy draft must be
    the target's token, which holds only if that pool holds the right K/V at every step
    (lazy prefill, the bonus token's predecessor, preemption, swap, forks, shared blocks)."""
    results, outputs = replay_real(resolve(tiny_options(**DRAFT, **overrides)),
                                   draft_for=lambda target: target)
    assert outputs == reference_outputs
    assert _samples_agree(results, outputs)
    assert results.summary["spec_acceptance_rate"] == 1.0
    min_preemptions = 1 if overrides.get("num_gpu_blocks") == 22 else 0
    assert results.summary["preemptions"] >= min_preemptions


def test_a_layer_subset_draft_accepts_some_and_keeps_outputs(reference_outputs):
    results, outputs = replay_real(resolve(tiny_options(**DRAFT)),
                                   draft_for=lambda target: layer_subset(target, [0]))
    assert outputs == reference_outputs
    assert 0.05 < results.summary["spec_acceptance_rate"] < 1
    assert results.summary["spec_tokens_per_step_mean"] > 1.2


def test_layer_subset_shares_the_targets_weights():
    from backend.model import LlamaModel, init_random

    target = init_random(LlamaModel(resolve(tiny_options()).model), seed=3)
    draft = layer_subset(target, [1])
    assert draft.spec.num_layers == 1 and len(draft.layers) == 1
    assert draft.layers[0] is target.layers[1] and draft.lm_head is target.lm_head
    assert draft.embed_tokens is target.embed_tokens and draft.norm is target.norm
    assert {p.device.type for p in draft.parameters()} == {"cpu"}  # none left unallocated


def test_rejection_sampling_with_a_separate_draft_keeps_the_target_distribution():
    """As for the self-draft (test_real_speculation.py): 2 x 300 samples of one prompt at
    temperature 0.7, top-k 4; the first two tokens' joint distribution under the separate
    draft (its own KV, proposals drawn from its own q) equals plain sampling."""
    assert_speculation_keeps_distribution(DRAFT, lambda target: layer_subset(target, [0]))


def test_the_separate_drafts_acceptance_is_written_for_the_simulator(tmp_path):
    trace = "synthetic:n=4,arrivals=poisson:100,prompt=fixed:20,output=fixed:30"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--speculator", "draft", "--draft-model", "tiny-llama-draft",
                 "--spec-k", "3", "--num-gpu-blocks", "64", "--out", str(tmp_path)]) == 0
    path = tmp_path / "acceptance.txt"
    lines = path.read_text().splitlines()
    assert "--speculator draft on tiny-llama" in lines[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    counts = [int(line) for line in lines if not line.startswith("#")]
    assert len(counts) == summary["spec_verifies"] > 0
    # Each verify emits its accepted drafts + 1 of the 29 tokens after each prefill.
    assert len(counts) + sum(counts) <= 4 * 29
    assert parse_acceptance(str(path)).expected_tokens_per_step(3) == pytest.approx(
        summary["spec_tokens_per_step_mean"])


def test_the_simulator_prices_the_separate_draft():
    from sim.api import simulate

    options = tiny_options(executor="sim", **DRAFT)
    summary = simulate(resolve(options)).summary
    assert summary["requests_finished"] == 6 and summary["spec_verifies"] > 0


def test_the_cpu_clock_runs_the_same_engine_as_the_wall_clock(reference_outputs):
    """`servesim validate --clock cpu` replays through `replay_real` too: the same separate
    draft model and outputs, with every step timed on this thread's CPU clock."""
    from backend.clocks import TimedExecutor
    from backend.drafting import DraftModelDrafter

    results, outputs = replay_real(resolve(tiny_options(**DRAFT)), clock="cpu")
    executor = results.engines[0].executor
    assert isinstance(executor, TimedExecutor) and isinstance(executor.inner.drafter,
                                                              DraftModelDrafter)
    assert outputs == reference_outputs
    assert results.summary["spec_verifies"] > 0
