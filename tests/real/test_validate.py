"""`servesim profile` and `servesim validate` end to end on tiny-llama with the tiny grid: the
files exist, validation.json has its contract keys, and its errors are exactly the ones the
written real and simulated summaries give."""

from __future__ import annotations

import csv
import json

import pytest

from sim.cli import main
from sim.cost.profiles import read_profile
from sim.validation import COMPARED_KEYS, HEADLINE_KEYS, median_abs_rel_error, rel_errors

TRACE = "synthetic:n=8,arrivals=poisson:40,prompt=uniform:8:96,output=uniform:2:16"


def test_profile_writes_a_profile_calibrate_fits(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "--executor", "real", "--model", "tiny-llama", "--grid", "tiny",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    profile = read_profile(out)
    assert (profile.model, profile.hardware, profile.tp) == ("tiny-llama", "cpu", 1)
    shapes = {(len(n), n[0], c[-1] > 0) for n, c, _ in profile.samples}
    assert (1, 256, False) in shapes  # a prefill of 256 tokens
    assert (8, 1, True) in shapes  # a decode batch of 8
    assert any(sorted(n) == [1, 1, 64] for n, _, _ in profile.samples)  # mixed: 2 + a prompt
    assert (2, 3, True) in shapes  # verify of k=2 drafts by 2 sequences
    raw = json.loads(out.read_text())
    assert raw["machine"]["torch_threads"] == 1 and raw["machine"]["passes"] == 2
    assert all(len(s["steps_s"]) == 4 for s in raw["samples"])  # 2 passes x 2 repeats
    coefficients = tmp_path / "c.json"
    assert main(["calibrate", str(out), "--out", str(coefficients)]) == 0
    assert "cpu" in json.loads(coefficients.read_text())
    assert main(["calibrate", str(out), "--check", str(coefficients), "--tolerance",
                 "100"]) == 0


def test_validate_writes_errors_that_match_its_summaries(tmp_path, capsys):
    out = tmp_path / "v"
    code = main(["validate", "--trace", TRACE, "--model", "tiny-llama", "--grid", "tiny",
                 "--repeats", "2", "--num-gpu-blocks", "128", "--block-size", "8",
                 "--max-output-tokens", "12", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "validation.json").read_text())
    assert report["repeats"] == 2 and report["calibration"]["profiled_here"]
    assert [c["path"] for c in report["calibrations"]] == [str(out / "calibration.json")] * 2
    assert set(report["rel_error"]) == set(COMPARED_KEYS)
    assert report["headline_keys"] == list(HEADLINE_KEYS)
    per_repeat = []
    for repeat in range(2):
        real = json.loads((out / "real" / f"r{repeat}" / "summary.json").read_text())
        sim = json.loads((out / "sim" / f"r{repeat}" / "summary.json").read_text())
        assert real["requests_finished"] == sim["requests_finished"] == 8
        errors = rel_errors(sim, real)
        for key in COMPARED_KEYS:
            got = report["rel_error_spread"][key]["per_repeat"][repeat]
            assert got == (None if errors[key] is None else pytest.approx(errors[key]))
        per_repeat.append(median_abs_rel_error(errors))
    spread = report["median_abs_rel_error_spread"]
    assert spread["per_repeat"] == pytest.approx(per_repeat)
    assert report["median_abs_rel_error"] == pytest.approx(sum(per_repeat) / 2)
    assert report["per_request"]["e2e_s"]["n"] == 16
    rows = list(csv.DictReader((out / "per_request.csv").open()))
    assert len(rows) == 16 and max(int(r["output_tokens"]) for r in rows) <= 12
    assert {"cdf.png", "cdf.html", "cdf.vl.json", "profile.json", "calibration.json"} <= {
        p.name for p in out.iterdir()}
    # A given calibration is used as it is: no profile this time.
    again = tmp_path / "again"
    assert main(["validate", "--trace", TRACE, "--model", "tiny-llama", "--repeats", "1",
                 "--calibration", str(out / "calibration.json"), "--num-gpu-blocks", "128",
                 "--speculator", "ngram", "--spec-k", "2", "--clock", "cpu",
                 "--out", str(again)]) == 0
    report = json.loads((again / "validation.json").read_text())
    assert not report["calibration"]["profiled_here"] and not (again / "profile.json").exists()
    assert report["settings"]["clock"] == "cpu" and report["rel_error"]["e2e_p50_s"] is not None
    assert (again / "real" / "r0" / "acceptance.txt").exists()


def test_profile_each_repeat_fits_a_calibration_per_repeat(tmp_path, capsys):
    out = tmp_path / "each"
    assert main(["validate", "--trace", "synthetic:n=3,arrivals=poisson:50,prompt=fixed:16,"
                 "output=fixed:4", "--model", "tiny-llama", "--grid", "tiny", "--passes", "1",
                 "--repeats", "2", "--num-gpu-blocks", "64", "--profile-each-repeat",
                 "--pool-profiles", "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "validation.json").read_text())
    assert [c["path"] for c in report["calibrations"]] == [
        str(out / "calibration" / f"r{repeat}" / "calibration.json") for repeat in range(2)]
    # --pool-profiles: one fit to both profiles, and both repeats simulated with it.
    pooled = report["calibration"]
    assert pooled["path"] == str(out / "calibration" / "pooled" / "calibration.json")
    assert pooled["pooled_from"] == [c["profile"] for c in report["calibrations"]]
    assert "r0/profile.json" in pooled["provenance"] and "r1/profile.json" in pooled["provenance"]
    assert [run["sim_calibration"] for run in report["runs"]] == [pooled["path"]] * 2
    assert main(["validate", "--model", "tiny-llama", "--profile-each-repeat", "--calibration",
                 "x.json", "--out", str(out)]) == 2
    assert "drop --calibration" in capsys.readouterr().err
    assert main(["validate", "--model", "tiny-llama", "--pool-profiles", "--out", str(out)]) == 2
    assert "add it" in capsys.readouterr().err


def test_speed_replay_simulates_each_run_at_its_measured_speed(tmp_path, capsys):
    """--speed-replay: a fit to the profiles at the reference probe time, each real run's
    speed trace written and replayed, and the plain errors kept beside, from the same runs."""
    out = tmp_path / "speed"
    assert main(["validate", "--trace", TRACE, "--model", "tiny-llama", "--grid", "tiny",
                 "--passes", "1", "--repeats", "2", "--num-gpu-blocks", "128",
                 "--max-output-tokens", "8", "--clock", "cpu", "--profile-each-repeat",
                 "--pool-profiles", "--speed-replay", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    report = json.loads((out / "validation.json").read_text())
    speed = report["calibration"]["speed"]
    assert speed["path"] == str(out / "calibration" / "pooled" / "speed" / "calibration.json")
    profile = json.loads((out / "calibration" / "pooled" / "speed" / "profile_0.json").read_text())
    assert profile["machine"]["speed_reference_s"] == speed["reference_probe_s"]
    assert min(speed["reference_probe_s"]) > 0
    assert all(s["raw_measured_s"] > 0 for s in profile["samples"])
    for repeat, run in enumerate(report["runs"]):
        rows = list(csv.DictReader((out / "real" / f"r{repeat}" / "speed.csv").open()))
        steps = json.loads((out / "real" / f"r{repeat}" / "summary.json").read_text())
        assert len(rows) >= steps["iterations"]  # a reading before every step
        for column, key in (("overhead_factor", "overhead"), ("roofline_factor", "roofline")):
            factors = sorted(float(r[column]) for r in rows)
            assert run["speed_factor"][key]["median"] == pytest.approx(
                (factors[(len(factors) - 1) // 2] + factors[len(factors) // 2]) / 2)
        sim = json.loads((out / "sim_speed" / f"r{repeat}" / "summary.json").read_text())
        errors = rel_errors(sim, steps)
        assert report["rel_error_spread"]["e2e_p50_s"]["per_repeat"][repeat] == pytest.approx(
            errors["e2e_p50_s"])
        plain = json.loads((out / "sim" / f"r{repeat}" / "summary.json").read_text())
        assert report["without_speed_replay"]["rel_error"]["e2e_p50_s"] is not None
        assert plain["requests_finished"] == sim["requests_finished"] == 8
    assert main(["validate", "--model", "tiny-llama", "--speed-replay", "--calibration",
                 "x.json", "--out", str(out)]) == 2
    assert "drop --calibration" in capsys.readouterr().err


def test_the_cpu_clock_skips_waits_and_counts_cpu_time():
    from backend.clocks import CpuClock

    clock = CpuClock()
    before = clock.now()
    clock.sleep(5.0)
    clock.sleep(-1.0)  # a wake-up already past: no time travel
    assert 5.0 <= clock.now() - before < 5.5


def test_validate_rejects_bad_input_with_one_line_errors(tmp_path, capsys):
    assert main(["validate", "--model", "tiny-llama", "--repeats", "0",
                 "--out", str(tmp_path)]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert main(["validate", "--model", "tiny-llama", "--replicas", "2",
                 "--out", str(tmp_path)]) == 2
    assert "runs one replica" in capsys.readouterr().err


def test_validate_profiles_only_shapes_its_replay_can_produce():
    from backend.profile import ProfileGrid
    from sim.config import ReplayOptions

    grid = ProfileGrid()
    plain = grid.for_options(ReplayOptions())
    assert (plain.mixed, plain.spec_widths) == ((), ())
    chunked = grid.for_options(ReplayOptions(scheduler="chunked", speculator="ngram", spec_k=3))
    assert chunked.mixed == grid.mixed and chunked.spec_widths == (2, 3, 4)
