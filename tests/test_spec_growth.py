"""A speculative step's growth (`PagedAllocator.grow_for_verifies`), including the sequences
whose blocks already hold their verify (no arithmetic, nothing taken), leaves the pool block
for block as the step's own allocations do: every sequence's decode slot, then every
sequence's drafts, in order; a step the pool cannot serve changes nothing."""

from __future__ import annotations

from copy import deepcopy

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixAllocator
from policies.types import Request, Sequence, SeqStatus


def _decoding(request_id: int, prompt_tokens: int, outputs: int) -> Sequence:
    seq = Sequence(Request(request_id, 0.0, prompt_tokens, 1_000), status=SeqStatus.RUNNING)
    seq.num_output_tokens = outputs
    seq.num_computed_tokens = prompt_tokens + outputs - 1
    return seq


def _state(allocator: PagedAllocator) -> tuple:
    return deepcopy((allocator.block_tables, allocator._num_tokens, allocator.usage(),
                     list(allocator.pool._free), allocator.pool._block_of))


ROWS = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(0, 9)),
                min_size=1, max_size=8)
"""(prompt tokens, outputs sampled, drafts) of each decoding sequence."""


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, block_size=st.sampled_from([1, 2, 4, 16]), spare_blocks=st.integers(0, 12),
       caching=st.booleans(), freed=st.integers(0, 7))
def test_growth_is_the_step_allocations(rows, block_size, spare_blocks, caching, freed):
    def pool_with_batch() -> tuple[PagedAllocator, list[Sequence]]:
        kind = PagedPrefixAllocator if caching else PagedAllocator
        held = sum(-(-(p + o - 1) // block_size) for p, o, _ in rows)
        allocator = kind(PagedParams(block_size=block_size, num_blocks=held + spare_blocks,
                                     watermark=0.0, enable_prefix_caching=caching))
        seqs = [_decoding(i, p, o) for i, (p, o, _) in enumerate(rows)]
        for seq in seqs:
            assert allocator.allocate_slots(seq, seq.num_computed_tokens)
        moved = seqs[freed % len(seqs)]  # its blocks back in the queue, then taken again
        allocator.free(moved)
        assert allocator.allocate_slots(moved, moved.num_computed_tokens)
        return allocator, seqs

    totals = [p + o + k for p, o, k in rows]  # known tokens plus drafts
    stepped, seqs = pool_with_batch()
    before = _state(stepped)
    served = all(stepped.allocate_slots(seq, seq.num_known_tokens) for seq in seqs) and all(
        stepped.allocate_slots(seq, total) for seq, total in zip(seqs, totals))
    grown, seqs = pool_with_batch()
    assert grown.grow_for_verifies(seqs, totals) == served
    assert _state(grown) == (_state(stepped) if served else before)
