"""Percentiles of a pool read in chunks equal numpy's over the pooled values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.pooled_stats import pooled_mean_and_percentiles

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


def test_ties_clusters_and_empty_pools():
    heavy_tie = [np.full(10_000, 0.012), np.array([0.012, 3.0, 0.011])]
    mean, (p50, p99, top) = pooled_mean_and_percentiles(lambda: iter(heavy_tie), (50.0, 99.0, 100.0))
    assert (p50, p99, top) == (0.012, 0.012, 3.0)
    assert pooled_mean_and_percentiles(lambda: iter([np.empty(0)]), (50.0,)) is None
