"""Build servesim's measured-kernel table from aiconfigurator's vLLM collections.

    servesim calibrate --kernels DIR --out FILE.npz [--hardware H] [--date D]

DIR is a copy of aiconfigurator's `systems/` folder (`data/<gpu>/<op>/<framework>/<version>/
*.parquet`, `LICENSE`). For each GPU servesim knows, the newest vLLM version of each op is read
(pyarrow, imported here only: the simulator reads FILE with numpy alone) and what servesim
prices is kept as dense grids, one grid per kernel shape, NaN where nothing was measured:

- `gemm/{bf16,fp8}`: axes m, n, k; `gemm_dtype` bfloat16, fp8 (per-tensor scaled).
- `{context,generation}_attention/{bf16,fp8}/window{W}`: a grid per (heads, KV heads, head
  dim) of one kernel call over batch and input length (context) or cached KV length
  (generation); bf16 compute, KV dtype bf16 / fp8, beam 1.
- `moe/{bf16,fp8,mxfp4}`: a grid per (hidden, expert width, top-k, experts, MoE TP) over
  tokens; EP 1; per shape the `balanced` routing if measured, else the mildest power law.
  mxfp4 is `w4a16_mxfp4` from the kernel vLLM runs gpt-oss's experts with by default
  (`MOE_KERNEL_SOURCES`: OpenAI's Triton kernels on Hopper, Marlin on Ada, FlashInfer's
  TRT-LLM kernel on Blackwell), not the compressed-tensors MXFP4 path some GPUs also measured.
- `mla_{context,generation}/{kv}/{gemm}`: whole MLA modules (projections and attention) of
  DeepSeek-V3 per heads per GPU over batch and length; bf16 compute, GEMMs bf16 / fp8_block.
- `allreduce/{custom_graph,custom_eager,nccl}`: a grid per GPU count over message elements
  (bf16): vLLM's custom all-reduce inside / outside a CUDA graph, NCCL all_reduce.

Latencies stay in the source's milliseconds (`meta.units`). The file is one `.npz`: arrays
named `<hardware>/<table>/{shapes,axis0,axis1,...,values}` (MoE tables also `distribution`, an
index into the table's `distributions`), and `meta`, a JSON string with the provenance: source
repository, commit and path, license, build date, and per hardware and table the version
folder read, the versions and kernels in its rows, the rows kept and the axes' ranges. The
source's LICENSE is copied beside FILE (Apache-2.0 asks that it travel with derived data).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from sim.extras import install_hint

FORMAT_VERSION = 1
SOURCE_REPOSITORY = "ai-dynamo/aiconfigurator"
SOURCE_LICENSE = "Apache-2.0 (Copyright NVIDIA CORPORATION & AFFILIATES)"
GPU_FOLDERS: dict[str, str] = {"h100": "h100_sxm", "h200": "h200_sxm", "a100": "a100_sxm",
                               "l40s": "l40s", "b200": "b200_sxm"}
"""servesim hardware name -> aiconfigurator's GPU folder."""
DTYPES: dict[str, str] = {"bfloat16": "bf16", "fp8": "fp8"}
"""Source dtype names kept, and servesim's names for them."""
MLA_GEMM_TYPES: dict[str, str] = {"bfloat16": "bf16", "fp8_block": "fp8"}
MOE_DTYPES: dict[str, str] = {**DTYPES, "w4a16_mxfp4": "mxfp4"}
"""MoE dtypes kept: mxfp4 weights with bf16 activations besides the GEMM dtypes."""
MOE_KERNEL_SOURCES: dict[str, str] = {"w4a16_mxfp4": "vllm_gptossmxfp4moe_"}
"""The `kernel_source` prefix a dtype's rows must have (where several kernels measured it):
vLLM's GptOssMxfp4MoE method, which picks the kernel per GPU."""
MOE_DISTRIBUTIONS = ("balanced", "power_law_1.01", "power_law_1.2")
"""Routing distributions in order of preference (the first one measured for a shape is kept)."""
ALLREDUCE_BACKENDS = {"vllm_graph": "custom_graph", "vllm_eager": "custom_eager"}
README_SOURCE = re.compile(
    r"`ai-dynamo/aiconfigurator`[^`]*`([^`]+)`\s+at\s+commit\s+([0-9a-f]{7,40})")

