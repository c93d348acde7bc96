"""The block pool on its own: exact hand-out and eviction order, and a state machine that
checks every operation against a plain model of the pool (owner counts, an LRU list of freed
blocks, a key <-> block map), with compaction of the free queue both rare and constant."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from policies.kv import block_pool
from policies.kv.block_pool import BlockPool


def test_never_used_blocks_first_then_freed_blocks_oldest_first():
    pool = BlockPool(5)
    assert pool.take(3) == [0, 1, 2]
    pool.release_many([2, 0])
    assert pool.take(3) == [3, 4, 2] and pool.take_one() == 0 and pool.num_free == 0
    with pytest.raises(ValueError, match="asked for 1 blocks, 0 free"):
        pool.take(1)


def test_a_cached_free_block_is_found_until_allocation_reaches_it():
    pool = BlockPool(3)
    first, second, third = pool.take(3)
    pool.register(first, "a")
    pool.register(second, "b")
    pool.register(third, "a")  # the same content elsewhere: the first copy stays cached
    pool.release_many([second, first, third])  # free queue: b, a, (plain)
    assert pool.num_cached_free == 2 and pool.cached("a") == first
    pool.hold(first)  # a prefix hit takes it back out of the middle of the queue
    assert pool.free_queue() == [second, third] and pool.num_free == 2
    assert pool.take(1) == [second]  # the head: "b" is evicted
    assert pool.cached("b") is None and pool.evictions == 1
    assert pool.release(first) and pool.free_queue() == [third, first]
    assert pool.cached("a") == first and pool.is_cached_free(first)


def test_a_shared_block_is_freed_by_its_last_owner_only():
    pool = BlockPool(2)
    (block,) = pool.take(1)
    pool.hold(block)  # a fork
    assert pool.is_shared(block) and pool.owners(block) == 2
    assert not pool.release(block) and not pool.is_shared(block)
    assert pool.release(block) and pool.owners(block) == 0 and pool.free_queue() == [block]


NUM_BLOCKS = 6
KEYS = st.integers(0, 5)


class BlockPoolMachine(RuleBasedStateMachine):
    """The pool against a model: `owners` of owned blocks, `free` freed blocks head first,
    the never-used ids from `next_fresh` on, and the key of each cached block."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(NUM_BLOCKS)
        self.owners: dict[int, int] = {}
        self.free: list[int] = []
        self.next_fresh = 0
        self.key_of: dict[int, int] = {}
        self.evictions = 0

    def _model_take(self) -> int:
        if self.next_fresh < NUM_BLOCKS:
            self.next_fresh += 1
            block = self.next_fresh - 1
        else:
            block = self.free.pop(0)
            if self.key_of.pop(block, None) is not None:
                self.evictions += 1
        self.owners[block] = 1
        return block

    @rule(count=st.integers(0, NUM_BLOCKS))
    def take(self, count: int) -> None:
        if count > self.pool.num_free:
            with pytest.raises(ValueError):
                self.pool.take(count)
            return
        expected = [self._model_take() for _ in range(count)]
        assert self.pool.take(count) == expected

    @precondition(lambda self: self.pool.num_free > 0)
    @rule()
    def take_one(self) -> None:
        assert self.pool.take_one() == self._model_take()

    @precondition(lambda self: self.owners)
    @rule(data=st.data())
    def fork(self, data) -> None:
        block = data.draw(st.sampled_from(sorted(self.owners)))
        self.pool.hold(block)
        self.owners[block] += 1

    @rule(key=KEYS)
    def hit(self, key: int) -> None:
        block = self.pool.cached(key)
        expected = next((b for b, k in self.key_of.items() if k == key), None)
        assert block == expected
        if block is None:
            return
        self.pool.hold(block)
        if block in self.free:
            self.free.remove(block)
            self.owners[block] = 1
        else:
            self.owners[block] += 1

    @precondition(lambda self: self.owners)
    @rule(data=st.data())
    def release(self, data) -> None:
        block = data.draw(st.sampled_from(sorted(self.owners)))
        self.owners[block] -= 1
        last = self.owners[block] == 0
        if last:
            del self.owners[block]
            self.free.append(block)
        assert self.pool.release(block) == last

    @precondition(lambda self: self.owners)
    @rule(data=st.data())
    def release_many(self, data) -> None:
        owned = sorted(self.owners)
        blocks = data.draw(st.lists(st.sampled_from(owned), unique=True, max_size=len(owned)))
        blocks = data.draw(st.permutations(blocks))
        for block in blocks:
            self.owners[block] -= 1
            if not self.owners[block]:
                del self.owners[block]
                self.free.append(block)
        self.pool.release_many(blocks)

    @precondition(lambda self: self.owners)
    @rule(data=st.data(), key=KEYS)
    def register(self, data, key: int) -> None:
        block = data.draw(st.sampled_from(sorted(self.owners)))
        if block not in self.key_of and key not in self.key_of.values():
            self.key_of[block] = key
        self.pool.register(block, key)

    @invariant()
    def matches_the_model(self) -> None:
        pool = self.pool
        assert pool.free_queue() == self.free  # LRU order, stale entries never shown
        assert pool.owned_blocks() == self.owners
        assert all(count > 0 for count in pool.owned_blocks().values())
        never_used = set(range(self.next_fresh, NUM_BLOCKS))
        assert pool.num_never_used() == len(never_used)
        free = set(self.free) | never_used
        assert len(free) == len(self.free) + len(never_used)  # free blocks listed once
        assert not free & set(self.owners)  # a block is free or owned, never both
        assert len(free) + len(self.owners) == pool.num_blocks == NUM_BLOCKS
        assert pool.num_free == len(free)
        for block in range(NUM_BLOCKS):
            assert pool.owners(block) == self.owners.get(block, 0)
            assert pool.is_shared(block) == (self.owners.get(block, 0) > 1)
            assert pool.key_of(block) == self.key_of.get(block)
        for block, key in self.key_of.items():  # cached blocks found by key until evicted
            assert pool.cached(key) == block
            assert pool.is_cached_free(block) == (block in self.free)
        assert pool.num_cached_free == sum(block in self.key_of for block in self.free)
        assert pool.evictions == self.evictions


BLOCK_POOL_SETTINGS = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestBlockPoolMachine = BlockPoolMachine.TestCase
TestBlockPoolMachine.settings = BLOCK_POOL_SETTINGS


def test_the_model_holds_when_every_hit_compacts_the_free_queue(monkeypatch):
    """Compaction (dropping the stale entries hits leave behind) keeps the queue's order:
    with a threshold of one stale entry it runs on almost every hit."""
    monkeypatch.setattr(block_pool, "COMPACT_AT_STALE", 1)
    run_state_machine_as_test(BlockPoolMachine, settings=BLOCK_POOL_SETTINGS)
