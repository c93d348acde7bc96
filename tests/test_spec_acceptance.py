"""Acceptance models as data: closed forms, draws against them, parsing and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sim.speculation.acceptance import (BetaAcceptance, PositionalAcceptance, TraceAcceptance,
                                 iid_expected_tokens, parse_acceptance, widen)


def _mean_tokens(model, k: int, width: int = 1, num_requests: int = 400, steps: int = 50) -> float:
    draws = []
    for request_id in range(num_requests):
        stream = model.stream(3, request_id)
        draws += [model.draw(stream, k, width) for _ in range(steps)]
    return 1.0 + float(np.mean(draws))


@pytest.mark.parametrize("alpha,k", [(0.5, 1), (0.7, 4), (0.9, 8), (0.0, 3), (1.0, 5)])
def test_iid_closed_form_is_the_geometric_sum(alpha, k):
    expected = sum(alpha**i for i in range(k + 1))
    assert iid_expected_tokens(alpha, k) == pytest.approx(expected, rel=1e-12)
    assert PositionalAcceptance((alpha,)).expected_tokens_per_step(k) == pytest.approx(expected)


def test_per_position_rates_use_the_product_formula_not_an_iid_mean():
    model = parse_acceptance("0.54,0.36,0.26")
    assert isinstance(model, PositionalAcceptance)
    product = 1 + 0.54 + 0.54 * 0.36 + 0.54 * 0.36 * 0.26
    assert model.expected_tokens_per_step(3) == pytest.approx(product, rel=1e-12)
    assert product == pytest.approx(1.784944)
    assert iid_expected_tokens(np.mean([0.54, 0.36, 0.26]), 3) == pytest.approx(1.5940, abs=1e-4)
    # Positions past the list keep the last rate.
    assert model.expected_tokens_per_step(4) == pytest.approx(product + 0.54 * 0.36 * 0.26**2)


def test_positional_draws_match_the_product_formula():
    model = PositionalAcceptance((0.8, 0.6, 0.4))
    assert _mean_tokens(model, 3) == pytest.approx(model.expected_tokens_per_step(3), rel=0.02)


def test_beta_per_request_draws_match_its_moments_and_exceed_iid_at_the_mean():
    model = parse_acceptance("beta:0.7:4")
    assert model == BetaAcceptance(0.7, 4.0)
    expected = model.expected_tokens_per_step(4)
    assert expected > iid_expected_tokens(0.7, 4)  # Jensen: alpha^i is convex
    assert _mean_tokens(model, 4, num_requests=2000, steps=20) == pytest.approx(expected, rel=0.02)


def test_tree_width_raises_each_depth_rate():
    assert widen(0.6, 1) == pytest.approx(0.6)
    assert widen(0.6, 3) == pytest.approx(1 - 0.4**3)
    model = PositionalAcceptance((0.6,))
    assert model.expected_tokens_per_step(2, width=2) == pytest.approx(1 + 0.84 + 0.84**2)
    assert _mean_tokens(model, 2, width=2) == pytest.approx(1 + 0.84 + 0.84**2, rel=0.02)


def test_recorded_trace_replays_from_a_per_request_offset_capped_at_k(tmp_path):
    path = tmp_path / "acc.txt"
    path.write_text("# accepted drafts per verify\n3\n0\n\n5  # a long run\n1\n")
    model = parse_acceptance(str(path))
    assert model == TraceAcceptance((3, 0, 5, 1), str(path))
    assert model.expected_tokens_per_step(4) == pytest.approx(1 + (3 + 0 + 4 + 1) / 4)
    stream = model.stream(0, 7)
    start = stream.offset
    seen = [model.draw(stream, 4, 1) for _ in range(8)]
    cycle = [min(a, 4) for a in (3, 0, 5, 1)]
    assert seen == [cycle[(start + i) % 4] for i in range(8)]


def test_draws_are_deterministic_per_seed_and_request():
    model = PositionalAcceptance((0.7,))
    a, b = model.stream(5, 9), model.stream(5, 9)
    assert [model.draw(a, 4, 1) for _ in range(50)] == [model.draw(b, 4, 1) for _ in range(50)]
    c = model.stream(5, 10)
    d = model.stream(5, 9)
    assert [model.draw(c, 4, 1) for _ in range(50)] != [model.draw(d, 4, 1) for _ in range(50)]


@pytest.mark.parametrize("spec,message", [
    ("1.5", "must lie in [0, 1]"),
    ("0.5,x", "bad number 'x'"),
    ("beta:0.7", "beta:MEAN:CONCENTRATION"),
    ("beta:1.2:3", "0 < mean < 1"),
    ("0.5,inf", "bad number"),
    ("/no/such/file", "neither a rate"),
])
def test_bad_acceptance_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_acceptance(spec)


def test_bad_trace_line_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("2\n-1\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_acceptance(str(path))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no counts"):
        parse_acceptance(str(tmp_path / "empty.txt"))
