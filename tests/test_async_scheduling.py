"""vLLM's async scheduling (`--async-scheduling`): each step is planned while the one before
runs, so a request that arrives during a step first runs in the step after next; an idle
engine takes an arrival at once."""

from __future__ import annotations


import pytest

from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.continuous import ContinuousScheduler, ContinuousParams
from policies.types import Request
from sim.api import simulate
from sim.cli import main
from sim.config import ReplayOptions, resolve
from tests.helpers import FixedCostExecutor, drive


def _engine(async_scheduling: bool) -> Engine:
    allocator = PagedAllocator(PagedParams(num_blocks=64, block_size=16))
    scheduler = ContinuousScheduler(ContinuousParams(max_num_seqs=8), allocator)
    return Engine(scheduler, FixedCostExecutor(1.0), max_model_len=1024,
                  async_scheduling=async_scheduling)


@pytest.mark.parametrize("async_scheduling,first_step_s", [(False, 3.0), (True, 4.0)])
def test_an_arrival_during_a_step_waits_one_more_step_when_planned_ahead(async_scheduling,
                                                                         first_step_s):
    engine = _engine(async_scheduling)
    busy, late, idle = (Request(0, 0.0, 10, 10), Request(1, 2.5, 10, 3),
                        Request(2, 100.0, 10, 3))
    drive(engine, [busy, late, idle])
    assert engine.sequences[0].first_scheduled_s == 0.0  # idle engine: at once
    assert engine.sequences[1].first_scheduled_s == first_step_s
    assert engine.sequences[2].first_scheduled_s == 100.0  # idle again: at once
    assert all(seq.is_done_generating for seq in engine.sequences.values())


def test_held_arrivals_count_as_outstanding():
    engine = _engine(True)
    engine.submit(Request(0, 0.0, 10, 10), 0.0)
    assert engine.outstanding_requests == 1


def _summary(**overrides) -> dict:
    options = ReplayOptions(max_requests=200, rate_scale=4.0, hardware="h100",
                            cost_model="measured", **overrides)
    return simulate(resolve(options)).summary


def test_auto_follows_the_measured_engine_and_costs_about_a_step_of_ttft():
    auto, on, off = (_summary(), _summary(async_scheduling="on"),
                     _summary(async_scheduling="off"))
    assert auto == on
    assert off["requests_finished"] == on["requests_finished"] == 200
    step_s = on["tpot_mean_s"]
    assert 0.3 * step_s < on["ttft_mean_s"] - off["ttft_mean_s"] < 2.0 * step_s


def test_fast_forward_leaves_async_results_unchanged():
    assert (_summary(async_scheduling="on", fast_forward=False)
            == _summary(async_scheduling="on", fast_forward=True))


def test_roofline_plans_between_steps_unless_asked():
    options = ReplayOptions(max_requests=100, cost_model="roofline")
    plain = simulate(resolve(options)).summary
    asked = simulate(resolve(ReplayOptions(max_requests=100, cost_model="roofline",
                                           async_scheduling="off"))).summary
    assert plain == asked


@pytest.mark.parametrize("argv,message", [
    (["--async-scheduling", "sometimes"], "--async-scheduling must be one of auto, on, off"),
    (["--async-scheduling", "on", "--executor", "real", "--model", "tiny-llama"],
     "--async-scheduling on is simulated only"),
])
def test_bad_async_scheduling_is_a_one_line_error(argv, message, capsys, tmp_path):
    assert main(["replay", "--max-requests", "5", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
