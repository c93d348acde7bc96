"""Pre-PagedAttention KV management: one contiguous span per request, reserved up front.

The pool is an address space of `num_blocks * block_size` token slots (the same memory the
paged allocator would get, so the two compare on one budget). A request's span is reserved
first-fit at its first allocation and held until it finishes or is preempted:

    reserve="max"    max_model_len slots (Orca-Max in the vLLM paper; the default)
    reserve="pow2"   next power of two of prompt + output, capped at max_model_len (Orca-Pow2)
    reserve="oracle" exactly prompt + output - 1 (Orca-Oracle: knows the output length)

    |==req 3 (filled)==.......reserved, empty.......|  free  |==req 7==....|  free   |
                       ^ internal waste                      ^ external fragmentation

Both kinds of waste are real: an arrival can be refused although enough slots are free in
total, because no single free gap is long enough.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from policies.fast_forward import GrowsInLockstep
from policies.knobs import check_knobs, knob
from policies.kv.base import (ForksSequences, KVUsage, LockstepUsage, PageTableAllocator,
                               ShrinksSlots, kv_tokens_needed)
from policies.kv.layout import KVLayout
from policies.types import Request, Sequence

RESERVE_MODES = ("max", "pow2", "oracle")


@dataclass(frozen=True, slots=True)
class ContiguousParams:
    block_size: int = 16
    num_blocks: int = 0
    max_model_len: int = 0
    reserve: str = knob("max", choices=RESERVE_MODES, help=(
        "contiguous allocator reservation: max|pow2|oracle"))
    layout: KVLayout = KVLayout()

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError("the KV pool must hold at least one block of at least one slot")
        if self.reserve == "max" and self.max_model_len < 1:
            raise ValueError("reserve='max' needs max_model_len")


class ContiguousAllocator(GrowsInLockstep, ForksSequences, ShrinksSlots, PageTableAllocator):
    """A private span per request shares nothing, so it caches no prefix (no `PrefixCache`)
    and forks by copying."""

    def __init__(self, params: ContiguousParams) -> None:
        self.block_size = params.block_size
        self.page_size = 1  # the real backend addresses spans slot by slot
        self.num_blocks = params.num_blocks
        self.max_model_len = params.max_model_len
        self.reserve = params.reserve
        self.layout = params.layout
        self.total_slots = params.num_blocks * params.block_size
        # Free gaps as sorted, non-overlapping, non-adjacent [start, end) intervals.
        self._gap_starts: list[int] = [0]
        self._gap_ends: list[int] = [self.total_slots]
        self.spans: dict[int, tuple[int, int]] = {}
        self._num_tokens: dict[int, int] = {}
        self._reserved_slots = 0
        self._filled_slots = 0
        self._copies: list[tuple[int, int, int]] = []

    def reservation_slots(self, request: Request) -> int:
        return self.layout.slots_for(self._reserved_tokens(request), self.block_size)

    def _reserved_tokens(self, request: Request) -> int:
        if self.reserve == "max":
            return self.max_model_len
        if self.reserve == "pow2":
            pow2 = 1 << (request.total_tokens - 1).bit_length()
            return min(pow2, self.max_model_len) if self.max_model_len else pow2
        return kv_tokens_needed(request)

    def never_fits_reason(self, request: Request) -> str | None:
        span = self.reservation_slots(request)
        if span > self.total_slots:
            return (
                f"contiguous reservation ({self.reserve}) of {span} slots exceeds the whole "
                f"pool of {self.total_slots} slots"
            )
        return None

    def page_table(self, seq_id: int) -> list[int]:
        """The real backend's view of a sequence's KV: its span, as single-slot pages."""
        start, length = self.spans[seq_id]
        return list(range(start, start + length))

    def blocks_for(self, num_tokens: int) -> int:
        return -(-self.layout.slots_for(num_tokens, self.block_size) // self.block_size)

    def refork(self, loser: Sequence, donor: Sequence) -> bool:
        """`free(loser)`, then `fork(donor, loser)`."""
        self.free(loser)
        return self.fork(donor, loser)

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """A span of its own for `child`, holding a copy of `parent`'s KV (nothing is shared
        without paging); False when no gap is long enough."""
        held = self._num_tokens.get(parent.seq_id, 0)
        if not self.allocate_slots(child, held):
            return False
        self._copies.append((self.spans[parent.seq_id][0], self.spans[child.seq_id][0],
                             self.layout.slots_for(held, self.block_size)))
        return True

    def take_copies(self) -> list[tuple[int, int, int]]:
        """Copies made since the last call, as (source slot, destination slot, slots)."""
        copies, self._copies = self._copies, []
        return copies

    def allocate_slots(self, seq: Sequence, num_tokens: int, num_cached_tokens: int = 0) -> bool:
        span = self.spans.get(seq.seq_id)
        if span is None:
            length = self.reservation_slots(seq.request)
            start = self._first_fit(length)
            if start is None:
                return False
            self._take(start, length)
            span = self.spans[seq.seq_id] = (start, length)
            self._reserved_slots += length
        if self.layout.slots_for(num_tokens, self.block_size) > span[1]:
            raise RuntimeError(
                f"request {seq.seq_id} asked for {num_tokens} KV slots beyond its "
                f"{span[1]}-slot reservation"
            )
        previous = self._num_tokens.get(seq.seq_id, 0)
        if num_tokens > previous:
            self._num_tokens[seq.seq_id] = num_tokens
            self._filled_slots += (self.layout.slots_for(num_tokens, self.block_size)
                                   - self.layout.slots_for(previous, self.block_size))
        return True

    def grow_in_lockstep(self, seqs: list[Sequence], num_steps: int) -> LockstepUsage | None:
        """`num_steps` rounds of `allocate_slots(seq, seq.num_known_tokens + round)` over
        `seqs` at once (the decode fast-forward): growth within each reservation only fills
        it. None, with nothing changed, unless every sequence holds a span that fits its last
        round and exactly its tokens so far (a plain layout, one slot per token), and no copy
        is pending."""
        if self.layout != KVLayout() or self._copies:
            return None  # pending copies (a fork's) belong to the next step's plan
        for seq in seqs:
            span = self.spans.get(seq.seq_id)
            known = seq.num_known_tokens
            if (span is None or self._num_tokens.get(seq.seq_id) != known - 1
                    or known + num_steps - 1 > span[1]):
                return None
        for seq in seqs:
            self._num_tokens[seq.seq_id] += num_steps
        first_filled = self._filled_slots + len(seqs)
        self._filled_slots += len(seqs) * num_steps
        return LockstepUsage([self._reserved_slots] * num_steps,
                             list(range(first_filled, first_filled + len(seqs) * num_steps, len(seqs))),
                             [0] * num_steps)

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """The reservation stays whole (it is held until the request ends); only the filled
        count drops, so rejected drafts show up as internal waste, not as free gaps."""
        previous = self._num_tokens.get(seq.seq_id, 0)
        if num_tokens < previous:
            self._num_tokens[seq.seq_id] = num_tokens
            self._filled_slots -= (self.layout.slots_for(previous, self.block_size)
                                   - self.layout.slots_for(num_tokens, self.block_size))

    def _first_fit(self, length: int) -> int | None:
        for start, end in zip(self._gap_starts, self._gap_ends):
            if end - start >= length:
                return start
        return None

    def _take(self, start: int, length: int) -> None:
        i = bisect.bisect_right(self._gap_starts, start) - 1
        if start + length == self._gap_ends[i]:
            del self._gap_starts[i], self._gap_ends[i]
        else:
            self._gap_starts[i] = start + length

    def free(self, seq: Sequence) -> None:
        span = self.spans.pop(seq.seq_id, None)
        if span is None:
            return
        start, length = span
        end = start + length
        self._reserved_slots -= length
        self._filled_slots -= self.layout.slots_for(self._num_tokens.pop(seq.seq_id, 0), self.block_size)
        i = bisect.bisect_left(self._gap_starts, start)
        merge_left = i > 0 and self._gap_ends[i - 1] == start
        merge_right = i < len(self._gap_starts) and self._gap_starts[i] == end
        if merge_left and merge_right:
            self._gap_ends[i - 1] = self._gap_ends[i]
            del self._gap_starts[i], self._gap_ends[i]
        elif merge_left:
            self._gap_ends[i - 1] = end
        elif merge_right:
            self._gap_starts[i] = start
        else:
            self._gap_starts.insert(i, start)
            self._gap_ends.insert(i, end)

    def usage(self) -> KVUsage:
        return KVUsage(self.total_slots, self._reserved_slots, self._filled_slots)
