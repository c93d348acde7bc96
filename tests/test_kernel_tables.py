"""The measured-kernel table: built from aiconfigurator's parquet files (the build step), read
and interpolated with numpy alone (the simulator)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.cost.kernel_build import build
from sim.cost.kernel_tables import KernelTables, lerp, lerp_each, shipped_tables
from tests.helpers import SHARED

AICONFIGURATOR = SHARED / "calibration" / "aiconfigurator"
needs_source = pytest.mark.skipif(
    not (AICONFIGURATOR / "data").is_dir(),
    reason=f"aiconfigurator kernel data not found at {AICONFIGURATOR}")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict, Path]:
    """A table built from a subset of the H100 files: GEMMs, both vLLM versions of attention
    (the newer must win), the custom all-reduce and NCCL."""
    pytest.importorskip("pyarrow")
    root = tmp_path_factory.mktemp("aic") / "aiconfigurator"
    source = AICONFIGURATOR / "data" / "h100_sxm"
    for part in ("gemm/vllm/0.24.0", "attention/vllm/0.19.0", "attention/vllm/0.24.0",
                 "comm/vllm/0.24.0", "comm/nccl/2.29.2"):
        shutil.copytree(source / part, root / "data" / "h100_sxm" / part)
    shutil.copyfile(AICONFIGURATOR / "LICENSE", root / "LICENSE")
    out = root.parent / "table" / "vllm.npz"
    meta = build(root, out, build_date="2026-12-05", source_commit="095f58a",
                 source_path="aic-core/src/aiconfigurator_core/systems/")
    return source, out, meta, root


def _parquet_rows(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


@needs_source
def test_built_table_holds_the_parquet_rows_at_their_grid_points(built):
    source, out, _, _ = built
    tables = KernelTables(out, "h100")
    rows = _parquet_rows(source / "gemm/vllm/0.24.0/gemm_perf.parquet")
    gemm = tables.get("gemm/bf16")
    picked = np.flatnonzero(rows["gemm_dtype"] == "bfloat16")[::97]
    for i in picked:
        point = (rows["m"][i], rows["n"][i], rows["k"][i])
        cell = tuple(int(np.searchsorted(axis, v)) for axis, v in zip(gemm.axes, point))
        assert gemm.grid_s(0)[cell] == pytest.approx(rows["latency"][i] * 1e-3, rel=1e-6)
        found = gemm.lookup(0, point)
        assert found.in_range and found.value_s == pytest.approx(rows["latency"][i] * 1e-3, rel=1e-6)

    rows = _parquet_rows(source / "attention/vllm/0.24.0/generation_attention_perf.parquet")
    decode = tables.get("generation_attention/fp8/window0")
    picked = np.flatnonzero((rows["kv_cache_dtype"] == "fp8") & (rows["window_size"] == 0))[::41]
    for i in picked:
        shape = decode.shape_index((rows["num_heads"][i], rows["num_key_value_heads"][i],
                                    rows["head_dim"][i]))
        found = decode.lookup(shape, (rows["batch_size"][i], rows["step"][i]))
        assert found.in_range
        assert found.value_s == pytest.approx(rows["latency"][i] * 1e-3, rel=1e-6)


@needs_source
def test_build_keeps_the_newest_version_and_records_provenance(built):
    _, out, meta, _ = built
    entry = meta["hardware"]["h100"]
    assert entry["engine_version"] == "0.24.0"
    assert entry["tables"]["generation_attention/bf16/window0"]["version"] == "0.24.0"
    assert entry["tables"]["allreduce/nccl"]["framework"] == "nccl"
    assert "moe/bf16" not in entry["tables"]  # not in the subset: absent, not empty
    assert meta["source"]["commit"] == "095f58a" and "Apache-2.0" in meta["source"]["license"]
    assert meta["build_date"] == "2026-12-05"
    assert (out.parent / "LICENSE").read_text().startswith(
        (AICONFIGURATOR / "LICENSE").read_text()[:200])
    stored = json.loads(str(np.load(out)["meta"]))
    assert stored == meta


@needs_source
def test_calibrate_kernels_command_builds_and_reports(built, tmp_path, capsys):
    _, _, meta, root = built
    out = tmp_path / "cli" / "vllm.npz"
    assert main(["calibrate", "--kernels", str(root), "--out", str(out), "--date", "2026-12-05",
                 "--source-commit", "095f58a", "--source-path", "systems/"]) == 0
    printed = capsys.readouterr().out
    assert "h100: vLLM 0.24.0" in printed and "gemm/bf16: 35742 rows" in printed
    assert KernelTables(out, "h100").meta["hardware"] == meta["hardware"]


def test_calibrate_kernels_command_errors_are_one_line(tmp_path, capsys):
    assert main(["calibrate", "--kernels", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: give --out FILE.npz: where to write the kernel table\n"
    assert main(["calibrate", "--kernels", str(tmp_path), "--out", str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no data/ folder" in err and err.count("\n") == 1


def test_build_rejects_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no data/ folder"):
        build(tmp_path, tmp_path / "t.npz")
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match=r"\.npz"):
        build(tmp_path, tmp_path / "t.json")
    with pytest.raises(ValueError, match="LICENSE"):
        build(tmp_path, tmp_path / "t.npz")
    (tmp_path / "LICENSE").write_text("license")
    with pytest.raises(ValueError, match="source commit"):
        build(tmp_path, tmp_path / "t.npz")
    with pytest.raises(ValueError, match="no aiconfigurator folder for hardware cpu"):
        build(tmp_path, tmp_path / "t.npz", ["cpu"], source_commit="abc1234", source_path="p")


def test_shipped_table_names_its_source_and_ships_its_license():
    tables = shipped_tables("h100")
    assert tables.meta["source"]["repository"] == "ai-dynamo/aiconfigurator"
    assert tables.engine == "vllm-0.24.0"
    assert set(tables.meta["hardware"]) == {"h100", "h200", "a100", "l40s", "b200"}
    assert shipped_tables("a100").engine == "vllm-0.14.0"
    license_file = Path(__file__).resolve().parents[1] / "sim/cost/data/kernels/LICENSE"
    assert "Apache License" in license_file.read_text()
    with pytest.raises(ValueError, match="no measured kernel tables for hardware 'cpu'"):
        shipped_tables("cpu")


GEMM = shipped_tables("h100").get("gemm/bf16")
DECODE = shipped_tables("h100").get("generation_attention/bf16/window0")
PREFILL = shipped_tables("h100").get("context_attention/bf16/window0")


@settings(max_examples=60, deadline=None)
@given(m_index=st.integers(0, len(GEMM.axes[0]) - 2), n_index=st.integers(0, 21),
       k_index=st.integers(0, 21), a=st.floats(0, 1), b=st.floats(0, 1))
def test_gemm_interpolation_is_monotone_where_the_data_is(m_index, n_index, k_index, a, b):
    """Between two measured m at a measured (n, k), latency moves from one to the other
    monotonically; the table's own points come back exactly."""
    m0, m1 = GEMM.axes[0][m_index], GEMM.axes[0][m_index + 1]
    n, k = GEMM.axes[1][n_index], GEMM.axes[2][k_index]
    grid = GEMM.grid_s(0)
    y0, y1 = grid[m_index, n_index, k_index], grid[m_index + 1, n_index, k_index]
    if np.isnan(y0) or np.isnan(y1):
        return
    low, high = sorted((a, b))
    first = GEMM.lookup(0, (m0 + low * (m1 - m0), n, k)).value_s
    second = GEMM.lookup(0, (m0 + high * (m1 - m0), n, k)).value_s
    assert min(y0, y1) * (1 - 1e-12) <= first <= max(y0, y1) * (1 + 1e-12)
    if y1 >= y0:
        assert first <= second * (1 + 1e-12)
    else:
        assert first >= second * (1 - 1e-12)
    assert GEMM.lookup(0, (m0, n, k)).value_s == y0


