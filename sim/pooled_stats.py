"""Exact mean and percentiles of a pool of values too large to hold at once.

A million-request trace has a few hundred million inter-token gaps: pooling them in one array
costs as much memory as every token time again, and `np.percentile` would copy it once more.
Here the pool is produced chunk by chunk, as often as needed (`chunks()` must yield the same
values each time), and never held whole:

    pass 1  count, sum, min, max (a pool that came in one chunk is done: np.percentile)
    pass 2  count the values per bin of `NUM_BINS` equal-width bins over [min, max]
    pass 3  keep only the values of the bins that hold the wanted ranks; sort those

Percentiles interpolate linearly between the order statistics around rank (n - 1) q / 100,
numpy's default method, so they equal `np.percentile` of the pooled values (to rounding).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

NUM_BINS = 4096

Chunks = Callable[[], Iterator[np.ndarray]]


def pooled_mean_and_percentiles(
    chunks: Chunks, percentiles: tuple[float, ...]
) -> tuple[float, list[float]] | None:
    """(mean, the `percentiles` in order) of every value the chunks yield; None if none. A
    pool that comes in one chunk is simply partitioned in place (`np.percentile`)."""
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
    values = order_statistics(chunks, ranks, low, high)
    result = []
    for h in positions:
        below, above = values[math.floor(h)], values[min(math.floor(h) + 1, count - 1)]
        result.append(below + (above - below) * (h - math.floor(h)))
    return total / count, result


def order_statistics(chunks: Chunks, ranks: list[int], low: float, high: float) -> dict[int, float]:
    """The values at 0-based `ranks` of the sorted pool, whose extremes are `low` and `high`."""
    if low == high:
        return dict.fromkeys(ranks, low)
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    for chunk in chunks():
        counts += np.bincount(_bins(chunk, low, high), minlength=NUM_BINS)
    ends = np.cumsum(counts)  # ends[b]: values in bins 0..b
    wanted = {rank: int(np.searchsorted(ends, rank, side="right")) for rank in ranks}
    kept: dict[int, list[np.ndarray]] = {b: [] for b in set(wanted.values())}
    for chunk in chunks():
        bins = _bins(chunk, low, high)
        for b, parts in kept.items():
            parts.append(chunk[bins == b])
    sorted_bins = {b: np.sort(np.concatenate(parts)) for b, parts in kept.items()}
    return {rank: float(sorted_bins[b][rank - (int(ends[b - 1]) if b else 0)])
            for rank, b in wanted.items()}


def _bins(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Bin of each value among `NUM_BINS` equal-width bins over [low, high], by arithmetic
    rather than a search over bin edges (several times faster). Rounding may move a value
    near an edge into the neighbouring bin; that is harmless, because the binning is the
    same in both passes and never orders two values against their order (subtraction,
    division and multiplication by positive constants are monotone in floating point)."""
    scaled = (values - low) / (high - low) * NUM_BINS  # in [0, NUM_BINS]: high - low > 0
    return np.minimum(scaled.astype(np.intp), NUM_BINS - 1)
