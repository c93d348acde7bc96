"""Synthetic arrival processes, length distributions and their CLI strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import (
    ArrivalProcess,
    LengthDistribution,
    parse_arrivals,
    parse_synthetic,
    synthetic_trace,
)

POISSON = ArrivalProcess("poisson", 2.0)
FIXED_PROMPT = LengthDistribution.fixed(100)
FIXED_OUTPUT = LengthDistribution.fixed(10)


def gaps_s(process: ArrivalProcess, n: int, seed: int = 0) -> np.ndarray:
    times_s = process.sample(n, np.random.default_rng(seed))
    assert times_s[0] == 0.0 and np.all(np.diff(times_s) >= 0)
    return np.diff(times_s)


def test_same_seed_same_trace_and_other_seed_differs() -> None:
    prompt = LengthDistribution.lognormal(1024, 0.8)
    first = synthetic_trace(500, POISSON, prompt, FIXED_OUTPUT, seed=11)
    assert first.requests == synthetic_trace(500, POISSON, prompt, FIXED_OUTPUT, seed=11).requests
    assert first.requests != synthetic_trace(500, POISSON, prompt, FIXED_OUTPUT, seed=12).requests
    assert [r.request_id for r in first.requests] == list(range(500))
    assert first.requests[0].arrival_time_s == 0.0
    assert first.num_rows == 500 and first.invalid_rows == []


def test_poisson_mean_rate() -> None:
    gaps = gaps_s(ArrivalProcess("poisson", 5.0), 20_000)
    assert 1.0 / gaps.mean() == pytest.approx(5.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_rate_and_cv(cv: float) -> None:
    gaps = gaps_s(ArrivalProcess("gamma", 3.0, cv), 20_000, seed=1)
    assert 1.0 / gaps.mean() == pytest.approx(3.0, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.15)


def test_length_distribution_does_not_move_arrivals() -> None:
    one = synthetic_trace(300, POISSON, FIXED_PROMPT, FIXED_OUTPUT, seed=5)
    prompt, output = LengthDistribution.uniform(1, 9), LengthDistribution.lognormal(50, 1.0)
    other = synthetic_trace(300, POISSON, prompt, output, seed=5)
    assert [r.arrival_time_s for r in one.requests] == [r.arrival_time_s for r in other.requests]


def test_length_samples_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    assert set(LengthDistribution.fixed(7).sample(50, rng)) == {7}
    uniform = LengthDistribution.uniform(3, 5).sample(2000, rng)
    assert set(uniform) == {3, 4, 5}
    lognormal = LengthDistribution.lognormal(1, 5.0).sample(20_000, rng)
    assert lognormal.min() >= 1 and lognormal.max() <= 10**9
    median = np.median(LengthDistribution.lognormal(1024, 0.8).sample(20_000, rng))
    assert median == pytest.approx(1024, rel=0.05)


def test_empirical_pairs_are_resampled_jointly() -> None:
    pairs = ((10, 1), (20, 2), (30, 3), (40, 4))
    prompt, output = LengthDistribution.empirical_pair(pairs)
    trace = synthetic_trace(400, POISSON, prompt, output, seed=2)
    assert {(r.prompt_tokens, r.output_tokens) for r in trace.requests} == set(pairs)


def test_parse_arrivals() -> None:
    assert parse_arrivals("poisson:2.0") == ArrivalProcess("poisson", 2.0)
    assert parse_arrivals("gamma:1.5:4") == ArrivalProcess("gamma", 1.5, 4.0)
    bursty = ArrivalProcess("gamma", 0.25, 3.0)
    assert parse_arrivals(bursty.spec) == bursty


@pytest.mark.parametrize(
    "text", ["", "poisson", "poisson:", "poisson:x", "poisson:-1", "poisson:0", "poisson:inf",
             "poisson:1:2", "gamma:1", "gamma:1:0", "gamma:1:nan", "uniform:1"],
)
def test_parse_arrivals_rejects_bad_strings(text: str) -> None:
    with pytest.raises(ValueError, match="poisson:RATE_PER_S"):
        parse_arrivals(text)


def test_invalid_processes_and_distributions() -> None:
    with pytest.raises(ValueError):
        ArrivalProcess("poisson", 1.0, cv=2.0)
    with pytest.raises(ValueError):
        ArrivalProcess("weibull", 1.0)
    for build in (
        lambda: LengthDistribution.fixed(0),
        lambda: LengthDistribution.uniform(5, 2),
        lambda: LengthDistribution.lognormal(0.5, 1.0),
        lambda: LengthDistribution.lognormal(10, -1.0),
        lambda: LengthDistribution.empirical_pair(()),
        lambda: synthetic_trace(0, POISSON, FIXED_PROMPT, FIXED_OUTPUT, seed=0),
    ):
        with pytest.raises(ValueError):
            build()


def test_parse_synthetic() -> None:
    n, arrivals, prompt, output = parse_synthetic(
        "synthetic:n=1000,arrivals=poisson:2.0,prompt=lognormal:1024:0.8,output=fixed:128"
    )
    assert (n, arrivals) == (1000, ArrivalProcess("poisson", 2.0))
    assert prompt == LengthDistribution.lognormal(1024, 0.8)
    assert output == LengthDistribution.fixed(128)
    _, arrivals, prompt, _ = parse_synthetic(
        "synthetic:n=5,arrivals=gamma:1:3,prompt=uniform:10:20,output=fixed:1"
    )
    assert (arrivals.cv, prompt) == (3.0, LengthDistribution.uniform(10, 20))


def test_parse_synthetic_file_lengths_resample_jointly(tmp_path: Path) -> None:
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n100,5\n200,6\nbad,7\n300,8\n")
    n, arrivals, prompt, output = parse_synthetic(
        f"synthetic:n=200,arrivals=poisson:1,prompt=file:{path},output=file:{path}"
    )
    trace = synthetic_trace(n, arrivals, prompt, output, seed=0)
    assert {(r.prompt_tokens, r.output_tokens) for r in trace.requests} == {
        (100, 5), (200, 6), (300, 8),
    }
    assert any("jointly" in note for note in trace.notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n=10,arrivals=poisson:1,prompt=fixed:1,output=fixed:1", "synthetic:n=N"),
        ("synthetic:", "synthetic:n=N"),
        ("synthetic:n=10,arrivals=poisson:1,prompt=fixed:1", "lacks output"),
        ("synthetic:n=10,arrivals=poisson:1,prompt=fixed:1,output=fixed:1,seed=3", "bad item"),
        ("synthetic:n=10,n=11,arrivals=poisson:1,prompt=fixed:1,output=fixed:1", "each once"),
        ("synthetic:n=ten,arrivals=poisson:1,prompt=fixed:1,output=fixed:1", "not a whole number"),
        ("synthetic:n=0,arrivals=poisson:1,prompt=fixed:1,output=fixed:1", "at least 1"),
        ("synthetic:n=10,arrivals=poisson,prompt=fixed:1,output=fixed:1", "poisson:RATE_PER_S"),
        ("synthetic:n=10,arrivals=poisson:1,prompt=fixed:0,output=fixed:1", "fixed:N"),
        (f"synthetic:n=1,arrivals=poisson:1,prompt=fixed:{'9' * 400},output=fixed:1", "fixed:N"),
        ("synthetic:n=1,arrivals=poisson:1e400,prompt=fixed:1,output=fixed:1", "poisson:RATE"),
        ("synthetic:n=10,arrivals=poisson:1,prompt=uniform:9:2,output=fixed:1", "uniform:LO:HI"),
        ("synthetic:n=10,arrivals=poisson:1,prompt=lognormal:5,output=fixed:1", "lognormal:MEDIAN"),
        ("synthetic:n=10,arrivals=poisson:1,prompt=zipf:2,output=fixed:1", "file:PATH"),
    ],
)
def test_parse_synthetic_rejects_bad_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_synthetic(text)


def test_parse_synthetic_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_synthetic(
            f"synthetic:n=1,arrivals=poisson:1,prompt=file:{tmp_path / 'none.csv'},output=fixed:1"
        )


spec_pieces = st.sampled_from(
    ["synthetic:", "n=", "arrivals=", "prompt=", "output=", "poisson:", "gamma:", "fixed:",
     "uniform:", "lognormal:", ",", ":", "=", "1", "0", "-2", "1e400", "nan", "9" * 30, "x"]
)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(spec_pieces, max_size=12))
def test_spec_parsers_raise_only_value_errors(pieces: list[str]) -> None:
    text = "".join(pieces)
    for parse in (parse_arrivals, parse_synthetic):
        try:
            parse(text)
        except ValueError:
            pass
