"""Exact mean and percentiles of a pool of values too large to hold at once.

A million-request trace has a few hundred million inter-token gaps: pooling them in one array
costs as much memory as every token time again, and `np.percentile` would copy it once more.
Here the pool is produced chunk by chunk, as often as needed (`chunks()` must yield the same
values each time), and never held whole:

    pass 1  count, sum, min, max (a pool that came in one chunk is done: np.percentile)
    pass 2  count the values per bin of `NUM_BINS` equal-width bins over [min, max]
    pass 3  keep only the values of the bins that hold the wanted ranks; sort those

A wanted bin holding more than `KEEP_LIMIT` values (inter-token gaps crowd around the decode
step time: one bin can hold a tenth of a billion-value pool) is not kept but split again into
`NUM_BINS` bins over its own range, one more pass per level, until the bin is small enough
or all its values are equal; so no pass holds more than about `KEEP_LIMIT` values per rank.

A caller that knows the pool more compactly, as distinct values each with how many times it
occurs (inter-token gaps: the steps of one timeline, each shared by every sequence decoding in
it), hands `ranked` instead: passes 2 and 3 then run over those values once
(`weighted_order_statistics`), not over the whole pool again.

Percentiles interpolate linearly between the order statistics around rank (n - 1) q / 100,
numpy's default method, so they equal `np.percentile` of the pooled values (to rounding).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

NUM_BINS = 4096
KEEP_LIMIT = 1 << 20

Chunks = Callable[[], Iterator[np.ndarray]]
Ranked = Callable[[list[int]], dict[int, float]]
"""The pool's values at the given 0-based ranks of its sorted order."""


def pooled_mean_and_percentiles(
    chunks: Chunks, percentiles: tuple[float, ...], ranked: Ranked | None = None
) -> tuple[float, list[float]] | None:
    """(mean, the `percentiles` in order) of every value the chunks yield; None if none. A
    pool that comes in one chunk is simply partitioned in place (`np.percentile`); else the
    order statistics come from `ranked` when given (it must describe the same pool), from
    more passes over the chunks otherwise."""
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
        return total / count, [float(v) for v in np.percentile(last, percentiles,
                                                                  overwrite_input=True)]
    positions = [(count - 1) * q / 100.0 for q in percentiles]
    ranks = sorted({r for h in positions for r in (math.floor(h), min(math.floor(h) + 1, count - 1))})
    values = ranked(ranks) if ranked is not None else order_statistics(chunks, ranks, low, high)
    result = []
    for h in positions:
        below, above = values[math.floor(h)], values[min(math.floor(h) + 1, count - 1)]
        result.append(below + (above - below) * (h - math.floor(h)))
    return total / count, result


# A window of the pool: the values whose bin at each level of `path` is that level's bin,
# where a level (lo, hi, b) bins over [lo, hi] (`_bins`); and how many values sort before it.
Path = tuple[tuple[float, float, int], ...]


def order_statistics(chunks: Chunks, ranks: list[int], low: float, high: float) -> dict[int, float]:
    """The values at 0-based `ranks` of the sorted pool, whose extremes are `low` and `high`.

    Binning is monotone (a value never lands in a lower bin than a smaller value), so each
    window's values are contiguous in sorted order and a rank falls in exactly one bin."""
    if low == high:
        return dict.fromkeys(ranks, low)
    found: dict[int, float] = {}
    # (path to a window, its value range, values sorted before it, ranks inside)
    open_windows: list[tuple[Path, float, float, int, list[int]]] = [((), low, high, 0, list(ranks))]
    while open_windows:
        counts = [np.zeros(NUM_BINS, dtype=np.int64) for _ in open_windows]
        extremes = [[math.inf, -math.inf] for _ in open_windows]
        for chunk in chunks():
            top = _bins(chunk, low, high)  # every window's first level, binned once
            for window, count, extreme in zip(open_windows, counts, extremes):
                path, lo, hi = window[:3]
                values = _in_window(chunk, top, path)
                if values.size:
                    bins = top if not path else _bins(values, lo, hi)
                    count += np.bincount(bins, minlength=NUM_BINS)
                    extreme[0] = min(extreme[0], float(values.min()))
                    extreme[1] = max(extreme[1], float(values.max()))
        to_keep: list[tuple[Path, int, list[int]]] = []
        next_windows = []
        for (path, lo, hi, before, inside), count, (least, most) in zip(open_windows, counts, extremes):
            if least == most:  # every value in the window is the same
                found.update(dict.fromkeys(inside, least))
                continue
            ends = np.cumsum(count)  # ends[b]: the window's values in bins 0..b
            by_bin: dict[int, list[int]] = {}
            for rank in inside:
                by_bin.setdefault(int(np.searchsorted(ends, rank - before, side="right")), []).append(rank)
            for b, wanted in by_bin.items():
                start = before + (int(ends[b - 1]) if b else 0)
                sub_path = path + ((lo, hi, b),)
                width = (hi - lo) / NUM_BINS
                sub_lo, sub_hi = lo + width * b, lo + width * (b + 1)
                if count[b] <= KEEP_LIMIT or not sub_lo < sub_hi:
                    to_keep.append((sub_path, start, wanted))
                else:  # too many to hold: split this bin over (about) its own range
                    next_windows.append((sub_path, sub_lo, sub_hi, start, wanted))
        if to_keep:
            kept: list[list[np.ndarray]] = [[] for _ in to_keep]
            for chunk in chunks():
                top = _bins(chunk, low, high)
                for (path, _, _), parts in zip(to_keep, kept):
                    parts.append(_in_window(chunk, top, path))
            for (_, start, wanted), parts in zip(to_keep, kept):
                values = _sorted(parts)
                found.update({rank: float(values[rank - start]) for rank in wanted})
        open_windows = next_windows
    return {rank: found[rank] for rank in ranks}


