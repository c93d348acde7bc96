"""Speculative decoding on real tensors through the same policy objects: greedy outputs are
token-identical to no speculation (n-gram and self-speculative drafts, under preemption and
chunking), acceptance is measured and written in a form the simulator's acceptance model
reads, and rejection sampling keeps the target distribution."""

from __future__ import annotations

import json

import pytest

from backend import drafting
from backend.drafting import ngram_lookup, skipped_layers
from backend.replay import replay_real, write_acceptance
from policies.types import Request
from sim.cli import main
from sim.config import resolve
from sim.speculation.acceptance import parse_acceptance
from tests.real.tiny_llama import (LOOKAHEAD, assert_speculation_keeps_distribution,
                                   tiny_options)
from traces.trace import Trace

SELF_DRAFT = {"speculator": "draft", "draft_model": "tiny-llama"}




@pytest.mark.parametrize("overrides", [
    {"speculator": "ngram"},
    SELF_DRAFT,
    dict(SELF_DRAFT, spec_k=2, num_gpu_blocks=22),                   # recompute preemption
    dict(SELF_DRAFT, preemption="swap", num_gpu_blocks=22),
    dict(SELF_DRAFT, scheduler="chunked", token_budget=16),
    dict(SELF_DRAFT, allocator="contiguous", reserve="oracle"),
    dict(SELF_DRAFT, spec_dynamic=True),
])
def test_greedy_speculation_keeps_outputs_token_identical(reference_outputs, overrides):
    results, outputs = replay_real(resolve(tiny_options(**overrides)))
    assert outputs == reference_outputs
    assert results.summary["requests_finished"] == len(reference_outputs)
    assert results.summary["spec_verifies"] > 0


@pytest.mark.parametrize("speculation", [{"speculator": "ngram"}, SELF_DRAFT, LOOKAHEAD])
def test_speculation_over_cached_prefixes_keeps_outputs(speculation):
    """Requests sharing 16-token prompt blocks under prefix caching: drafts (a lookahead
    pass's scratch K/V too) write only past the cached blocks, so outputs equal plain
    decoding without a cache."""
    trace = Trace("shared", [
        Request(i, 0.0, p, o, prefix_block_hashes=h, prefix_block_tokens=16)
        for i, (p, o, h) in enumerate([(40, 12, (1, 2, 3)), (35, 9, (1, 2, 4)),
                                       (20, 11, (1, 2)), (33, 10, (9, 10))])])
    _, plain = replay_real(resolve(tiny_options(allocator="paged", block_size=16), trace))
    cached, spec = replay_real(resolve(tiny_options(allocator="paged-prefix", block_size=16,
                                                **speculation), trace))
    assert spec == plain
    assert cached.summary["spec_verifies"] > 0
    assert cached.summary["prefix_hit_rate"] > 0


def test_self_draft_accepts_some_drafts_and_skips_steps():
    plain, _ = replay_real(resolve(tiny_options()))
    spec, _ = replay_real(resolve(tiny_options(**SELF_DRAFT)))
    assert 0 < spec.summary["spec_acceptance_rate"] < 1
    assert spec.summary["spec_tokens_per_step_mean"] > 1.2
    assert spec.summary["iterations"] < plain.summary["iterations"]


def test_a_draft_skipping_no_layer_is_always_accepted(monkeypatch):
    """With no layer skipped the draft is the target itself: every greedy draft must match,
    which holds only if the draft passes read the context's KV and place their own right."""
    monkeypatch.setattr(drafting, "skipped_layers", lambda num_layers: range(0))
    results, _ = replay_real(resolve(tiny_options(**SELF_DRAFT)))
    assert results.summary["spec_acceptance_rate"] == 1.0
    assert results.summary["spec_acceptance_rate_pos4"] == 1.0


def test_measured_acceptance_is_written_for_the_simulator(tmp_path):
    trace = "synthetic:n=4,arrivals=poisson:100,prompt=fixed:20,output=fixed:30"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--speculator", "draft", "--draft-model", "tiny-llama",
                 "--spec-k", "3", "--num-gpu-blocks", "64", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    path = tmp_path / "acceptance.txt"
    counts = [int(line) for line in path.read_text().splitlines() if not line.startswith("#")]
    assert len(counts) == summary["spec_verifies"]
    recorded = parse_acceptance(str(path))
    assert recorded.expected_tokens_per_step(3) == pytest.approx(
        summary["spec_tokens_per_step_mean"])
    rates_line = path.read_text().splitlines()[1]
    rates = rates_line.split("--spec-acceptance ")[1]
    measured = [summary[f"spec_acceptance_rate_pos{i}"] for i in (1, 2, 3)]
    assert [float(r) for r in rates.split(",")] == pytest.approx(
        [m for m in measured if m is not None], abs=1e-4)
    parse_acceptance(rates)  # the header's list is a valid --spec-acceptance value


def test_write_acceptance_states_no_rates_when_nothing_was_reached(tmp_path):
    results, _ = replay_real(resolve(tiny_options(
        trace="synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:1",
        speculator="ngram")))
    text = write_acceptance(results, tmp_path).read_text()
    assert text.splitlines()[1] == "# per-position conditional rates: --spec-acceptance none"
    assert len(text.splitlines()) == 2


def test_rejection_sampling_on_real_tensors_keeps_the_target_distribution():
    """The same prompt sampled 2 x 300 times at temperature 0.7, top-k 4: the second output
    token (judged by rejection sampling against the self-draft in the speculative run) has
    the same joint distribution with the first as plain sampling. Each run's samples come
    from request ids the other run does not use, so the two groups are independent."""
    assert_speculation_keeps_distribution(SELF_DRAFT)


def test_ngram_lookup_copies_what_followed_the_longest_earlier_match():
    assert ngram_lookup([1, 2, 3, 9, 9, 1, 2, 3], 3) == [9, 9, 1]
    # The latest occurrence of the longest suffix wins (here the 2-gram [5, 6]).
    assert ngram_lookup([5, 6, 7, 4, 5, 6, 8, 0, 5, 6], 2) == [8, 0]
    # Too little to copy: the chain is padded with the last token it copied.
    assert ngram_lookup([4, 7, 4], 3) == [7, 4, 4]
    assert ngram_lookup([1, 2, 3], 2) == [3, 3]


def test_skipped_layers_are_the_middle_quarter():
    assert list(skipped_layers(30)) == list(range(11, 18))
    assert list(skipped_layers(2)) == [0]
    assert list(skipped_layers(32)) == list(range(12, 20))


@pytest.mark.parametrize("argv,message", [
    (["--speculator", "tree"], "--speculator tree does not run on the real backend yet"),
    (["--speculator", "draft", "--draft-model", "llama-3.2-1b"],
     "the draft model must share tiny-llama's vocabulary of 512 tokens"),
])
def test_speculators_the_real_backend_cannot_run_are_clear_errors(argv, message, capsys):
    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:2"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
