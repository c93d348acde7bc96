"""`--cost-model auto` (the default): the measured model where the hardware has kernel tables
and nothing roofline-only is asked for, the roofline otherwise, and summary.json says why."""

from __future__ import annotations

import csv
import json

import pytest

from sim.api import simulate
from sim.cli import main
from sim.config import ReplayOptions, options_from_toml, resolve
from sim.cost.kernel_tables import shipped_hardware


def summary_of(**options) -> dict:
    return simulate(resolve(ReplayOptions(max_requests=20, **options))).summary


def test_no_flag_on_a_gpu_with_kernel_tables_prices_with_them():
    assert ReplayOptions().cost_model == "auto"
    summary = summary_of()
    assert summary["cost_model"] == "measured:vllm-0.24.0/h100"
    assert summary["cost_model_choice"] == "auto: measured (kernel tables of h100)"
    assert summary["kernel_lookups_in_range"] > 0


@pytest.mark.parametrize("hardware", ["a100", "h200", "l40s", "b200"])
def test_every_gpu_with_tables_gets_the_measured_model(hardware):
    assert hardware in shipped_hardware()
    config = resolve(ReplayOptions(max_requests=5, hardware=hardware))
    assert config.measured is not None
    assert config.cost_model_choice == f"auto: measured (kernel tables of {hardware})"


def test_hardware_without_tables_falls_back_to_the_roofline_and_says_why():
    summary = summary_of(hardware="cpu", model="smollm2-135m")
    assert summary["cost_model"] == "roofline"
    assert summary["cost_model_choice"] == (
        "auto: roofline (no measured kernel tables for cpu; tables exist for "
        f"{', '.join(shipped_hardware())})")
    assert "kernel_lookups_in_range" not in summary


def test_pipeline_parallel_falls_back_to_the_roofline_and_says_why():
    summary = summary_of(pp=2)
    assert summary["cost_model"] == "roofline"
    assert summary["cost_model_choice"] == (
        "auto: roofline (--pp 2: the kernel tables price one pipeline stage)")


def test_every_roofline_only_option_is_named():
    config = resolve(ReplayOptions(max_requests=5, pp=2, calibration="shared-fit"))
    assert config.measured is None
    assert config.cost_model_choice == (
        "auto: roofline (--pp 2: the kernel tables price one pipeline stage; "
        "--calibration: its coefficients are the roofline's)")


def test_explicit_choices_stay_what_they_say():
    roofline = summary_of(cost_model="roofline")
    assert roofline["cost_model"] == "roofline"
    assert roofline["cost_model_choice"] == "roofline (--cost-model roofline)"
    measured = summary_of(cost_model="measured")
    assert measured["cost_model"] == "measured:vllm-0.24.0/h100"
    assert measured["cost_model_choice"] == "measured (--cost-model measured)"
    # auto on h100 is the measured model, to the bit
    auto = summary_of()
    assert {k: v for k, v in auto.items() if k != "cost_model_choice"} == {
        k: v for k, v in measured.items() if k != "cost_model_choice"}


def test_explicit_measured_keeps_its_errors(capsys):
    assert main(["replay", "--quiet", "--max-requests", "5", "--cost-model", "measured",
                 "--pp", "2"]) == 2
    assert "--cost-model measured does not combine with --pp 2" in capsys.readouterr().err


def test_replay_prints_and_writes_the_choice(tmp_path, capsys):
    assert main(["replay", "--quiet", "--max-requests", "5", "--pp", "2",
                 "--out", str(tmp_path)]) == 0
    assert ("cost model: roofline, auto: roofline (--pp 2: the kernel tables price one "
            "pipeline stage)") in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cost_model_choice"].startswith("auto: roofline (--pp 2")


def test_toml_takes_auto(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('cost_model = "auto"\nhardware = "cpu"\nmodel = "smollm2-135m"\n')
    config = resolve(ReplayOptions().updated(options_from_toml(path)))
    assert config.measured is None and config.cost_model_choice.startswith("auto: roofline")


def test_a_sweep_grid_sweeps_the_cost_model(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('trace = "synthetic:n=8,arrivals=poisson:20,prompt=uniform:50:300,'
                    'output=uniform:5:30"\ncost_model = ["auto", "roofline", "measured"]\n')
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--quiet"]) == 0
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["error"] for r in rows] == ["", "", ""]
    assert [r["cost_model"] for r in rows] == ["measured:vllm-0.24.0/h100", "roofline",
                                               "measured:vllm-0.24.0/h100"]
    assert rows[0]["cost_model_choice"] == "auto: measured (kernel tables of h100)"
