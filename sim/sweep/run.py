"""`servesim sweep`: run a grid's cells, keep each cell's summary, write one table.

Layout of `DIR`:
    cells/<cell_id>/options.json   the cell's options
    cells/<cell_id>/summary.json   a finished cell's summary (byte-identical to `replay --out`)
    cells/<cell_id>/error.txt      a failed cell's error
    results.csv                    one row per cell in grid order: cell, its options, error,
                                   then the summary keys
    results.parquet                the same table, typed, when pyarrow is installed (the `dist`
                                   extra brings it)

A cell with a summary.json is finished and is not rerun (resume after an interruption); a cell
that failed is rerun, since its failure may have been its worker's, not its options'.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

from sim.sweep.backends import run_cells
from sim.sweep.grid import Cell

ProgressFn = Callable[[int, int], None]


def run_sweep(
    cells: list[Cell], out_dir: str | Path, *, backend: str = "local", workers: int | None = None,
    address: str | None = None, progress: ProgressFn | None = None,
) -> tuple[Path, int]:
    """Run every unfinished cell and write `results.csv`; `progress(done, total)` counts
    cells, the resumed ones included. Returns the table's path and the number of failed
    cells."""
    out = Path(out_dir)
    outcomes: dict[int, dict[str, Any]] = {}
    todo: dict[int, dict[str, Any]] = {}
    for cell in cells:
        summary_path = _cell_dir(out, cell) / "summary.json"
        if summary_path.exists():
            outcomes[cell.index] = {"summary": json.loads(summary_path.read_text()), "error": None}
        else:
            todo[cell.index] = cell.values
    if progress is not None:
        progress(len(outcomes), len(cells))
    for index, outcome in run_cells(todo, backend, workers=workers, address=address):
        _write_cell(out, cells[index], outcome)
        outcomes[index] = outcome
        if progress is not None:
            progress(len(outcomes), len(cells))
    failed = sum(1 for outcome in outcomes.values() if outcome["error"] is not None)
    return write_table(cells, outcomes, out / "results.csv"), failed


def _cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.cell_id


def _write_cell(out: Path, cell: Cell, outcome: dict[str, Any]) -> None:
    directory = _cell_dir(out, cell)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "options.json").write_text(json.dumps(cell.values, indent=2) + "\n")
    error_path = directory / "error.txt"
    if outcome["error"] is None:
        (directory / "summary.json").write_text(json.dumps(outcome["summary"], indent=2) + "\n")
        error_path.unlink(missing_ok=True)
    else:
        error_path.write_text(outcome["error"] + "\n")


def write_table(cells: list[Cell], outcomes: dict[int, dict[str, Any]], path: Path) -> Path:
    """Write the table as CSV at `path`, and as Parquet beside it when pyarrow is installed.
    Columns: `cell`, every option any cell sets (grid order), `error`, every summary key (the
    first finished cell's order). Empty fields are None or not applicable; a list (the lines
    of `cost_model_notes`) is one CSV field, its items joined by " | " (a list in Parquet)."""
    header, rows = _table(cells, outcomes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[_csv_field(value) for value in row] for row in rows])
    _write_parquet(header, rows, path.with_suffix(".parquet"))
    return path


def _csv_field(value: Any) -> Any:
    if value is None:
        return ""
    return " | ".join(value) if isinstance(value, list) else value


def _table(cells: list[Cell], outcomes: dict[int, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    option_keys = list(dict.fromkeys(key for cell in cells for key in cell.values))
    summary_keys = list(dict.fromkeys(
        key for cell in cells for key in (outcomes[cell.index]["summary"] or {})))
    rows = []
    for cell in cells:
        outcome = outcomes[cell.index]
        summary = outcome["summary"] or {}
        rows.append([cell.cell_id, *(cell.values.get(k) for k in option_keys), outcome["error"],
                     *(summary.get(k) for k in summary_keys)])
    return ["cell", *option_keys, "error", *summary_keys], rows


def _write_parquet(header: list[str], rows: list[list[Any]], path: Path) -> None:
    """One typed column per field (nulls where empty); a column Arrow cannot type, such as
    an option swept over numbers and strings or an integer past 64 bits, is stored as
    strings."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    columns = {}
    for index, name in enumerate(header):
        values = [row[index] for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array([None if v is None else str(v) for v in values])
    pq.write_table(pa.table(columns), path)
