"""Sampling filters, per-request seeding, and exact speculative verification: rejection
sampling keeps the target distribution (chi-square against direct target sampling)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from backend.sampler import (
    SamplingParams,
    generator_for,
    probabilities,
    sample,
    verify_greedy,
    verify_rejection,
)

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])


def test_greedy_is_the_argmax():
    assert sample(LOGITS, SamplingParams(), generator_for(0, 0, 0)) == 5


def test_top_k_keeps_the_k_largest():
    probs = probabilities(LOGITS, SamplingParams(temperature=1.0, top_k=2))
    assert probs.nonzero().flatten().tolist() == [0, 5]
    assert probs.sum().item() == pytest.approx(1.0)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    full = torch.softmax(LOGITS, dim=0)  # sorted: 5 (.61), 0 (.22), 1 (.08), ...
    probs = probabilities(LOGITS, SamplingParams(temperature=1.0, top_p=0.8))
    assert probs.nonzero().flatten().tolist() == [0, 5]
    assert probs[5].item() == pytest.approx((full[5] / (full[5] + full[0])).item())
    tiny = probabilities(LOGITS, SamplingParams(temperature=1.0, top_p=0.01))
    assert tiny.nonzero().flatten().tolist() == [5]


def test_temperature_sharpens():
    cold = probabilities(LOGITS, SamplingParams(temperature=0.5))
    hot = probabilities(LOGITS, SamplingParams(temperature=2.0))
    assert cold[5] > torch.softmax(LOGITS, 0)[5] > hot[5]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0),
                                 dict(top_p=1.5)])
def test_bad_sampling_params_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_draws_are_seeded_per_request_and_output_index():
    params = SamplingParams(temperature=1.0)
    draws = [sample(LOGITS, params, generator_for(7, 3, i)) for i in range(200)]
    again = [sample(LOGITS, params, generator_for(7, 3, i)) for i in range(200)]
    other = [sample(LOGITS, params, generator_for(7, 4, i)) for i in range(200)]
    assert draws == again
    assert draws != other
    assert len(set(draws)) >= 4


def test_greedy_verification_accepts_the_matching_prefix():
    target = torch.zeros(4, 6)
    target[0, 2] = target[1, 4] = target[2, 1] = target[3, 0] = 1.0
    assert verify_greedy(target, [2, 4, 5]) == [2, 4, 1]
    assert verify_greedy(target, [2, 4, 1]) == [2, 4, 1, 0]
    assert verify_greedy(target, [3, 4, 1]) == [2]


def test_rejection_sampling_preserves_the_target_distribution():
    target = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    draft = torch.tensor([0.3, 0.1, 0.3, 0.2, 0.1])
    num_samples = 10000
    counts = torch.zeros(5)
    accepted = 0
    gen = torch.Generator().manual_seed(11)
    for _ in range(num_samples):
        token = int(torch.multinomial(draft, 1, generator=gen))
        out = verify_rejection(torch.stack([target, target]), draft[None, :], [token], gen)
        counts[out[0]] += 1
        accepted += len(out) == 2
    _, p_value = stats.chisquare(counts.numpy(), (target * num_samples).numpy())
    assert p_value > 1e-3
    # Acceptance probability is sum(min(p, q)) = 0.55.
    assert accepted / num_samples == pytest.approx(0.55, abs=0.015)
    # And the draft distribution itself is clearly rejected by the same test.
    _, p_draft = stats.chisquare(counts.numpy(), (draft * num_samples).numpy())
    assert p_draft < 1e-12


def test_rejection_with_identical_draft_accepts_everything():
    dist = torch.softmax(LOGITS, 0)
    out = verify_rejection(torch.stack([dist] * 3), torch.stack([dist] * 2), [5, 0],
                           generator_for(0, 0, 0))
    assert out[:2] == [5, 0] and len(out) == 3
