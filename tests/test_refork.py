"""`refork` (a beam replaced by a copy of another) leaves the paged allocators exactly as
`free` then `fork` would: block tables, owners, the free queue's order, the slot counts and,
with prefix caching, the hashes. Its fast path leaves the blocks the two tables share alone."""

from __future__ import annotations

import copy

import hypothesis.strategies as st
from hypothesis import given, settings

from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixAllocator, PagedPrefixParams
from policies.types import Request, Sequence


def state(alloc: PagedAllocator) -> tuple:
    pool = alloc.pool
    return (alloc.block_tables, alloc._num_tokens, alloc._filled_slots, alloc._shared_slots,
            alloc._hashes, alloc._num_registered, alloc._ordered_registrations,
            pool.free_queue(), pool.owned_blocks(), sorted(pool._cached_free), alloc.usage())


def beams_after(steps: list[tuple[int, int, int]], width: int, prompt: int, caching: bool
                ) -> tuple[PagedAllocator, list[Sequence], list[tuple[int, int]]]:
    """An allocator whose beams (of one request) grew and were reforked per `steps`, each
    (beam that grows, tokens it grows by, beam replaced by another): the pairs reforked are
    returned, each done by `refork` and checked against `free` + `fork` on a copy."""
    params = (PagedPrefixParams(block_size=4, num_blocks=64, watermark=0.0) if caching
              else PagedParams(block_size=4, num_blocks=64, watermark=0.0))
    alloc = (PagedPrefixAllocator if caching else PagedAllocator)(params)
    request = Request(0, 0.0, prompt, 40, n=width, beam=True,
                      prompt_token_ids=tuple(range(prompt)) if caching else None)
    beams = [Sequence(request, sample_index=index) for index in range(width)]
    assert alloc.allocate_slots(beams[0], prompt)
    for beam in beams[1:]:
        assert alloc.fork(beams[0], beam)
    reforked = []
    for grower, tokens, loser in steps:
        seq = beams[grower % width]
        held = alloc._num_tokens[seq.seq_id]
        seq.num_computed_tokens = held
        if alloc.allocate_slots(seq, held + tokens):
            alloc.take_copies()
        donor = beams[(loser + 1) % width]
        loser_seq = beams[loser % width]
        if donor is loser_seq:
            continue
        by_calls = copy.deepcopy(alloc)
        by_calls.free(loser_seq)
        assert by_calls.fork(donor, loser_seq)
        assert alloc.refork(loser_seq, donor)
        assert state(alloc) == state(by_calls)
        reforked.append((loser_seq.sample_index, donor.sample_index))
    return alloc, beams, reforked


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 9), st.integers(0, 3)),
                min_size=1, max_size=25),
       st.integers(2, 4), st.integers(1, 30), st.booleans())
def test_refork_leaves_what_free_then_fork_leave(steps, width, prompt, caching):
    alloc, beams, _ = beams_after(steps, width, prompt, caching)
    for beam in beams:
        alloc.free(beam)
    assert alloc.pool.num_free == alloc.num_blocks and not alloc.pool._extra_owners
    assert alloc._filled_slots == 0 and alloc._shared_slots == 0


def test_refork_touches_only_the_blocks_the_beams_do_not_share():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=64, watermark=0.0))
    request = Request(0, 0.0, 30, 40, n=2, beam=True)
    leader, loser = Sequence(request), Sequence(request, sample_index=1)
    assert alloc.allocate_slots(leader, 30) and alloc.fork(leader, loser)
    assert alloc.allocate_slots(loser, 39)  # copies shared block 7 (to 8), takes 9 and 10
    calls = []
    for name in ("hold", "release"):
        method = getattr(alloc.pool, name)
        setattr(alloc.pool, name, lambda block, method=method, name=name: (
            calls.append((name, block)), method(block))[1])
    assert alloc.refork(loser, leader)
    # the loser's own blocks go back tail first; the leader's block 7 gains its owner back;
    # blocks 0-6, which both held, are left alone
    assert calls == [("release", 10), ("release", 9), ("release", 8), ("hold", 7)]
    assert alloc.block_tables[loser.seq_id] == alloc.block_tables[leader.seq_id] == list(range(8))
    assert alloc.pool.free_queue()[-3:] == [10, 9, 8]
