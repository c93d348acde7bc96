"""`servesim plan`: the replica search (against stand-in simulators with known answers), the
CLI's answer, files and errors, minimality, and best.toml reproducing the chosen run."""

from __future__ import annotations

import csv
import json
import math
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings, strategies as st

from sim.cli import main
from sim.config import ReplayOptions, options_from_toml
from sim.cost.catalog import get_model
from sim.plan.planner import PlanRequest, check_request, make_plan
from sim.plan.search import Family, Target, misses, search_family, tp_degrees
from sim.sweep.capacity import default_summary, mean_rate

SLO = {"ttft_p99_s": 0.35}
PLAN_ARGS = ["plan", "--model", "llama-3-8b", "--max-requests", "80", "--hardware", "h100,a100",
             "--gpu-price", "h100=2.5,a100=1.6", "--tp", "1", "--token-budget", "2048",
             "--max-num-seqs", "256", "--rate-scale", "30", "--slo", "ttft_p99=0.3,tpot_p99=0.05",
             "--max-gpus", "8", "--workers", "1", "--quiet"]


def _queue_summary(options: ReplayOptions) -> dict:
    """A stand-in simulator: P99 TTFT 0.1 s per unit of rate per replica (P:D: per prefill
    replica), TPOT 0.01 s per unit per decode replica; every request finishes."""
    prefill, decode = options.pools if options.disaggregate else (options.replicas,) * 2
    return {"requests_total": 10, "requests_finished": 10, "requests_unfinished": 0,
            "ttft_p99_s": 0.1 * options.rate_scale / prefill,
            "tpot_p99_s": 0.01 * options.rate_scale / decode}


def _target(slo: dict, rate_scale: float, max_gpus: int = 64) -> Target:
    return Target(slo, rate_scale, max_gpus, num_invalid_rows=0)


def _family(disaggregated: bool = False, tp: int = 1) -> Family:
    return Family("h100", tp, "chunked", 2048, 256, disaggregated)


def test_replicas_come_from_the_one_replica_capacity_and_one_fewer_fails():
    # one replica meets ttft <= 0.35 up to scale 3.5, so scale 10 needs ceil(10 / 3.5) = 3
    candidate = search_family(ReplayOptions(), _family(), _target(SLO, 10.0),
                              summary_fn=_queue_summary)
    assert candidate.feasible and candidate.replicas == 3 and candidate.num_gpus == 3
    assert candidate.one_replica_rate_scale == pytest.approx(3.5, rel=0.05)
    assert [(p.replicas, p.meets) for p in candidate.fewer] == [(2, False)]
    assert candidate.fewer[0].misses == "ttft_p99_s 0.5 > 0.35"
    assert candidate.options["replicas"] == 3 and candidate.options["rate_scale"] == 10.0
    assert candidate.headroom_rate_scale == pytest.approx(10.5, rel=0.05)


def test_an_optimistic_estimate_is_corrected_upward_by_verification():
    def contended(options: ReplayOptions) -> dict:  # routing loses a quarter per extra replica
        summary = _queue_summary(options)
        summary["ttft_p99_s"] *= 1 + (options.replicas - 1) / 4
        return summary

    candidate = search_family(ReplayOptions(), _family(), _target(SLO, 10.0),
                              summary_fn=contended)
    # estimate ceil(10 / 3.5) = 3; n replicas: (n + 3) / 4n <= 0.35 first holds at n = 8;
    # steps of 1, 2, 4 from 3 bracket it in (6, 10], bisection finds 8 and 7 failing
    assert candidate.replicas == 8
    assert [p.replicas for p in candidate.probes] == [3, 4, 6, 10, 8, 7]
    assert not candidate.fewer[0].meets and candidate.fewer[0].replicas == 7


