"""A pool of KV blocks with owner counts and a content cache, as vLLM v1's BlockPool keeps.

Blocks are handed out never-used ids first (created lazily, so a pool of millions of blocks
costs nothing until used), then freed blocks oldest first. A block whose last owner releases it
joins the free queue's tail and keeps its cache key if it has one: it is cached-free, reusable
by a prefix hit (which takes it out of the queue wherever it is) until allocation reaches it at
the queue's head and evicts its key.

    free queue:  head -> [b9 (key)][b4][b7 (key)] <- tail (newest freed)
    take(2) after the never-used ids run out: b9 (its key evicted), b4

The queue is an OrderedDict, so a hit's removal from the middle and a pop from the head are
both O(1). Keys are whatever the allocator caches by (`hybrid_paged.py` uses (unit, block hash)).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._next_fresh = 0
        self._free: OrderedDict[int, None] = OrderedDict()
        self._owners: dict[int, int] = {}
        self._key_of: dict[int, Hashable] = {}
        self._block_of: dict[Hashable, int] = {}
        self.num_cached_free = 0
        self.evictions = 0

    @property
    def num_free(self) -> int:
        """Blocks `take` may hand out: never used, freed, or cached-free."""
        return self.num_blocks - self._next_fresh + len(self._free)

    def take(self, count: int) -> list[int]:
        """`count` blocks from the head, each with one owner; the caller checks `num_free`."""
        if count > self.num_free:
            raise ValueError(f"asked for {count} blocks, {self.num_free} free")
        fresh = min(count, self.num_blocks - self._next_fresh)
        blocks = list(range(self._next_fresh, self._next_fresh + fresh))
        self._next_fresh += fresh
        for _ in range(count - fresh):
            block, _ = self._free.popitem(last=False)
            key = self._key_of.pop(block, None)
            if key is not None:
                del self._block_of[key]
                self.num_cached_free -= 1
                self.evictions += 1
            blocks.append(block)
        for block in blocks:
            self._owners[block] = 1
        return blocks

    def cached(self, key: Hashable) -> int | None:
        """The block holding content `key`, owned or cached-free, or None."""
        return self._block_of.get(key)

    def is_free(self, block: int) -> bool:
        return block in self._free

    def owners(self, block: int) -> int:
        return self._owners.get(block, 0)

    def hold(self, block: int) -> None:
        """One more owner for `block` (a prefix hit or a fork); a cached-free block leaves
        the free queue."""
        if block in self._free:
            del self._free[block]
            self.num_cached_free -= 1
            self._owners[block] = 1
        else:
            self._owners[block] += 1

    def release(self, block: int) -> bool:
        """Drop one owner of `block`; True when that was the last and it joined the free
        queue's tail (cached-free if it has a key)."""
        owners = self._owners[block] - 1
        if owners:
            self._owners[block] = owners
            return False
        del self._owners[block]
        self._free[block] = None
        if block in self._key_of:
            self.num_cached_free += 1
        return True

    def register(self, block: int, key: Hashable) -> None:
        """Cache `block` under `key`, unless it is cached already or another block holds the
        same content (the first copy stays the cached one)."""
        if block not in self._key_of and key not in self._block_of:
            self._key_of[block] = key
            self._block_of[key] = block

    def key_of(self, block: int) -> Hashable | None:
        return self._key_of.get(block)

    def free_queue(self) -> list[int]:
        """The freed blocks `take` would hand out after the never-used ids, head first."""
        return list(self._free)

    def owned_blocks(self) -> dict[int, int]:
        """Every owned block with its owner count (for invariant checks)."""
        return dict(self._owners)

    def num_never_used(self) -> int:
        return self.num_blocks - self._next_fresh
