"""Inter-token gaps of a chunk of samples, computed from their joined token-time buffers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.types import Request, Sequence
from sim.metrics import _inter_token_latencies


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=12))
def test_inter_token_gaps_skip_the_joins_between_samples(lengths):
    """The gaps of a chunk of samples (some with no or one token) are each sample's own
    consecutive differences, in sample order, never one sample's last token to the next's
    first."""
    rng = np.random.default_rng(len(lengths))
    samples = []
    for i, n in enumerate(lengths):
        seq = Sequence(Request(i, 0.0, 4, max(n, 1)))
        seq.token_times_s.extend(np.cumsum(rng.random(n)) + 100.0 * i)
        samples.append(seq)
    expected = [b - a for s in samples
                for a, b in zip(s.token_times_s.values(), s.token_times_s.values()[1:])]
    np.testing.assert_array_equal(_inter_token_latencies(samples), np.array(expected))
