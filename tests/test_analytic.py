"""The simulator against closed forms: a lone request, and M/D/1 queueing."""

from __future__ import annotations

import pytest

from sim.api import simulate
from sim.assembly import build_cost_model
from sim.config import ReplayOptions, resolve
from traces import ArrivalProcess, LengthDistribution, Trace, synthetic_trace
from policies.types import Request


def _lone(prompt: int, output: int, **options) -> tuple:
    config = resolve(ReplayOptions(**options), _one_request_trace(prompt, output))
    return simulate(config), build_cost_model(config), config.frontend_latency_s


@pytest.mark.parametrize("model,hardware,tp", [("llama-3-8b", "h100", 1),
                                                ("llama-2-70b", "a100", 4),
                                                ("mixtral-8x7b", "h100", 2),
                                                ("deepseek-v2-lite", "l40s", 1)])
def test_lone_request_ttft_is_prefill_time_and_e2e_adds_decode_steps(model, hardware, tp):
    prompt, output = 1000, 50
    results, cost, frontend_s = _lone(prompt, output, model=model, hardware=hardware, tp=tp)
    prefill = cost.prefill_time(prompt)
    decodes = [cost.decode_time([prompt + i]) for i in range(output - 1)]
    s = results.summary
    # the engine gets the request after the frontend's latency (the measured vLLM engine's)
    assert s["ttft_mean_s"] == pytest.approx(frontend_s + prefill, rel=1e-12)
    assert s["e2e_mean_s"] == pytest.approx(frontend_s + prefill + sum(decodes), rel=1e-12)
    assert s["tpot_mean_s"] == pytest.approx(sum(decodes) / (output - 1), rel=1e-12)
    assert s["queue_mean_s"] == pytest.approx(frontend_s, abs=1e-12)


def test_static_batch_one_matches_md1_pollaczek_khinchine():
    """Batch-1 static batching with identical requests is an M/D/1 queue:
    mean wait W_q = rho * S / (2 (1 - rho)) for service time S and load rho = lambda S.
    (The roofline engine plans between steps; the measured vLLM one plans ahead.)"""
    prompt, output = 512, 1
    cost = build_cost_model(resolve(ReplayOptions(cost_model="roofline"),
                                    _one_request_trace(prompt, output)))
    service_s = cost.prefill_time(prompt)
    rho = 0.6
    rate = rho / service_s
    trace = synthetic_trace(
        60_000, ArrivalProcess("poisson", rate), LengthDistribution.fixed(prompt),
        LengthDistribution.fixed(output), seed=7,
    )
    config = resolve(ReplayOptions(scheduler="static", max_num_seqs=1, cost_model="roofline"),
                     trace)
    results = simulate(config)
    expected_wait = rho * service_s / (2 * (1 - rho))
    assert results.summary["requests_finished"] == 60_000
    assert results.summary["queue_mean_s"] == pytest.approx(expected_wait, rel=0.04)
    assert results.summary["e2e_mean_s"] == pytest.approx(expected_wait + service_s, rel=0.04)


def _one_request_trace(prompt: int, output: int) -> Trace:
    return Trace(name="one", requests=[Request(0, 0.0, prompt, output)], invalid_rows=[], notes=[])
