"""A pool of single-token KV slots handed out as extents (SGLang's token-to-KV pool, page size 1).

Slots are never listed one by one: a holder keeps a list of `range` extents, in token order,
and the pool keeps its free slots as sorted, disjoint, maximal extents: a freed extent merges
with free neighbours, so the pool does not crumble into single slots when decodes of many
sequences interleave. Allocation takes the lowest free slots first.

    pool of 12 slots after taking 5 and 3, then freeing the 5:
    free: [range(0, 5), range(8, 12)]      take(6) gives [range(0, 5), range(8, 9)]

`SlotCounter` has the same counts and hands out anonymous extents, for holders whose slot
ids nothing reads (the simulator's).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate, chain, compress, count, islice
from operator import attrgetter, eq
from typing import Iterable, Iterator


FEW_EXTENTS_FACTOR = 8
"""Freed extents are inserted one by one while they number at most 1/8 of the free list."""
FIRST_CUT_CHUNK = 8
"""Extents read in the first chunk of a search for a cut (and added to each later guess)."""
_START, _STOP = attrgetter("start"), attrgetter("stop")


class SlotPool:
    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self.num_free = num_slots
        self._free: list[range] = [range(num_slots)] if num_slots else []
        self._given: list[range] = []  # freed, not merged into `_free` yet

    def take(self, num_slots: int) -> list[range]:
        """The `num_slots` lowest free slots as extents, in order; the caller checks
        `num_free` first. A take of every free slot (what an allocation that had to evict
        does) gets the free list and the pending frees sorted, not joined: no free list is
        left to keep maximal, and freed fragments seldom meet."""
        if num_slots > self.num_free:
            raise ValueError(f"asked for {num_slots} slots, {self.num_free} free")
        self.num_free -= num_slots
        if not self.num_free:
            extents = sorted(chain(self._free, self._given), key=_START)
            self._free, self._given = [], []
            return extents
        if self._given:
            self._merge_given()
        return pop_head_extents(self._free, num_slots)

    def give(self, extents: Iterable[range]) -> None:
        """Free `extents`. They wait in a pending list until the pool is next read: an
        eviction frees many leaves' tails back to back, shredded by interleaved decodes, and
        merging them all at once costs one sort instead of a bisect and insert each."""
        given = list(filter(None, extents))
        self.num_free += sum(map(len, given))
        self._given += given

    def _merge_given(self) -> None:
        """Merge the pending freed extents into the free list: a few one by one, many in
        one sort."""
        given, self._given = self._given, []
        if len(given) * FEW_EXTENTS_FACTOR <= len(self._free):
            for extent in given:
                self._insert(extent)
        else:
            self._free = merged_extents(sorted(chain(self._free, given), key=_START))

    def _insert(self, extent: range) -> None:
        free = self._free
        i = bisect_left(free, extent.start, key=_START)
        joins_left = i > 0 and free[i - 1].stop == extent.start
        joins_right = i < len(free) and free[i].start == extent.stop
        if joins_left and joins_right:
            free[i - 1] = range(free[i - 1].start, free[i].stop)
            del free[i]
        elif joins_left:
            free[i - 1] = range(free[i - 1].start, extent.stop)
        elif joins_right:
            free[i] = range(extent.start, free[i].stop)
        else:
            free.insert(i, extent)

    def free_slots(self) -> Iterator[int]:
        """Every free slot id, in order (for invariant checks)."""
        if self._given:
            self._merge_given()
        return chain(*self._free)


class SlotCounter:
    """A pool that counts its free slots and hands out anonymous extents (a take of n slots
    is `[range(n)]`), for holders whose slot ids nothing reads: the simulator's cost models
    read counts only. Every count comes out as `SlotPool`'s; what it spares is moving the
    fragments a full pool circulates (a pool always full of cached leaves evicts exactly
    what each allocation takes, so freed slots go round as extents of about three)."""

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self.num_free = num_slots

    def take(self, num_slots: int) -> list[range]:
        """`num_slots` anonymous slots; the caller checks `num_free` first."""
        if num_slots > self.num_free:
            raise ValueError(f"asked for {num_slots} slots, {self.num_free} free")
        self.num_free -= num_slots
        return [range(num_slots)] if num_slots else []

    def give(self, extents: Iterable[range]) -> None:
        self.num_free += sum(map(len, extents))

    def free_slots(self) -> Iterator[int]:
        raise ValueError("this pool counts slots and does not track their ids")


def append_extent(extents: list[range], extent: range) -> None:
    """Append `extent`, merging it into the last extent when the two are adjacent."""
    if not extent:
        return
    if extents and extents[-1].stop == extent.start:
        extents[-1] = range(extents[-1].start, extent.stop)
    else:
        extents.append(extent)


def extend_extents(extents: list[range], more: list[range]) -> None:
    """Append `more` (in token order), merging its first extent into the last one when they
    are adjacent; `more`'s own extents are taken as they are (joined as `append_extent` and
    the pool leave them, but for the rare adjacent pair a take of every free slot hands out,
    which costs an extent, never a slot)."""
    if more:
        append_extent(extents, more[0])
        extents.extend(islice(more, 1, None))


def merged_extents(extents: list[range]) -> list[range]:
    """Sorted, disjoint `extents` with adjacent ones joined (maximal extents). Joins are
    rare (freed fragments seldom meet), so they are found in one C pass and made in place."""
    continues = map(eq, map(_STOP, extents), map(_START, islice(extents, 1, None)))
    joins = list(compress(count(1), continues))  # extent i continues extent i - 1
    for i in reversed(joins):
        extents[i - 1] = range(extents[i - 1].start, extents[i].stop)
        del extents[i]
    return extents


def pop_head_extents(extents: list[range], num_slots: int) -> list[range]:
    """Remove the first `num_slots` slots of `extents` (in place) and return them; the cut is
    found by a C loop over running totals that stops there."""
    if extents and len(extents[0]) > num_slots:  # inside the first extent: most takes
        first = extents[0]
        extents[0] = first[num_slots:]
        return [first[:num_slots]] if num_slots else []
    whole, cut = _cut(map(len, extents), num_slots)
    head = extents[:whole]
    del extents[:whole]
    if cut:
        extent = extents[0]
        head.append(extent[:cut])
        extents[0] = extent[cut:]
    return head


def pop_tail_extents(extents: list[range], num_slots: int) -> list[range]:
    """Remove the last `num_slots` slots of `extents` (in place) and return them."""
    whole, cut = _cut(map(len, reversed(extents)), num_slots)
    popped = extents[len(extents) - whole:]
    del extents[len(extents) - whole:]
    if cut:
        extent = extents.pop()
        extents.append(extent[:len(extent) - cut])
        popped.insert(0, extent[len(extent) - cut:])
    return popped


def split_extents(extents: list[range], num_slots: int) -> list[list[range]]:
    """`extents` cut, in order, into pieces of `num_slots` slots each (their total is a
    multiple of it): one running total over all of them, one bisect per piece."""
    ends = list(accumulate(map(len, extents)))
    pieces = []
    lo, skip = 0, 0  # the next piece starts at slot `skip` of extent `lo`
    for boundary in range(num_slots, (ends[-1] if ends else 0) + 1, num_slots):
        hi = bisect_left(ends, boundary, lo)  # the extent holding the piece's last slot
        piece = extents[lo:hi + 1]
        if skip:
            piece[0] = piece[0][skip:]
        over = ends[hi] - boundary  # slots of extent `hi` after the piece
        if over:
            piece[-1] = piece[-1][:len(piece[-1]) - over]
            lo, skip = hi, len(extents[hi]) - over
        else:
            lo, skip = hi + 1, 0
        pieces.append(piece)
    return pieces


def _cut(lengths: Iterator[int], num_slots: int) -> tuple[int, int]:
    """Where the first `num_slots` slots end in extents of `lengths`: (extents wholly
    inside, slots of the next one inside). Running totals are taken in C a chunk at a time,
    each chunk sized from the average length seen so far (a bisect finds the cut in it), so
    a long list is read little past the cut."""
    whole, total, chunk = 0, 0, FIRST_CUT_CHUNK
    while total < num_slots:
        ends = list(accumulate(islice(lengths, chunk), initial=total))
        inside = bisect_right(ends, num_slots) - 1  # of this chunk's extents
        whole += inside
        if inside < len(ends) - 1 or inside == 0:  # the cut is in this chunk (or no more)
            return whole, num_slots - ends[inside]
        total = ends[-1]
        chunk = (num_slots - total) * whole // total + FIRST_CUT_CHUNK
    return whole, 0
