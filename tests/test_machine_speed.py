"""Replaying a measured machine speed (`--speed-trace`): the factors in force at each step's
start scale its price (overhead terms by one, roofline terms by the other), traces are read
strictly, and profiles normalize to a reference."""

from __future__ import annotations

import dataclasses

import pytest

from sim.api import simulate
from sim.config import ReplayOptions, resolve
from sim.cost.profiles import trimmed_mean_s
from sim.cost.roofline import CostModel
from sim.machine_speed import (Reference, SpeedTrace, fit_at_reference_speed, read_speed_trace,
                               reference_of, speed_normalized, speed_trace, write_speed_trace)

TRACE = "synthetic:n=30,arrivals=poisson:4,prompt=uniform:32:256,output=uniform:4:48"


def _options(**changes) -> ReplayOptions:
    return dataclasses.replace(ReplayOptions(model="tiny-llama", hardware="cpu", trace=TRACE,
                                             num_gpu_blocks=400), **changes)


def _one(times, factors) -> SpeedTrace:
    """A trace whose two factors are equal."""
    return SpeedTrace(tuple(times), tuple(factors), tuple(factors))


def test_factors_hold_from_their_reading_until_the_next():
    trace = SpeedTrace((0.0, 1.0, 2.5), (1.0, 2.0, 0.5), (1.5, 3.0, 1.0))
    assert [trace.factors_at(t) for t in (-1.0, 0.0, 0.99, 1.0, 2.0, 2.5, 100.0)] == [
        (1.0, 1.5), (1.0, 1.5), (1.0, 1.5), (2.0, 3.0), (2.0, 3.0), (0.5, 1.0), (0.5, 1.0)]


@pytest.mark.parametrize("times, factors", [((), ()), ((0.0, 1.0), (1.0,)),
                                            ((1.0, 0.0), (1.0, 1.0)), ((0.0,), (0.0,)),
                                            ((0.0,), (float("nan"),))])
def test_malformed_traces_are_refused(times, factors):
    with pytest.raises(ValueError):
        _one(times, factors)


def test_trace_files_round_trip_and_bad_rows_name_their_line(tmp_path):
    rows = speed_trace([(0.0, 2e-4, 1e-4), (0.05, 5e-4, 1e-4)], Reference(2e-4, 1e-4))
    path = write_speed_trace(tmp_path / "speed.csv", rows)
    assert read_speed_trace(path) == SpeedTrace((0.0, 0.05), (1.0, 2.5), (1.0, 1.0))
    path.write_text("time_s,factor\n0.0,1.0\n1.0,2.0\n")  # one factor for whole steps
    assert read_speed_trace(path) == _one((0.0, 1.0), (1.0, 2.0))
    path.write_text("time_s,factor\n0.0,1.0\n0.1,fast\n")
    with pytest.raises(ValueError, match="speed.csv:3"):
        read_speed_trace(path)
    path.write_text("when,how\n0,1\n")
    with pytest.raises(ValueError, match="header"):
        read_speed_trace(path)
    with pytest.raises(ValueError, match="not found"):
        read_speed_trace(tmp_path / "missing.csv")


def test_a_constant_factor_scales_every_step(tmp_path):
    """Twice as slow everywhere: one request alone runs the same steps, each twice as long.
    Under load the latencies grow more than the steps (batches grow), and every request is
    still accounted for."""
    path = write_speed_trace(tmp_path / "slow.csv", [(0.0, 2.0, 2.0, 2.0, 2.0)])
    alone = "synthetic:n=1,arrivals=poisson:1,prompt=fixed:100,output=fixed:20"
    plain = simulate(resolve(_options(trace=alone)))
    slow = simulate(resolve(_options(trace=alone, speed_trace=str(path))))
    assert list(slow.engines[0].log.duration_s) == [
        2 * d for d in plain.engines[0].log.duration_s]
    plain = simulate(resolve(_options()))
    slow = simulate(resolve(_options(speed_trace=str(path))))
    assert slow.summary["tpot_p50_s"] > 1.5 * plain.summary["tpot_p50_s"]
    assert slow.summary["requests_finished"] == plain.summary["requests_finished"] == 30


def test_factor_one_changes_nothing_but_the_fast_forward(tmp_path):
    """A trace of ones gives the plain simulation's results (which fast-forward only changes
    in cost): the wrapper prices exactly what the cost model does."""
    path = write_speed_trace(tmp_path / "one.csv", [(0.0, 1.0, 1.0, 1.0, 1.0),
                                                    (3.0, 1.0, 1.0, 1.0, 1.0)])
    plain = simulate(resolve(_options(fast_forward=False)))
    same = simulate(resolve(_options(speed_trace=str(path))))
    assert same.summary == plain.summary


def test_only_steps_starting_after_a_change_are_scaled(tmp_path):
    path = write_speed_trace(tmp_path / "later.csv", [(0.0, 1.0, 1.0, 1.0, 1.0),
                                                      (4.0, 3.0, 3.0, 3.0, 3.0)])
    plain = simulate(resolve(_options(fast_forward=False)))
    later = simulate(resolve(_options(speed_trace=str(path))))
    rows = zip(plain.engines[0].log.start_s, plain.engines[0].log.duration_s,
               later.engines[0].log.start_s, later.engines[0].log.duration_s)
    for start_plain, plain_s, start_later, later_s in rows:
        if start_later >= 4.0:
            break
        assert (start_later, later_s) == (start_plain, plain_s)
    else:
        pytest.fail("the run never reached the slower state")
    assert later.summary["e2e_p90_s"] > plain.summary["e2e_p90_s"]


