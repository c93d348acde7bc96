"""`paged-prefix` caches a length-only request's blocks as its own run (no hash per block):
every table, hit, eviction and count must come out as with the chained hashes it replaces."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies.kv.paged import PagedPrefixAllocator, PagedPrefixParams
from policies.types import Request, SeqStatus, Sequence


class HashedPrefixAllocator(PagedPrefixAllocator):
    """The reference: every request's blocks cached by chained hash, as before own runs."""

    @staticmethod
    def _caches_own_run(request: Request) -> bool:
        return False


def allocators() -> tuple[PagedPrefixAllocator, PagedPrefixAllocator]:
    params = PagedPrefixParams(block_size=2, num_blocks=14, watermark=0.0)
    return PagedPrefixAllocator(params), HashedPrefixAllocator(params)


def test_a_preempted_request_hits_its_own_run_until_evicted():
    alloc, _ = allocators()
    seq = Sequence(Request(7, 0.0, 9, 3))
    assert alloc.allocate_slots(seq, 9)
    alloc.free(seq)  # a recompute preemption: its 4 full blocks stay cached
    assert alloc.match_prefix(seq) == 8 and alloc.cached_prefix_tokens(seq.request) == 8
    stranger = Sequence(Request(8, 0.0, 22, 1))
    assert alloc.allocate_slots(stranger, 22)  # 9 never-used blocks, then 2 freed, tail first:
    assert alloc.stats()["evictions"] == 1  # the partial one (no key) and the last full one
    assert alloc.match_prefix(seq) == 6
    alloc.free(stranger)
    assert alloc.allocate_slots(seq, 9, 6)
    assert alloc.block_tables[7][:3] == [0, 1, 2]  # its own blocks back, not copies
    assert alloc.stats()["prefix_hit_tokens"] == 6 and alloc.stats()["evictions"] == 3


def test_a_finished_request_drops_its_run_but_its_blocks_stay_evictable():
    alloc, _ = allocators()
    seq = Sequence(Request(3, 0.0, 8, 1))
    assert alloc.allocate_slots(seq, 8)
    seq.status = SeqStatus.FINISHED
    alloc.free(seq)
    assert alloc.match_prefix(seq) == 0
    assert alloc.usage().cached_free_slots == 8


@pytest.mark.parametrize("with_ids", [False, True])
def test_a_lockstep_round_registers_what_a_verify_left_as_an_allocation_would(with_ids):
    """A verify allocates drafts past the known tokens and registers only the known ones; the
    accepted tokens' full blocks wait for the next allocation. A lockstep round registers them
    as that allocation would (an own run) or declines (hashes: order against takes matters)."""
    def verified(alloc: PagedPrefixAllocator) -> Sequence:
        ids = tuple(range(4)) if with_ids else None
        seq = Sequence(Request(1, 0.0, 4, 20, prompt_token_ids=ids))
        assert alloc.allocate_slots(seq, 4)
        seq.num_output_tokens = 1
        assert alloc.allocate_slots(seq, 4 + 1 + 3)  # the decode slot and 3 drafts
        seq.num_output_tokens = 1 + 3 + 1  # all 3 accepted, and a bonus token
        seq.num_computed_tokens = alloc._num_tokens[1]
        assert seq.num_computed_tokens == seq.num_known_tokens - 1
        return seq

    (grown, _), (allocated, _) = allocators(), allocators()
    seq = verified(grown)
    usage = grown.grow_in_lockstep([seq], 1)
    assert allocated.allocate_slots(verified(allocated), seq.num_known_tokens)
    if with_ids:
        assert usage is None and grown._num_registered[1] == 2
    else:
        assert usage is not None and grown._num_registered[1] == 4 == allocated._num_registered[1]
        assert grown.block_tables == allocated.block_tables
        assert grown.usage() == allocated.usage()


