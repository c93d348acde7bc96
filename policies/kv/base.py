"""The KV allocator contract shared by the simulator and the real backend.

An allocator owns a pool of `num_blocks` blocks of `block_size` token slots. Schedulers ask it
for room with `allocate_slots(seq, num_tokens)`: "make sure `seq` can hold `num_tokens` tokens
of KV in total". The call is all-or-nothing and returns False without side effects when the
pool cannot serve it, which is what preemption is built on (as in vLLM v1).

That, with `never_fits_reason`, `blocks_for`, `free` and `usage`, is the core every allocator
implements (`KVAllocator`). Abilities beyond it are protocols a class opts into by subclassing
them, supplying every method; callers ask `isinstance` once, when they are built:

    PrefixCache         reuses cached KV of a prompt's prefix: match_prefix, cached_prefix_tokens,
                        stats (paged-prefix, radix)
    ForksSequences      gives a new sample or beam its parent's KV: fork, take_copies
                        (parallel sampling, beam search: every allocator here)
    ShrinksSlots        gives back the slots of rejected drafts: shrink_slots (speculation:
                        every allocator here)
    PageTableAllocator  places KV in pages the real backend addresses (paged, contiguous)

(and `policies.fast_forward.GrowsInLockstep` for the decode fast-forward). A run that needs an
ability its allocator lacks is refused when it is built, not served by a no-op.

Speculative decoding allocates slots for draft tokens before knowing how many survive; after
the verify step the engine calls `shrink_slots(seq, num_tokens)` with the count of tokens
whose KV is now final, and the allocator takes back whatever it holds beyond that. Slots past
`num_tokens` held rejected drafts: an allocator that caches blocks by content (prefix caching)
must never hash or cache them, i.e. it may hash only tokens below the count it was last shrunk
or grown to by the engine after a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from policies.kv.layout import KVLayout
from policies.types import Request, Sequence


@dataclass(frozen=True, slots=True)
class PoolParams:
    """What every block pool is given: its block size and count, the share a new sequence
    must leave free at admission (vLLM v0's default watermark, so running sequences can grow
    a little before anything is preempted), and the model's KV layout."""

    block_size: int = 16
    num_blocks: int = 0
    watermark: float = 0.01
    layout: KVLayout = KVLayout()

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block size must be >= 1, got {self.block_size}")
        if self.num_blocks < 1:
            raise ValueError(f"the KV pool must hold at least one block, got {self.num_blocks}")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must lie in [0, 1), got {self.watermark}")


class KVUsage(NamedTuple):
    """Pool occupancy in token slots.

    `reserved_slots` are held by sequences (whole blocks for paged, whole reservations for
    contiguous); `filled_slots` of them hold KV that a sequence asked for (a block shared by
    several sequences counts once). The difference is internal fragmentation.
    `cached_free_slots` are free but still hold a cached prefix a later request may hit.
    A named tuple: every engine step logs one (a frozen dataclass costs three times as much).
    """

    total_slots: int
    reserved_slots: int
    filled_slots: int
    cached_free_slots: int = 0


class LockstepUsage(NamedTuple):
    """Pool usage after each round of a lockstep growth (`grow_in_lockstep`), as columns in
    token slots, one element per round (the fields of `KVUsage` that change). A named tuple:
    every decode run makes one, and a frozen dataclass costs three times as much to build."""

    reserved_slots: list[int]
    filled_slots: list[int]
    cached_free_slots: list[int]


class KVAllocator(Protocol):
    """What a scheduler needs to admit, grow and release a sequence."""

    block_size: int
    num_blocks: int

    def never_fits_reason(self, request: Request) -> str | None:
        """Why `request` could not run even on an empty pool, or None if it can."""
        raise NotImplementedError

    def blocks_for(self, num_tokens: int) -> int:
        """Pool blocks that `num_tokens` tokens of one sequence occupy."""
        raise NotImplementedError

    def allocate_slots(self, seq: Sequence, num_tokens: int, num_cached_tokens: int = 0) -> bool:
        """Ensure room for `num_tokens` tokens of `seq` in total; all-or-nothing. On admission
        the first `num_cached_tokens` (a `PrefixCache.match_prefix` answer, else 0) reuse
        cached KV."""
        raise NotImplementedError

    def free(self, seq: Sequence) -> None:
        """Return everything `seq` holds to the pool (no-op if it holds nothing)."""
        raise NotImplementedError

    def usage(self) -> KVUsage:
        raise NotImplementedError


@runtime_checkable
class PrefixCache(KVAllocator, Protocol):
    """An allocator that keeps the KV of computed prefixes for later requests to reuse."""

    def match_prefix(self, seq: Sequence) -> int:
        """Leading tokens of `seq` whose KV is already cached, without side effects."""
        raise NotImplementedError

    def cached_prefix_tokens(self, request: Request) -> int:
        """The same question for a request not on this replica (for cache-aware routing)."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """Cumulative counters (prefix hits and queries in tokens and blocks, evictions)."""
        raise NotImplementedError


@runtime_checkable
class ForksSequences(KVAllocator, Protocol):
    """An allocator that gives a new sequence another's KV (parallel sampling, beam search)."""

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """Give `child` `parent`'s KV (shared by reference where the allocator can, copied
        where it cannot); False, with nothing taken, when there is no room."""
        raise NotImplementedError

    def take_copies(self) -> list[tuple[int, int, int]]:
        """KV copies the allocator made since the last call: (source, destination, tokens).
        The executor performs and charges them."""
        raise NotImplementedError

    def refork(self, loser: Sequence, donor: Sequence) -> bool:
        """Leave what `free(loser)` then `fork(donor, loser)` would (a beam replaced by a
        copy of another: beam search, every step), and return the fork's answer. An
        allocator may skip what the two already share."""
        raise NotImplementedError


@runtime_checkable
class ShrinksSlots(KVAllocator, Protocol):
    """An allocator that takes back the slots of a verify step's rejected drafts."""

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """`seq` now needs only `num_tokens` slots in total (its rejected drafts are gone):
        release what is held beyond that. A no-op when it holds no more than that."""
        raise NotImplementedError


@runtime_checkable
class PageTableAllocator(KVAllocator, Protocol):
    """An allocator whose placements the real backend's KV pool can address: every
    sequence's KV lies in pages of `page_size` token slots (a paged allocator's blocks; a
    contiguous allocator's span as single-slot pages), and `take_copies`' sources and
    destinations (if it forks) are page ids."""

    page_size: int

    def page_table(self, seq_id: int) -> list[int]:
        """The page ids that hold sequence `seq_id`'s KV, in token order."""
        raise NotImplementedError


def kv_tokens_needed(request: Request) -> int:
    """KV slots a request needs at its longest: every token but the last sampled one."""
    return request.prompt_tokens + request.output_tokens - 1


def blocks_never_fit_reason(need_blocks: int, num_tokens: int, num_blocks: int,
                            watermark_blocks: int) -> str | None:
    """Why a request needing `need_blocks` blocks at its longest cannot run even on an empty
    pool of `num_blocks` (of which `watermark_blocks` are kept free), or None if it can."""
    if need_blocks <= num_blocks - watermark_blocks:
        return None
    watermark = f" ({watermark_blocks} kept free as watermark)" if watermark_blocks else ""
    return (f"needs {need_blocks} KV blocks ({num_tokens} tokens) but the whole pool has "
            f"{num_blocks}{watermark}")
