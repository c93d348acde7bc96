"""bench/kernel_tables_check.py times kernels on a GPU; without one it writes the table side,
which must name each case's kernels at the shapes the measured cost model prices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "kernel_tables_check.py"


def _load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernel_tables_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_points_are_per_call_times_at_per_gpu_shapes():
    check = _load()
    points = check.table_points("llama-2-70b", 4, "h100")
    decode = next(p for p in points if p["kind"] == "decode" and (p["batch"], p["context"]) == (8, 700))
    assert (decode["heads"], decode["kv_heads"], decode["head_dim"]) == (16, 2, 128)
    gemms = {p["kernel"]: (p["n"], p["k"]) for p in points if p["kind"] == "gemm"}
    assert gemms["gemm qkv"] == ((64 + 2 * 8) * 128 // 4, 8192)
    assert gemms["gemm down"] == (8192, 28672 // 4)
    # A GEMM's time grows with its rows, and a decode's with its context.
    qkv = [p["table_us"] for p in points if p["kernel"] == "gemm qkv"]
    assert qkv == sorted(qkv) and qkv[0] > 0
    at_8 = [p["table_us"] for p in points if p["kind"] == "decode" and p["batch"] == 8]
    assert at_8 == sorted(at_8)


def test_llama_2_7b_decode_point_matches_the_cost_model_per_layer():
    """The table side is the cost model's kernel time divided by its layers: Llama-2-7B's
    8 decodes at 700 tokens take 51 us a layer (53% of the H100's bandwidth, fidelity.md)."""
    check = _load()
    point = next(p for p in check.table_points("llama-2-7b", 1, "h100")
                 if p["kind"] == "decode" and (p["batch"], p["context"]) == (8, 700))
    kv_bytes = 2 * 2 * 8 * 700 * 32 * 128
    bandwidth_share = kv_bytes / (point["table_us"] * 1e-6) / 3.35e12
    assert 45 < point["table_us"] < 58 and 0.45 < bandwidth_share < 0.6


def test_without_a_gpu_it_writes_the_table_side(tmp_path):
    out = tmp_path / "tables.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["device"] is None and "no CUDA device" in result.stdout
    cases = {(p["model"], p["tp"]) for p in data["points"]}
    assert cases == {("llama-2-7b", 1), ("llama-3-8b", 1), ("mixtral-8x7b", 2), ("llama-2-70b", 4)}
    assert {p["kind"] for p in data["points"]} == {"decode", "prefill", "gemm"}
    assert all(p["table_us"] is None or p["table_us"] > 0 for p in data["points"])
    assert data["summary"] == []  # nothing measured, nothing compared


def test_unknown_hardware_is_a_one_line_error():
    result = subprocess.run([sys.executable, str(SCRIPT), "--hardware", "tpu9"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1


def test_summary_compares_the_best_measured_time_with_the_table_per_case_and_kind():
    check = _load()
    points = [{"model": "m", "tp": 1, "kind": "gemm", "table_us": 10.0, "best_us": 12.0},
              {"model": "m", "tp": 1, "kind": "gemm", "table_us": 20.0, "best_us": 18.0},
              {"model": "m", "tp": 1, "kind": "gemm", "table_us": 5.0, "best_us": 5.0},
              {"model": "m", "tp": 1, "kind": "decode", "table_us": None, "best_us": 3.0},
              {"model": "m", "tp": 1, "kind": "decode", "table_us": 4.0, "best_us": None}]
    assert check.summarize(points) == [{"model": "m", "tp": 1, "kind": "gemm", "points": 3,
                                        "measured_over_table_median": 1.0, "min": 0.9,
                                        "max": 1.2}]
