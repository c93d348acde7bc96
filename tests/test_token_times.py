"""The compact token-time store (`policies.token_times`) against the plain list of times it
replaces, and the metrics' reading of it (`sim.metrics`) against per-sample differences."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.token_times import TokenTimeline, TokenTimes
from policies.types import Request, Sequence
from sim.metrics import _itl_stats, _TokenTimeReader, _inter_token_latencies

# One write to a sequence's times: a run over the timeline's next `n` steps (the decode
# fast-forward), `n` tokens at the timeline's last step (a speculative verify), or one token
# at an arbitrary time (a hand-over from another replica).
writes = st.one_of(
    st.tuples(st.just("run"), st.integers(0, 4)),
    st.tuples(st.just("at"), st.integers(1, 3)),
    st.tuples(st.just("append"), st.floats(0.0, 1e6, allow_nan=False)),
)


def _apply(timeline: TokenTimeline, store: TokenTimes, reference: list[float],
           write: tuple, clock: list[float]) -> None:
    """Make one `write` to `store` through `timeline` and to the plain list `reference`."""
    kind, value = write
    if kind == "run":
        ends = [clock[0] + 0.5 * (i + 1) for i in range(value)]
        clock[0] += 0.5 * value + 0.25
        first = timeline.extend(array("d", ends))
        store.add_run(timeline, first, value)
        reference.extend(ends)
    elif kind == "at":
        clock[0] += 0.125
        index = timeline.stamp(clock[0])
        store.add_at(timeline, index, value)
        reference.extend([clock[0]] * value)
    else:
        store.append(value)
        reference.append(value)


@settings(max_examples=200, deadline=None)
@given(per_seq=st.lists(st.lists(writes, max_size=8), min_size=1, max_size=4),
       order=st.randoms(use_true_random=False))
def test_token_times_read_back_what_was_written(per_seq, order):
    """Sequences sharing one timeline, written in an interleaved order, each read back
    exactly the times written to it: length, every index (negative too), iteration,
    equality with the list, and the metrics' joined arrays and gaps."""
    timeline = TokenTimeline()
    stores = [TokenTimes(timeline) for _ in per_seq]
    references: list[list[float]] = [[] for _ in per_seq]
    queues = [list(seq_writes) for seq_writes in per_seq]
    clock = [0.0]
    while any(queues):  # interleaved, each sequence's own writes in order
        i = order.choice([k for k, q in enumerate(queues) if q])
        _apply(timeline, stores[i], references[i], queues[i].pop(0), clock)
    for store, reference in zip(stores, references):
        assert len(store) == len(reference)
        assert bool(store) == bool(reference)
        assert list(store) == reference
        assert store == reference
        for position in range(-len(reference), len(reference)):
            assert store[position] == reference[position]
        with pytest.raises(IndexError):
            store[len(reference)]
    samples = []
    for k, store in enumerate(stores):
        seq = Sequence(Request(k, 0.0, 4, 4))
        seq.token_times_s = store
        samples.append(seq)
    reader = _TokenTimeReader(samples)
    assert reader.lengths.tolist() == [len(r) for r in references]
    joined = reader.joined(0, len(samples))
    np.testing.assert_array_equal(joined, np.array([t for r in references for t in r]))
    expected_gaps = [b - a for r in references for a, b in zip(r, r[1:])]
    np.testing.assert_array_equal(_inter_token_latencies(samples), np.array(expected_gaps))
    sources = list(reader.gap_sources())  # the same gaps, as distinct sources with counts
    pooled = np.concatenate([np.repeat(values, counts) for values, counts in sources] or [[]])
    np.testing.assert_array_equal(np.sort(pooled), np.sort(expected_gaps))
    assert all((counts >= 1).all() for _, counts in sources)


def test_a_run_that_goes_on_where_the_last_stopped_joins_it():
    """One sequence decoding in every step of its life is one run, however long."""
    timeline = TokenTimeline()
    store = TokenTimes(timeline)
    store.add_at(timeline, timeline.stamp(1.0))
    for step in range(100):
        first = timeline.extend(array("d", [2.0 + step]))
        store.add_run(timeline, first, 1)
    assert list(store.runs) == [0, 101]
    assert store[-1] == 101.0


def test_tokens_at_one_step_share_its_entry():
    """Sequences stamped by the same step share one timeline entry; a burst of several
    tokens at one step stores a run per token after the first."""
    timeline = TokenTimeline()
    a, b = TokenTimes(timeline), TokenTimes(timeline)
    a.append(3.0)
    b.append(3.0)
    b.add_at(timeline, timeline.stamp(3.0), 2)
    assert list(timeline.times_s) == [3.0]
    assert list(b) == [3.0, 3.0, 3.0] and list(b.runs) == [0, 1, 0, 1, 0, 1]


