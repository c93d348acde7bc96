"""`servesim capacity`: SLO parsing, bisection and its stopping rules, and M/D/1."""

from __future__ import annotations

import pytest

from sim.assembly import build_cost_model
from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.sweep.capacity import find_capacity, parse_slo

TRACE = "synthetic:n=50,arrivals=poisson:10,prompt=fixed:100,output=fixed:10"


def _linear_summary(options: ReplayOptions) -> dict:
    """A stand-in simulator whose p99 TTFT is 0.1 s per unit of rate_scale, noise-free."""
    return {"requests_unfinished": 0, "ttft_p99_s": 0.1 * options.rate_scale}


def test_parse_slo_names_summary_keys_in_seconds():
    assert parse_slo("ttft_p99=2,tpot_p99_s=0.1") == {"ttft_p99_s": 2.0, "tpot_p99_s": 0.1}


@pytest.mark.parametrize("text", ["ttft_p99", "ttft_p99=-1", "=2", "ttft_p99=x", "a=inf"])
def test_parse_slo_rejects_bad_items(text):
    with pytest.raises(ValueError, match="--slo takes METRIC=SECONDS"):
        parse_slo(text)


def test_bisection_brackets_by_doubling_then_stops_at_the_tolerance():
    result = find_capacity(ReplayOptions(trace=TRACE), {"ttft_p99_s": 0.5}, seeds=1,
                           rel_tol=0.01, summary_fn=_linear_summary)
    assert [p.rate_scale for p in result.probes[:4]] == [1, 2, 4, 8]
    assert result.stopped == "tolerance"
    assert 5 * 0.99 <= result.rate_scale <= 5
    assert all(p.meets == (p.rate_scale <= 5) for p in result.probes)


def test_bisection_halves_when_the_start_rate_fails():
    result = find_capacity(ReplayOptions(trace=TRACE, rate_scale=8), {"ttft_p99_s": 0.25},
                           seeds=1, rel_tol=0.01, summary_fn=_linear_summary)
    assert [p.rate_scale for p in result.probes[:3]] == [8, 4, 2]
    assert 2.5 * 0.99 <= result.rate_scale <= 2.5


def test_unfinished_requests_fail_the_probe():
    def summary(options):
        return {"requests_unfinished": int(options.rate_scale > 3), "ttft_p99_s": 0.0}

    result = find_capacity(ReplayOptions(trace=TRACE), {"ttft_p99_s": 1}, seeds=1,
                           rel_tol=0.01, summary_fn=summary)
    assert 3 * 0.99 <= result.rate_scale <= 3


def test_search_stops_where_the_metric_is_within_noise_of_its_bound():
    """Seeds give ±0.02 s around 0.1 s per unit: near the bound, bisecting would chase noise."""
    def noisy(options):
        wobble = 0.02 if options.seed % 2 else -0.02
        return {"requests_unfinished": 0, "ttft_p99_s": 0.1 * options.rate_scale + wobble}

    result = find_capacity(ReplayOptions(trace=TRACE), {"ttft_p99_s": 0.5}, seeds=2, z=2,
                           summary_fn=noisy)
    assert result.stopped == "noise"
    assert [p.rate_scale for p in result.probes] == [1, 2, 4, 8, 6, 5]  # |0.5-0.5| < 2*0.02
    assert result.probes[-1].stderrs["ttft_p99_s"] == pytest.approx(0.02)


def test_unknown_metric_and_unmeetable_slo_are_clear_errors():
    with pytest.raises(ValueError, match="unknown SLO metric 'ttfx_s'"):
        find_capacity(ReplayOptions(trace=TRACE), {"ttfx_s": 1}, seeds=1,
                      summary_fn=_linear_summary)
    with pytest.raises(ValueError, match="no probed rate_scale"):
        find_capacity(ReplayOptions(trace=TRACE), {"ttft_p99_s": 1e-9}, seeds=1,
                      max_probes=5, summary_fn=_linear_summary)


def test_capacity_matches_pollaczek_khinchine_for_md1():
    """Static batching, batch 1, identical requests: M/D/1. For a mean-wait SLO W the PK
    formula W = rho S / (2 (1 - rho)) gives the capacity rho = 2W / (S + 2W); at W = 0.75 S
    that is rho = 0.6. The trace's nominal rate is 1/S, so rate_scale is rho. (The roofline
    engine: the measured vLLM one plans ahead and adds a frontend latency, not M/D/1.)"""
    prompt = 512
    service_s = build_cost_model(resolve(ReplayOptions(cost_model="roofline"),
                                         _one(prompt))).prefill_time(prompt)
    options = ReplayOptions(
        trace=f"synthetic:n=5000,arrivals=poisson:{1 / service_s!r},prompt=fixed:{prompt},"
              "output=fixed:1", scheduler="static", max_num_seqs=1, seed=3, cost_model="roofline")
    result = find_capacity(options, {"queue_mean_s": 0.75 * service_s}, seeds=2, rel_tol=0.02)
    assert result.rate_scale == pytest.approx(0.6, rel=0.04)
    assert result.rate_req_s == pytest.approx(0.6 / service_s, rel=0.06)