def test_the_real_executor_refuses_a_speed_trace(tmp_path):
    path = write_speed_trace(tmp_path / "s.csv", [(0.0, 1.0, 1.0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="--speed-trace"):
        resolve(_options(executor="real", speed_trace=str(path)))


def test_overhead_and_roofline_terms_take_their_own_factor(tmp_path):
    """One request alone: each step costs its overhead times the first factor plus the rest
    times the second, the split read off the cost model's own breakdown."""
    alone = "synthetic:n=1,arrivals=poisson:1,prompt=fixed:100,output=fixed:5"
    path = write_speed_trace(tmp_path / "split.csv", [(0.0, 1.0, 1.0, 3.0, 0.5)])
    plain = simulate(resolve(_options(trace=alone, fast_forward=False)))
    split = simulate(resolve(_options(trace=alone, speed_trace=str(path))))
    config = resolve(_options(trace=alone))
    cost = CostModel(config.model, config.hardware, config.coefficients)
    prefill = cost.breakdown([100], [0])
    expected = 3.0 * prefill.overhead_s + 0.5 * (prefill.time_s - prefill.overhead_s)
    assert split.engines[0].log.duration_s[0] == pytest.approx(expected)
    assert plain.engines[0].log.duration_s[0] == pytest.approx(prefill.time_s)


def _profile(steps: list[tuple[list[float], list[float], list[float]]]) -> dict:
    return {"model": "tiny-llama", "hardware": "cpu", "tp": 1, "machine": {},
            "samples": [{"new_tokens": [1] * (i + 1), "context_tokens": [16 * (i + 1)] * (i + 1),
                         "measured_s": trimmed_mean_s(times), "steps_s": times,
                         "steps_speed_s": dispatch, "steps_compute_speed_s": compute}
                        for i, (times, dispatch, compute) in enumerate(steps)]}


def test_normalizing_a_profile_divides_out_each_steps_blended_factor():
    """All overhead: a step that ran at twice the reference dispatch time counts half its
    time; none: the compute probe decides."""
    profile = _profile([([2.0, 4.0], [1.0, 2.0], [1.0, 1.0]), ([3.0, 3.0], [1.5, 1.5], [3.0, 3.0])])
    assert reference_of([profile]) == Reference(1.5, 2.0)
    reference = Reference(1.0, 1.0)
    overheads = speed_normalized(profile, reference, lambda sample: 1.0)
    assert [s["measured_s"] for s in overheads["samples"]] == [2.0, 2.0]
    assert [s["raw_measured_s"] for s in overheads["samples"]] == [3.0, 3.0]
    assert overheads["machine"]["speed_reference_s"] == [1.0, 1.0]
    arithmetic = speed_normalized(profile, reference, lambda sample: 0.0)
    assert [s["measured_s"] for s in arithmetic["samples"]] == [3.0, 1.0]
    assert profile["samples"][0]["measured_s"] == 3.0  # the original is left alone


def test_a_fit_at_reference_speed_recovers_a_profile_measured_in_two_states():
    """Steps timed in a fast and a slow state (factor 2 on both probes) fit as well as the
    same steps all timed at reference speed."""
    config = resolve(_options())
    cost = CostModel(config.model, config.hardware, config.coefficients)
    steps = []
    for batch in (1, 2, 4, 8):
        t = cost.breakdown([1] * batch, [64] * batch).time_s
        steps.append(([t, 2 * t, t, 2 * t], [1e-4, 2e-4, 1e-4, 2e-4], [3e-4, 6e-4, 3e-4, 6e-4]))
    for prompt in (16, 64, 256):
        t = cost.breakdown([prompt], [0]).time_s
        steps.append(([2 * t, t, 2 * t, t], [2e-4, 1e-4, 2e-4, 1e-4], [6e-4, 3e-4, 6e-4, 3e-4]))
    profile = _profile([])
    for times, dispatch, compute in steps:
        profile["samples"].append({"new_tokens": [], "context_tokens": [], "steps_s": times,
                                   "measured_s": trimmed_mean_s(times), "steps_speed_s": dispatch,
                                   "steps_compute_speed_s": compute})
    for sample, batch in zip(profile["samples"], (1, 2, 4, 8)):
        sample["new_tokens"], sample["context_tokens"] = [1] * batch, [64] * batch
    for sample, prompt in zip(profile["samples"][4:], (16, 64, 256)):
        sample["new_tokens"], sample["context_tokens"] = [prompt], [0]
    result, normalized = fit_at_reference_speed([("p.json", profile)], Reference(1e-4, 3e-4))
    assert result.report.stats(split="all").mape_pct < 1.0
    assert [s["measured_s"] for s in normalized[0]["samples"]] == pytest.approx(
        [min(s["steps_s"]) for s in profile["samples"]])


def test_a_profile_without_meter_readings_cannot_be_normalized():
    profile = _profile([([2.0], [1.0], [1.0])])
    del profile["samples"][0]["steps_compute_speed_s"]
    with pytest.raises(ValueError, match="steps_compute_speed_s"):
        speed_normalized(profile, Reference(1.0, 1.0), lambda sample: 1.0)