Columns = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Grid:
    """One table: a dense grid per kernel shape (rows of `shapes`)."""

    shape_columns: tuple[str, ...]
    axis_columns: tuple[str, ...]
    interpolation: str
    shapes: np.ndarray  # [num_shapes, len(shape_columns)] int64
    axes: tuple[np.ndarray, ...]  # each sorted, float64
    values: np.ndarray  # [num_shapes, *axis lengths] float32 ms, NaN = not measured
    meta: dict[str, Any]
    extra: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Source:
    folder: Path
    version: str
    columns: Columns


def build(kernels_dir: str | Path, out: str | Path, hardware: list[str] | None = None,
          build_date: str | None = None, source_commit: str | None = None,
          source_path: str | None = None) -> dict[str, Any]:
    """Read `kernels_dir`, write the table to `out` (and LICENSE beside it), return its meta."""
    root = Path(kernels_dir)
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: the kernel table is a .npz file")
    if not (root / "data").is_dir():
        raise ValueError(f"{root}: no data/ folder (give aiconfigurator's systems folder, the one "
                         "holding data/<gpu>/<op>/vllm/<version>/*.parquet)")
    license_file = root / "LICENSE"
    if not license_file.is_file():
        raise ValueError(f"{root}: no LICENSE file; derived tables must ship with it")
    commit, path = _source_reference(root, source_commit, source_path)
    names = hardware or [hw for hw, folder in GPU_FOLDERS.items() if (root / "data" / folder).is_dir()]
    unknown = [hw for hw in names if hw not in GPU_FOLDERS]
    if unknown:
        raise ValueError(f"no aiconfigurator folder for hardware {', '.join(unknown)}; "
                         f"known: {', '.join(GPU_FOLDERS)}")
    if not names:
        raise ValueError(f"{root}/data holds none of the GPU folders {', '.join(GPU_FOLDERS.values())}")
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "engine": "vllm",
        "units": "ms",
        "source": {"repository": SOURCE_REPOSITORY, "commit": commit, "path": path,
                   "license": SOURCE_LICENSE, "license_file": "LICENSE"},
        "build_date": build_date or date.today().isoformat(),
        "built_by": "servesim calibrate --kernels",
        "hardware": {},
    }
    for hw in names:
        folder = root / "data" / GPU_FOLDERS[hw]
        if not folder.is_dir():
            raise ValueError(f"{folder}: missing (hardware {hw})")
        tables = _hardware_tables(folder)
        if not tables:
            raise ValueError(f"{folder}: no vLLM kernel tables found")
        versions = sorted({g.meta["version"] for g in tables.values()
                           if g.meta["framework"] == "vllm"}, key=_version_key)
        meta["hardware"][hw] = {
            "folder": f"data/{GPU_FOLDERS[hw]}",
            "engine_version": _engine_version(tables),
            "versions": versions,
            "tables": {name: g.meta for name, g in tables.items()},
        }
        for name, grid in tables.items():
            prefix = f"{hw}/{name}/"
            arrays[prefix + "shapes"] = grid.shapes
            for i, axis in enumerate(grid.axes):
                arrays[prefix + f"axis{i}"] = axis
            arrays[prefix + "values"] = grid.values
            for key, value in grid.extra.items():
                arrays[prefix + key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    shutil.copyfile(license_file, out.parent / "LICENSE")
    return meta


def _source_reference(root: Path, commit: str | None, path: str | None) -> tuple[str, str]:
    """The source commit and path: as given, else from the shared folder's README beside DIR."""
    if commit is None or path is None:
        readme = root.parent / "README.md"
        found = README_SOURCE.search(readme.read_text()) if readme.is_file() else None
        if found is None:
            raise ValueError(f"cannot tell the source commit of {root}: give --source-commit and "
                             f"--source-path (no aiconfigurator entry in {readme})")
        path = path or found.group(1)
        commit = commit or found.group(2)
    return commit, path


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in re.split(r"[.+-]", version))


