"""A pool of KV blocks: the free queue, owner counts and the content cache, as vLLM v1's
BlockPool keeps them. Allocators (`paged.py`, `hybrid_paged.py`) keep the block tables and
decide what to take, share and cache; the pool only knows blocks.

Blocks are handed out never-used ids first (created lazily: a counter marks the first
never-used id, so a pool of millions of blocks costs nothing until used), then freed blocks
oldest first. A block whose last owner releases it joins the free queue's tail and keeps its
cache key if it has one: it is cached-free, reusable by a prefix hit (which takes it out of the
queue wherever it is) until allocation reaches it at the queue's head and evicts its key (lazy
LRU eviction).

    free queue:  head -> [never-used ids ...][b9 (key)][b4][b7 (key)] <- tail (newest freed)
    take(2) after the never-used ids run out: b9 (its key evicted), b4

The queue is a deque, so taking and giving back blocks costs a few C calls per sequence. A hit
that takes a cached block out of the middle leaves its entry behind as stale (counted per
block); stale entries always precede a block's live one, so the head skips them, and the queue
is compacted once they are half of it. Owner counts are kept only for shared blocks
(`_extra_owners`): a block outside the free queue has one owner unless listed there, so
unshared runs never touch a per-block count. Keys are whatever the allocator caches by (a
chained block hash; `hybrid_paged.py` uses (unit, block hash)).

A length-only request's blocks can only ever be hit by that request again (after a recompute
preemption), so the allocator finds them through the request's own run of blocks instead of
a content hash (`paged.py`); the pool keeps only which run and index each such block is cached
for (`register_own`), to evict and count it like any cached block.
"""

from __future__ import annotations

from collections import deque
from itertools import count, repeat
from typing import Hashable

