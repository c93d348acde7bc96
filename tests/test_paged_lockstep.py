"""`paged` (no prefix caching) grows a decoding batch by many rounds at once
(`grow_in_lockstep`): it must leave exactly what the rounds of `allocate_slots` it stands for
leave (block tables, the free queue's order, the usage after each round), or decline with
nothing changed where a round would fail or copy a forked sample's shared block."""

from __future__ import annotations

import copy

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies.kv.paged import PagedAllocator, PagedParams
from policies.types import Request, SeqStatus, Sequence


def stepped_rounds(alloc: PagedAllocator, batch: list[Sequence],
                   num_steps: int) -> list[tuple[int, int, int]] | None:
    """Round after round of `allocate_slots` over `batch`, as the engine's decode steps
    would; each round's (reserved, filled, cached-free) slots, or None at a failed round."""
    rows = []
    for round_ in range(num_steps):
        for seq in batch:
            if not alloc.allocate_slots(seq, seq.num_known_tokens + round_):
                return None
        usage = alloc.usage()
        rows.append((usage.reserved_slots, usage.filled_slots, usage.cached_free_slots))
    return rows


def test_one_take_serves_the_rounds_in_round_then_batch_order():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=12, watermark=0.0))
    a, b = Sequence(Request(0, 0.0, 3, 20)), Sequence(Request(1, 0.0, 5, 20))
    for seq in (a, b):  # prefilled: every prompt token computed, the first output sampled
        assert alloc.allocate_slots(seq, seq.request.prompt_tokens)
        seq.num_computed_tokens, seq.num_output_tokens = seq.request.prompt_tokens, 1
    # a holds 3 tokens (block 0), b 5 (blocks 1, 2): a needs a block at round 1, 5 and 9;
    # b at round 3 and 7.
    usage = alloc.grow_in_lockstep([a, b], 10)
    assert alloc.block_tables == {0: [0, 3, 5, 7], 1: [1, 2, 4, 6]}
    assert usage.reserved_slots == [12, 16, 16, 20, 20, 24, 24, 28, 28, 32]
    assert usage.filled_slots == list(range(10, 30, 2))


def test_a_batch_the_pool_cannot_grow_is_left_as_it_was():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=3, watermark=0.0))
    a = Sequence(Request(0, 0.0, 8, 20))
    assert alloc.allocate_slots(a, 8)
    a.num_computed_tokens, a.num_output_tokens = 8, 1
    assert alloc.grow_in_lockstep([a], 6) is None  # a third block at round 0, a fourth at 4
    assert alloc.block_tables == {0: [0, 1]} and alloc.usage().filled_slots == 8
    assert alloc.grow_in_lockstep([a], 4) is not None
    assert alloc.block_tables == {0: [0, 1, 2]}


