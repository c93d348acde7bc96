"""`servesim calibrate --recorded`: the measured engine's own terms fitted to recorded runs by
replaying them. The recorded runs here are made by the simulator itself at known terms, so the
fit must find those terms again; and the written file must drive replays."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sim import engine_fit, recorded
from sim.cli import main
from sim.cost.measured_coefficients import measured_coefficients

HF_CONFIGS = Path(__file__).resolve().parent / "data" / "hf_configs"
TRUE_TERMS = engine_fit.Terms(step_overhead_s=0.0006, per_sequence_overhead_s=2.5e-5,
                              frontend_latency_s=0.004)
GRID = {"step_overhead_s": (0.0, 0.0015), "per_sequence_overhead_s": (0.0, 6e-5)}
WORKLOAD = """\
data:
  type: shared_prefix
  shared_prefix: {{num_groups: 2, num_prompts_per_group: 3, system_prompt_len: 60,
                  question_len: 200, output_len: 128}}
load:
  type: constant
  stages: [{{rate: {rate}, duration: 20}}]
"""
RUNS = (("Llama-2-7b-hf", 1, 2.0), ("Llama-2-7b-hf", 1, 30.0),
        ("CodeLlama-34b-Instruct-hf", 2, 2.0), ("CodeLlama-34b-Instruct-hf", 2, 15.0))


def _placeholder_stage() -> dict:
    stats = {"mean": 1.0, "p90": 1.0, "p99": 1.0}
    return {"successes": {"count": 1, "latency": {"time_to_first_token": stats,
                                                  "request_latency": stats}},
            "failures": {"count": 0}}


def _recorded_at(root: Path, terms: engine_fit.Terms) -> Path:
    """Runs whose recorded figures are what the simulator gives at `terms`."""
    for model, tp, rate in RUNS:
        run = root / "experiments" / f"{model.lower()}-rate{rate:g}"
        (run / "results").mkdir(parents=True)
        (run / "exp-config.yaml").write_text(
            f"model: org/{model}\ntensor_parallelism: {tp}\nmax_model_len: 4096\n"
            "max_num_batched_tokens: 2048\nmax_num_seqs: 128\n")
        (run / "results" / "config.yaml").write_text(WORKLOAD.format(rate=rate))
        stage_file = run / "results" / "stage_0_lifecycle_metrics.json"
        stage_file.write_text(json.dumps(_placeholder_stage()))
        configs = root / "model_configs" / model
        if not configs.exists():
            configs.mkdir(parents=True)
            shutil.copy(HF_CONFIGS / model / "config.json", configs / "config.json")
        replay = engine_fit.Replay(str(root), str(run), (("cost_model", "measured"),), None)
        engine_fit._config.cache_clear()
        rows = engine_fit.replay_run(replay, terms)["rows"]
        figures = {row["metric"]: row["simulated"] for row in rows}
        stats = {name: {s: figures[f"{metric}_{s}"] for s in recorded.STATS}
                 for name, metric in (("time_to_first_token", "ttft"),
                                      ("request_latency", "e2e"))}
        stage_file.write_text(json.dumps({"successes": {"count": 20 * rate, "latency": stats},
                                          "failures": {"count": 0}}))
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = _recorded_at(tmp_path_factory.mktemp("recorded"), TRUE_TERMS)
    record = engine_fit.fit_recorded(root, {}, grid=GRID, max_requests_per_stage=None, jobs=1)
    return root, record


def test_the_fit_finds_the_terms_that_made_the_runs(fitted):
    _, record = fitted
    terms = record["terms"]
    assert terms["frontend_latency_s"] == pytest.approx(TRUE_TERMS.frontend_latency_s, abs=0.001)
    assert terms["step_overhead_s"] == pytest.approx(TRUE_TERMS.step_overhead_s, abs=0.0003)
    assert terms["per_sequence_overhead_s"] == pytest.approx(
        TRUE_TERMS.per_sequence_overhead_s, abs=1.5e-5)
    assert record["median_abs_rel_error"]["all"] < 0.02  # every request replayed at the fit
    assert record["overload_agreement"] == len(RUNS) and record["excluded_runs"] == []


def test_leave_one_model_out_scores_each_model_on_a_fit_without_it(fitted):
    _, record = fitted
    folds = record["leave_one_model_out"]["folds"]
    assert set(folds) == {"llama-2-7b-hf", "codellama-34b-instruct-hf"}
    for fold in folds.values():
        assert fold["held_out_median_abs_rel_error"]["all"] < 0.05
    assert record["leave_one_model_out"]["median_abs_rel_error"]["e2e"] < 0.05


def test_the_loss_weighs_families_alike_and_counts_missing_figures():
    figures = (engine_fit.Figure("r", "m", 0, "ttft_mean", 0.1),
               engine_fit.Figure("r", "m", 0, "itl_mean", 0.01),
               engine_fit.Figure("r", "m", 0, "itl_p90", 0.01))
    assert engine_fit.loss(figures, np.array([0.1, 0.01, 0.01])) == 0.0
    doubled_ttft = engine_fit.loss(figures, np.array([0.2, 0.01, 0.01]))
    halved_itls = engine_fit.loss(figures, np.array([0.1, 0.005, 0.005]))
    assert doubled_ttft == pytest.approx(halved_itls) == pytest.approx(np.log(2))
    assert engine_fit.loss(figures, np.array([np.nan, 0.01, 0.01])) == pytest.approx(np.log(10))


def test_cli_writes_coefficients_that_drive_replays(fitted, tmp_path, capsys):
    root, _ = fitted
    out = tmp_path / "coefficients.json"
    out.write_text(resources.files("sim.cost").joinpath("data/measured_coefficients.json")
                   .read_text())
    # the shipped grid is wider than this test's; one replay per point, every request
    assert main(["calibrate", "--recorded", str(root), "--out", str(out), "--jobs", "2",
                 "--max-requests-per-stage", "40", "--date", "2026-12-05"]) == 0
    printed = capsys.readouterr().out
    assert "leave-one-model-out" in printed and "held out: llama-2-7b-hf" in printed
    written = measured_coefficients("vllm", out)
    assert written.fit["date"] == "2026-12-05" and written.fit["data"] == str(root)
    assert "Fitted terms: step_overhead_s" in written.provenance
    assert written.frontend_latency_s == pytest.approx(TRUE_TERMS.frontend_latency_s, abs=0.001)
    replay_out = tmp_path / "replay"
    assert main(["replay", "--hardware", "h100", "--cost-model", "measured",
                 "--measured-coefficients", str(out), "--max-requests", "20", "--quiet",
                 "--out", str(replay_out)]) == 0
    assert json.loads((replay_out / "summary.json").read_text())["requests_finished"] == 20


@pytest.mark.parametrize("argv,message", [
    (["calibrate", "--recorded", "RUNS", "--out", "OUT", "--jobs", "0"], "--jobs must be >= 1"),
    (["calibrate", "--recorded", "RUNS"], "give --out FILE.json"),
    (["calibrate", "--recorded", "RUNS", "--out", "OUT", "--max-requests-per-stage", "0"],
     "--max-requests-per-stage must be >= 1"),
    (["replay", "--cost-model", "roofline", "--measured-coefficients", "OUT"],
     "--measured-coefficients applies to the measured cost model only"),
])
def test_bad_fit_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("RUNS", "OUT") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
