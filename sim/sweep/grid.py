"""A sweep grid: a TOML file whose keys are replay options, a list meaning "sweep these".

    scheduler = ["continuous", "chunked"]   # swept
    rate_scale = [1, 2]                     # swept
    trace = "synthetic:n=200,..."           # fixed in every cell
    [[cells]]                               # optional: explicit configs, crossed with the rest
    allocator = "paged"

Cells are the cartesian product of the swept keys (in file order, the last key varying
fastest), crossed with each `[[cells]]` table. Every cell is checked against the option names
before anything runs, so a typo fails the whole sweep at once rather than every cell.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.config import ReplayOptions, options_from_toml

CELLS_KEY = "cells"


@dataclass(frozen=True, slots=True)
class Cell:
    index: int
    """Position in grid order: the row order of results.csv."""
    values: dict[str, Any]
    """The options this cell sets (fixed and swept), in grid key order."""

    @property
    def cell_id(self) -> str:
        """A digest of the values, not the index: editing the grid keeps finished cells
        finished (resume), and two cells with the same values are the same run."""
        text = json.dumps(self.values, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_grid(path: str | Path) -> list[Cell]:
    return expand_grid(options_from_toml(path))


def expand_grid(grid: dict[str, Any]) -> list[Cell]:
    data = dict(grid)
    explicit = data.pop(CELLS_KEY, [{}])
    if not isinstance(explicit, list) or not explicit or not all(
            isinstance(item, dict) for item in explicit):
        raise ValueError(f"`{CELLS_KEY}` must be a non-empty array of tables ([[{CELLS_KEY}]])")
    swept: dict[str, list[Any]] = {}
    for key, value in data.items():
        if isinstance(value, list):
            if not value:
                raise ValueError(f"grid key {key!r} sweeps an empty list")
            swept[key] = value
        elif isinstance(value, dict):
            raise ValueError(f"grid key {key!r} is a table; give a value or a list of values")
    cells = []
    for combo in itertools.product(*swept.values()):
        for extra in explicit:
            values = dict(data) | dict(zip(swept, combo)) | {
                k.replace("-", "_"): v for k, v in extra.items()}
            cells.append(Cell(len(cells), values))
    for cell in cells:
        ReplayOptions().updated(cell.values)  # unknown names: one clear error up front
    return cells