def test_capacity_command_prints_the_probes_and_the_rate(capsys):
    assert main(["capacity", "--trace", TRACE, "--slo", "ttft_p99=0.05,tpot_p99=0.05",
                 "--seeds", "1", "--rel-tol", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "capacity: rate_scale" in out and "req/s" in out
    assert "has no effect" not in out
    assert main(["capacity", "--trace", TRACE, "--slo", "ttft_p99=0.05,tpot_p99=0.05",
                 "--seeds", "1", "--rel-tol", "0.1", "--token-budget", "256"]) == 0
    assert ("note: --token-budget 256 has no effect: only --scheduler chunked reads it"
            in capsys.readouterr().out)
    assert main(["capacity", "--trace", TRACE, "--slo", "ttft_p99=1", "--pace", "asap"]) == 2
    assert "needs --pace trace" in capsys.readouterr().err


def _one(prompt: int):
    from policies.types import Request
    from traces import Trace

    return Trace(name="one", requests=[Request(0, 0.0, prompt, 1)], invalid_rows=[], notes=[])


def test_cheapest_cell_prices_gpus_by_capacity():
    """Cost per request is gpus * price / rate: A100s at 0.5 / 0.3 beat H100s at 2 / 1; a cell
    that meets the SLOs at no rate ranks last with its reason."""
    from sim.sweep.capacity import Capacity
    from sim.sweep.cheapest import cheapest, parse_prices
    from sim.sweep.grid import expand_grid

    cells = expand_grid({"trace": TRACE, "hardware": ["h100", "a100", "l40s"], "tp": 2})
    rates = {"h100": 1.0, "a100": 0.3}

    def capacity(options):
        if options.hardware not in rates:
            raise ValueError("no probed rate_scale meets the SLOs")
        return Capacity(1.0, rates[options.hardware], "tolerance")

    ranked = cheapest(ReplayOptions(), cells, parse_prices("h100=2,a100=0.5,l40s=1"), capacity)
    assert [p.cell.values["hardware"] for p in ranked] == ["a100", "h100", "l40s"]
    assert ranked[0].usd_per_million_requests == pytest.approx(2 * 0.5 / 3600 / 0.3 * 1e6)
    assert ranked[1].num_gpus == 2 and ranked[2].capacity is None
    assert ranked[2].error == "no probed rate_scale meets the SLOs"
    with pytest.raises(ValueError, match="lacks a price for l40s"):
        cheapest(ReplayOptions(), cells, parse_prices("h100=2,a100=0.5"), capacity)
    with pytest.raises(ValueError, match="--gpu-price takes"):
        parse_prices("h100")


def test_capacity_grid_command_names_the_cheapest_cell(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('hardware = ["h100", "a100"]\n')
    assert main(["capacity", "--trace", TRACE, "--slo", "ttft_p99=0.05", "--seeds", "1",
                 "--rel-tol", "0.2", "--grid", str(grid), "--gpu-price", "h100=3,a100=1"]) == 0
    out = capsys.readouterr().out
    assert "cheapest: cell" in out and "USD per million requests" in out
    assert main(["capacity", "--trace", TRACE, "--slo", "ttft_p99=1", "--grid", str(grid)]) == 2
    assert "--gpu-price lacks a price for a100, h100" in capsys.readouterr().err
    assert main(["capacity", "--trace", TRACE, "--slo", "ttft_p99=1", "--gpu-price", "h100=3"]) == 2
    assert "--gpu-price goes with --grid" in capsys.readouterr().err


def test_an_slo_no_rate_meets_stops_where_the_rate_no_longer_matters():
    """Below some rate requests run alone and the metrics stop changing: halving further is
    pointless, and the error says why instead of bisecting towards 1e-12."""
    def summary(options):
        return {"requests_unfinished": 0, "ttft_p99_s": 0.2 + 0.1 * max(options.rate_scale - 1, 0)}

    with pytest.raises(ValueError, match=r"at rate_scale 1 and 0.5 the requests no longer wait"
                                         r".*ttft_p99_s 0.2 s > 0.1 s"):
        find_capacity(ReplayOptions(trace=TRACE, rate_scale=4), {"ttft_p99_s": 0.1}, seeds=1,
                      summary_fn=summary)


def test_the_downward_search_has_a_floor():
    def summary(options):  # keeps changing with the rate, never meets
        return {"requests_unfinished": 0, "ttft_p99_s": 1 + options.rate_scale}

    with pytest.raises(ValueError, match="the search stopped at rate_scale"):
        find_capacity(ReplayOptions(trace=TRACE), {"ttft_p99_s": 0.5}, seeds=1, max_probes=100,
                      summary_fn=summary)


def test_a_fixed_trace_runs_each_probe_once(capsys):
    """The bundled trace file is fixed: seeds 0 and 1 give the same run, so --seeds 3 runs one
    simulation per probe and says so; an SLO a lone request misses ends quickly and says why."""
    argv = ["capacity", "--max-requests", "40", "--model", "llama-3-8b", "--hardware", "h100",
            "--cost-model", "roofline", "--seeds", "3", "--rel-tol", "0.2"]
    assert main([*argv, "--slo", "ttft_p99=0.5"]) == 0
    out = capsys.readouterr().out
    assert "each probe ran once, not 3 times" in out
    assert main([*argv, "--slo", "ttft_p99=0.0001"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no rate meets the SLOs") and "a request alone misses" in err