class OwnRunsMachine(RuleBasedStateMachine):
    """Admissions, decodes, lockstep runs, preemptions and finishes of length-only requests
    (and a few with token ids, which stay hashed), applied to both allocators alike."""

    def __init__(self) -> None:
        super().__init__()
        self.own, self.hashed = allocators()
        self.running: list[Sequence] = []
        self.waiting: list[Sequence] = []
        self.next_id = 0

    def both(self, method: str, *args):
        got, expected = (getattr(alloc, method)(*args) for alloc in (self.own, self.hashed))
        assert got == expected, method
        return got

    def admit(self, seq: Sequence, chunk: int) -> None:
        """Admit `seq` for a prefill chunk of at most `chunk` tokens past its cached ones (a
        whole prefill samples a token; a part waits for `decode` to finish it)."""
        cached = self.both("match_prefix", seq)
        num_tokens = min(seq.num_known_tokens, cached + chunk)
        if self.both("allocate_slots", seq, num_tokens, cached):
            seq.status = SeqStatus.RUNNING
            seq.num_computed_tokens = num_tokens
            if num_tokens == seq.num_known_tokens:
                seq.num_output_tokens += 1
            self.running.append(seq)
        else:
            self.waiting.append(seq)

    @rule(prompt=st.integers(1, 9), output=st.integers(1, 12), with_ids=st.booleans(),
          chunk=st.integers(1, 20))
    def arrive(self, prompt: int, output: int, with_ids: bool, chunk: int) -> None:
        ids = tuple(range(prompt)) if with_ids else None  # token ids: shared content
        self.next_id += 1
        self.admit(Sequence(Request(self.next_id, 0.0, prompt, output, prompt_token_ids=ids)), chunk)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data(), chunk=st.integers(1, 20))
    def readmit(self, data, chunk: int) -> None:
        self.admit(self.waiting.pop(data.draw(st.integers(0, len(self.waiting) - 1))), chunk)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def decode(self, data) -> None:
        seq = self.running[data.draw(st.integers(0, len(self.running) - 1))]
        if self.both("allocate_slots", seq, seq.num_known_tokens):
            seq.num_computed_tokens = seq.num_known_tokens
            seq.num_output_tokens += 1

    @precondition(lambda self: self.running)
    @rule(num_steps=st.integers(1, 5))
    def lockstep(self, num_steps: int) -> None:
        batch = list(self.running)
        if self.both("grow_in_lockstep", batch, num_steps) is not None:
            for seq in batch:
                seq.num_output_tokens += num_steps
                seq.num_computed_tokens = seq.num_known_tokens - 1

    @precondition(lambda self: self.running)
    @rule(data=st.data(), finish=st.booleans(), scheduled=st.booleans())
    def leave(self, data, finish: bool, scheduled: bool) -> None:
        """Finish, or be preempted; `scheduled`: after this step's slots were allocated, so
        every known token's block is cached and a readmission leaves the last one's copy
        behind (a hit always computes the last token)."""
        seq = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        if scheduled:
            self.both("allocate_slots", seq, seq.num_known_tokens)
        seq.status = SeqStatus.FINISHED if finish else SeqStatus.WAITING
        self.both("free", seq)
        if not finish:
            seq.num_computed_tokens = 0
            self.waiting.append(seq)

    @invariant()
    def same_state(self) -> None:
        own, hashed = self.own, self.hashed
        assert own.block_tables == hashed.block_tables
        assert own.pool.free_queue() == hashed.pool.free_queue()
        assert own.pool.num_cached_free == hashed.pool.num_cached_free
        assert own.usage() == hashed.usage() and own.stats() == hashed.stats()
        for seq in self.waiting:
            assert own.match_prefix(seq) == hashed.match_prefix(seq)
            assert own.cached_prefix_tokens(seq.request) == hashed.cached_prefix_tokens(seq.request)


TestOwnRunsMachine = OwnRunsMachine.TestCase
TestOwnRunsMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