def _engine_version(tables: dict[str, Grid]) -> str:
    """The vLLM version most of the hardware's vLLM tables come from (the newest on a tie)."""
    counts: dict[str, int] = {}
    for grid in tables.values():
        if grid.meta["framework"] == "vllm":
            counts[grid.meta["version"]] = counts.get(grid.meta["version"], 0) + 1
    return max(counts, key=lambda v: (counts[v], _version_key(v)))


def _newest(folder: Path, op: str, framework: str, file_name: str) -> Source | None:
    """The newest version folder of `op` holding `file_name`, read; None when there is none."""
    candidates = [p for p in (folder / op / framework).glob(f"*/{file_name}")]
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: _version_key(p.parent.name))
    return Source(newest, newest.parent.name, _read_parquet(newest))


def _read_parquet(path: Path) -> Columns:
    try:
        import pyarrow.parquet as pq  # the build step's own dependency, never the simulator's
    except ImportError:
        raise ValueError("building kernel tables reads parquet with pyarrow: "
                         f"{install_hint('calibrate')}") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ValueError(f"cannot read {path}: {exc}") from None
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _hardware_tables(folder: Path) -> dict[str, Grid]:
    tables: dict[str, Grid] = {}
    gemm = _newest(folder, "gemm", "vllm", "gemm_perf.parquet")
    if gemm is not None:
        tables.update(_gemm_tables(folder, gemm))
    for phase, axis in (("context", "isl"), ("generation", "step")):
        attention = _newest(folder, "attention", "vllm", f"{phase}_attention_perf.parquet")
        if attention is not None:
            tables.update(_attention_tables(folder, attention, phase, axis))
        mla = _newest(folder, "mla", "vllm", f"mla_{phase}_module_perf.parquet")
        if mla is not None:
            tables.update(_mla_tables(folder, mla, phase, axis))
    moe = _newest(folder, "moe", "vllm", "moe_perf.parquet")
    if moe is not None:
        tables.update(_moe_tables(folder, moe))
    custom = _newest(folder, "comm", "vllm", "custom_allreduce_perf.parquet")
    if custom is not None:
        for backend, name in ALLREDUCE_BACKENDS.items():
            rows = _select(custom.columns, allreduce_dtype="bfloat16", backend=backend)
            tables[f"allreduce/{name}"] = _grid(folder, custom, rows, ("num_gpus",),
                                                ("message_size",), "linear", "vllm",
                                                {"allreduce_dtype": "bfloat16", "backend": backend})
    nccl = _newest(folder, "comm", "nccl", "nccl_perf.parquet")
    if nccl is not None:
        rows = _select(nccl.columns, op_name="all_reduce", nccl_dtype="half")
        tables["allreduce/nccl"] = _grid(folder, nccl, rows, ("num_gpus",), ("message_size",),
                                         "linear", "nccl", {"op_name": "all_reduce",
                                                            "nccl_dtype": "half"})
    return {name: grid for name, grid in tables.items() if grid.shapes.shape[0]}


def _select(columns: Columns, **equal: Any) -> np.ndarray:
    """Row mask: every named column equals its value (a missing column counts as its default:
    window 0, beam 1)."""
    n = len(next(iter(columns.values())))
    mask = np.ones(n, dtype=bool)
    for name, value in equal.items():
        if name in columns:
            mask &= columns[name] == value
        elif not (name == "window_size" and value == 0) and not (name == "beam_width" and value == 1):
            mask &= False
    return mask


