"""One sweep cell, run where a backend puts it: options in, summary or error out.

Top-level and free of closures so a process pool or Ray can ship it by reference; it returns
plain data and writes nothing, so the driver alone owns the output directory.
"""

from __future__ import annotations

from typing import Any


def run_cell(values: dict[str, Any]) -> dict[str, Any]:
    """`{"summary": {...}, "error": None}` or `{"summary": None, "error": "Type: message"}`.

    Any exception is the cell's result, not the sweep's end: one bad cell must not lose the
    others' hours of work.
    """
    # Imported here, not at the top: `servesim` loads this module for every command, and only
    # a worker running a cell needs the simulator.
    from sim.api import simulate
    from sim.config import ReplayOptions, resolve

    try:
        summary = simulate(resolve(ReplayOptions().updated(values))).summary
    except Exception as exc:  # noqa: BLE001 - recorded in the cell's `error` column
        return {"summary": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"summary": summary, "error": None}
