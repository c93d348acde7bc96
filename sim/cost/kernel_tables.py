"""Measured kernel latencies (`servesim calibrate --kernels`), looked up with numpy alone.

A table holds one dense grid per kernel shape (e.g. heads, KV heads, head dim of one attention
call) over its axes (e.g. batch and cached KV length), NaN where nothing was measured. A query
inside the measured range is interpolated multilinearly: in the values and axes themselves for
most tables (latency grows about linearly in tokens, batch, KV length and GEMM dimensions,
which multilinear interpolation reproduces exactly), and in log-log space for context
attention and MoE, whose cost grows as a power of the input length or token count. A query
outside the measured range (or in a cell with an unmeasured corner) is answered at an anchor,
the nearest point inside the measured range, and flagged: the caller scales it by the roofline's ratio
between the query and the anchor (`Lookup.anchor`), and counts it as extrapolated.

Interpolation error, measured by leaving out every interior grid point in turn and predicting it
from its two neighbours (so at twice the grid's spacing: an upper bound for points between grid
points), over H100 vLLM 0.24.0 bf16 tables: docs/calibration.md, "Measured kernels".
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

SHIPPED_TABLE = "data/kernels/vllm.npz"
"""The table built from aiconfigurator's vLLM collections, shipped in the package."""
MS = 1e-3


class Lookup(NamedTuple):
    """A table's latency at a query point. In range, `value_s` is the query's own and
    `anchor` is None; otherwise it is the latency at `anchor`, the nearest point inside the
    measured range, for the caller to scale."""

    value_s: float
    in_range: bool
    anchor: tuple[float, ...] | None


def lerp(x, x0, x1, y0, y1):
    """Linear interpolation, for floats or numpy arrays alike (the same operations in the same
    order, so a value interpolated one at a time and in an array has the same bits)."""
    w = (x - x0) / (x1 - x0)
    return y0 + w * (y1 - y0)


def lerp_each(xs: list[float], x0: float, x1: float, y0: float, y1: float) -> list[float]:
    """`lerp(x, x0, x1, y0, y1)` for each x of `xs`, without a call each: the same operations
    in the same order (the two differences, computed once, are the same floats each time)."""
    dx, dy = x1 - x0, y1 - y0
    return [y0 + (x - x0) / dx * dy for x in xs]


