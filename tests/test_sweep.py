"""`servesim sweep`: grid expansion, the local and Ray backends, errors and resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policies.registry import ALLOCATORS
from sim.cli import main
from sim.sweep import run as sweep_run
from sim.sweep.backends import ray_runtime_env
from sim.sweep.grid import expand_grid, load_grid
from sim.sweep.run import run_sweep

ROOT = Path(__file__).resolve().parents[1]
TRACE = "synthetic:n=12,arrivals=poisson:20,prompt=uniform:50:300,output=uniform:5:30"
GRID_3x3x2 = f"""
trace = "{TRACE}"
scheduler = ["continuous", "chunked", "static"]
allocator = ["paged", "paged-prefix", "contiguous"]
rate_scale = [1, 2]
"""


@pytest.fixture(scope="session")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=ray_runtime_env(),
             log_to_driver=False)
    yield ray
    ray.shutdown()


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_grid_is_the_product_of_lists_in_file_order_last_key_fastest():
    cells = expand_grid({"trace": "t", "scheduler": ["a", "b"], "rate_scale": [1, 2, 3]})
    assert [c.index for c in cells] == list(range(6))
    assert [(c.values["scheduler"], c.values["rate_scale"]) for c in cells] == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    assert all(c.values["trace"] == "t" for c in cells)
    assert list(cells[0].values) == ["trace", "scheduler", "rate_scale"]
    assert len({c.cell_id for c in cells}) == 6


def test_grid_crosses_explicit_cells_and_accepts_dashed_keys(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('rate-scale = [1, 2]\n[[cells]]\nscheduler = "static"\nmax-num-seqs = 4\n'
                    '[[cells]]\nscheduler = "chunked"\n')
    cells = load_grid(grid)
    assert [c.values for c in cells] == [
        {"rate_scale": 1, "scheduler": "static", "max_num_seqs": 4},
        {"rate_scale": 1, "scheduler": "chunked"},
        {"rate_scale": 2, "scheduler": "static", "max_num_seqs": 4},
        {"rate_scale": 2, "scheduler": "chunked"},
    ]


@pytest.mark.parametrize("data,message", [
    ({"schedulr": ["static"]}, "unknown option"),
    ({"scheduler": []}, "empty list"),
    ({"scheduler": {"a": 1}}, "is a table"),
    ({"cells": "static"}, "array of tables"),
])
def test_bad_grids_fail_before_anything_runs(data, message):
    with pytest.raises(ValueError, match=message):
        expand_grid(data)


def test_3x3x2_grid_on_local_ray_matches_the_local_process_pool(tmp_path, local_ray):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_3x3x2)
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "ray"),
                 "--backend", "ray", "--quiet"]) == 0
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "local"),
                 "--workers", "2", "--quiet"]) == 0
    ray_table = (tmp_path / "ray" / "results.csv").read_bytes()
    assert ray_table == (tmp_path / "local" / "results.csv").read_bytes()
    rows = _rows(tmp_path / "ray" / "results.csv")
    assert len(rows) == 18
    assert [(r["scheduler"], r["allocator"], r["rate_scale"]) for r in rows[:3]] == [
        ("continuous", "paged", "1"), ("continuous", "paged", "2"),
        ("continuous", "paged-prefix", "1")]
    assert all(r["error"] == "" and r["requests_finished"] == "12" for r in rows)
    assert len({r["ttft_mean_s"] for r in rows}) > 1  # the cells really differ
    assert_parquet_matches_csv(tmp_path / "ray" / "results.parquet", rows)


def test_a_sweep_joins_an_existing_ray_cluster_by_address(tmp_path, local_ray):
    """`--address`: a driver of its own (another process, as a user's would be) runs the sweep
    on the running cluster this session started, and writes the process pool's table."""
    address = local_ray.get_runtime_context().gcs_address
    grid = tmp_path / "grid.toml"
    grid.write_text(f'trace = "{TRACE}"\nscheduler = ["continuous", "chunked"]\n')
    args = ["sweep", "--grid", str(grid), "--out", str(tmp_path / "cluster"), "--backend",
            "ray", "--address", address, "--quiet"]
    command = ("import ray\nfrom sim.cli import main\n"
               f"code = main({args!r})\nprint(ray.get_runtime_context().gcs_address)\n"
               "raise SystemExit(code)")
    done = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == address  # it joined this cluster, not a new one
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "local"),
                 "--workers", "2", "--quiet"]) == 0
    table = (tmp_path / "cluster" / "results.csv").read_bytes()
    assert table == (tmp_path / "local" / "results.csv").read_bytes()
    assert [r["error"] for r in _rows(tmp_path / "cluster" / "results.csv")] == ["", ""]


def assert_parquet_matches_csv(path, csv_rows) -> None:
    """The Parquet table holds the CSV's rows, typed: numbers as numbers, empty as null."""
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(path)
    assert table.column_names == list(csv_rows[0])
    for row, typed in zip(csv_rows, table.to_pylist(), strict=True):
        for key, text in row.items():
            value = typed[key]
            assert (value is None) if text == "" else (str(value) == text), key
    assert str(table.schema.field("ttft_mean_s").type) == "double"
    assert str(table.schema.field("requests_finished").type) == "int64"


