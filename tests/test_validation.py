"""The validation arithmetic (relative errors, medians over repeats, per-request errors), the
length cap, the CDF points, and drift detection of a calibration against its profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cost.calibrate import fit
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import Coefficients, load_coefficients
from sim.cost.drift import check_drift
from sim.cost.profiles import TimingSample, read_profile
from sim.cost.roofline import CostModel
from sim.validation import (COMPARED_KEYS, HEADLINE_KEYS, distribution, median_abs_rel_error,
                            per_request_errors, rel_error, validation_report)
from sim.validation_plot import cdf_points
from traces import Trace, cap_lengths
from policies.types import Request

DOCS = Path(__file__).resolve().parents[1] / "docs" / "validation"


def _summary(scale: float) -> dict:
    """A summary whose latencies are `scale` times a base set (throughputs divided)."""
    base = {key: 0.1 * (i + 1) for i, key in enumerate(COMPARED_KEYS)}
    return {key: (value / scale if "throughput" in key else value * scale)
            for key, value in base.items()}


def test_rel_error_is_simulated_over_measured_minus_one():
    assert rel_error(1.1, 1.0) == pytest.approx(0.1)
    assert rel_error(0.5, 1.0) == pytest.approx(-0.5)
    assert rel_error(None, 1.0) is None and rel_error(1.0, None) is None
    assert rel_error(1.0, 0.0) is None  # the queueing time of an idle replica


def test_median_abs_rel_error_is_the_median_over_the_six_headline_keys():
    errors = dict(zip(HEADLINE_KEYS, [0.01, -0.02, 0.03, -0.30, 0.05, 0.5]))
    errors["itl_p99_s"] = 9.0  # not a headline key: ignored
    assert median_abs_rel_error(errors) == pytest.approx((0.03 + 0.05) / 2)
    assert median_abs_rel_error({**errors, "tpot_p90_s": None}) is None


def test_report_takes_medians_over_repeats_with_their_spread():
    measured = [_summary(1.0), _summary(1.0), _summary(1.0)]
    simulated = [_summary(1.1), _summary(0.8), _summary(1.05)]  # +10%, -20%, +5%
    requests = [{"ttft_s": [0.1], "tpot_s": [], "e2e_s": [-0.2]}] * 3
    report = validation_report(simulated, measured, requests)
    assert report["repeats"] == 3
    assert set(report["rel_error"]) == set(COMPARED_KEYS)
    assert report["rel_error"]["ttft_p50_s"] == pytest.approx(0.05)
    spread = report["rel_error_spread"]["ttft_p50_s"]
    assert (spread["min"], spread["max"]) == pytest.approx((-0.2, 0.1))
    assert spread["per_repeat"] == pytest.approx([0.1, -0.2, 0.05])
    # Throughputs move the other way: 1/1.1 - 1.
    assert report["rel_error"]["output_throughput_tok_s"] == pytest.approx(1 / 1.05 - 1)
    assert report["median_abs_rel_error"] == pytest.approx(0.1)
    assert report["median_abs_rel_error_spread"]["per_repeat"] == pytest.approx([0.1, 0.2, 0.05])
    assert report["per_request"]["ttft_s"]["n"] == 3
    assert report["per_request"]["tpot_s"]["p50"] is None
    assert json.loads(json.dumps(report)) == report  # plain JSON
    with pytest.raises(ValueError, match="one simulated and one measured"):
        validation_report(simulated[:2], measured, requests)


def test_per_request_errors_join_on_request_id_over_requests_both_finished():
    real = [{"request_id": 0, "status": "finished", "ttft_s": 0.2, "tpot_s": "", "e2e_s": 1.0},
            {"request_id": 1, "status": "finished", "ttft_s": 0.1, "tpot_s": 0.01, "e2e_s": 2.0},
            {"request_id": 2, "status": "rejected", "ttft_s": "", "tpot_s": "", "e2e_s": ""}]
    sim = [{"request_id": 1, "status": "finished", "ttft_s": 0.15, "tpot_s": 0.01, "e2e_s": 1.0},
           {"request_id": 0, "status": "finished", "ttft_s": 0.1, "tpot_s": None, "e2e_s": 1.5},
           {"request_id": 2, "status": "finished", "ttft_s": 1.0, "tpot_s": 1.0, "e2e_s": 1.0}]
    errors = per_request_errors(sim, real)
    assert errors["ttft_s"] == pytest.approx([-0.5, 0.5])
    assert errors["tpot_s"] == pytest.approx([0.0])
    assert errors["e2e_s"] == pytest.approx([0.5, -0.5])
    stats = distribution(errors["e2e_s"])
    assert (stats["n"], stats["p50"], stats["mean_abs"]) == (2, pytest.approx(0.0), 0.5)


def test_cap_lengths_cuts_prompts_outputs_ids_and_hashes_and_keeps_arrivals():
    trace = Trace("t", [Request(0, 0.5, 40, 9, prefix_block_hashes=(1, 2, 3),
                                prefix_block_tokens=16, prompt_token_ids=tuple(range(40))),
                        Request(1, 1.5, 8, 3)], [], [])
    capped = cap_lengths(trace, max_prompt_tokens=20, max_output_tokens=4)
    first, second = capped.requests
    assert (first.prompt_tokens, first.output_tokens, first.arrival_time_s) == (20, 4, 0.5)
    assert first.prompt_token_ids == tuple(range(20)) and first.prefix_block_hashes == (1, 2)
    assert (second.prompt_tokens, second.output_tokens) == (8, 3)
    assert "capped" in capped.notes[-1]
    assert cap_lengths(trace, max_output_tokens=2).requests[0].prompt_tokens == 40
    with pytest.raises(ValueError, match="max_prompt_tokens must be >= 1"):
        cap_lengths(trace, max_prompt_tokens=0)


def test_cdf_points_are_empirical_cdfs_per_metric_and_side():
    rows = [{"real_ttft_s": 0.2, "sim_ttft_s": 0.1, "real_tpot_s": "", "sim_tpot_s": "",
             "real_e2e_s": 1.0, "sim_e2e_s": 2.0},
            {"real_ttft_s": 0.1, "sim_ttft_s": 0.3, "real_tpot_s": 0.5, "sim_tpot_s": 0.4,
             "real_e2e_s": 3.0, "sim_e2e_s": 1.0}]
    points = cdf_points(rows)
    measured_ttft = [(p["value_s"], p["cdf"]) for p in points
                     if p["metric"] == "ttft_s" and p["source"] == "measured"]
    assert measured_ttft == [(0.1, 0.5), (0.2, 1.0)]
    assert [p["cdf"] for p in points if p["metric"] == "tpot_s"] == [1.0, 1.0]


# ---- drift detection --------------------------------------------------------------------
TRUE = Coefficients(0.2, 0.4, 0.02, 0.05, 0.7, 2e-3, 6e-4, provenance="synthetic")
SHAPES = [([8], [0]), ([128], [0]), ([512], [0]), ([1], [16]), ([1] * 8, [128] * 8),
          ([1] * 32, [512] * 32), ([1] * 4, [1024] * 4), ([64, 1, 1], [0, 256, 256]),
          ([3] * 4, [256] * 4), ([256], [0]), ([1] * 16, [64] * 16), ([1] * 2, [900] * 2)]


def _profile(scale: float, coefficients: Coefficients = TRUE) -> list[TimingSample]:
    model = get_model("tiny-llama")
    cost = CostModel(model, get_hardware("cpu"), coefficients)
    return [TimingSample(tuple(n), tuple(c), "iteration", model, "cpu", 1,
                         scale * cost.iteration_time(n, c), "fresh.json", (row,))
            for row, (n, c) in enumerate(SHAPES, start=1)]


def test_a_calibration_fits_its_own_profile_without_drift():
    stored = fit(_profile(1.0)).coefficients
    report = check_drift(_profile(1.0), stored)
    assert not report.drifted
    assert report.stored_mape_pct == pytest.approx(report.refit_mape_pct, abs=0.1)
    assert report.stored_mape_pct < 5.0
    assert report.measured_over_predicted == pytest.approx(1.0, rel=0.03)


def test_a_slower_machine_is_drift():
    stored = fit(_profile(1.0)).coefficients
    report = check_drift(_profile(1.5), stored)
    assert report.drifted, report.describe()
    assert report.measured_over_predicted == pytest.approx(1.5, rel=0.05)
    assert "DRIFTED" in report.describe()


def test_the_shipped_cpu_calibration_still_fits_its_profile():
    """Drift detection on the measured tiny-llama CPU profile behind docs/validation.md: a
    change to the roofline, the profile reader or the fit that moves the stored calibration
    off its profile fails here (re-measure with `servesim validate`, or refit with
    `servesim calibrate PROFILE.json --out C.json`); timings 1.5x slower are drift."""
    profile = read_profile(DOCS / "profile_tiny_llama_cpu.json")
    samples = profile.timing_samples("profile_tiny_llama_cpu.json")
    stored = load_coefficients(DOCS / "calibration_tiny_llama_cpu.json", "cpu")
    report = check_drift(samples, stored)
    assert not report.drifted, report.describe()
    assert report.stored_mape_pct <= report.refit_mape_pct + 1.0
    slower = [TimingSample(s.new_tokens, s.context_tokens, s.group, s.model, s.hardware, s.tp,
                           1.5 * s.measured_s, s.source_file, s.source_rows) for s in samples]
    assert check_drift(slower, stored).drifted
