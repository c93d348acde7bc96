"""`servesim validate --recorded`: reading recorded inference-perf runs, the ITL derivation,
overload verdicts, the outputs' contract, bad layouts, and one real recorded run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from sim import recorded
from sim.cli import main
from tests.helpers import SHARED

HF_CONFIGS = Path(__file__).resolve().parent / "data" / "hf_configs"
_RECORDED = Path("ground_truth") / "vllm_h100_inference_perf"
GROUND_TRUTH = next((shared / _RECORDED for shared in (SHARED, SHARED.parents[1] / "shared")
                     if (shared / _RECORDED).is_dir()), SHARED / _RECORDED)
"""`../shared` beside the repo root (CI), or one level further up (a worktree under wt/)."""

WORKLOAD = """\
data:
  type: shared_prefix
  shared_prefix:
    num_groups: 2
    num_prompts_per_group: 2
    system_prompt_len: 40
    question_len: 60
    output_len: {output}
load:
  type: constant
  stages:
  - rate: {rate}
    duration: {duration}
"""


def _stage(ttft_s: tuple[float, float, float], e2e_s: tuple[float, float, float],
           successes: int = 10, failures: int = 0) -> dict:
    def stats(values):
        return dict(zip(("mean", "p90", "p99"), values))

    return {"successes": {"count": successes,
                          "latency": {"time_to_first_token": stats(ttft_s),
                                      "request_latency": stats(e2e_s)}},
            "failures": {"count": failures}}


def _make_run(root: Path, name: str, stage: dict, *, rate: float = 2.0, duration: float = 5.0,
              output: int = 21, max_num_seqs: int = 16) -> Path:
    run = root / "experiments" / name
    (run / "results").mkdir(parents=True)
    (run / "exp-config.yaml").write_text(
        f"model: meta-llama/LLAMA-2-7B-HF\ntensor_parallelism: 1\nmax_model_len: 4096\n"
        f"max_num_batched_tokens: 2048\nmax_num_seqs: {max_num_seqs}\n")
    (run / "results" / "config.yaml").write_text(
        WORKLOAD.format(output=output, rate=rate, duration=duration))
    (run / "results" / "stage_0_lifecycle_metrics.json").write_text(json.dumps(stage))
    models = root / "model_configs" / "Llama-2-7b-hf"
    if not models.exists():
        models.mkdir(parents=True)
        shutil.copy(HF_CONFIGS / "Llama-2-7b-hf" / "config.json", models / "config.json")
    return run


def test_itl_is_decode_time_per_requested_token():
    stats = recorded.recorded_stats(_stage((0.1, 0.2, 0.5), (2.1, 2.6, 3.5)), 21.0)
    assert stats["itl_mean"] == pytest.approx((2.1 - 0.1) / 20)
    assert stats["itl_p90"] == pytest.approx((2.6 - 0.2) / 20)
    assert stats["itl_p99"] == pytest.approx((3.5 - 0.5) / 20)
    assert stats["ttft_p90"] == 0.2 and stats["e2e_p99"] == 3.5


def test_recorded_overload_from_failures_or_ttft(tmp_path):
    calm = recorded.read_run(_make_run(tmp_path, "calm", _stage((0.1, 0.2, 0.3), (1, 2, 3))))
    timeouts = recorded.read_run(_make_run(tmp_path, "timeouts", _stage(
        (0.1, 0.2, 0.3), (1, 2, 3), successes=80, failures=20)))
    slow = recorded.read_run(_make_run(tmp_path, "slow", _stage((5, 12, 30), (9, 20, 40))))
    assert not recorded.recorded_overloaded(calm)["overloaded"]
    assert recorded.recorded_overloaded(timeouts)["failed_share"] == pytest.approx(0.2)
    assert recorded.recorded_overloaded(timeouts)["overloaded"]
    assert recorded.recorded_overloaded(slow)["overloaded"]


def test_simulated_overload_from_unfinished_or_ttft():
    def row(status, ttft_s):
        return {"status": status, "stage": 0, "ttft_s": ttft_s}

    calm = [row("finished", 0.1)] * 200
    assert not recorded.simulated_overloaded(calm)["overloaded"]
    assert not recorded.simulated_overloaded(calm + [row("unfinished", None)])["overloaded"]
    assert recorded.simulated_overloaded(calm + [row("unfinished", None)] * 5)["overloaded"]
    assert recorded.simulated_overloaded([row("finished", 11.0)] * 10)["overloaded"]


def test_cli_writes_csv_and_json(tmp_path, capsys):
    root = tmp_path / "runs"
    _make_run(root, "a-calm", _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5)))
    _make_run(root, "b-timeouts", _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5), successes=5,
                                         failures=5))
    out = tmp_path / "out"
    assert main(["validate", "--recorded", str(root), "--out", str(out)]) == 0
    assert "simulated vs recorded" in capsys.readouterr().out
    with (out / "recorded.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["run", "stage", "metric", "measured", "simulated", "rel_error"]
    assert {r["metric"] for r in rows} == {f"{m}_{s}" for m in ("ttft", "e2e", "itl")
                                           for s in ("mean", "p90", "p99")}
    itl = next(r for r in rows if r["run"] == "a-calm" and r["metric"] == "itl_mean")
    assert float(itl["measured"]) == pytest.approx((0.3 - 0.02) / 20)
    for r in rows:
        expected = (float(r["simulated"]) - float(r["measured"])) / float(r["measured"])
        assert float(r["rel_error"]) == pytest.approx(expected)
    report = json.loads((out / "recorded.json").read_text())
    assert set(report["median_abs_rel_error"]) == {"ttft", "e2e", "itl", "all"}
    assert report["excluded_runs"] == ["b-timeouts"]
    calm_errors = [abs(float(r["rel_error"])) for r in rows if r["run"] == "a-calm"]
    assert report["median_abs_rel_error"]["all"] == pytest.approx(
        sorted(calm_errors)[len(calm_errors) // 2])
    verdicts = {r["run"]: r["overload"] for r in report["runs"]}
    assert verdicts["a-calm"]["recorded"]["overloaded"] is False
    assert verdicts["a-calm"]["simulated"]["overloaded"] is False
    assert verdicts["a-calm"]["agree"] is True
    assert verdicts["b-timeouts"]["recorded"]["overloaded"] is True
    assert verdicts["b-timeouts"]["agree"] is False
    assert report["runs"][0]["horizon_s"] == 5.0 + recorded.HORIZON_MARGIN_S


def test_passed_through_flags_and_a_simulated_collapse(tmp_path):
    """--max-num-seqs 1 overrides the run's 16: one request at a time cannot keep up with
    40 req/s, and the simulator says so."""
    root = tmp_path / "runs"
    _make_run(root, "flood", _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5)), rate=40.0,
              duration=5.0, output=60)
    out = tmp_path / "out"
    assert main(["validate", "--recorded", str(root), "--out", str(out), "--max-num-seqs", "1",
                 "--max-requests-per-stage", "150"]) == 0
    report = json.loads((out / "recorded.json").read_text())
    run = report["runs"][0]
    assert run["num_requests_replayed"] == 150
    assert report["replay_flags"] == {"max_num_seqs": 1}
    assert run["overload"]["simulated"]["overloaded"] is True
    assert run["overload"]["simulated"]["ttft_p90_max_s"] > 10
    assert run["overload"]["agree"] is False


@pytest.mark.parametrize("breakage, message", [
    (lambda run: (run / "results" / "stage_0_lifecycle_metrics.json").unlink(),
     "no results/stage_0_lifecycle_metrics.json"),
    (lambda run: (run / "exp-config.yaml").write_text("model: x/Llama-2-7b-hf\n"),
     "'tensor_parallelism' must be a positive integer"),
    (lambda run: (run / "results" / "config.yaml").unlink(),
     "neither results/config.yaml nor profile.yaml"),
    (lambda run: (run / "results" / "stage_0_lifecycle_metrics.json").write_text('{"x": 1}'),
     "needs successes.latency"),
    (lambda run: shutil.rmtree(run.parents[1] / "model_configs"), "pass --model"),
    (lambda run: (run / "results" / "stage_1_lifecycle_metrics.json").write_text(json.dumps(
        _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5)))), "the workload has 1 stages but"),
])
def test_bad_layout_is_one_line_exit_2(tmp_path, capsys, breakage, message):
    run = _make_run(tmp_path / "runs", "r", _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5)))
    breakage(run)
    assert main(["validate", "--recorded", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_empty_dir_and_misplaced_flag_are_errors(tmp_path, capsys):
    assert main(["validate", "--recorded", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no run found" in capsys.readouterr().err
    assert main(["validate", "--trace", "x", "--out", str(tmp_path / "o"),
                 "--max-requests-per-stage", "3"]) == 2
    assert "--recorded only" in capsys.readouterr().err


@pytest.mark.skipif(not GROUND_TRUTH.is_dir(), reason="needs ../shared/ground_truth")
def test_a_real_recorded_run_end_to_end(tmp_path):
    """Llama-2-7B codegen (the fastest run), each stage's first 400 requests."""
    name = "20260217-155451-llama-2-7b-tp1-codegen"
    root = tmp_path / "gt"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / name).symlink_to(GROUND_TRUTH / "experiments" / name)
    (root / "model_configs").symlink_to(GROUND_TRUTH / "model_configs")
    out = tmp_path / "out"
    assert main(["validate", "--recorded", str(root), "--out", str(out),
                 "--max-requests-per-stage", "400"]) == 0
    report = json.loads((out / "recorded.json").read_text())
    run = report["runs"][0]
    assert run["engine"]["max_num_batched_tokens"] == 2048 and run["num_requests_replayed"] == 800
    assert run["overload"]["recorded"]["overloaded"] is False
    assert run["overload"]["agree"] is True
    with (out / "recorded.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 9
    measured_itl = next(float(r["measured"]) for r in rows if r["metric"] == "itl_mean")
    assert measured_itl == pytest.approx((1.8103224114763325 - 0.025036599272001393) / 246)
    # a roofline of H100 puts the decode step within a factor of two of vLLM's
    assert all(abs(float(r["rel_error"])) < 1.0 for r in rows if r["metric"].startswith("itl"))


def test_measured_cost_model_passes_through(tmp_path):
    """`--cost-model measured` on a config.json model (its weight dtype from the checkpoint)."""
    root = tmp_path / "runs"
    _make_run(root, "r", _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5)))
    out = tmp_path / "out"
    assert main(["validate", "--recorded", str(root), "--out", str(out),
                 "--cost-model", "measured"]) == 0
    report = json.loads((out / "recorded.json").read_text())
    assert report["runs"][0]["cost_model"].startswith("measured")
    assert report["median_abs_rel_error"]["itl"] is not None


@pytest.mark.parametrize("flag", [["--repeats", "5"], ["--repeats", "3"], ["--grid", "default"],
                                  ["--clock", "wall"], ["--passes", "2"], ["--speed-replay"]])
def test_real_backend_options_are_refused_with_recorded(flag, tmp_path, capsys):
    """At their default values too: `--recorded` runs no real backend, so any of them given
    would be silently ignored."""
    root = tmp_path / "runs"
    _make_run(root, "r", _stage((0.02, 0.03, 0.05), (0.3, 0.4, 0.5)))
    assert main(["validate", "--recorded", str(root), "--out", str(tmp_path / "o"),
                 *flag]) == 2
    assert f"{flag[0]} steers the real backend" in capsys.readouterr().err
