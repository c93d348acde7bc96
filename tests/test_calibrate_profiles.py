"""Profile readers, servesim's profile JSON, and the `calibrate` command."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from sim.calibrate_cli import add_calibrate_parser, run_calibrate
from sim.cost.calibrate import stated_holdout_mape
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients, load_coefficients
from sim.cost.profiles import (
    Profile,
    TimingSample,
    read_profile,
    read_shared_file,
    shared_profile_files,
    write_profile,
)
from sim.cost.roofline import CostModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "calibration"
VIDUR_LLAMA2_7B = "vidur/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
SARATHI = "sarathi_serve_osdi24_yi34b_a100_tp2"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared GPU profiles not found at {SHARED}")


# ---- shared readers -----------------------------------------------------------------------
@needs_shared
def test_vidur_rows_become_one_layer_linear_samples_in_seconds():
    samples = read_shared_file(SHARED, VIDUR_LLAMA2_7B, "h100")
    assert len(samples) == 1044
    first = samples[0]
    assert (first.group, first.tp, first.new_tokens, first.context_tokens) == (
        "linear", 1, (4096,), (0,))
    layer = first.model
    assert (layer.num_layers, layer.hidden_size, layer.intermediate_size) == (1, 4096, 11008)
    # README example: QKV 0.584 + out 0.193 + up 0.987 + act 0.139 + down 0.441 ms.
    assert first.measured_s == pytest.approx(2.344e-3, rel=1e-6)
    assert first.source == f"{VIDUR_LLAMA2_7B}:1"


@needs_shared
def test_splitwise_merges_repeats_and_drops_the_impossible_tp2_batch64_runs():
    samples = read_shared_file(SHARED, "splitwise_sim/perf_model.csv", "a100")
    assert len(samples) == 2 * (3 * 19 - 1)  # prefill + decode per configuration
    assert not any(s.tp == 2 and len(s.new_tokens) == 64 for s in samples)
    prefill, decode = samples[0], samples[1]
    assert prefill.new_tokens == (512,) and prefill.context_tokens == (0,)
    assert decode.new_tokens == (1,) and decode.context_tokens == (512 + 64,)
    assert len(prefill.source_rows) == 15  # the (512, 1, 128) configuration is repeated 15 times
    assert prefill.measured_s == pytest.approx(0.1969, abs=1e-4)
    h100 = read_shared_file(SHARED, "splitwise_sim/perf_model.csv", "h100")
    assert {s.hardware for s in h100} == {"h100"}


@needs_shared
def test_sarathi_units_and_exclusions():
    decode = read_shared_file(SHARED, f"{SARATHI}/figure2_decode.csv", "a100")
    assert [len(s.new_tokens) for s in decode] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert decode[0].measured_s == pytest.approx(0.0468, abs=1e-4)  # the file's seconds
    prefill = read_shared_file(SHARED, f"{SARATHI}/figure2_prefill.csv", "a100")
    assert 256 not in [s.new_tokens[0] for s in prefill]  # batch 0: warm-up
    chunking = read_shared_file(SHARED, f"{SARATHI}/figure9_chunking_overhead.csv", "a100")
    assert [s.new_tokens[0] for s in chunking] == [2047, 2047, 4095, 8191, 16383]
    assert chunking[-1].measured_s == pytest.approx(4.535, abs=1e-3)  # the file's ms
    table2 = read_shared_file(SHARED, f"{SARATHI}/table2_batch_composition.csv", "a100")
    assert [s.group for s in table2] == ["iteration", "linear"] * 3
    assert table2[2].new_tokens == (1021, 1, 1, 1)


@needs_shared
def test_cpu_overheads_sum_vidurs_stages():
    samples = read_shared_file(SHARED, "vidur/cpu_overhead/a100/cpu_overheads.csv", "a100")
    assert len(samples) == 78 and {s.group for s in samples} == {"overhead"}
    assert samples[0].tp == 2 and len(samples[0].new_tokens) == 8
    assert samples[0].measured_s == pytest.approx(8.03e-3, abs=1e-5)


@needs_shared
def test_shared_file_lists_per_hardware():
    assert len(shared_profile_files(SHARED, "h100")) == 7
    assert len(shared_profile_files(SHARED, "a100")) == 14


def test_samples_validate_their_fields():
    model = get_model("llama-2-7b")
    with pytest.raises(ValueError, match="op group"):
        TimingSample((1,), (0,), "attention", model, "h100", 1, 1.0, "f", (1,))
    with pytest.raises(ValueError, match="one entry per sequence"):
        TimingSample((1, 1), (0,), "iteration", model, "h100", 1, 1.0, "f", (1,))
    with pytest.raises(ValueError, match="needs a model"):
        TimingSample((1,), (0,), "iteration", None, "h100", 1, 1.0, "f", (1,))


# ---- servesim profile JSON ----------------------------------------------------------------
def cpu_profile() -> Profile:
    """A profile of llama-3.2-1b on the CPU, timed by the default CostModel with some noise."""
    cost = CostModel(get_model("llama-3.2-1b"), get_hardware("cpu"), default_coefficients("cpu"))
    shapes = [([n], [0]) for n in (16, 64, 128, 256, 512)]
    shapes += [([1] * b, [c] * b) for b in (1, 4, 16) for c in (64, 1024)]
    noise = [1.03, 0.98, 1.01, 0.99, 1.02, 0.97, 1.0, 1.02, 0.99, 1.01, 0.98]
    samples = tuple((tuple(n), tuple(c), cost.iteration_time(n, c) * f)
                    for (n, c), f in zip(shapes, noise))
    return Profile("llama-3.2-1b", "cpu", 1, samples, {"host": "test", "threads": 2})


def test_profile_json_round_trips(tmp_path):
    profile = cpu_profile()
    path = write_profile(tmp_path / "p.json", profile)
    assert read_profile(path) == profile
    samples = read_profile(path).timing_samples("p.json")
    assert len(samples) == 11 and samples[0].source == "p.json:1"
    assert {s.group for s in samples} == {"iteration"}


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"model": "llama-3.2-1b", "hardware": "cpu", "tp": 1}', "missing keys"),
    ('{"model": "nope", "hardware": "cpu", "tp": 1, "samples": []}', "unknown model"),
    ('{"model": "llama-3.2-1b", "hardware": "cpu", "tp": 0, "samples": []}', "tp must be"),
    ('{"model": "llama-3.2-1b", "hardware": "cpu", "tp": 1, "samples": []}', "no samples"),
    ('{"model": "llama-3.2-1b", "hardware": "cpu", "tp": 1, "samples": [{"new_tokens": [1]}]}',
     "sample 0 needs"),
])
def test_bad_profiles_raise_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_profile(path)


def test_missing_profile_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_profile(tmp_path / "absent.json")


# ---- the calibrate command ----------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="servesim")
    add_calibrate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["calibrate", *argv])


def test_calibrate_fits_a_profile_and_merges_into_out(tmp_path):
    profile = write_profile(tmp_path / "cpu.json", cpu_profile())
    out = tmp_path / "coefficients.json"
    out.write_text(json.dumps({"h100": {"kept": True}}))
    console = Console(record=True, width=160)
    args = parse([str(profile), "--out", str(out), "--date", "2026-11-25"])
    assert run_calibrate(args, console) == 0
    text = console.export_text()
    assert "cpu.json" in text and "held-out MAPE" in text
    table = json.loads(out.read_text())
    assert table["h100"] == {"kept": True}
    fitted = load_coefficients(out, "cpu")
    assert "2026-11-25" in fitted.provenance
    assert stated_holdout_mape(fitted.provenance) < 5.0  # 1-3% noise on the model's own times


def test_calibrate_errors_are_value_errors(tmp_path):
    console, out = Console(record=True), str(tmp_path / "c.json")
    with pytest.raises(ValueError, match="not found"):
        run_calibrate(parse([str(tmp_path / "absent.json"), "--out", out]), console)
    with pytest.raises(ValueError, match="shared calibration folder not found"):
        run_calibrate(parse(["--shared", str(tmp_path / "nope"), "--out", out]), console)
    profile = write_profile(tmp_path / "cpu.json", cpu_profile())
    with pytest.raises(ValueError, match="profiles cpu, not h100"):
        run_calibrate(parse([str(profile), "--hardware", "h100", "--out", out]), console)
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"linear_compute_eff": 0.5}))
    with pytest.raises(ValueError, match="not a table keyed by hardware"):
        run_calibrate(parse([str(profile), "--out", str(single)]), console)


@pytest.mark.parametrize("argv,message", [
    (["--date", "x:y"], "--date must be a date as YYYY-MM-DD, got 'x:y'"),
    (["--date", "2026-13-01"], "--date must be a date as YYYY-MM-DD"),
    (["--date", "20261205"], "--date must be a date as YYYY-MM-DD"),
    (["--check", "C.json", "--tolerance", "nan"], "--tolerance must be a finite number"),
    (["--check", "C.json", "--tolerance", "-1"], "--tolerance must be a finite number"),
    (["--tolerance", "10"], "--tolerance applies only to --check, not to a coefficient fit"),
    (["--jobs", "2"], "--jobs applies only to --recorded, not to a coefficient fit"),
    (["--source-commit", "abc"], "--source-commit applies only to --kernels, not to a coef"),
    (["--max-requests-per-stage", "5"], "--max-requests-per-stage applies only to --recorded"),
    (["--recorded", "RUNS", "--holdout-every", "5"],
     "--holdout-every applies only to a coefficient fit, not to --recorded"),
    (["--kernels", "DIR", "--jobs", "1"], "--jobs applies only to --recorded, not to --kernels"),
    (["--check", "C.json", "--shared", "DIR"], "--shared applies only to a coefficient fit"),
    (["--kernels", "DIR", "PROFILE.json"], "PROFILE applies only to --check and a coefficient"),
    (["--recorded", "RUNS", "--date", "2026-12-05", "--source-path", "p"],
     "--source-path applies only to --kernels, not to --recorded"),
])
def test_an_option_its_mode_does_not_read_or_a_bad_date_is_an_error(argv, message, tmp_path):
    """Given at its default value too (the compared options default to None): a flag the
    chosen mode ignores would otherwise be silently dropped."""
    with pytest.raises(ValueError, match=re.escape(message)):
        run_calibrate(parse([*argv, "--out", str(tmp_path / "c.json")]), Console(record=True))