@settings(max_examples=40, deadline=None)
@given(per_replica=st.floats(0.5, 20), contention=st.floats(0, 0.5), target=st.floats(0.5, 60))
def test_the_answer_passes_and_one_fewer_fails_for_any_monotone_simulator(
        per_replica, contention, target):
    """P99 TTFT grows with the load per replica, plus a routing loss per extra replica (kept
    below what any number of replicas can absorb)."""
    assume(target * contention < 0.9 * per_replica)

    def simulator(options: ReplayOptions) -> dict:
        n = options.replicas
        load = options.rate_scale / n * (1 + contention * (n - 1))
        return {"requests_total": 1, "requests_finished": 1, "requests_unfinished": 0,
                "ttft_p99_s": load / per_replica}

    slo = {"ttft_p99_s": 1.0}
    candidate = search_family(ReplayOptions(), _family(), _target(slo, target, max_gpus=2000),
                              summary_fn=simulator)
    assert candidate.feasible, candidate.reason
    assert len(candidate.probes) <= 2 * math.log2(candidate.replicas + 1) + 4
    assert candidate.summary["ttft_p99_s"] <= 1.0
    [fewer] = candidate.fewer
    assert fewer.replicas == candidate.replicas - 1 and not fewer.meets
    if fewer.replicas:
        assert simulator(ReplayOptions(rate_scale=target, replicas=fewer.replicas))[
            "ttft_p99_s"] > 1.0


def test_a_split_grows_the_pool_its_failing_metric_points_at_and_is_minimal():
    slo = {"ttft_p99_s": 0.35, "tpot_p99_s": 0.012}
    candidate = search_family(ReplayOptions(), _family(disaggregated=True),
                              _target(slo, 10.0), summary_fn=_queue_summary)
    # prefill: 1.0 / P <= 0.35 -> P = 3; decode: 0.1 / D <= 0.012 -> D = 9
    assert candidate.disaggregate == "3:9" and candidate.num_gpus == 12
    assert {p.disaggregate: p.meets for p in candidate.fewer} == {"2:9": False, "3:8": False}


def test_a_one_one_split_that_one_colocated_replica_beats_is_not_minimal():
    candidate = search_family(ReplayOptions(), _family(disaggregated=True),
                              _target(SLO, 1.0), summary_fn=_queue_summary)
    assert not candidate.feasible
    assert candidate.reason == ("P:D 1:1 is not minimal: one colocated replica (one fewer) meets "
                                "the target")
    assert [(p.replicas, p.disaggregate, p.meets) for p in candidate.fewer] == [(1, None, True)]


def test_more_gpus_than_max_gpus_is_infeasible_with_the_reason():
    candidate = search_family(ReplayOptions(), _family(tp=2), _target(SLO, 10.0, max_gpus=4),
                              summary_fn=_queue_summary)
    assert not candidate.feasible
    assert candidate.reason.startswith("2 replicas (4 GPUs, --max-gpus) still miss")


def test_weights_that_do_not_fit_are_infeasible_with_the_memory_reason():
    base = ReplayOptions(model="llama-3-70b", trace="synthetic:n=5,arrivals=poisson:1,"
                                                    "prompt=fixed:64,output=fixed:8")
    candidate = search_family(base, Family("a100", 1, "chunked", 2048, 256, False),
                              _target(SLO, 1.0), summary_fn=default_summary)
    assert not candidate.feasible and "GB of weights" in candidate.reason


def test_tp_degrees_divide_the_heads():
    assert tp_degrees(get_model("llama-3-8b"), 64) == [1, 2, 4, 8]
    assert tp_degrees(get_model("llama-3-8b"), 2) == [1, 2]
    assert tp_degrees(get_model("qwen2-0.5b"), 64) == [1, 2]  # 14 heads, 2 KV heads


def test_dropped_requests_miss_even_within_the_slo():
    summary = {"requests_total": 10, "requests_finished": 8, "requests_rejected": 0,
               "ttft_p99_s": 0.1}
    assert misses(summary, _target(SLO, 1.0)) == {"requests": "2 of 10 requests not finished"}
    invalid = {**summary, "requests_rejected": 2}  # trace rows that are not requests
    assert misses(invalid, Target(SLO, 1.0, 8, num_invalid_rows=2)) == {}
    rejected = {**summary, "requests_finished": 6, "requests_rejected": 3}
    assert misses(rejected, _target(SLO, 1.0)) == {
        "requests": "3 of 10 requests rejected; 1 of 10 requests not finished"}