def test_cell_summary_is_replays_summary_and_a_failing_cell_is_recorded(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'trace = "{TRACE}"\nallocator = ["paged", "nope"]\n')
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    ok, bad = _rows(tmp_path / "s" / "results.csv")
    assert bad["error"] == ("UnknownNameError: unknown allocator 'nope'; "
                            f"choose one of: {', '.join(ALLOCATORS)}")
    assert bad["requests_total"] == "" and ok["error"] == ""
    assert_parquet_matches_csv(tmp_path / "s" / "results.parquet", [ok, bad])
    assert main(["replay", "--trace", TRACE, "--quiet", "--out", str(tmp_path / "r")]) == 0
    summary = (tmp_path / "s" / "cells" / ok["cell"] / "summary.json").read_bytes()
    assert summary == (tmp_path / "r" / "summary.json").read_bytes()
    assert json.loads((tmp_path / "s" / "cells" / ok["cell"] / "options.json").read_text()) == {
        "trace": TRACE, "allocator": "paged"}
    assert (tmp_path / "s" / "cells" / bad["cell"] / "error.txt").exists()


def test_resume_runs_only_unfinished_and_failed_cells(tmp_path, monkeypatch):
    cells = expand_grid({"trace": TRACE, "scheduler": ["continuous", "static"],
                         "allocator": ["paged", "nope"]})
    table, failed = run_sweep(cells, tmp_path, workers=2)
    assert failed == 2
    first = table.read_bytes()
    (tmp_path / "cells" / cells[0].cell_id / "summary.json").unlink()
    submitted = []
    real_run_cells = sweep_run.run_cells

    def recording(todo, backend, **kwargs):
        submitted.append(sorted(todo))
        return real_run_cells(todo, backend, **kwargs)

    monkeypatch.setattr(sweep_run, "run_cells", recording)
    seen = []
    table, failed = run_sweep(cells, tmp_path, workers=2,
                              progress=lambda done, total: seen.append((done, total)))
    assert submitted == [[0, 1, 3]]  # cell 2 (static, paged) was finished and is not rerun
    assert seen[0] == (1, 4) and seen[-1] == (4, 4)
    assert table.read_bytes() == first


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    grid = tmp_path / "grid.toml"
    grid.write_text(f'trace = "{TRACE}"\n')
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"),
                 "--backend", "ray", "--quiet"]) == 2
    assert "pip install -e '.[dist]'" in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--address", "127.0.0.1:6379"], "--address only applies to --backend ray"),
])
def test_bad_sweep_flags_are_clear_errors(tmp_path, capsys, flags, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'trace = "{TRACE}"\n')
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"), "--quiet",
                 *flags]) == 2
    assert message in capsys.readouterr().err


def test_an_integer_past_64_bits_is_a_string_column_in_parquet(tmp_path):
    """A grid value Arrow cannot type as int64 (a 21-digit `rate_scale`, which the replay
    reads as a float) is written, like a mixed column, as strings; the CSV keeps it as given."""
    pq = pytest.importorskip("pyarrow.parquet")
    huge = 999_999_999_999_999_999_999
    cells = expand_grid({"trace": TRACE, "rate_scale": [huge, 2]})
    outcomes = {cell.index: {"summary": {"requests_total": 5}, "error": None} for cell in cells}
    table = sweep_run.write_table(cells, outcomes, tmp_path / "results.csv")
    assert [row["rate_scale"] for row in _rows(table)] == [str(huge), "2"]
    typed = pq.read_table(tmp_path / "results.parquet")
    assert typed.column("rate_scale").to_pylist() == [str(huge), "2"]
    assert str(typed.schema.field("requests_total").type) == "int64"


def test_a_cell_s_cost_model_notes_are_one_csv_field_and_a_list_in_parquet(tmp_path):
    """`cost_model_notes`, present only in cells priced partly from another dtype's tables, is
    the one list in a summary: its lines joined by " | " in the CSV, a list column in Parquet,
    empty where a cell has none."""
    pq = pytest.importorskip("pyarrow.parquet")
    cells = expand_grid({"trace": TRACE, "hardware": "a100", "kv_dtype": ["bf16", "fp8"],
                         "cost_model": "measured"})
    notes = ["attention with the KV cache at fp8: ...", "GEMMs with weights at int4: ..."]
    outcomes = {cells[0].index: {"summary": {"requests_total": 12}, "error": None},
                cells[1].index: {"summary": {"requests_total": 12, "cost_model_notes": notes},
                                 "error": None}}
    table = sweep_run.write_table(cells, outcomes, tmp_path / "results.csv")
    assert [row["cost_model_notes"] for row in _rows(table)] == ["", " | ".join(notes)]
    assert pq.read_table(tmp_path / "results.parquet").column(
        "cost_model_notes").to_pylist() == [None, notes]