COMPACT_AT_STALE = 1024
"""Stale free-queue entries tolerated before compaction, whatever the queue's length."""


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.evictions = 0
        self._next_fresh = 0
        self._free: deque[int] = deque()
        self._stale: dict[int, int] = {}  # per block: entries in `_free` a hit took back
        self._num_stale = 0
        self._extra_owners: dict[int, int] = {}  # owners beyond the first, shared blocks only
        self._key_of: dict[int, Hashable] = {}
        self._block_of: dict[Hashable, int] = {}
        self._own_key_of: dict[int, tuple[int, int]] = {}  # block -> (request id, run index)
        self._cached_free: set[int] = set()  # keyed blocks in the free queue

    # ---- queries ------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks `take` may hand out: never used, freed, or cached-free."""
        return self.num_blocks - self._next_fresh + len(self._free) - self._num_stale

    @property
    def num_cached_free(self) -> int:
        return len(self._cached_free)

    def cached(self, key: Hashable) -> int | None:
        """The block holding content `key`, owned or cached-free, or None."""
        return self._block_of.get(key)

    def key_of(self, block: int) -> Hashable | None:
        return self._key_of.get(block)

    def own_key_of(self, block: int) -> tuple[int, int] | None:
        """(request id, index) of the run `block` is cached for (`register_own`), or None."""
        return self._own_key_of.get(block)

    def is_cached_free(self, block: int) -> bool:
        """Whether `block` (one `cached` found) sits in the free queue, unowned."""
        return block in self._cached_free

    def is_shared(self, block: int) -> bool:
        """Whether owned `block` has more than one owner."""
        return block in self._extra_owners

    # ---- taking and giving back ---------------------------------------------------------
    def take(self, count: int) -> list[int]:
        """`count` blocks from the queue's head, each with one owner (a cached-free block
        loses its key: it is evicted); the caller checks `num_free` first."""
        return self.take_reporting(count)[0]

    def take_reporting(self, count: int) -> tuple[list[int], set[int]]:
        """`take`, and which of the blocks it evicted (a lockstep growth counts them per
        round)."""
        if count > self.num_free:
            raise ValueError(f"asked for {count} blocks, {self.num_free} free")
        fresh = min(count, self.num_blocks - self._next_fresh)
        blocks = list(range(self._next_fresh, self._next_fresh + fresh))
        self._next_fresh += fresh
        evicted: set[int] = set()
        if count > fresh:
            if self._num_stale:
                reused = [self._pop_freed() for _ in range(count - fresh)]
            else:
                reused = list(map(deque.popleft, repeat(self._free, count - fresh)))
            if self._cached_free:
                evicted = self._evict_many(reused)
            blocks += reused
        return blocks, evicted

    def take_one(self) -> int:
        """`take(1)`'s block, without the list (the lockstep growth's inner loop); the caller
        checks `num_free` first."""
        if self._next_fresh < self.num_blocks:
            block = self._next_fresh
            self._next_fresh += 1
            return block
        block = self._pop_freed()
        if block in self._cached_free:
            self._evict(block)
        return block

    def hold(self, block: int) -> None:
        """One more owner for `block`, which is owned (a fork) or cached-free (a prefix hit:
        it leaves the free queue, its entry there going stale)."""
        if block in self._cached_free:
            self._cached_free.remove(block)
            self._stale[block] = self._stale.get(block, 0) + 1
            self._num_stale += 1
            if self._num_stale > max(COMPACT_AT_STALE, len(self._free) // 2):
                self._compact_free_queue()
        else:
            self._extra_owners[block] = self._extra_owners.get(block, 0) + 1

    def release(self, block: int) -> bool:
        """Drop one owner of `block`; True when that was the last and it joined the free
        queue's tail (cached-free if it has a key)."""
        owners = self._extra_owners.get(block)
        if owners:
            if owners == 1:
                del self._extra_owners[block]
            else:
                self._extra_owners[block] = owners - 1
            return False
        self._free.append(block)
        if block in self._key_of or block in self._own_key_of:
            self._cached_free.add(block)
        return True

    def release_many(self, blocks: list[int]) -> None:
        """`release` each of `blocks` in order; in bulk when no block is shared."""
        if self._extra_owners:
            for block in blocks:
                self.release(block)
            return
        self._free.extend(blocks)
        if self._key_of:
            self._cached_free |= self._key_of.keys() & blocks
        if self._own_key_of:
            self._cached_free |= self._own_key_of.keys() & blocks

    def register(self, block: int, key: Hashable) -> None:
        """Cache `block` under `key`, unless it is cached already or another block holds the
        same content (the first copy stays the cached one)."""
        if block not in self._key_of and key not in self._block_of:
            self._key_of[block] = key
            self._block_of[key] = block

    def register_many(self, blocks: list[int], keys: list[Hashable]) -> None:
        """`register` each block under its key, in order (a sequence's newly filled blocks),
        in one loop."""
        key_of, block_of = self._key_of, self._block_of
        for block, key in zip(blocks, keys):
            if block not in key_of and key not in block_of:
                key_of[block] = key
                block_of[key] = block

    def register_own(self, blocks: list[int], request_id: int, first_index: int) -> None:
        """Cache `blocks` as indices `first_index`, ... of request `request_id`'s own run
        (the allocator checks that none is cached already), in one C-level update."""
        self._own_key_of.update(zip(blocks, zip(repeat(request_id), count(first_index))))

    # ---- the queue's internals ----------------------------------------------------------
    def _pop_freed(self) -> int:
        """The oldest freed block still free, skipping entries a prefix hit took back."""
        free_queue, stale = self._free, self._stale
        while True:
            block = free_queue.popleft()
            left = stale.get(block)
            if not left:
                return block
            self._num_stale -= 1
            if left == 1:
                del stale[block]
            else:
                stale[block] = left - 1

    def _evict_many(self, blocks: list[int]) -> set[int]:
        """`_evict` each of `blocks` (a take's reused blocks), and return those evicted."""
        evicted = self._cached_free.intersection(blocks)
        if not evicted:
            return evicted
        self._cached_free -= evicted
        self.evictions += len(evicted)
        key_of, block_of, own_key_of = self._key_of, self._block_of, self._own_key_of
        if not key_of:  # only own runs' blocks are cached
            for block in evicted:
                del own_key_of[block]
            return evicted
        for block in evicted:
            key = key_of.pop(block, None)
            if key is None:
                del own_key_of[block]
            else:
                del block_of[key]
        return evicted

    def _evict(self, block: int) -> None:
        """A cached-free block taken for new content loses its key."""
        self._cached_free.remove(block)
        key = self._key_of.pop(block, None)
        if key is None:
            del self._own_key_of[block]
        else:
            del self._block_of[key]
        self.evictions += 1

    def _compact_free_queue(self) -> None:
        """Drop the stale entries (once they are half the queue, so the cost is amortized):
        hits that keep reclaiming cached blocks while allocation seldom reaches the queue's
        head would otherwise grow it without bound."""
        self._free = deque(self.free_queue())
        self._stale.clear()
        self._num_stale = 0

    # ---- inspection (tests, invariant checks: these walk the whole queue) ---------------
    def free_queue(self) -> list[int]:
        """The freed blocks `take` would hand out after the never-used ids, head first."""
        skip = dict(self._stale)
        live = []
        for block in self._free:
            if skip.get(block):
                skip[block] -= 1
            else:
                live.append(block)
        return live

    def owners(self, block: int) -> int:
        """How many holders `block` has (0: free or never used)."""
        if block >= self._next_fresh or block in self.free_queue():
            return 0
        return 1 + self._extra_owners.get(block, 0)

    def owned_blocks(self) -> dict[int, int]:
        """Every owned block with its owner count."""
        free = set(self.free_queue())
        return {block: 1 + self._extra_owners.get(block, 0)
                for block in range(self._next_fresh) if block not in free}

    def num_never_used(self) -> int:
        return self.num_blocks - self._next_fresh
