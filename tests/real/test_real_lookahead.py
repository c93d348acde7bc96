"""Lookahead decoding in the paged real runner (`--executor real --speculator lookahead`):
greedy outputs token-identical to no speculation on tiny-llama (under preemption by
recompute and swap, chunked prefill and prefix caching) and SmolLM2-135M, the accepted
drafts' K/V copied where later steps read them, and acceptance reported as the other
speculators report it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from backend.gguf_weights import INSTALL_HINT, find_gguf
from backend.kv_cache import KVCache
from backend.lookahead import pass_outputs
from backend.replay import replay_real
from policies.speculative.jacobi import LookaheadState
from policies.types import Request
from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.speculation.acceptance import parse_acceptance
from tests.real.tiny_llama import tiny_options
from traces.trace import Trace

# A small window on the random tiny-llama: its pool does match (about 1.1 tokens per step).
LOOKAHEAD = {"speculator": "lookahead", "lookahead_window": 3, "lookahead_ngram": 3,
             "lookahead_guesses": 2}


@pytest.mark.parametrize("overrides", [
    LOOKAHEAD,
    {"speculator": "lookahead"},                                        # W 5, N 4, G 5
    dict(LOOKAHEAD, num_gpu_blocks=22),                                 # recompute preemption
    dict(LOOKAHEAD, preemption="swap", num_gpu_blocks=22),
    dict(LOOKAHEAD, scheduler="chunked", token_budget=16),
    dict(LOOKAHEAD, spec_dynamic=True, spec_k=1),
    dict(LOOKAHEAD, allocator="contiguous", reserve="oracle"),
])
def test_greedy_lookahead_keeps_outputs_token_identical(reference_outputs, overrides):
    results, outputs = replay_real(resolve(tiny_options(**overrides)))
    assert outputs == reference_outputs
    s = results.summary
    assert s["requests_finished"] == len(reference_outputs)
    assert s["spec_verifies"] > 0
    if overrides.get("num_gpu_blocks"):
        assert s["preemptions"] > 0


def test_accepted_drafts_kv_must_be_copied_after_x(reference_outputs, monkeypatch):
    """Drafts are accepted on tiny-llama, and only copying their K/V from the candidate's
    slots keeps later tokens right: without the copy, outputs change."""
    results, outputs = replay_real(resolve(tiny_options(**LOOKAHEAD)))
    assert outputs == reference_outputs
    assert results.summary["spec_tokens_per_step_mean"] > 1.0
    monkeypatch.setattr(KVCache, "copy_scattered_slots", lambda self, sources, targets: None)
    _, uncopied = replay_real(resolve(tiny_options(**LOOKAHEAD)))
    assert uncopied != reference_outputs


def test_paged_passes_accept_what_the_recompute_reference_accepts():
    """The same window and pool, stepped by the no-KV-reuse reference on the same weights,
    accept the same drafts step by step until the planner narrows the last passes (a pass
    of (W + G) k nodes needs k = N - 1 <= (remaining outputs - 1) / (W + G))."""
    prompt = (3, 17, 4, 17, 4, 17, 4, 9, 12)
    num_outputs, window, ngram, guesses = 40, 3, 3, 2
    trace = Trace("one", [Request(0, 0.0, len(prompt), num_outputs, prompt_token_ids=prompt)])
    results, outputs = replay_real(resolve(tiny_options(**LOOKAHEAD), trace))
    executor = results.engines[0].executor
    state = LookaheadState(list(prompt), window, ngram, guesses)
    tokens = list(prompt) + outputs[0][:1]  # the prefill's token
    expected = []
    while num_outputs - (len(tokens) - len(prompt)) - 1 >= (window + guesses) * (ngram - 1):
        step = state.layout(tokens[-1], ngram - 1)
        committed = state.commit(step, pass_outputs(executor.model, tokens[:-1], step))
        tokens += committed
        expected.append(len(committed) - 1)
    assert sum(expected) > 0
    assert executor.accepted_counts[:len(expected)] == expected
    assert tokens[len(prompt):] == outputs[0][:len(tokens) - len(prompt)]


def test_lookahead_over_cached_prefixes_keeps_outputs():
    """Requests sharing 16-token prompt blocks under prefix caching: the pass's scratch K/V
    lie past the cached blocks, so outputs equal plain decoding without a cache."""
    trace = Trace("shared", [
        Request(i, 0.0, p, o, prefix_block_hashes=h, prefix_block_tokens=16)
        for i, (p, o, h) in enumerate([(40, 12, (1, 2, 3)), (35, 19, (1, 2, 4)),
                                       (20, 21, (1, 2)), (33, 10, (9, 10))])])
    _, plain = replay_real(resolve(tiny_options(allocator="paged", block_size=16), trace))
    cached, spec = replay_real(resolve(tiny_options(allocator="paged-prefix", block_size=16,
                                                    **LOOKAHEAD), trace))
    assert spec == plain
    assert cached.summary["spec_verifies"] > 0
    assert cached.summary["prefix_hit_rate"] > 0


def test_acceptance_is_written_as_the_other_speculators_write_it(tmp_path):
    trace = "synthetic:n=4,arrivals=poisson:100,prompt=fixed:20,output=fixed:30"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--speculator", "lookahead", "--lookahead-window", "3",
                 "--lookahead-ngram", "3", "--lookahead-guesses", "2", "--num-gpu-blocks", "64",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    # N - 1 = 2 draft positions, as many keys
    assert "spec_acceptance_rate_pos2" in summary and "spec_acceptance_rate_pos3" not in summary
    path = tmp_path / "acceptance.txt"
    counts = [int(line) for line in path.read_text().splitlines() if not line.startswith("#")]
    assert len(counts) == summary["spec_verifies"] and max(counts) <= 2
    assert 1 + sum(counts) / len(counts) == pytest.approx(summary["spec_tokens_per_step_mean"])
    recorded = parse_acceptance(str(path))
    assert recorded.expected_tokens_per_step(2) == pytest.approx(
        summary["spec_tokens_per_step_mean"])
    rates = path.read_text().splitlines()[1].split("--spec-acceptance ")[1]
    measured = [summary[f"spec_acceptance_rate_pos{i}"] for i in (1, 2)]
    assert [float(r) for r in rates.split(",")] == pytest.approx(
        [m for m in measured if m is not None], abs=1e-4)


@pytest.mark.parametrize("argv,message", [
    (["--temperature", "0.7"], "lookahead on the real backend accepts the target's greedy"),
    (["--spec-k", "2"], "--spec-k 2 does not apply to --speculator lookahead"),
])
def test_what_real_lookahead_cannot_run_is_a_clear_error(argv, message, capsys):
    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:4"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--speculator", "lookahead", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


NUM_SQUEEZED_BLOCKS = 8
"""128 KV slots for two SmolLM2 answers of 83 and 77 tokens: one must be preempted."""


@pytest.mark.slow
@pytest.mark.skipif(find_gguf() is None, reason=f"SmolLM2 weights not installed ({INSTALL_HINT})")
def test_smollm2_lookahead_equals_plain_greedy_in_fewer_steps():
    """A counting answer repeats '<n>. <n>' lines the pool catches; under preemption and
    chunked prefill too, outputs equal plain greedy decoding (about 40 s on one CPU thread)."""
    from backend.gguf_weights import load_tokenizer, open_gguf

    tokenizer = load_tokenizer(open_gguf(find_gguf()))
    prompts = ["Count from 1 to 20, separated by commas.", "What is the capital of France?"]
    trace = Trace("count", [
        Request(i, 0.0, len(ids), 40, prompt_token_ids=ids)
        for i, ids in enumerate(tuple(tokenizer.chat_prompt([{"role": "user", "content": text}]))
                                for text in prompts)])
    base = ReplayOptions(model="smollm2-135m", hardware="cpu", executor="real", pace="asap",
                         num_gpu_blocks=64)
    plain, plain_outputs = replay_real(resolve(base, trace))
    spec, outputs = replay_real(resolve(dataclasses.replace(
        base, speculator="lookahead", lookahead_window=4, lookahead_guesses=4), trace))
    assert outputs == plain_outputs
    assert spec.summary["spec_tokens_per_step_mean"] > 1.1
    assert spec.summary["iterations"] < plain.summary["iterations"]
    squeezed, squeezed_outputs = replay_real(resolve(dataclasses.replace(
        base, speculator="lookahead", num_gpu_blocks=NUM_SQUEEZED_BLOCKS, scheduler="chunked",
        token_budget=48), trace))
    assert squeezed_outputs == plain_outputs
    assert squeezed.summary["preemptions"] > 0