def test_rate_in_requests_per_second_becomes_a_rate_scale():
    base = ReplayOptions(max_requests=60)
    _, target, base_rate = check_request(PlanRequest(base, ["h100"], SLO, rate_req_s=5.0))
    assert base_rate == mean_rate(base)
    assert target.rate_scale * base_rate == pytest.approx(5.0)


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> tuple[Path, str, int]:
    out = tmp_path_factory.mktemp("plan")
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        status = main([*PLAN_ARGS, "--out", str(out)])
    return out, buffer.getvalue(), status


def test_cli_prints_the_answer_first_then_the_ranked_table(planned):
    out, stdout, status = planned
    assert status == 0
    first = stdout.splitlines()[0]
    assert re.fullmatch(r"\d+ x (H100|A100) \(TP 1, \d+ replicas?, chunked 2048, 256 seqs\): "
                        r"\$\d+\.\d\d/h, P99 TTFT \d\S* s, P99 TPOT \d\S* s", first), first
    assert "ranked by $/h" in stdout and "headroom" in stdout
    data = json.loads((out / "plan.json").read_text())
    assert data["answer"] == first and data["ranked_by"] == "usd_per_hour"
    ranked = sorted((c for c in data["candidates"] if c["feasible"]), key=lambda c: c["rank"])
    costs = [c["usd_per_hour"] for c in ranked]
    assert costs == sorted(costs) and len(ranked) == 2
    assert costs[0] == pytest.approx(ranked[0]["num_gpus"] * {"h100": 2.5, "a100": 1.6}[
        ranked[0]["family"]["hardware"]])


def test_plan_files_hold_the_contract_keys(planned):
    out, _, _ = planned
    with (out / "plan.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for key in ("hardware", "tp", "replicas", "num_gpus", "usd_per_hour",
                "usd_per_million_output_tokens", "output_tok_s_per_gpu", "tok_s_per_user",
                "ttft_p99_s", "tpot_p99_s", "headroom_rate_scale", "fewer_replicas_misses"):
        assert key in rows[0], key
    data = json.loads((out / "plan.json").read_text())
    for key in ("best", "best_summary", "minimality_probe", "target", "candidates"):
        assert key in data, key
    toml = tomllib.loads((out / "best.toml").read_text())
    assert {"model", "hardware", "tp", "pp", "replicas", "scheduler", "token_budget",
            "max_num_seqs", "trace", "rate_scale"} <= set(toml)
    assert toml == {k: v for k, v in data["best"].items() if v is not None}
    html = (out / "pareto.html").read_text()
    assert "vega" in html and "tok_s_per_user" in html


def test_the_chosen_configuration_is_minimal(planned):
    out, _, _ = planned
    data = json.loads((out / "plan.json").read_text())
    best = ReplayOptions().updated(data["best"])
    assert best.replicas >= 2, "the test's load should need more than one replica"
    [probe] = data["minimality_probe"]
    assert probe["replicas"] == best.replicas - 1 and not probe["meets"]
    # recomputed independently: one replica fewer misses an SLO or drops requests
    fewer = default_summary(best.updated({"replicas": best.replicas - 1}))
    slo = data["target"]["slo"]
    assert (fewer["requests_finished"] < fewer["requests_total"]
            or any(fewer[name] > bound for name, bound in slo.items()))


def test_best_toml_reproduces_the_plans_numbers(planned, tmp_path):
    out, _, _ = planned
    assert main(["replay", "--config", str(out / "best.toml"), "--out", str(tmp_path),
                 "--quiet"]) == 0
    replayed = json.loads((tmp_path / "summary.json").read_text())
    planned_summary = json.loads((out / "plan.json").read_text())["best_summary"]
    for key in ("ttft_p99_s", "tpot_p99_s", "requests_finished", "output_throughput_tok_s"):
        assert replayed[key] == planned_summary[key], key