def weighted_order_statistics(values: np.ndarray, counts: np.ndarray,
                              ranks: list[int]) -> dict[int, float]:
    """The values at 0-based `ranks` of the sorted pool in which `values[i]` occurs
    `counts[i]` times (counts >= 0; ranks below their sum), without expanding it: bin by value
    (`_bins`, monotone, so a window's values are contiguous in sorted order), keep the bins
    holding wanted ranks, and bin those again until a window holds at most `KEEP_LIMIT`
    distinct values, which are sorted with their counts. Bins are computed `KEEP_LIMIT`
    values at a time, so the temporaries stay small beside `values`."""
    found: dict[int, float] = {}
    # (values in a window, their counts, pool values sorted before it, ranks inside)
    windows = [(values, counts, 0, sorted(ranks))]
    while windows:
        values, counts, before, inside = windows.pop()
        low, high = float(values.min()), float(values.max())
        if low == high:
            found.update(dict.fromkeys(inside, low))
            continue
        if values.size <= KEEP_LIMIT:
            order = np.argsort(values, kind="stable")
            ends = np.cumsum(counts[order], dtype=np.int64)  # pool values up to each entry
            at = np.searchsorted(ends, np.asarray(inside) - before, side="right")
            found.update(zip(inside, values[order[at]].tolist()))
            continue
        slices = [slice(start, start + KEEP_LIMIT) for start in range(0, values.size, KEEP_LIMIT)]
        per_bin = np.zeros(NUM_BINS)
        for part in slices:
            per_bin += np.bincount(_bins(values[part], low, high), weights=counts[part],
                                   minlength=NUM_BINS)
        ends = np.cumsum(per_bin).astype(np.int64)  # counts are exact in doubles below 2**53
        by_bin: dict[int, list[int]] = {}
        for rank in inside:
            by_bin.setdefault(int(np.searchsorted(ends, rank - before, side="right")), []).append(rank)
        kept: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {b: ([], []) for b in by_bin}
        for part in slices:
            bins = _bins(values[part], low, high)
            for b, (kept_values, kept_counts) in kept.items():
                in_bin = bins == b
                kept_values.append(values[part][in_bin])
                kept_counts.append(counts[part][in_bin])
        for b, wanted in by_bin.items():
            windows.append((np.concatenate(kept[b][0]), np.concatenate(kept[b][1]),
                            before + (int(ends[b - 1]) if b else 0), wanted))
    return {rank: found[rank] for rank in ranks}


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    """A kept window's values, gathered from every chunk, in order."""
    return np.sort(np.concatenate(parts))


def _in_window(values: np.ndarray, top: np.ndarray, path: Path) -> np.ndarray:
    """The values in the window `path` leads to; `top` is their bins at the first level,
    which every path shares (over the pool's [low, high])."""
    if not path:
        return values
    values = values[top == path[0][2]]
    for lo, hi, b in path[1:]:
        values = values[_bins(values, lo, hi) == b]
    return values


def _bins(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Bin of each value among `NUM_BINS` equal-width bins over [low, high] (values outside
    go to the end bins), by arithmetic rather than a search over bin edges (several times
    faster). Rounding may move a value near an edge into the neighbouring bin; that is
    harmless, because the binning is the same in every pass and never orders two values
    against their order (subtracting, dividing and multiplying by positive constants, and
    clipping, are monotone in floating point)."""
    scaled = (values - low) / (high - low) * NUM_BINS
    return np.clip(scaled, 0, NUM_BINS - 1).astype(np.intp)
