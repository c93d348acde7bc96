"""Percentiles of a pool read in chunks equal numpy's over the pooled values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.pooled_stats import order_statistics, percentiles_of, pooled_mean_and_percentiles

QUANTILES = (0.0, 1.0, 50.0, 90.0, 99.0, 100.0)
values = arrays(np.float64, st.integers(1, 400),
                elements=st.floats(0.0, 1e3, allow_nan=False, allow_subnormal=False))


@settings(max_examples=150, deadline=None)
@given(data=values, num_chunks=st.integers(1, 6))
def test_chunked_percentiles_equal_numpys(data, num_chunks):
    chunks = np.array_split(data, num_chunks)
    mean, percentiles = pooled_mean_and_percentiles(lambda: iter(chunks), QUANTILES)
    np.testing.assert_allclose(percentiles, np.percentile(data, QUANTILES), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, data.mean(), rtol=1e-9)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(values, arrays(np.float64, st.integers(1, 50),
                                     elements=st.floats(-1e300, 1e300, allow_nan=False)),
                      arrays(np.int64, st.integers(1, 50), elements=st.integers(-10**6, 10**6))),
       quantiles=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=5),
       overwrite=st.booleans())
def test_percentiles_of_is_numpys_percentile_bit_for_bit(data, quantiles, overwrite):
    expected = np.percentile(data, quantiles)
    got = percentiles_of(data.copy(), quantiles, overwrite_input=overwrite)
    assert np.array(got).tobytes() == expected.tobytes()


def test_percentiles_of_leaves_numpy_a_nan_and_a_bad_percentile():
    assert np.isnan(percentiles_of(np.array([1.0, np.nan, 2.0]), (50.0, 90.0))).all()
    with pytest.raises(ValueError, match="Percentiles must be in the range"):
        percentiles_of(np.array([1.0]), (101.0,))


@settings(max_examples=100, deadline=None)
@given(data=values, num_chunks=st.integers(2, 6), keep_limit=st.integers(1, 20))
def test_narrowing_crowded_bins_keeps_percentiles_exact(data, num_chunks, keep_limit):
    import sim.pooled_stats as pooled

    chunks = np.array_split(data, num_chunks)
    default, pooled.KEEP_LIMIT = pooled.KEEP_LIMIT, keep_limit
    try:
        _, percentiles = pooled_mean_and_percentiles(lambda: iter(chunks), QUANTILES)
    finally:
        pooled.KEEP_LIMIT = default
    np.testing.assert_allclose(percentiles, np.percentile(data, QUANTILES), rtol=1e-12, atol=1e-12)


def test_ties_clusters_and_empty_pools():
    heavy_tie = [np.full(10_000, 0.012), np.array([0.012, 3.0, 0.011])]
    mean, (p50, p99, top) = pooled_mean_and_percentiles(lambda: iter(heavy_tie), (50.0, 99.0, 100.0))
    assert (p50, p99, top) == (0.012, 0.012, 3.0)
    assert pooled_mean_and_percentiles(lambda: iter([np.empty(0)]), (50.0,)) is None


def test_a_crowded_bin_is_split_again_rather_than_held(monkeypatch):
    """Values crowded into one bin (as inter-token gaps crowd around the step time) are
    narrowed down over more passes; no window kept and sorted holds more than the limit."""
    import sim.pooled_stats as pooled

    monkeypatch.setattr(pooled, "KEEP_LIMIT", 50)
    rng = np.random.default_rng(0)
    crowd = 0.010 + rng.random(5_000) * 1e-9  # all in one top-level bin of [0.01, 9]
    data = np.concatenate([crowd, np.full(300, 0.0123), [0.01, 9.0], rng.random(700) + 2.0])
    chunks = np.array_split(rng.permutation(data), 7)
    kept_sizes, passes = [], []
    real_sorted = pooled._sorted

    def watched_sorted(parts):
        kept_sizes.append(sum(part.size for part in parts))
        return real_sorted(parts)

    def counted_chunks():
        passes.append(1)
        return iter(chunks)

    monkeypatch.setattr(pooled, "_sorted", watched_sorted)
    quantiles = (0.0, 10.0, 50.0, 75.0, 76.0, 99.0, 100.0)
    mean, percentiles = pooled.pooled_mean_and_percentiles(counted_chunks, quantiles)
    np.testing.assert_allclose(percentiles, np.percentile(data, quantiles), rtol=1e-12)
    np.testing.assert_allclose(mean, data.mean(), rtol=1e-9)
    assert kept_sizes and max(kept_sizes) <= 50
    assert len(passes) > 3  # the crowd took more than one level of bins



@settings(max_examples=150, deadline=None)
@given(data=values, counts=st.lists(st.integers(1, 5), min_size=400, max_size=400),
       num_chunks=st.integers(1, 5), keep_limit=st.integers(1, 500))
def test_counted_chunks_rank_as_the_expanded_pool(data, counts, num_chunks, keep_limit):
    """Chunks of values with counts rank as the pool with each value repeated that often,
    however often windows are binned again (a small `KEEP_LIMIT`)."""
    import sim.pooled_stats as pooled

    counts = np.array(counts[:data.size], dtype=np.int64)
    expanded = np.sort(np.repeat(data, counts))
    parts = list(zip(np.array_split(data, num_chunks), np.array_split(counts, num_chunks)))
    ranks = sorted({0, expanded.size - 1, expanded.size // 2, (expanded.size * 9) // 10})
    default, pooled.KEEP_LIMIT = pooled.KEEP_LIMIT, keep_limit
    try:
        found = order_statistics(lambda: iter(parts), ranks, float(data.min()), float(data.max()))
    finally:
        pooled.KEEP_LIMIT = default
    assert found == {rank: float(expanded[rank]) for rank in ranks}
