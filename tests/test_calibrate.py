"""The calibration fit: recovers what generated the data, and fits the shared GPU profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cost.calibrate import FITTED, evaluate, fit, holdout_mask, stated_holdout_mape
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import Coefficients, default_coefficients, load_coefficients
from sim.cost.profiles import TimingSample, shared_samples
from sim.cost.roofline import CostModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "calibration"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared GPU profiles not found at {SHARED}")

TRUE = Coefficients(0.62, 0.83, 0.41, 0.55, 0.7, 2e-3, 5e-5, provenance="synthetic",
                    allreduce_latency_s=2e-5, layer_overhead_s=3e-5, tp_overhead_s=3e-3)

SHAPES: list[tuple[list[int], list[int]]] = [
    ([1], [128]), ([1] * 8, [2048] * 8), ([1] * 64, [4096] * 64), ([1] * 32, [512] * 32),
    ([64], [0]), ([512], [0]), ([4096], [0]), ([2048], [6144]),
    ([1024, 1, 1, 1], [0, 900, 3000, 7000]), ([256] * 4, [0] * 4),
]
CONFIGS = [("llama-2-7b", 1), ("llama-2-7b", 2), ("llama-2-70b", 2), ("llama-2-70b", 4),
           ("llama-2-70b", 8), ("llama-3-8b", 1)]


def synthetic_samples(coefficients: Coefficients, hardware: str = "h100") -> list[TimingSample]:
    """Whole iterations timed by the CostModel itself, over shapes that make every term bite."""
    samples = []
    for model_name, tp in CONFIGS:
        model = get_model(model_name)
        cost = CostModel(model, get_hardware(hardware), coefficients, tp=tp)
        for row, (new, ctx) in enumerate(SHAPES, start=1):
            samples.append(TimingSample(tuple(new), tuple(ctx), "iteration", model, hardware, tp,
                                        cost.iteration_time(new, ctx), f"{model_name}-tp{tp}",
                                        (row,)))
    return samples


def test_evaluate_matches_the_cost_model_exactly():
    report = evaluate(synthetic_samples(TRUE), TRUE)
    assert report.stats(split="all").max_error_pct < 1e-9


def test_fit_recovers_the_coefficients_that_generated_the_samples():
    result = fit(synthetic_samples(TRUE), fit_date="2026-11-25")
    assert result.not_informed == ()
    for name in FITTED:
        fitted, true = getattr(result.coefficients, name), getattr(TRUE, name)
        assert fitted == pytest.approx(true, rel=0.02), name
    assert result.report.stats(split="held-out").mape_pct < 0.5


def test_fit_is_deterministic_and_states_its_provenance():
    samples = synthetic_samples(TRUE)
    first, second = fit(samples, fit_date="2026-11-25"), fit(samples, fit_date="2026-11-25")
    assert first.coefficients == second.coefficients
    provenance = first.coefficients.provenance
    assert provenance.startswith("fitted 2026-11-25 by sim.cost.calibrate for h100")
    assert stated_holdout_mape(provenance) == pytest.approx(
        first.report.stats(split="held-out").mape_pct, abs=0.05)


def test_uninformed_coefficients_keep_their_start():
    # Every sample at TP 2: the TP overhead is indistinguishable from the iteration overhead.
    samples = [s for s in synthetic_samples(TRUE) if s.tp == 2]
    result = fit(samples)
    assert "tp_overhead_s" in result.not_informed
    assert result.coefficients.tp_overhead_s == default_coefficients("_generic").tp_overhead_s


def test_holdout_takes_every_kth_sample_of_each_file():
    samples = synthetic_samples(TRUE)[:13]  # 10 of one file, 3 of the next
    assert [i for i, h in enumerate(holdout_mask(samples, 5)) if h] == [4, 9]
    with pytest.raises(ValueError, match="holdout_every"):
        holdout_mask(samples, 1)


def test_fit_refuses_mixed_hardware():
    mixed = synthetic_samples(TRUE)[:5] + synthetic_samples(TRUE, "a100")[:5]
    with pytest.raises(ValueError, match="per hardware"):
        fit(mixed)


# ---- the shared GPU profiles --------------------------------------------------------------
BOUNDS_PCT: dict[str, dict[tuple[str, str], float]] = {
    # (file suffix, op group) -> bound on the MAPE over all points, a little above the measured
    # value (docs/calibration.md has the table).
    "h100": {
        ("mlp.csv", "linear"): 12.0,
        ("splitwise_sim/perf_model.csv", "iteration"): 10.0,
    },
    "a100": {
        ("mlp.csv", "linear"): 9.0,
        ("splitwise_sim/perf_model.csv", "iteration"): 18.0,
        ("figure2_decode.csv", "iteration"): 14.0,
        ("figure2_prefill.csv", "iteration"): 9.0,
        ("figure9_chunking_overhead.csv", "iteration"): 9.0,
        ("table2_batch_composition.csv", "iteration"): 18.0,
        ("table2_batch_composition.csv", "linear"): 6.0,
        ("cpu_overheads.csv", "overhead"): 6.0,
    },
}


@pytest.fixture(scope="module", params=["h100", "a100"])
def shared_fit(request):
    if not SHARED.is_dir():
        pytest.skip(f"shared GPU profiles not found at {SHARED}")
    samples = shared_samples(SHARED, request.param)
    return request.param, samples, fit(samples, fit_date="2026-11-25")


@needs_shared
def test_fit_error_per_file_and_group_is_within_bounds(shared_fit):
    hardware, _, result = shared_fit
    report = result.report
    checked = 0
    for file in report.files:
        for group in report.groups_in(file):
            bound = next(b for (suffix, g), b in BOUNDS_PCT[hardware].items()
                         if file.endswith(suffix) and g == group)
            assert report.stats(file, group, "all").mape_pct < bound, (file, group)
            checked += 1
    assert checked == len(report.files) + (1 if hardware == "a100" else 0)  # table2: 2 groups


@needs_shared
def test_shipped_coefficients_reproduce_their_stated_holdout_mape(shared_fit):
    """Drift detection: a change to the readers, the roofline or the fit that moves the shipped
    fit's accuracy by more than a point fails here; refit with `servesim calibrate`."""
    hardware, samples, refit = shared_fit
    shipped = load_coefficients("shared-fit", hardware)
    assert "2026-11-25" in shipped.provenance
    stated = stated_holdout_mape(shipped.provenance)
    assert refit.report.stats(split="held-out").mape_pct == pytest.approx(stated, abs=1.0)
    shipped_now = evaluate(samples, shipped).stats(split="held-out").mape_pct
    assert shipped_now == pytest.approx(stated, abs=1.0)
