"""Parallel sampling: samples share the prompt's blocks, the partial last block is copied on
first write, and a request is finished when all of its samples are."""

from __future__ import annotations

import pytest

from policies.engine import Engine
from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.types import Request, Sequence
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from tests.helpers import FixedCostExecutor, drive


def test_fork_shares_blocks_and_copies_the_partial_tail_on_write():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=8, watermark=0.0))
    request = Request(0, 0.0, 10, 5, n=2)
    parent, child = Sequence(request), Sequence(request, sample_index=1)
    assert alloc.allocate_slots(parent, 10)
    assert alloc.fork(parent, child)
    assert alloc.block_tables[child.seq_id] == [0, 1, 2] and alloc.pool.owners(2) == 2
    assert alloc.usage().filled_slots == 10  # one physical copy of the prompt
    assert alloc.allocate_slots(child, 11)  # writes into shared block 2: copy it first
    assert alloc.block_tables[child.seq_id] == [0, 1, 3]
    assert alloc.take_copies() == [(2, 3, 2)] and alloc.take_copies() == []
    assert alloc.allocate_slots(parent, 11)  # block 2 is parent's alone now: no copy
    assert alloc.block_tables[0] == [0, 1, 2] and alloc.take_copies() == []
    assert alloc.usage().filled_slots == 8 + 3 + 3
    alloc.free(parent)
    alloc.free(child)
    assert alloc.num_free_blocks == 8 and alloc.usage().filled_slots == 0 and not alloc.pool._extra_owners


def test_contiguous_fork_copies_the_whole_prompt():
    alloc = ContiguousAllocator(ContiguousParams(block_size=1, num_blocks=40, reserve="oracle"))
    request = Request(0, 0.0, 10, 5, n=2)
    parent, child = Sequence(request), Sequence(request, sample_index=1)
    assert alloc.allocate_slots(parent, 10) and alloc.fork(parent, child)
    assert alloc.take_copies() == [(0, 14, 10)]


def test_every_sample_generates_the_output_and_the_request_finishes_once():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=12, watermark=0.0))
    done = []
    engine = Engine(ContinuousScheduler(ContinuousParams(max_num_seqs=8, max_num_batched_tokens=64), alloc), FixedCostExecutor(),
                    max_model_len=100, on_done=done.append)
    drive(engine, [Request(0, 0.0, 9, 6, n=3), Request(1, 0.5, 5, 1, n=2)])
    samples = [s for s in engine.sequences.values() if s.request.request_id == 0]
    assert sorted(s.sample_index for s in samples) == [0, 1, 2]
    assert all(len(s.token_times_s) == 6 for s in samples)
    assert all(s.token_times_s[0] == samples[0].token_times_s[0] for s in samples)
    assert [seq.seq_id for seq in done] == [1, 0]
    assert alloc.num_free_blocks == 12


def test_paging_shares_the_prompt_across_samples(capsys):
    rows = {}
    for allocator in ("paged", "contiguous"):
        options = ReplayOptions(max_requests=300, n=4, allocator=allocator, reserve="oracle",
                                num_gpu_blocks=6000)
        results = simulate(resolve(options))
        rows[allocator] = results.summary
        assert all(r["status"] == "finished" for r in results.request_rows())
        assert all(r["generated_tokens"] == 4 * r["output_tokens"] for r in results.request_rows())
    with capsys.disabled():
        print("\n  n=4 samples   output tok/s   TTFT p50 (s)   KV held")
        for name, s in rows.items():
            print(f"  {name:<12} {s['output_throughput_tok_s']:>13.0f} {s['ttft_p50_s']:>14.3f}"
                  f" {s['kv_util_mean']:>9.0%}")
    assert rows["paged"]["kv_util_mean"] < 0.7 * rows["contiguous"]["kv_util_mean"]
    assert rows["paged"]["ttft_p50_s"] < rows["contiguous"]["ttft_p50_s"]


def test_beam_losers_become_copies_of_leaders_and_share_their_blocks():
    from policies.beam import BeamParams, RandomBeamReparenter

    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=20, watermark=0.0))
    scheduler = ContinuousScheduler(ContinuousParams(max_num_seqs=8, max_num_batched_tokens=64),
                                    alloc)
    reparenter = RandomBeamReparenter(BeamParams(beam_churn=1.0))
    engine = Engine(scheduler, FixedCostExecutor(), max_model_len=100, beams=reparenter)
    request = Request(0, 0.0, 6, 9, n=2, beam=True)
    engine.submit(request, 0.0)
    for t in range(4):
        engine.step(float(t))
    beam0, beam1 = engine.sequences[0], engine.sequences[-1]
    # Beam 1 was replaced by a copy of beam 0 after every step: it shares all of beam 0's
    # full blocks and at most its own copy of the partial tail.
    assert alloc.block_tables[-1][:-1] == alloc.block_tables[0][:-1]
    assert beam0.num_computed_tokens == beam1.num_computed_tokens
    assert list(reparenter._streams) == [0]
    drive(engine, [])
    assert alloc.num_free_blocks == 20
    assert not reparenter._streams  # a finished request's stream is dropped


def test_a_refused_beam_copy_stops_the_run_instead_of_leaving_the_loser_without_kv():
    from policies.beam import BeamParams, RandomBeamReparenter

    class RefusesBeamCopies(PagedAllocator):
        def refork(self, loser: Sequence, donor: Sequence) -> bool:
            """Frees the loser, then refuses it the donor's copy."""
            self.free(loser)
            return False

    alloc = RefusesBeamCopies(PagedParams(block_size=4, num_blocks=20, watermark=0.0))
    scheduler = ContinuousScheduler(ContinuousParams(max_num_seqs=8, max_num_batched_tokens=64),
                                    alloc)
    engine = Engine(scheduler, FixedCostExecutor(), max_model_len=100,
                    beams=RandomBeamReparenter(BeamParams(beam_churn=1.0)))
    engine.submit(Request(0, 0.0, 6, 9, n=2, beam=True), 0.0)
    with pytest.raises(RuntimeError, match="refused it a copy of beam 0"):
        for t in range(4):
            engine.step(float(t))


def test_beam_search_returns_one_answer_and_saves_memory_when_beams_converge():
    def run(churn: float, allocator: str) -> dict:
        options = ReplayOptions(max_requests=200, beam_width=4, beam_churn=churn,
                                allocator=allocator, reserve="oracle", num_gpu_blocks=6000)
        results = simulate(resolve(options))
        assert all(r["status"] == "finished" for r in results.request_rows())
        return results.summary

    steady, churning = run(0.0, "paged"), run(0.5, "paged")
    single = simulate(resolve(ReplayOptions(max_requests=200, num_gpu_blocks=6000))).summary
    # One answer per request: the same output tokens as without beams, in more time.
    total = lambda s: s["output_throughput_tok_s"] * s["simulated_span_s"]
    assert total(steady) == pytest.approx(total(single))
    assert churning["kv_util_mean"] < 0.8 * steady["kv_util_mean"]
    contiguous = run(0.5, "contiguous")
    assert contiguous["kv_util_mean"] > 2 * churning["kv_util_mean"]