def test_times_of_another_timeline_are_refused_unless_restamped():
    """A sequence's runs index one timeline; a sequence handed to another engine is moved
    there with `restamped`, keeping its times."""
    first, second = TokenTimeline(), TokenTimeline()
    store = TokenTimes(first)
    store.append(1.5)
    with pytest.raises(ValueError, match="one timeline"):
        store.add_at(second, second.stamp(2.0))
    moved = store.restamped(second)
    moved.add_at(second, second.stamp(2.0))
    assert list(moved) == [1.5, 2.0] and moved.timeline is second


def test_samples_of_several_timelines_join_in_sample_order():
    """Samples from different engines (replicas) are read from each one's own timeline."""
    samples = []
    for k, times in enumerate([[1.0, 2.0, 4.0], [], [10.0], [0.5, 0.75]]):
        seq = Sequence(Request(k, 0.0, 4, 4))
        seq.token_times_s.extend(times)  # each its own timeline
        samples.append(seq)
    reader = _TokenTimeReader(samples)
    np.testing.assert_array_equal(reader.joined(0, 4), [1.0, 2.0, 4.0, 10.0, 0.5, 0.75])
    np.testing.assert_array_equal(reader.gaps(1, 4), [0.25])
    np.testing.assert_array_equal(_inter_token_latencies(samples), [1.0, 2.0, 0.25])


def test_an_engine_run_stores_runs_not_tokens():
    """A whole engine run: a request decoding hundreds of tokens alone keeps a handful of
    runs, and its times are those of the steps it ran in."""
    from policies.engine import Engine
    from policies.kv.paged import PagedAllocator, PagedParams
    from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
    from policies.types import Plan, StepResult

    class UnitSteps:
        def execute(self, plan: Plan) -> StepResult:
            return StepResult(0.5)

    allocator = PagedAllocator(PagedParams(num_blocks=64, block_size=16))
    engine = Engine(ContinuousScheduler(ContinuousParams(), allocator), UnitSteps(),
                    max_model_len=1024)
    engine.submit(Request(0, 0.0, 10, 300), 0.0)
    now = 0.0
    while True:
        outcome = engine.step(now)
        if outcome.duration_s is None:
            break
        now += outcome.duration_s
    times = engine.sequences[0].token_times_s
    assert list(times) == [0.5 * (i + 1) for i in range(300)]
    assert list(times.runs) == [0, 300]


@pytest.mark.parametrize("segment_steps", [64, 1 << 18])  # several segments; one
def test_itl_percentiles_ranked_in_the_gap_pool_equal_those_over_every_gap(monkeypatch,
                                                                          segment_steps):
    """A pool of several chunks ranks its percentiles in `gap_sources`: the same numbers, bit
    for bit, as ranking every gap over more passes (and numpy's over the pooled gaps),
    whether the timeline is read in segments or (short enough) at once."""
    import sim.metrics as metrics
    import sim.pooled_stats as pooled

    rng = np.random.default_rng(3)
    timeline = TokenTimeline()
    samples = [Sequence(Request(k, 0.0, 4, 4), token_times_s=TokenTimes(timeline))
               for k in range(40)]
    for _ in range(300):  # steps of varying batches: runs that start, stop and resume
        first = timeline.extend(array("d", [len(timeline) * 0.01 + rng.random() * 1e-3]))
        for seq in samples:
            if rng.random() < 0.6:
                seq.token_times_s.add_run(timeline, first, 1)
        if rng.random() < 0.1:
            burst = samples[int(rng.integers(40))]  # a verify's burst at the last step
            burst.token_times_s.add_at(timeline, len(timeline) - 1, 3)
    monkeypatch.setattr(metrics, "ITL_CHUNK_TOKENS", 500)
    monkeypatch.setattr(metrics, "GAP_SEGMENT_STEPS", segment_steps)
    ranked = _itl_stats(samples)
    real_pooled = pooled.pooled_mean_and_percentiles
    monkeypatch.setattr(metrics, "pooled_mean_and_percentiles",
                        lambda chunks, percentiles, counted: real_pooled(chunks, percentiles))
    assert _itl_stats(samples) == ranked
    gaps = _inter_token_latencies(samples)
    np.testing.assert_allclose([ranked[f"itl_p{q}_s"] for q in (50, 90, 99)],
                               np.percentile(gaps, [50, 90, 99]), rtol=1e-12)