def _gemm_tables(folder: Path, source: Source) -> dict[str, Grid]:
    return {f"gemm/{short}": _grid(folder, source, _select(source.columns, gemm_dtype=dtype),
                                   (), ("m", "n", "k"), "linear", "vllm", {"gemm_dtype": dtype})
            for dtype, short in DTYPES.items()}


def _attention_tables(folder: Path, source: Source, phase: str, axis: str) -> dict[str, Grid]:
    columns = source.columns
    windows = sorted({int(w) for w in columns["window_size"]}) if "window_size" in columns else [0]
    tables = {}
    for kv_dtype, short in DTYPES.items():
        for window in windows:
            rows = _select(columns, attn_dtype="bfloat16", kv_cache_dtype=kv_dtype,
                           window_size=window, beam_width=1)
            tables[f"{phase}_attention/{short}/window{window}"] = _grid(
                folder, source, rows, ("num_heads", "num_key_value_heads", "head_dim"),
                ("batch_size", axis), "log" if phase == "context" else "linear", "vllm",
                {"attn_dtype": "bfloat16", "kv_cache_dtype": kv_dtype, "window_size": window})
    return tables


def _mla_tables(folder: Path, source: Source, phase: str, axis: str) -> dict[str, Grid]:
    columns = source.columns
    tables = {}
    for kv_dtype, kv_short in DTYPES.items():
        for gemm_type, gemm_short in MLA_GEMM_TYPES.items():
            rows = _select(columns, mla_dtype="bfloat16", kv_cache_dtype=kv_dtype,
                           gemm_type=gemm_type, tp_size=1)
            grid = _grid(folder, source, rows, ("num_heads",), ("batch_size", axis),
                         "log" if phase == "context" else "linear", "vllm",
                         {"mla_dtype": "bfloat16", "kv_cache_dtype": kv_dtype,
                          "gemm_type": gemm_type, "tp_size": 1})
            models = sorted(set(columns["model"][rows]))
            if len(models) > 1:
                raise ValueError(f"{source.folder}: MLA rows of several models {models}")
            grid.meta["module_model"] = models[0] if models else None
            tables[f"mla_{phase}/{kv_short}/{gemm_short}"] = grid
    return tables


def _moe_tables(folder: Path, source: Source) -> dict[str, Grid]:
    columns = source.columns
    shape_columns = ("hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size")
    tables = {}
    for dtype, short in MOE_DTYPES.items():
        rows = _select(columns, moe_dtype=dtype, moe_ep_size=1)
        filters = {"moe_dtype": dtype, "moe_ep_size": 1}
        if dtype in MOE_KERNEL_SOURCES:
            rows &= np.char.startswith(columns["kernel_source"].astype(str),
                                       MOE_KERNEL_SOURCES[dtype])
            filters["kernel_source"] = MOE_KERNEL_SOURCES[dtype] + "*"
        chosen = _preferred_distribution(columns, rows, shape_columns)
        rows &= chosen >= 0
        grid = _grid(folder, source, rows, shape_columns, ("num_tokens",), "log", "vllm", filters)
        codes = {tuple(int(columns[c][i]) for c in shape_columns): int(chosen[i])
                 for i in np.nonzero(rows)[0]}
        grid.extra["distribution"] = np.array([codes[tuple(int(v) for v in shape)]
                                               for shape in grid.shapes], dtype=np.int8)
        grid.meta["distributions"] = list(MOE_DISTRIBUTIONS)
        grid.meta["filters"]["distribution"] = "per shape: the first measured of " + ", ".join(
            MOE_DISTRIBUTIONS)
        tables[f"moe/{short}"] = grid
    return tables


