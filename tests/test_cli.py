"""The `servesim` command line as users and scripts call it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from sim.cli import main
from sim.config import ReplayOptions

REQUIRED_KEYS = [
    "requests_total", "requests_finished", "requests_rejected", "requests_unfinished",
    *[f"{m}_{s}_s" for m in ("ttft", "tpot", "itl", "e2e", "queue") for s in ("mean", "p50", "p90", "p99")],
    "output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_req_s",
    "preemptions", "kv_util_mean", "batch_size_mean",
]


def test_replay_writes_summary_and_requests(tmp_path, capsys):
    code = main(["replay", "--quiet", "--max-requests", "200", "--model", "llama-3-8b",
                 "--hardware", "h100", "--scheduler", "continuous", "--allocator", "paged",
                 "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(key in summary for key in REQUIRED_KEYS)
    assert summary["requests_total"] == 200
    lines = (tmp_path / "requests.csv").read_text().splitlines()
    assert len(lines) == 201 and lines[0].startswith("request_id,status,reason")
    series = (tmp_path / "iterations.csv").read_text().splitlines()
    assert series[0].startswith("replica,start_s,duration_s,batch_size")
    assert len(series) - 1 == summary["iterations"]
    out = capsys.readouterr().out
    assert "ttft (s)" in out and "output_throughput_tok_s" in out


def test_config_file_with_flag_overrides(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('model = "qwen2-7b"\nhardware = "a100"\nmax-requests = 50\n'
                      'scheduler = "static"\nmax_num_seqs = 8\n')
    assert main(["replay", "--quiet", "--config", str(config), "--hardware", "l40s",
                 "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["requests_total"] == 50
    assert summary["batch_size_mean"] <= 8


def test_window_replays_a_slice_of_the_trace(tmp_path):
    assert main(["replay", "--quiet", "--window-start-s", "60", "--window-end-s", "120",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 200 < summary["requests_total"] < 400  # ~4.7 requests/s in the bundled slice


def test_tpot_is_null_when_every_output_is_one_token(tmp_path):
    trace = "synthetic:n=30,arrivals=poisson:2,prompt=fixed:100,output=fixed:1"
    assert main(["replay", "--quiet", "--trace", trace, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tpot_p50_s"] is None and summary["itl_mean_s"] is None
    assert summary["ttft_p50_s"] > 0


@pytest.mark.parametrize("what,expected", [("models", "deepseek-v2-lite"), ("hardware", "l40s"),
                                           ("schedulers", "continuous"), ("allocators", "paged")])
def test_list(what, expected, capsys):
    assert main(["list", what]) == 0
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--model", "gpt-5"], "unknown model 'gpt-5'; choose one of: llama-2-7b"),
    (["--scheduler", "magic"], "unknown scheduler 'magic'"),
    (["--trace", "/nonexistent/trace.csv"], "/nonexistent/trace.csv"),
    (["--model", "llama-2-70b", "--hardware", "a100"], "raise --tp"),
    (["--gpu-memory-utilization", "1.5"], "gpu_memory_utilization"),
    (["--rate-scale", "0"], "--rate-scale must be > 0"),
])
def test_bad_input_is_a_clear_error_not_a_traceback(argv, message, capsys):
    assert main(["replay", "--quiet", "--max-requests", "5", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["replay", "--rate", "2"], ["replay", "--sched", "chunked"],
                                  ["validate", "--record", "runs", "--out", "x"]])
def test_an_abbreviated_flag_is_refused_not_read_as_a_longer_one(argv, capsys):
    """argparse would take `--rate 2` for `--rate-scale 2`: a flag the user did not write."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unrecognized arguments: " + argv[1] in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("3", "3")])
