"""PagedAttention's block allocator: fixed-size blocks, per-sequence block tables, a free list.

Block ids are handed out in the order vLLM's free-block queue would: never-used blocks in id
order, then freed blocks in the order they were freed. Blocks are created lazily (a counter
marks the first never-used id), so a pool of millions of blocks costs no memory until used.

    block table of a 37-token sequence, block_size 16:
    [ b0: 16 slots full ][ b1: 16 slots full ][ b2: 5 used, 11 empty ]
                                                 ^ internal fragmentation
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from policies.kv.base import KVUsage, kv_tokens_needed
from policies.types import Request, Sequence


@dataclass(frozen=True, slots=True)
class PagedParams:
    block_size: int = 16
    num_blocks: int = 0

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block size must be >= 1, got {self.block_size}")
        if self.num_blocks < 1:
            raise ValueError(f"the KV pool must hold at least one block, got {self.num_blocks}")


class PagedAllocator:
    def __init__(self, params: PagedParams) -> None:
        self.block_size = params.block_size
        self.num_blocks = params.num_blocks
        self._next_fresh = 0
        self._freed: deque[int] = deque()
        self.block_tables: dict[int, list[int]] = {}
        self._num_tokens: dict[int, int] = {}
        self._filled_slots = 0

    @property
    def num_free_blocks(self) -> int:
        return self.num_blocks - self._next_fresh + len(self._freed)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def never_fits_reason(self, request: Request) -> str | None:
        need = self.blocks_for(kv_tokens_needed(request))
        if need > self.num_blocks:
            return (
                f"needs {need} KV blocks ({kv_tokens_needed(request)} tokens) but the whole "
                f"pool has {self.num_blocks}"
            )
        return None

    def allocate_slots(self, seq: Sequence, num_tokens: int) -> bool:
        seq_id = seq.request.request_id
        table = self.block_tables.get(seq_id)
        held = len(table) if table is not None else 0
        missing = -(-num_tokens // self.block_size) - held
        if missing > 0:
            if missing > self.num_free_blocks:
                return False
            if table is None:
                table = self.block_tables[seq_id] = []
            table.extend(self._pop_free() for _ in range(missing))
        elif table is None:
            self.block_tables[seq_id] = []
        previous = self._num_tokens.get(seq_id, 0)
        if num_tokens > previous:
            self._num_tokens[seq_id] = num_tokens
            self._filled_slots += num_tokens - previous
        return True

    def _pop_free(self) -> int:
        if self._next_fresh < self.num_blocks:
            self._next_fresh += 1
            return self._next_fresh - 1
        return self._freed.popleft()

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        table = self.block_tables.get(seq.seq_id)
        previous = self._num_tokens.get(seq.seq_id, 0)
        if table is None or num_tokens >= previous:
            return
        self._num_tokens[seq.seq_id] = num_tokens
        self._filled_slots -= previous - num_tokens
        keep = self.blocks_for(num_tokens)
        # Tail first, as in `free`: the released blocks held only rejected drafts.
        self._freed.extend(reversed(table[keep:]))
        del table[keep:]

    def free(self, seq: Sequence) -> None:
        table = self.block_tables.pop(seq.seq_id, None)
        if table is None:
            return
        # Tail first, so the blocks least likely to be shared are reused first.
        self._freed.extend(reversed(table))
        self._filled_slots -= self._num_tokens.pop(seq.seq_id, 0)

    def usage(self) -> KVUsage:
        used_blocks = self.num_blocks - self.num_free_blocks
        return KVUsage(
            total_slots=self.num_blocks * self.block_size,
            reserved_slots=used_blocks * self.block_size,
            filled_slots=self._filled_slots,
        )
