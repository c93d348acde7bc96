"""End-to-end properties of `simulate`: accounting, determinism, import hygiene, paging."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.api import simulate
from sim.config import ReplayOptions, resolve
from sim.results import write_results
from tests.helpers import SHARED

TIMESTAMPED = [
    "azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv",
    "azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv",
    "mooncake_fast25/synthetic_trace.jsonl",
    "vidur_workloads/synth_10k.csv",
    "vidur_workloads/splitwise_conv_qps0.8_n5000.csv",
]
LENGTH_ONLY = [
    "request_lengths/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
    "request_lengths/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
]
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"shared data not found at {SHARED}")


def _check_conservation(results) -> None:
    s = results.summary
    assert s["requests_total"] == results.config.trace.num_rows
    assert s["requests_total"] == s["requests_finished"] + s["requests_rejected"] + s["requests_unfinished"]
    rows = results.request_rows()
    assert [r["request_id"] for r in rows] == list(range(s["requests_total"]))
    statuses = [r["status"] for r in rows]
    assert statuses.count("finished") == s["requests_finished"]
    assert statuses.count("rejected") == s["requests_rejected"]
    assert statuses.count("unfinished") == s["requests_unfinished"]
    assert all(r["reason"] for r in rows if r["status"] != "finished")


@needs_shared
@pytest.mark.parametrize("name", TIMESTAMPED)
def test_every_request_of_every_timestamped_trace_is_accounted_for(name):
    options = ReplayOptions(trace=str(SHARED / "traces" / name), horizon_s=90.0)
    _check_conservation(simulate(resolve(options)))


@needs_shared
@pytest.mark.parametrize("name", LENGTH_ONLY)
def test_length_only_traces_with_synthetic_arrivals_are_accounted_for(name):
    options = ReplayOptions(trace=str(SHARED / "traces" / name), arrivals="poisson:20",
                            horizon_s=60.0, model="llama-2-7b")
    _check_conservation(simulate(resolve(options)))


@needs_shared
def test_mooncake_long_prompts_are_rejected_with_reasons():
    options = ReplayOptions(trace=str(SHARED / "traces/mooncake_fast25/synthetic_trace.jsonl"),
                            max_requests=300, model="llama-3-8b")
    results = simulate(resolve(options))
    _check_conservation(results)
    rejected = [r for r in results.request_rows() if r["status"] == "rejected"]
    assert rejected and all("max_model_len 8192" in r["reason"] for r in rejected)
    assert results.summary["requests_unfinished"] == 0


def test_malformed_rows_are_rejected_not_dropped(tmp_path):
    trace = tmp_path / "bad.csv"
    trace.write_text("arrival_time_s,prompt_tokens,output_tokens\n0,10,5\n0.5,abc,5\n1.0,-3,5\n"
                     "1.5,20,0\n2.0,30,4\n")
    results = simulate(resolve(ReplayOptions(trace=str(trace))))
    _check_conservation(results)
    rows = results.request_rows()
    assert [r["status"] for r in rows] == ["finished", "rejected", "rejected", "rejected", "finished"]
    assert "line 3" in rows[1]["reason"]


def test_request_bigger_than_the_kv_pool_is_rejected():
    trace = "synthetic:n=20,arrivals=poisson:5,prompt=fixed:300,output=fixed:10"
    results = simulate(resolve(ReplayOptions(trace=trace, num_gpu_blocks=10, block_size=16)))
    assert results.summary["requests_rejected"] == 20
    assert "the whole pool has 10" in results.request_rows()[0]["reason"]


def test_same_seed_gives_byte_identical_summary(tmp_path):
    trace = "synthetic:n=400,arrivals=gamma:20:3,prompt=lognormal:800:0.7,output=lognormal:100:0.8"
    outs = []
    for run in range(2):
        results = simulate(resolve(ReplayOptions(trace=trace, seed=11, num_gpu_blocks=3000)))
        outs.append(write_results(results, tmp_path / f"run{run}"))
    assert (outs[0] / "summary.json").read_bytes() == (outs[1] / "summary.json").read_bytes()
    assert (outs[0] / "requests.csv").read_bytes() == (outs[1] / "requests.csv").read_bytes()
    other = simulate(resolve(ReplayOptions(trace=trace, seed=12, num_gpu_blocks=3000)))
    assert other.summary != json.loads((outs[0] / "summary.json").read_text())


def test_simulator_path_imports_no_heavy_frameworks(tmp_path):
    """A replay loads none of the frameworks, nor scipy's optimizers (0.45 s of every start
    when `sim.cost.calibrate` imported them eagerly: only fits need them), nor what only YAML
    hardware specs (yaml) and local sweeps (the process pool) need."""
    code = (
        "import sys\n"
        "from sim.cli import main\n"
        f"main(['replay', '--quiet', '--max-requests', '50', '--out', r'{tmp_path}'])\n"
        "import sim.api\n"
        "heavy = {'torch', 'triton', 'streamlit', 'ray', 'altair', 'pandas', 'scipy.optimize',"
        " 'yaml', 'concurrent.futures.process'} & set(sys.modules)\n"
        "print('HEAVY', sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert "HEAVY []" in out.stdout
    assert (tmp_path / "summary.json").exists()


def test_horizon_leaves_requests_unfinished_with_reasons():
    trace = "synthetic:n=300,arrivals=poisson:50,prompt=fixed:500,output=fixed:200"
    results = simulate(resolve(ReplayOptions(trace=trace, horizon_s=3.0)))
    _check_conservation(results)
    reasons = {r["reason"] for r in results.request_rows() if r["status"] == "unfinished"}
    assert "arrives after the horizon" in reasons
    assert reasons & {"running at the horizon", "waiting at the horizon"}


def test_paged_beats_contiguous_under_memory_pressure(capsys):
    """The PagedAttention result on the bundled trace at a fixed, tight KV budget."""
    common = dict(rate_scale=4.0, max_requests=800, num_gpu_blocks=2500)
    paged = simulate(resolve(ReplayOptions(allocator="paged", **common))).summary
    contiguous = simulate(resolve(ReplayOptions(allocator="contiguous", **common))).summary
    with capsys.disabled():
        print("\n  allocator   batch_size_mean  output_tok/s  kv_frag_mean")
        for name, s in (("paged", paged), ("contiguous", contiguous)):
            print(f"  {name:<11} {s['batch_size_mean']:>15.1f} {s['output_throughput_tok_s']:>13.0f}"
                  f" {s['kv_frag_mean']:>13.3f}")
    assert paged["batch_size_mean"] > 1.5 * contiguous["batch_size_mean"]
    assert paged["output_throughput_tok_s"] > contiguous["output_throughput_tok_s"]
    assert paged["kv_frag_mean"] < contiguous["kv_frag_mean"]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("name", TIMESTAMPED)
def test_whole_traces_run_to_completion_and_are_accounted_for(name):
    options = ReplayOptions(trace=str(SHARED / "traces" / name), model="llama-3.1-8b")
    results = simulate(resolve(options))
    _check_conservation(results)
    assert results.summary["requests_unfinished"] == 0
