"""A pool of single-token KV slots handed out as extents (SGLang's token-to-KV pool, page size 1).

Slots are never listed one by one: a holder keeps a list of `range` extents, in token order,
and the pool keeps its free slots as sorted, disjoint, maximal extents: a freed extent merges
with free neighbours, so the pool does not crumble into single slots when decodes of many
sequences interleave. Allocation takes the lowest free slots first.

    pool of 12 slots after taking 5 and 3, then freeing the 5:
    free: [range(0, 5), range(8, 12)]      take(6) gives [range(0, 5), range(8, 9)]
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import chain
from typing import Iterable, Iterator


class SlotPool:
    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self.num_free = num_slots
        self._free: list[range] = [range(num_slots)] if num_slots else []
        self._starts: list[int] = [0] if num_slots else []

    def take(self, num_slots: int) -> list[range]:
        """The `num_slots` lowest free slots as extents; the caller checks `num_free` first."""
        if num_slots > self.num_free:
            raise ValueError(f"asked for {num_slots} slots, {self.num_free} free")
        self.num_free -= num_slots
        extents: list[range] = []
        used = 0
        while num_slots:
            extent = self._free[used]
            if len(extent) > num_slots:
                extents.append(extent[:num_slots])
                self._free[used] = extent[num_slots:]
                self._starts[used] = extent.start + num_slots
                break
            extents.append(extent)
            num_slots -= len(extent)
            used += 1
        del self._free[:used], self._starts[:used]
        return extents

    def give(self, extents: Iterable[range]) -> None:
        for extent in extents:
            self.num_free += len(extent)
            i = bisect_left(self._starts, extent.start)
            joins_left = i > 0 and self._free[i - 1].stop == extent.start
            joins_right = i < len(self._free) and self._starts[i] == extent.stop
            if joins_left and joins_right:
                self._free[i - 1] = range(self._free[i - 1].start, self._free[i].stop)
                del self._free[i], self._starts[i]
            elif joins_left:
                self._free[i - 1] = range(self._free[i - 1].start, extent.stop)
            elif joins_right:
                self._free[i] = range(extent.start, self._free[i].stop)
                self._starts[i] = extent.start
            else:
                self._free.insert(i, extent)
                self._starts.insert(i, extent.start)

    def free_slots(self) -> Iterator[int]:
        """Every free slot id (for invariant checks)."""
        return chain(*self._free)


def append_extent(extents: list[range], extent: range) -> None:
    """Append `extent`, merging it into the last extent when the two are adjacent."""
    if not extent:
        return
    if extents and extents[-1].stop == extent.start:
        extents[-1] = range(extents[-1].start, extent.stop)
    else:
        extents.append(extent)


def split_extents(extents: list[range], num_slots: int) -> tuple[list[range], list[range]]:
    """The first `num_slots` slots of `extents` and the rest."""
    head: list[range] = []
    for index, extent in enumerate(extents):
        if num_slots >= len(extent):
            head.append(extent)
            num_slots -= len(extent)
            continue
        tail = extents[index + 1:]
        if num_slots:
            head.append(extent[:num_slots])
        tail.insert(0, extent[num_slots:])
        return head, tail
    return head, []


def pop_tail_extents(extents: list[range], num_slots: int) -> list[range]:
    """Remove the last `num_slots` slots of `extents` (in place) and return them."""
    popped: list[range] = []
    while num_slots:
        extent = extents.pop()
        if len(extent) > num_slots:
            extents.append(extent[:len(extent) - num_slots])
            extent = extent[len(extent) - num_slots:]
        popped.append(extent)
        num_slots -= len(extent)
    popped.reverse()
    return popped