@settings(max_examples=40, deadline=None)
@given(batch_index=st.integers(0, 8), shape=st.integers(0, len(PREFILL.shapes) - 1),
       a=st.floats(0, 1))
def test_log_space_interpolation_stays_between_measured_neighbours(batch_index, shape, a):
    """Context attention interpolates in log-log space: between two measured prompt lengths
    the value lies between theirs (a power law through both points)."""
    isl = PREFILL.axes[1]
    grid = PREFILL.grid_s(shape)
    for i in range(len(isl) - 1):
        y0, y1 = grid[batch_index, i], grid[batch_index, i + 1]
        if np.isnan(y0) or np.isnan(y1):
            continue
        x = isl[i] * (isl[i + 1] / isl[i]) ** a
        found = PREFILL.lookup(shape, (PREFILL.axes[0][batch_index], x))
        assert found.in_range
        assert min(y0, y1) * (1 - 1e-9) <= found.value_s <= max(y0, y1) * (1 + 1e-9)


def test_outside_the_measured_range_is_flagged_with_its_anchor():
    beyond = GEMM.lookup(0, (65536, 8192, 8192))
    assert not beyond.in_range and beyond.anchor == (32768.0, 8192.0, 8192.0)
    assert beyond.value_s == GEMM.lookup(0, (32768, 8192, 8192)).value_s
    inside = GEMM.lookup(0, (1000, 8192, 8192))
    assert inside.in_range and inside.anchor is None

    shape = DECODE.shape_index((32, 8, 128))
    row = DECODE.row(shape, 1, (64,))  # batch 64 was measured up to 8,191 cached tokens
    assert row.at(4000).in_range and row.covers(8191)
    past = row.at(20000)
    assert not past.in_range and past.anchor == (64.0, 8191.0) and not row.covers(20000)
    # An unmeasured corner (large batch at a long context) falls back to a measured point.
    hole = DECODE.lookup(shape, (2048, 100000))
    assert not hole.in_range and not np.isnan(hole.value_s)
    assert not np.isnan(DECODE.grid_s(shape)[tuple(
        int(np.searchsorted(a, v)) for a, v in zip(DECODE.axes, hole.anchor))])