def test_no_configuration_exits_1_and_still_writes_why(tmp_path, capsys):
    status = main(["plan", "--model", "llama-3-70b", "--hardware", "l40s", "--tp", "1",
                   "--token-budget", "2048", "--max-num-seqs", "256", "--max-requests", "5",
                   "--slo", "ttft_p99=2", "--workers", "1", "--quiet", "--out", str(tmp_path)])
    assert status == 1
    assert capsys.readouterr().out.startswith("no configuration meets P99 TTFT <= 2 s")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["best"] is None and "GB of weights" in data["candidates"][0]["reason"]
    assert not (tmp_path / "best.toml").exists()


@pytest.mark.parametrize("extra, message", [
    (["--slo", "ttft_p99"], "--slo takes METRIC=SECONDS"),
    (["--slo", "ttft_p42=2"], "unknown SLO metric 'ttft_p42'"),
    (["--slo", "ttft_p99=2", "--gpu-price", "h100=cheap"], "--gpu-price takes HARDWARE="),
    (["--slo", "ttft_p99=2", "--gpu-price", "a100=1"], "--gpu-price lacks a price for h100"),
    (["--slo", "ttft_p99=2", "--hardware", "h999"], "h999"),
    (["--slo", "ttft_p99=2", "--rate", "3", "--rate-scale", "2"], "either --rate-scale X or"),
    (["--slo", "ttft_p99=2", "--rate", "-1"], "--rate must be > 0"),
    (["--slo", "ttft_p99=2", "--replicas", "2"], "plan searches --replicas itself"),
    (["--slo", "ttft_p99=2", "--disaggregate", "1:1"], "plan takes --disaggregate auto"),
    (["--slo", "ttft_p99=2", "--tp", "3"], "allows TP 1, 2, 4, 8"),
    (["--slo", "ttft_p99=2", "--tp", "x"], "--tp takes comma-separated integers"),
    (["--slo", "ttft_p99=2", "--max-gpus", "0"], "--max-gpus must be >= 1"),
    (["--slo", "ttft_p99=2", "--allocator", "nope"], "nope"),
    (["--slo", "ttft_p99=2", "--executor", "real"], "plan runs the simulator"),
])
def test_bad_input_is_one_error_line_with_status_2(extra, message, tmp_path, capsys):
    status = main(["plan", "--max-requests", "20", "--quiet", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "plan.json").exists()


def test_in_process_plan_matches_a_worker_plan(planned):
    out, _, _ = planned
    request = PlanRequest(ReplayOptions(max_requests=80, scheduler="chunked"), ["h100"],
                          {"ttft_p99_s": 0.3, "tpot_p99_s": 0.05}, rate_scale=30.0, tps=[1],
                          token_budgets=[2048], max_num_seqs=[256], max_gpus=8)
    plan = make_plan(request, backend=None)
    data = json.loads((out / "plan.json").read_text())
    [h100] = [c for c in data["candidates"] if c["family"]["hardware"] == "h100"]
    assert plan.best.replicas == h100["replicas"]
    assert plan.best.summary == h100["summary"]
    assert not math.isnan(plan.metrics(plan.best)["output_tok_s_per_gpu"])


def test_disaggregate_auto_and_another_scheduler_search_their_own_families(tmp_path, capsys):
    status = main(["plan", "--max-requests", "40", "--hardware", "h100", "--tp", "1",
                   "--scheduler", "continuous", "--max-num-seqs", "256", "--rate-scale", "120",
                   "--slo", "ttft_p99=0.5", "--disaggregate", "auto", "--workers", "1",
                   "--quiet", "--out", str(tmp_path)])
    assert status == 0
    assert "continuous, 256 seqs" in capsys.readouterr().out.splitlines()[0]
    data = json.loads((tmp_path / "plan.json").read_text())
    [colocated, split] = data["candidates"]
    assert colocated["family"]["token_budget"] is None  # budgets apply to chunked only
    assert split["feasible"] and re.fullmatch(r"\d+:\d+", split["disaggregate"])
    prefill, decode = map(int, split["disaggregate"].split(":"))
    assert split["num_gpus"] == prefill + decode
    assert all(not p["meets"] for p in split["fewer"]) and split["fewer"]
