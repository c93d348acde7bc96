"""Lookahead decoding's token logic against a greedy reference model, its planner shape, and
its CLI knobs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from policies.speculative.jacobi import LookaheadState, NgramPool
from policies.speculative.lookahead import LookaheadParams, LookaheadSpeculator
from tests.helpers import make_seq


def cyclic_model(period: int):
    """A greedy 'model' whose next token is the last one plus one, mod `period`."""
    return lambda tokens: (tokens[-1] + 1) % period


def hashed_model(vocab: int):
    """A greedy 'model' of the last two tokens: repeats eventually, but not trivially."""
    return lambda tokens: (tokens[-1] * 31 + tokens[-2] * 17 + 7) % vocab


def greedy(model, prompt: list[int], num_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(num_tokens):
        tokens.append(model(tokens))
    return tokens[len(prompt):]


def lookahead(model, prompt: list[int], num_tokens: int, window: int, ngram: int,
              guesses: int) -> tuple[list[int], int]:
    """Decode by running each pass as the mask states: every index's output is the model's
    token after the context plus the pass tokens that index attends to."""
    state = LookaheadState(prompt, window, ngram, guesses)
    tokens = list(prompt) + [model(prompt)]
    num_steps = 0
    while len(tokens) - len(prompt) < num_tokens:
        step = state.layout(tokens[-1], ngram - 1)
        context = tokens[:-1]
        outputs = [model(context + [step.tokens[i] for i in seen]) for seen in step.attends]
        tokens += state.commit(step, outputs)
        num_steps += 1
    return tokens[len(prompt):len(prompt) + num_tokens], num_steps


def test_pass_layout_and_mask():
    state = LookaheadState([10, 11, 12, 13, 14, 15, 16, 17, 18], window=3, ngram=4, guesses=2)
    state.pool.add([9, 1, 2, 3])
    step = state.layout(9, 3)
    assert len(step.tokens) == 1 + (3 + 2) * 3
    assert step.offsets == [0, 1, 2, 3, 2, 3, 4, 3, 4, 5, 1, 2, 3, 1, 2, 3]
    assert step.attends[6] == [0, 1, 2, 3, 6]          # level 1, column 2
    assert step.attends[9] == [0, 1, 2, 3, 6, 9]       # level 2, column 2
    assert step.attends[12] == [0, 10, 11, 12]         # candidate 0's last token
    assert step.candidates == [(1, 2, 3)]
    assert step.tokens[13:] == [9, 9, 9]               # padding for the missing candidate


def test_pool_keeps_most_recent_distinct():
    pool = NgramPool(capacity=2)
    for ngram in ([1, 2, 3], [1, 4, 5], [1, 2, 3], [1, 6, 7]):
        pool.add(ngram)
    assert pool.candidates(1) == [(6, 7), (2, 3)]
    assert pool.candidates(2) == []


def test_accepts_whole_ngram_on_a_cyclic_model():
    tokens, num_steps = lookahead(cyclic_model(7), [0, 1, 2], 60, window=4, ngram=4, guesses=3)
    assert tokens == greedy(cyclic_model(7), [0, 1, 2], 60)
    assert num_steps <= 60 / 3   # N - 1 drafts plus one token per step once the pool warms up


@settings(max_examples=40, deadline=None)
@given(prompt=st.lists(st.integers(0, 12), min_size=2, max_size=12),
       window=st.integers(1, 5), ngram=st.integers(2, 5), guesses=st.integers(1, 4),
       vocab=st.integers(3, 13))
def test_outputs_equal_greedy(prompt, window, ngram, guesses, vocab):
    model = hashed_model(vocab)
    tokens, num_steps = lookahead(model, prompt, 40, window, ngram, guesses)
    assert tokens == greedy(model, prompt, 40)
    assert num_steps <= 40


def test_narrowed_pass_keeps_window():
    state = LookaheadState([1, 2, 3, 4, 5, 6], window=2, ngram=4, guesses=1)
    levels = [list(level) for level in state.levels]
    step = state.layout(6, 1)
    assert len(step.tokens) == 1 + (2 + 1) * 1
    state.commit(step, [0] * len(step.tokens))
    assert state.levels == levels


def test_speculator_shape():
    speculator = LookaheadSpeculator(LookaheadParams(lookahead_window=5, lookahead_ngram=4,
                                                     lookahead_guesses=3))
    assert speculator.num_draft_tokens(None, 1) == 3
    assert speculator.num_verify_nodes(3) == 24
    assert speculator.fused
    dynamic = LookaheadSpeculator(LookaheadParams(
        lookahead_ngram=4, spec_dynamic=True, spec_min_accept_prob=0.01,
        spec_k_by_batch=((1, 6), (8, 2), (64, 0))))
    seq = make_seq(0, prompt=16, output=32)
    assert [dynamic.num_draft_tokens(seq, b) for b in (1, 8, 64)] == [3, 2, 0]


@pytest.mark.parametrize("field, value, flag", [
    ("lookahead_window", 0, "--lookahead-window"),
    ("lookahead_ngram", 1, "--lookahead-ngram"),
    ("lookahead_guesses", 0, "--lookahead-guesses"),
])
def test_bad_knobs(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        LookaheadParams(**{field: value})


def test_simulated_step_prices_the_whole_window_and_accepts_n_minus_one():
    from policies.types import Request
    from sim.api import simulate
    from sim.assembly import build_cost_model
    from sim.config import ReplayOptions, resolve
    from traces import Trace

    trace = Trace(name="t", requests=[Request(0, 0.0, 100, 2001)], invalid_rows=[], notes=[])
    config = resolve(ReplayOptions(speculator="lookahead", lookahead_window=3,
                                   lookahead_ngram=5, lookahead_guesses=2,
                                   spec_acceptance="1.0"), trace)
    results = simulate(config)
    target = build_cost_model(config)
    nodes = (3 + 2) * 4
    assert results.engine.log.duration_s[1] == pytest.approx(
        target.iteration_time([1 + nodes], [100], 1 + nodes), rel=1e-12)
    # Each step commits N = 5 (4 drafts + the target's token), except the last few, which the
    # planner narrows: a pass never holds more nodes than the request's remaining outputs - 1.
    assert results.summary["spec_tokens_per_step_mean"] == pytest.approx(5.0, rel=0.01)
    assert results.summary["requests_finished"] == 1


def test_cli_knobs(capsys):
    from sim.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--lookahead-window", "--lookahead-ngram", "--lookahead-guesses"):
        assert flag in help_text
    main(["list", "speculators"])
    assert "lookahead" in capsys.readouterr().out


def test_spec_k_given_without_spec_dynamic_is_an_error_not_silently_ignored(capsys):
    from sim.cli import main

    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:4"
    argv = ["replay", "--quiet", "--trace", trace, "--speculator", "lookahead"]
    assert main(argv + ["--spec-k", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --spec-k 2 does not apply to --speculator lookahead without "
                          "--spec-dynamic") and err.count("\n") == 1
    assert main(argv + ["--spec-k", "2", "--spec-dynamic"]) == 0
    with pytest.raises(ValueError, match="--spec-k 3 does not apply"):
        LookaheadParams(spec_k=3)


def test_unset_spec_k_is_n_minus_one_and_the_summary_has_a_key_per_draft_position():
    from policies.types import Request
    from sim.api import simulate
    from sim.config import ReplayOptions, resolve
    from traces import Trace

    trace = Trace(name="t", requests=[Request(0, 0.0, 50, 60)], invalid_rows=[], notes=[])
    options = ReplayOptions(speculator="lookahead", lookahead_ngram=6, spec_acceptance="1.0")
    config = resolve(options, trace)
    assert config.spec_k == 5 and LookaheadParams(lookahead_ngram=6).spec_k == 5
    summary = simulate(config).summary
    assert summary["spec_acceptance_rate_pos5"] == 1.0
    assert "spec_acceptance_rate_pos6" not in summary
    dynamic = LookaheadParams(lookahead_ngram=6, spec_dynamic=True, spec_k=2)
    assert dynamic.spec_k == 2


def test_accepted_indices_are_the_matching_candidates_leading_slots():
    state = LookaheadState([10, 11, 12, 13, 14, 15, 16, 17, 18], window=3, ngram=4, guesses=2)
    state.pool.add([9, 5, 6, 7])
    state.pool.add([9, 1, 2, 3])
    step = state.layout(9, 3)
    assert step.candidates == [(1, 2, 3), (5, 6, 7)]
    outputs = [0] * len(step.tokens)
    outputs[0], outputs[13], outputs[14] = 5, 6, 8      # candidate 1 (from index 13): 5, 6 hold
    committed = state.commit(step, outputs)
    assert committed == [5, 6, 8]
    assert step.accepted_indices(committed) == [13, 14]
    assert step.accepted_indices([4]) == []
    with pytest.raises(ValueError, match="no candidate"):
        step.accepted_indices([4, 4])