@dataclass(frozen=True, slots=True)
class Row:
    """A linear table reduced to one axis: every other axis interpolated at fixed values
    (e.g. a GEMM's n and k, a decode batch size), latency over the prefix of the remaining
    axis where every corner was measured. A model's GEMM at any token count, or many decode
    steps of one batch, then cost a 1-D interpolation each."""

    axis: int
    """Position of the remaining axis among the table's axes."""
    fixed: tuple[float, ...]
    """The other axes' values, clamped to their measured ranges."""
    fixed_in_range: bool
    log_space: bool
    """Coordinates and values are logarithms (the table's interpolation space)."""
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    xs_array: np.ndarray
    ys_array: np.ndarray

    def at(self, x: float) -> Lookup:
        """Interpolation at `x`; at or outside the row's ends, the end (flagged unless it is
        the query)."""
        xs = self.xs
        c = math.log(x) if self.log_space else x
        if c <= xs[0] or c >= xs[-1]:
            edge = 0 if c <= xs[0] else -1
            value = math.exp(self.ys[edge]) if self.log_space else self.ys[edge]
            if self.covers(x):
                return Lookup(value, True, None)
            edge_x = math.exp(xs[edge]) if self.log_space else xs[edge]
            return Lookup(value, False, self._point(edge_x))
        value = self._inside(c)
        if self.fixed_in_range:
            return Lookup(value, True, None)
        return Lookup(value, False, self._point(x))

    def in_range_values(self, points: Iterable[float]) -> list[float]:
        """`at(x).value_s` for each x of `points` in turn, up to (not including) the first
        whose `at(x)` is out of range: what a caller that prices many points and stops at the
        first one out of range needs, without a `Lookup` or a call each."""
        xs, inside = self.xs, self._inside
        low, high = xs[0], xs[-1]
        values = []
        for x in points:
            c = math.log(x) if self.log_space else x
            if low < c < high:
                if not self.fixed_in_range:
                    break
                values.append(inside(c))
            elif self.covers(x):
                values.append(self.at(x).value_s)
            else:
                break
        return values

    def rising_in_range_values(self, points: list[float]) -> list[float]:
        """`in_range_values(points)` for points in non-decreasing order (a decode run's mean
        lengths): in a linear row, the points between two grid coordinates are interpolated
        in one go (`lerp_each`), a decode run's dozen or so steps usually in one or two."""
        if self.log_space or not self.fixed_in_range:
            return self.in_range_values(points)
        xs, ys = self.xs, self.ys
        low, high = xs[0], xs[-1]
        values: list[float] = []
        start, count = 0, len(points)
        while start < count:
            x = points[start]
            if not low < x < high:
                if not low <= x <= high:
                    break
                values.append(self.at(x).value_s)  # at an end: `covers` it
                start += 1
                continue
            i = bisect.bisect_right(xs, x)  # `_inside`'s cell: xs[i - 1] <= x < xs[i]
            if not start and points[-1] < xs[i]:  # all in one cell (most short decode runs)
                return lerp_each(points, xs[i - 1], xs[i], ys[i - 1], ys[i])
            end = bisect.bisect_left(points, xs[i], start)  # the points in that cell
            values += lerp_each(points[start:end], xs[i - 1], xs[i], ys[i - 1], ys[i])
            start = end
        return values

    def one_cell(self, first: float, last: float) -> tuple[float, float, float, float] | None:
        """The grid cell `(x0, x1, y0, y1)` of a linear, in-range row that holds every point
        from `first` to `last` (`first` strictly inside the row), where
        `rising_in_range_values` interpolates them all with `lerp_each`; None otherwise."""
        if self.log_space or not self.fixed_in_range:
            return None
        xs = self.xs
        if not xs[0] < first < xs[-1]:
            return None
        i = bisect.bisect_right(xs, first)
        if last >= xs[i]:
            return None
        ys = self.ys
        return xs[i - 1], xs[i], ys[i - 1], ys[i]

    def _inside(self, c: float) -> float:
        """The value at coordinate `c`, strictly between the row's ends."""
        xs, ys = self.xs, self.ys
        i = bisect.bisect_right(xs, c)
        value = lerp(c, xs[i - 1], xs[i], ys[i - 1], ys[i])
        return math.exp(value) if self.log_space else value

    def covers(self, x: float) -> bool:
        """Whether `at(x)` is inside the measured range (`Lookup.in_range`)."""
        c = math.log(x) if self.log_space else x
        return self.fixed_in_range and self.xs[0] <= c <= self.xs[-1]

    def interior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`at(x)` for an array of points strictly inside a linear row, where the values are
        `at`'s to the bit; the mask says which points those are (the others are left to
        `at`)."""
        if self.log_space:
            raise ValueError("interior() keeps at()'s bits for linear rows only")
        xs = self.xs_array
        if len(xs) < 2 or not self.fixed_in_range:
            return np.zeros(len(x)), np.zeros(len(x), dtype=bool)
        inside = (x > xs[0]) & (x < xs[-1])
        i = np.minimum(np.maximum(xs.searchsorted(x, side="right"), 1), len(xs) - 1)
        ys = self.ys_array
        return lerp(x, xs[i - 1], xs[i], ys[i - 1], ys[i]), inside

    def _point(self, x: float) -> tuple[float, ...]:
        return self.fixed[:self.axis] + (x,) + self.fixed[self.axis:]


def _cell(coords: list[float], c: float) -> tuple[int, int, float | None]:
    """The grid slice(s) holding coordinate `c` (inside the axis): (low, high, None) at a
    grid coordinate (low == high; an unmeasured neighbour must not turn a measured point into
    NaN), else the bracketing pair and `c`."""
    i = min(max(bisect.bisect_right(coords, c), 1), len(coords) - 1)
    if len(coords) == 1 or c == coords[i - 1]:
        return i - 1, i - 1, None
    if c == coords[i]:
        return i, i, None
    return i - 1, i, c


def _reduce(corners, cells: list[tuple[float, float, float] | None]):
    """Collapse nested corner lists axis by axis: an axis at a grid coordinate has one slice,
    an axis between two has both, interpolated at its (coordinate, low, high)."""
    if not cells:
        return corners
    cell, rest = cells[0], cells[1:]
    if cell is None:
        return _reduce(corners[0], rest)
    c, c0, c1 = cell
    return lerp(c, c0, c1, _reduce(corners[0], rest), _reduce(corners[1], rest))


class KernelTable:
    """One table of the kernel file: `shapes` ([S, C] ints) and a grid per shape."""

    def __init__(self, name: str, meta: dict[str, Any], shapes: np.ndarray,
                 axes: tuple[np.ndarray, ...], values_ms: np.ndarray) -> None:
        self.name = name
        self.meta = meta
        self.log_space = meta["interpolation"] == "log"
        self.shapes = shapes
        self._shape_index = {tuple(int(v) for v in row): i for i, row in enumerate(shapes)}
        values_s = values_ms.astype(np.float64) * MS
        if self.log_space:
            self._coords = tuple(np.log(a) for a in axes)
            self._values = np.log(values_s)
        else:
            self._coords = tuple(axes)
            self._values = values_s
        self.axes = tuple(axes)
        self._coords_lists = tuple(c.tolist() for c in self._coords)
        self._axes_lists = tuple(a.tolist() for a in self.axes)

    def shape_index(self, shape: tuple[int, ...]) -> int | None:
        return self._shape_index.get(tuple(int(v) for v in shape))

    def grid_s(self, shape_index: int) -> np.ndarray:
        """The measured latencies of one shape over the axes, seconds (NaN: not measured)."""
        values = self._values[shape_index]
        return np.exp(values) if self.log_space else values.copy()

    def lookup(self, shape_index: int, point: tuple[float, ...]) -> Lookup:
        """Latency of shape `shape_index` at `point` (one value per axis)."""
        point = tuple(float(x) for x in point)
        clamped = tuple(min(max(x, a[0]), a[-1]) for x, a in zip(point, self._axes_lists))
        value = self._interpolate(shape_index, clamped)
        if math.isnan(value):
            clamped = self._nearest_measured(shape_index, clamped)
            value = self._interpolate(shape_index, clamped)
        in_range = clamped == point
        return Lookup(math.exp(value) if self.log_space else value, in_range,
                      None if in_range else clamped)

    def _interpolate(self, shape_index: int, point: tuple[float, ...]) -> float:
        """Multilinear interpolation inside the grid (point within every axis's range), in
        the table's space, reading only the cell's corners; NaN when a corner was not
        measured."""
        slices, cells = [], []
        for coords, x in zip(self._coords_lists, point):
            low, high, c = _cell(coords, math.log(x) if self.log_space else x)
            slices.append(slice(low, high + 1))
            cells.append(None if c is None else (c, coords[low], coords[high]))
        return float(_reduce(self._values[(shape_index, *slices)].tolist(), cells))

    def _nearest_measured(self, shape_index: int, point: tuple[float, ...]) -> tuple[float, ...]:
        """The measured grid point nearest `point`, distance in grid steps along each axis."""
        valid = np.argwhere(~np.isnan(self._values[shape_index]))
        if not len(valid):
            raise ValueError(f"kernel table {self.name}: shape {self.shapes[shape_index]} has "
                             "no measured point")
        position = np.array([np.interp(math.log(x) if self.log_space else x, c, np.arange(len(c)))
                             for x, c in zip(point, self._coords)])
        best = valid[int(np.argmin(((valid - position) ** 2).sum(axis=1)))]
        return tuple(float(a[i]) for a, i in zip(self.axes, best))

    def nearest_shape(self, shape: tuple[int, ...]) -> int:
        """The measured shape closest to `shape`, in log distance over the shape columns."""
        distance = (np.log(self.shapes.astype(np.float64))
                    - np.log(np.asarray(shape, dtype=np.float64))) ** 2
        return int(np.argmin(distance.sum(axis=1)))

    def row(self, shape_index: int, axis: int, fixed: tuple[float, ...]) -> Row:
        """This table reduced to `axis`, the other axes at `fixed` (see `Row`)."""
        others = [a for i, a in enumerate(self._axes_lists) if i != axis]
        other_coords = [c for i, c in enumerate(self._coords_lists) if i != axis]
        clamped = tuple(min(max(float(x), a[0]), a[-1]) for x, a in zip(fixed, others))
        grid = np.moveaxis(self._values[shape_index], axis, 0)
        for coords, x in zip(other_coords, clamped):  # each reduction removes grid axis 1
            c = math.log(x) if self.log_space else x
            low, high, between = _cell(coords, c)
            grid = grid[:, low] if between is None else lerp(
                c, coords[low], coords[high], grid[:, low], grid[:, high])
        measured = ~np.isnan(grid)
        if not measured[0]:
            raise ValueError(f"kernel table {self.name}: shape {self.shapes[shape_index]} is "
                             f"not measured at its smallest {self.meta['axis_columns'][axis]}")
        prefix = len(measured) if measured.all() else int(np.argmin(measured))
        xs = np.asarray(self._coords[axis][:prefix], dtype=np.float64)
        ys = np.asarray(grid[:prefix], dtype=np.float64)
        return Row(axis, clamped, clamped == tuple(float(x) for x in fixed), self.log_space,
                   tuple(xs.tolist()), tuple(ys.tolist()), xs, ys)


class KernelTables:
    """The tables of one hardware in a kernel file, loaded on first use."""

    def __init__(self, path: str | Path | None, hardware: str) -> None:
        self.path = path
        self.hardware = hardware
        self._file = _open(path)
        meta = json.loads(str(self._file["meta"]))
        entry = meta["hardware"].get(hardware)
        if entry is None:
            raise ValueError(f"no measured kernel tables for hardware {hardware!r} in "
                             f"{path or SHIPPED_TABLE}; tables exist for: "
                             f"{', '.join(meta['hardware'])}")
        self.meta = meta
        self.entry = entry
        self._tables: dict[str, KernelTable | None] = {}

    @property
    def engine(self) -> str:
        return f"{self.meta['engine']}-{self.entry['engine_version']}"

    def get(self, name: str) -> KernelTable | None:
        """The table `name` (e.g. `gemm/bf16`), or None when this hardware has none."""
        if name not in self._tables:
            table_meta = self.entry["tables"].get(name)
            if table_meta is None:
                self._tables[name] = None
            else:
                prefix = f"{self.hardware}/{name}/"
                axes = tuple(np.asarray(self._file[f"{prefix}axis{i}"], dtype=np.float64)
                             for i in range(len(table_meta["axis_columns"])))
                self._tables[name] = KernelTable(name, table_meta, self._file[prefix + "shapes"],
                                                 axes, self._file[prefix + "values"])
        return self._tables[name]


def _open(path: str | Path | None):
    try:
        if path is None:
            with resources.as_file(resources.files("sim.cost").joinpath(SHIPPED_TABLE)) as p:
                return np.load(p, allow_pickle=False)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read kernel table {path or SHIPPED_TABLE}: {exc}") from None


_LOADED: dict[tuple[str, str], KernelTables] = {}


@functools.cache
def shipped_hardware() -> tuple[str, ...]:
    """The hardware names the shipped tables cover (read once per process): what
    `--cost-model auto` checks before choosing the measured model."""
    return tuple(json.loads(str(_open(None)["meta"]))["hardware"])


def shipped_tables(hardware: str) -> KernelTables:
    """The shipped tables of `hardware`, loaded once per process (cost models share them)."""
    key = (SHIPPED_TABLE, hardware)
    if key not in _LOADED:
        _LOADED[key] = KernelTables(None, hardware)
    return _LOADED[key]
