"""Exact mean and percentiles of a pool of values too large to hold at once.

A million-request trace has a few hundred million inter-token gaps: pooling them in one array
costs as much memory as every token time again, and `np.percentile` would copy it once more.
Here the pool is produced chunk by chunk, as often as needed (`chunks()` must yield the same
values each time), and never held whole:

    pass 1  count, sum, min, max (a pool that came in one chunk is done: `percentiles_of`)
    pass 2  count the values per bin of `NUM_BINS` equal-width bins over [min, max]
    pass 3  keep only the values of the bins that hold the wanted ranks; sort those

A wanted bin holding more than `KEEP_LIMIT` values (inter-token gaps crowd around the decode
step time: one bin can hold a tenth of a billion-value pool) is not kept but split again into
`NUM_BINS` bins over its own range, one more pass per level, until the bin is small enough
or all its values are equal; so no pass holds more than about `KEEP_LIMIT` values per rank.

A caller that knows the pool more compactly, as distinct values each with how many times it
occurs (inter-token gaps: the steps of one timeline, each shared by every sequence decoding in
it), hands those as `counted` chunks too: passes 2 and 3 then run over them, far fewer than
the pool's values, with each bin counting a value as often as it occurs.

Percentiles interpolate linearly between the order statistics around rank (n - 1) q / 100,
numpy's default method, so they equal `np.percentile` of the pooled values (to rounding).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np

NUM_BINS = 4096
KEEP_LIMIT = 1 << 20

Chunks = Callable[[], Iterator[np.ndarray]]
CountedChunks = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
"""A pool as chunks of distinct values and how many times each occurs (every count >= 1)."""


def percentiles_of(values: np.ndarray, percentiles: Sequence[float],
                   overwrite_input: bool = False) -> list[float]:
    """`np.percentile(values, percentiles)` of a 1-D array (numpy's default, linear method),
    bit for bit: the same order statistics, found by one partition, and numpy's arithmetic
    on them in the same order. numpy's own goes through `np.unique`, whose first call
    imports `numpy.ma` (~20 ms of a replay). `overwrite_input` lets the partition reorder
    `values` in place. Values holding a NaN go to numpy (every percentile is then NaN)."""
    quantiles = np.true_divide(percentiles, 100)
    count = values.size
    if not count or not 0 <= quantiles.min() <= quantiles.max() <= 1:
        return [float(v) for v in np.percentile(values, percentiles)]  # numpy's error
    virtual = (count - 1) * quantiles
    below = np.floor(virtual)
    above = below + 1
    at_end = virtual >= count - 1  # numpy's index -1 there (so its gamma below)
    below[at_end] = -1
    above[at_end] = -1
    below, above = below.astype(np.intp), above.astype(np.intp)
    ranks = sorted({0, count - 1, *(below % count).tolist(), *(above % count).tolist()})
    ordered = values if overwrite_input else values.copy()
    ordered.partition(ranks)
    if ordered.dtype.kind == "f" and np.isnan(ordered[-1]):
        return [float(v) for v in np.percentile(values, percentiles)]
    low, high = ordered[below], ordered[above]
    gamma = virtual - below
    # numpy's `_lerp`: from the lower value, or back from the upper one past halfway
    diff = high - low
    result = low + diff * gamma
    np.subtract(high, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result.tolist()


def pooled_mean_and_percentiles(
    chunks: Chunks, percentiles: tuple[float, ...], counted: CountedChunks | None = None
) -> tuple[float, list[float]] | None:
    """(mean, the `percentiles` in order) of every value the chunks yield; None if none. A
    pool that comes in one chunk is simply partitioned in place (`percentiles_of`); else the
    order statistics come from more passes over `counted` when given (it must hold the same
    pool), over the chunks otherwise."""
    count, total, low, high = 0, 0.0, math.inf, -math.inf
    num_chunks, last = 0, np.empty(0)
    for chunk in chunks():
        if chunk.size:
            num_chunks, last = num_chunks + 1, chunk
            count += chunk.size
            total += float(chunk.sum())
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if not count:
        return None
    if num_chunks == 1:
        return total / count, percentiles_of(last, percentiles, overwrite_input=True)
    positions = [(count - 1) * q / 100.0 for q in percentiles]
    ranks = sorted({r for h in positions for r in (math.floor(h), min(math.floor(h) + 1, count - 1))})
    if counted is None:
        counted = _each_once(chunks)
    values = order_statistics(counted, ranks, low, high)
    result = []
    for h in positions:
        below, above = values[math.floor(h)], values[min(math.floor(h) + 1, count - 1)]
        result.append(below + (above - below) * (h - math.floor(h)))
    return total / count, result


def _each_once(chunks: Chunks) -> Callable[[], Iterator[tuple[np.ndarray, None]]]:
    """`chunks` as counted chunks whose every value occurs once (counts None)."""
    return lambda: ((chunk, None) for chunk in chunks())


# A window of the pool: the values whose bin at each level of `path` is that level's bin,
# where a level (lo, hi, b) bins over [lo, hi] (`_bins`); and how many values sort before it.
Path = tuple[tuple[float, float, int], ...]


def order_statistics(counted: CountedChunks, ranks: list[int], low: float,
                     high: float) -> dict[int, float]:
    """The values at 0-based `ranks` of the sorted pool, whose extremes are `low` and `high`
    (counts None: each value once).

    Binning is monotone (a value never lands in a lower bin than a smaller value), so each
    window's values are contiguous in sorted order and a rank falls in exactly one bin."""
    if low == high:
        return dict.fromkeys(ranks, low)
    found: dict[int, float] = {}
    # (path to a window, its value range, values sorted before it, ranks inside)
    open_windows: list[tuple[Path, float, float, int, list[int]]] = [((), low, high, 0, list(ranks))]
    while open_windows:
        per_bin = [np.zeros(NUM_BINS, dtype=np.int64) for _ in open_windows]
        extremes = [[math.inf, -math.inf] for _ in open_windows]
        for chunk, chunk_counts in counted():
            top = _bins(chunk, low, high)  # every window's first level, binned once
            for window, in_bins, extreme in zip(open_windows, per_bin, extremes):
                path, lo, hi = window[:3]
                values, counts = _in_window(chunk, chunk_counts, top, path)
                if values.size:
                    bins = top if not path else _bins(values, lo, hi)
                    in_bins += (np.bincount(bins, minlength=NUM_BINS) if counts is None else
                                np.bincount(bins, counts, NUM_BINS).astype(np.int64))
                    extreme[0] = min(extreme[0], float(values.min()))
                    extreme[1] = max(extreme[1], float(values.max()))
        to_keep: list[tuple[Path, int, list[int]]] = []
        next_windows = []
        for (path, lo, hi, before, inside), in_bins, (least, most) in zip(open_windows, per_bin,
                                                                          extremes):
            if least == most:  # every value in the window is the same
                found.update(dict.fromkeys(inside, least))
                continue
            ends = np.cumsum(in_bins)  # ends[b]: the window's values in bins 0..b
            by_bin: dict[int, list[int]] = {}
            for rank in inside:
                by_bin.setdefault(int(np.searchsorted(ends, rank - before, side="right")), []).append(rank)
            for b, wanted in by_bin.items():
                start = before + (int(ends[b - 1]) if b else 0)
                sub_path = path + ((lo, hi, b),)
                width = (hi - lo) / NUM_BINS
                sub_lo, sub_hi = lo + width * b, lo + width * (b + 1)
                if in_bins[b] <= KEEP_LIMIT or not sub_lo < sub_hi:
                    to_keep.append((sub_path, start, wanted))
                else:  # too many to hold: split this bin over (about) its own range
                    next_windows.append((sub_path, sub_lo, sub_hi, start, wanted))
        if to_keep:
            kept: list[list[tuple[np.ndarray, np.ndarray | None]]] = [[] for _ in to_keep]
            for chunk, chunk_counts in counted():
                top = _bins(chunk, low, high)
                for (path, _, _), parts in zip(to_keep, kept):
                    parts.append(_in_window(chunk, chunk_counts, top, path))
            for (_, start, wanted), parts in zip(to_keep, kept):
                found.update(_ranked_in(parts, start, wanted))
        open_windows = next_windows
    return {rank: found[rank] for rank in ranks}


def _ranked_in(parts: list[tuple[np.ndarray, np.ndarray | None]], start: int,
               wanted: list[int]) -> dict[int, float]:
    """The `wanted` ranks of a kept window whose first value has rank `start`, from its
    values and counts gathered from every chunk."""
    if parts[0][1] is None:
        values = _sorted([values for values, _ in parts])
        return {rank: float(values[rank - start]) for rank in wanted}
    values = np.concatenate([values for values, _ in parts])
    order = np.argsort(values, kind="stable")
    ends = np.cumsum(np.concatenate([counts for _, counts in parts])[order])
    at = np.searchsorted(ends, np.asarray(wanted) - start, side="right")
    return dict(zip(wanted, values[order[at]].tolist()))


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    """A kept window's values, gathered from every chunk, in order."""
    return np.sort(np.concatenate(parts))


def _in_window(values: np.ndarray, counts: np.ndarray | None, top: np.ndarray,
               path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The values in the window `path` leads to, with their counts; `top` is their bins at
    the first level, which every path shares (over the pool's [low, high])."""
    if not path:
        return values, counts
    inside = top == path[0][2]
    for lo, hi, b in path[1:]:
        inside[inside] = _bins(values[inside], lo, hi) == b
    return values[inside], None if counts is None else counts[inside]


def _bins(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Bin of each value among `NUM_BINS` equal-width bins over [low, high] (values outside
    go to the end bins), by arithmetic rather than a search over bin edges (several times
    faster). Rounding may move a value near an edge into the neighbouring bin; that is
    harmless, because the binning is the same in every pass and never orders two values
    against their order (subtracting, dividing and multiplying by positive constants, and
    clipping, are monotone in floating point)."""
    scaled = (values - low) / (high - low) * NUM_BINS
    return np.clip(scaled, 0, NUM_BINS - 1).astype(np.intp)