def _preferred_distribution(columns: Columns, rows: np.ndarray,
                            shape_columns: tuple[str, ...]) -> np.ndarray:
    """Per row, the index in MOE_DISTRIBUTIONS of its shape's preferred distribution if the row
    has it, else -1 (rows of other distributions, or not selected)."""
    keys = [tuple(int(columns[c][i]) for c in shape_columns) for i in range(len(rows))]
    rank = {name: i for i, name in enumerate(MOE_DISTRIBUTIONS)}
    best: dict[tuple, int] = {}
    for i in np.nonzero(rows)[0]:
        r = rank.get(str(columns["distribution"][i]))
        if r is not None and r < best.get(keys[i], len(MOE_DISTRIBUTIONS)):
            best[keys[i]] = r
    chosen = np.full(len(rows), -1, dtype=np.int64)
    for i in np.nonzero(rows)[0]:
        r = rank.get(str(columns["distribution"][i]))
        if r is not None and r == best[keys[i]]:
            chosen[i] = r
    return chosen


def _grid(folder: Path, source: Source, rows: np.ndarray, shape_columns: tuple[str, ...],
          axis_columns: tuple[str, ...], interpolation: str, framework: str,
          filters: dict[str, Any]) -> Grid:
    """Scatter the selected rows into one dense grid per shape. A key measured more than once
    (A100's vLLM 0.14 context attention repeats some) takes the median of its rows, and the
    meta counts such keys."""
    columns = source.columns
    index = np.nonzero(rows)[0]
    latency = np.asarray(columns["latency"], dtype=np.float64)[index]
    shape_keys = [tuple(int(columns[c][i]) for c in shape_columns) for i in index]
    shapes = sorted(set(shape_keys))
    axes = tuple(np.array(sorted({float(v) for v in np.asarray(columns[c])[index]}), dtype=np.float64)
                 for c in axis_columns)
    shape_index = {shape: i for i, shape in enumerate(shapes)}
    positions = [np.searchsorted(axis, np.asarray(columns[c], dtype=np.float64)[index])
                 for axis, c in zip(axes, axis_columns)]
    measured: dict[tuple[int, ...], list[float]] = {}
    for row, key in enumerate(shape_keys):
        cell = (shape_index[key], *(int(p[row]) for p in positions))
        measured.setdefault(cell, []).append(float(latency[row]))
    values = np.full((len(shapes), *(len(a) for a in axes)), np.nan, dtype=np.float32)
    for cell, latencies in measured.items():
        values[cell] = float(np.median(latencies))
    relative = source.folder.relative_to(folder.parent.parent)
    meta = {
        "file": str(relative),
        "framework": framework,
        "version": source.version,
        "versions_in_rows": (sorted({str(v) for v in columns["version"][index]})
                             if "version" in columns else []),
        "kernel_sources": sorted({str(v) for v in columns["kernel_source"][index]}),
        "rows": int(len(index)),
        "repeated_keys": sum(1 for latencies in measured.values() if len(latencies) > 1),
        "filters": dict(filters),
        "shape_columns": list(shape_columns),
        "axis_columns": list(axis_columns),
        "axis_ranges": [[float(a[0]), float(a[-1])] if len(a) else None for a in axes],
        "interpolation": interpolation,
        "num_shapes": len(shapes),
    }
    return Grid(shape_columns, axis_columns, interpolation,
                np.array(shapes, dtype=np.int64).reshape(len(shapes), len(shape_columns)),
                axes, values, meta, {})


def summary_lines(meta: dict[str, Any]) -> list[str]:
    """One line per hardware and table family: what was kept, from which version."""
    lines = []
    for hw, entry in meta["hardware"].items():
        lines.append(f"{hw}: vLLM {entry['engine_version']} ({', '.join(entry['versions'])}) "
                     f"from {entry['folder']}")
        for name, table in entry["tables"].items():
            lines.append(f"  {name}: {table['rows']} rows, {table['num_shapes']} shapes, "
                         f"{table['framework']} {table['version']}, axes "
                         + ", ".join(f"{c} {r[0]:g}..{r[1]:g}" for c, r in
                                     zip(table["axis_columns"], table["axis_ranges"]) if r))
    return lines