class LockstepMachine(RuleBasedStateMachine):
    """Two allocators given the same admissions, forks, decodes and frees; one grows runs of
    decode rounds in lockstep, the other allocates them round by round."""

    def __init__(self) -> None:
        super().__init__()
        params = PagedParams(block_size=3, num_blocks=24, watermark=0.0)
        self.jumped, self.stepped = PagedAllocator(params), PagedAllocator(params)
        self.running: list[tuple[Sequence, Sequence]] = []  # (jumped's, stepped's)
        self.next_id = 0
        self.next_sample = 1

    @rule(prompt=st.integers(1, 10), output=st.integers(2, 30))
    def admit(self, prompt: int, output: int) -> None:
        pair = []
        for alloc in (self.jumped, self.stepped):
            seq = Sequence(Request(self.next_id, 0.0, prompt, output))
            if alloc.allocate_slots(seq, prompt):
                seq.status = SeqStatus.RUNNING
                seq.num_computed_tokens, seq.num_output_tokens = prompt, 1
                pair.append(seq)
        self.next_id += 1
        assert len(pair) in (0, 2)
        if pair:
            self.running.append((pair[0], pair[1]))

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def fork(self, data) -> None:
        """A second sample shares every block of its parent, the partial last one too."""
        parents = self.running[data.draw(st.integers(0, len(self.running) - 1))]
        children = []
        for alloc, parent in zip((self.jumped, self.stepped), parents):
            child = Sequence(parent.request, status=SeqStatus.RUNNING,
                             num_computed_tokens=parent.num_computed_tokens,
                             num_output_tokens=parent.num_output_tokens,
                             sample_index=self.next_sample)
            assert alloc.fork(parent, child)
            children.append(child)
        self.next_sample += 1
        self.running.append((children[0], children[1]))

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def decode_one(self, data) -> None:
        """One sequence's decode step alone (copying a shared partial block if it must)."""
        pair = self.running[data.draw(st.integers(0, len(self.running) - 1))]
        served = [alloc.allocate_slots(seq, seq.num_known_tokens)
                  for alloc, seq in zip((self.jumped, self.stepped), pair)]
        assert served[0] == served[1]
        if served[0]:
            assert self.jumped.take_copies() == self.stepped.take_copies()
            for seq in pair:
                seq.num_computed_tokens = seq.num_known_tokens
                seq.num_output_tokens += 1

    @precondition(lambda self: self.running)
    @rule(data=st.data(), extra=st.integers(1, 4))
    def reserve_ahead(self, data, extra: int) -> None:
        """Slots past a sequence's known tokens (as a verify's drafts take): a lockstep
        growth that includes it must decline, putting back every held count it moved."""
        pair = self.running[data.draw(st.integers(0, len(self.running) - 1))]
        served = [alloc.allocate_slots(seq, seq.num_known_tokens + extra)
                  for alloc, seq in zip((self.jumped, self.stepped), pair)]
        assert served[0] == served[1]
        assert self.jumped.take_copies() == self.stepped.take_copies()

    @precondition(lambda self: self.running)
    @rule(data=st.data(), num_steps=st.integers(1, 8))
    def decode_run(self, data, num_steps: int) -> None:
        picked = data.draw(st.lists(st.integers(0, len(self.running) - 1), min_size=1,
                                    unique=True))
        pairs = [self.running[i] for i in picked]
        jumped_batch, stepped_batch = [p[0] for p in pairs], [p[1] for p in pairs]
        before = (self.jumped.usage(), {k: list(v) for k, v in self.jumped.block_tables.items()})
        usage = self.jumped.grow_in_lockstep(jumped_batch, num_steps)
        if usage is None:  # declined: nothing changed, and a round would fail or copy, or
            # a sequence holds more than its known tokens but the last (reserved ahead)
            assert (self.jumped.usage(), self.jumped.block_tables) == before
            trial = copy.deepcopy(self.stepped)
            assert (any(self.jumped._num_tokens[seq.seq_id] != seq.num_known_tokens - 1
                        for seq in jumped_batch)
                    or stepped_rounds(trial, stepped_batch, num_steps) is None
                    or trial.take_copies())
            return
        rows = stepped_rounds(self.stepped, stepped_batch, num_steps)
        assert rows == list(zip(usage.reserved_slots, usage.filled_slots,
                                usage.cached_free_slots))
        for batch in (jumped_batch, stepped_batch):
            for seq in batch:
                seq.num_output_tokens += num_steps
                seq.num_computed_tokens += num_steps

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def leave(self, data) -> None:
        jumped, stepped = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        self.jumped.free(jumped)
        self.stepped.free(stepped)

    @invariant()
    def same_state(self) -> None:
        assert self.jumped.block_tables == self.stepped.block_tables
        assert self.jumped.pool.free_queue() == self.stepped.pool.free_queue()
        assert self.jumped.usage() == self.stepped.usage()
        assert self.jumped._num_tokens == self.stepped._num_tokens


TestLockstepMachine = LockstepMachine.TestCase
TestLockstepMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