def test_cli_runs_one_blas_thread_unless_told_otherwise(preset, expected):
    """The command sets OPENBLAS_NUM_THREADS before numpy loads (the threads OpenBLAS starts
    cost every start ~0.1 CPU s and the simulator's arrays are small), so importing it leaves
    the process with its one thread; a user's own value is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = ("import os, sys, sim.cli\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules,"
            " len(os.listdir('/proc/self/task')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env, cwd=Path(__file__).resolve().parents[1])
    setting, numpy_loaded, num_threads = out.stdout.split()
    assert (setting, numpy_loaded) == (expected, "True")
    if preset is None:
        assert num_threads == "1"


LOADED_ON_DEMAND = ("sim.cost.calibrate", "sim.cost.drift", "sim.cost.profiles",
                    "sim.cost.hf_config", "sim.speculation.build", "sim.speculation.acceptance",
                    "numpy.random", "tomllib", "traces.inference_perf.workload",
                    "sim.validation")
"""What a plain replay never uses: the fitting code, the HF config reader, speculation (and
numpy.random with it), TOML, the inference-perf reader, validation (~30 ms of every start)."""


@pytest.mark.parametrize("flags, loaded", [
    ([], set()),
    (["--speculator", "ngram", "--config", "CONFIG"],
     {"sim.speculation.build", "sim.speculation.acceptance", "numpy.random", "tomllib"}),
])
def test_a_replay_imports_what_it_uses_only(tmp_path, flags, loaded):
    config = tmp_path / "run.toml"
    config.write_text("seed = 3\n")
    code = ("import sys\n"
            "from sim.cli import main\n"
            "main(['replay', '--quiet', '--max-requests', '20', *sys.argv[1:]])\n"
            f"print('LOADED', sorted(set({LOADED_ON_DEMAND!r}) & set(sys.modules)))\n")
    args = [str(config) if flag == "CONFIG" else flag for flag in flags]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert f"LOADED {sorted(loaded)}" in out.stdout


def test_only_a_replay_process_about_to_exit_skips_the_teardown(tmp_path, capsys):
    """`servesim` (`entry`) ends a simulated replay's process itself, output flushed and
    files written, without the interpreter's teardown (which would only free what the exit
    frees: exit handlers do not run); `main` called in a process that goes on returns, and a
    failed replay exits the ordinary way."""
    assert main(["replay", "--quiet", "--max-requests", "5"]) == 0
    assert "ttft (s)" in capsys.readouterr().out
    code = ("import atexit, sys\n"
            "atexit.register(print, 'teardown ran')\n"
            "sys.argv = ['servesim', *sys.argv[1:]]\n"
            "from sim.cli import entry\n"
            "entry()\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, "replay", "--quiet", "--max-requests",
                           "5", "--out", str(tmp_path)], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "ttft (s)" in done.stdout and "wrote summary.json" in done.stdout
    assert "teardown ran" not in done.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["requests_total"] == 5
    failed = subprocess.run([sys.executable, "-c", code, "replay", "--quiet", "--tp", "0"],
                            capture_output=True, text=True, cwd=root)
    assert (failed.returncode, failed.stdout) == (2, "teardown ran\n")
    assert failed.stderr.startswith("error: ")
    script = root / "pyproject.toml"
    assert 'servesim = "sim.cli:entry"' in script.read_text()


def test_each_flag_says_its_default_once_and_plainly(capsys):
    """A flag whose help already says its default (one that depends on other options) keeps
    its own words; the others say theirs as a user types it: no Python None, no quotes."""
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    entries = capsys.readouterr().out.split("\noptions:\n")[1].split("\n  --")[1:]
    flags = [" ".join(entry.split()) for entry in entries]
    said = {flag.split()[0].rstrip(","): flag for flag in flags}
    options = {f.name.replace("_", "-") for f in fields(ReplayOptions)}
    assert options <= said.keys()
    for name, flag in said.items():
        assert len(re.findall(r"\bdefault\b", flag)) == (name in options), flag
        assert "(default: None)" not in flag and "(default: '" not in flag, flag
    assert said["scheduler"].endswith("(default: continuous)")
    assert said["slo-ttft-s"].endswith("(default: none)")
    assert said["trace"].endswith("default: the bundled Azure conv slice")
    assert said["spec-k"].endswith("(default: 4; lookahead: N - 1)")
    assert said["diffusion-commit"].endswith("T defaults to 0.9) (default: fixed)")
