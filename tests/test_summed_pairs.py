"""The measured model's summed attended pairs of a step's chunks (`_summed_pairs`) are the
per-chunk `attended_pairs` summed, to the bit, once divided by the chunk count as pricing
divides them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cost.measured import _summed_pairs
from sim.cost.roofline import attended_pairs

CHUNKS = st.lists(st.tuples(st.integers(1, 70_000), st.integers(0, 2_000_000)),
                  min_size=1, max_size=300)


@settings(max_examples=400, deadline=None)
@given(chunks=CHUNKS, window=st.one_of(st.none(), st.integers(1, 10_000)))
def test_summed_pairs_per_row_bit_for_bit(chunks: list[tuple[int, int]],
                                          window: int | None) -> None:
    summed = _summed_pairs(chunks, window)
    by_chunk = sum([attended_pairs(ctx, n, window) for n, ctx in chunks])
    assert summed == by_chunk
    assert (summed / len(chunks)).hex() == (by_chunk / len(chunks)).hex()


def test_summed_pairs_counts_each_query_once() -> None:
    """Two chunks: 3 queries on 5 cached tokens (6 + 7 + 8) and 1 on none (1)."""
    assert _summed_pairs([(3, 5), (1, 0)], None) == 22
    assert _summed_pairs([(3, 5), (1, 0)], 6) == 6 + 6 + 6 + 1
