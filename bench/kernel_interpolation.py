"""Interpolation error of the shipped kernel tables, on held-out grid points.

    python bench/kernel_interpolation.py [--hardware h100] [--out FILE.json]

Every interior grid point whose two neighbours along an axis were measured is left out in turn
and predicted from them, in the table's interpolation space (`sim.cost.kernel_tables`: linear,
or log-log for context attention and MoE), with the other axes at grid values. The prediction
spans twice the grid's spacing, so the errors bound those of points between grid points from
above. Reported per table and axis: the median, 90th percentile and largest relative error
and the number of points, over every shape of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cost.kernel_tables import KernelTables, lerp  # noqa: E402

TABLES = ("gemm/bf16", "gemm/fp8", "generation_attention/bf16/window0",
          "generation_attention/fp8/window0", "context_attention/bf16/window0",
          "moe/bf16", "mla_generation/bf16/bf16", "mla_context/bf16/bf16",
          "allreduce/custom_graph", "allreduce/nccl")


def held_out_errors(values: np.ndarray, axis_values: np.ndarray, axis: int,
                    log_space: bool) -> np.ndarray:
    """Relative errors of predicting grid point i from i - 1 and i + 1 along `axis` of
    `values` ([shapes, *axes], seconds, NaN = not measured)."""
    grid = np.moveaxis(values, axis + 1, 0)
    coords = np.log(axis_values) if log_space else axis_values
    space = np.log(grid) if log_space else grid
    errors = []
    for i in range(1, len(coords) - 1):
        predicted = lerp(coords[i], coords[i - 1], coords[i + 1], space[i - 1], space[i + 1])
        if log_space:
            predicted = np.exp(predicted)
        error = np.abs(predicted / grid[i] - 1.0)
        errors.append(error[np.isfinite(error)])
    return np.concatenate(errors) if errors else np.empty(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="h100")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    tables = KernelTables(None, args.hardware)
    results = {}
    print(f"{args.hardware} ({tables.engine}): held-out relative error, predicted over two "
          "grid steps")
    print(f"{'table':<36} {'axis':<14} {'median':>7} {'p90':>7} {'max':>8} {'points':>7}")
    for name in TABLES:
        table = tables.get(name)
        if table is None:
            continue
        values = np.stack([table.grid_s(s) for s in range(len(table.shapes))])
        for axis, column in enumerate(table.meta["axis_columns"]):
            errors = held_out_errors(values, table.axes[axis], axis, table.log_space)
            if not errors.size:
                continue
            row = {"median_pct": 100 * float(np.median(errors)),
                   "p90_pct": 100 * float(np.percentile(errors, 90)),
                   "max_pct": 100 * float(errors.max()), "points": int(errors.size)}
            results[f"{name} {column}"] = row
            print(f"{name:<36} {column:<14} {row['median_pct']:>6.1f}% {row['p90_pct']:>6.1f}% "
                  f"{row['max_pct']:>7.1f}% {row['points']:>7}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