def test_row_interior_matches_at_bit_for_bit():
    row = DECODE.row(DECODE.shape_index((32, 8, 128)), 1, (37,))
    xs = np.linspace(0.5, 9000.0, 4001)
    values, inside = row.interior(xs)
    for x, value, flag in zip(xs.tolist(), values.tolist(), inside.tolist()):
        if flag:
            assert row.at(x).value_s == value and row.at(x).in_range
    assert inside.any() and not inside.all()
    assert lerp(2.0, 1.0, 3.0, 10.0, 20.0) == 15.0


@settings(max_examples=100, deadline=None)
@given(batch=st.sampled_from([1, 37, 64, 512, 4096]), x=st.one_of(
    st.floats(0.25, 1e6), st.sampled_from([1.0, 8191.0, 16.0, 20000.0])), log_row=st.booleans())
def test_in_range_values_are_at_while_in_range(batch, x, log_row):
    """`Row.in_range_values` (the decode fast-forward's lookup) is `at(x).value_s`, to the
    bit, for each point while `at` is in range, and stops at the first out of range: for
    linear (decode) and log-space (context attention) rows, inside, at and past their ends,
    with fixed axes in or out of their measured range."""
    if log_row:
        row = PREFILL.row(PREFILL.shape_index((32, 8, 128)), 1, (batch,))
    else:
        row = DECODE.row(DECODE.shape_index((32, 8, 128)), 1, (batch,))
    found = row.at(x)
    assert row.in_range_values([x]) == ([found.value_s] if found.in_range else [])
    points = [x, x * 1.5, x * 3.0, x * 0.5]
    lookups = [row.at(point) for point in points]
    in_range = next((i for i, lookup in enumerate(lookups) if not lookup.in_range), len(points))
    assert row.in_range_values(points) == [lookup.value_s for lookup in lookups[:in_range]]


@settings(max_examples=100, deadline=None)
@given(batch=st.sampled_from([1, 37, 64, 512, 4096]), log_row=st.booleans(),
       points=st.lists(st.one_of(st.floats(0.25, 1e6), st.sampled_from(
           [1.0, 3.0, 1023.0, 1024.0, 8191.0, 16383.0, 32767.0, 65535.0])), max_size=40))
def test_rising_in_range_values_are_in_range_values(batch, log_row, points):
    """`Row.rising_in_range_values` (increasing points, a cell's points interpolated at once)
    gives `in_range_values`'s floats, to the bit, through grid coordinates and both ends."""
    if log_row:
        row = PREFILL.row(PREFILL.shape_index((32, 8, 128)), 1, (batch,))
    else:
        row = DECODE.row(DECODE.shape_index((32, 8, 128)), 1, (batch,))
    points.sort()
    assert row.rising_in_range_values(points) == row.in_range_values(points)


def test_lerp_each_is_lerp_bit_for_bit():
    xs = np.linspace(1023.0, 2047.0, 997).tolist()
    assert lerp_each(xs, 1023.0, 2047.0, 0.013, 0.0171) == [
        lerp(x, 1023.0, 2047.0, 0.013, 0.0171) for x in xs]


@settings(max_examples=100, deadline=None)
@given(batch=st.sampled_from([1, 37, 64, 512, 4096]), log_row=st.booleans(),
       first=st.one_of(st.floats(0.25, 1e5), st.sampled_from([1.0, 1024.0, 8191.0])),
       span=st.floats(0.0, 3000.0))
def test_one_cell_holds_what_rising_in_range_values_interpolates_at_once(batch, log_row, first,
                                                                        span):
    """`Row.one_cell` gives a cell only when both ends lie strictly inside the row and in one
    cell of a linear row in range; then `lerp_each` in it is `rising_in_range_values`, to the
    bit, at every point between."""
    if log_row:
        row = PREFILL.row(PREFILL.shape_index((32, 8, 128)), 1, (batch,))
    else:
        row = DECODE.row(DECODE.shape_index((32, 8, 128)), 1, (batch,))
    last = first + span
    points = [first + span * i / 4 for i in range(5)]
    cell = row.one_cell(first, last)
    if cell is None:
        xs = row.xs
        assert (log_row or not row.fixed_in_range or not xs[0] < first < xs[-1]
                or any(first < x <= last for x in xs))
        return
    x0, x1, _, _ = cell
    assert not log_row and x0 <= first and last < x1
    assert lerp_each(points, *cell) == row.rising_in_range_values(points)
